"""The shape of a poem: its clauses (句), their lengths, and the four regulated forms.

A *clause* here is a run of Chinese characters between punctuation marks (or line ends):
"床前明月光，疑是地上霜。" has two clauses of 5.  A *pattern* is the list of clause lengths,
e.g. ``[5, 5, 5, 5]`` for a 五言绝句 or ``[7, 7, 7, 3, 3, 7, 7, 7, 3, 3]``-like lists for a ci.
The regulated forms are recognised **by shape only** (clause count and length, not tone rules):

    4 clauses of 5 -> 五言绝句     4 of 7 -> 七言绝句     8 of 5 -> 五言律诗     8 of 7 -> 七言律诗

One definition serves both sides: ``data/build_sft.py`` infers each real poem's form with it,
and the grader (:mod:`workbook.eval.grader`) checks a model's answer against it.
Provided infrastructure (standard library only).
"""
from __future__ import annotations

import re

# CJK ideographs: URO, Ext A, compatibility, supplementary planes (as data/build_corpus.py)
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_RUN = re.compile(f"[{HAN}]+")
_TITLE_LINE = re.compile(r"《([^》\n]*)》[^\n]*")

# (clauses, characters per clause) -> name
SHI_FORMS = {(4, 5): "五言绝句", (4, 7): "七言绝句", (8, 5): "五言律诗", (8, 7): "七言律诗"}
FORM_BY_NAME = {name: shape for shape, name in SHI_FORMS.items()}
_FORM_NAME = re.compile("|".join(SHI_FORMS.values()))


def clauses(text: str) -> list[str]:
    """The runs of Chinese characters in `text`; everything else (punctuation, newlines,
    spaces, Latin letters) separates them.  ``"床前明月光，疑是地上霜。" -> ["床前明月光", "疑是地上霜"]``"""
    return _RUN.findall(text)


def pattern_of(text: str) -> list[int]:
    """Clause lengths of `text`: ``"床前明月光，疑是地上霜。" -> [5, 5]``."""
    return [len(c) for c in clauses(text)]


def shi_form(body: str) -> str | None:
    """The regulated form of a poem body by shape (see the module docstring), or None."""
    return form_of_pattern(pattern_of(body))


def form_of_pattern(lengths) -> str | None:
    """``[5, 5, 5, 5] -> "五言绝句"``; None unless 4 or 8 clauses, all of 5 or all of 7."""
    return SHI_FORMS.get((len(lengths), lengths[0])) if lengths and len(set(lengths)) == 1 else None


def shi_pattern(name: str) -> list[int]:
    """``"七言绝句" -> [7, 7, 7, 7]``; KeyError for anything else."""
    n, chars = FORM_BY_NAME[name]
    return [chars] * n


def matches_pattern(lengths: list[int], pattern: list[int]) -> bool:
    """Do the clause lengths of an answer fit `pattern`, tolerating missing punctuation?

    A run may cover several consecutive clauses of the pattern when the punctuation between them
    is missing ("床前明月光疑是地上霜" = 5 + 5), but it must end exactly on a clause boundary,
    and the runs must use up the pattern exactly: a clause too long, too short, one missing or
    one extra all fail.
    """
    i = 0
    for run in lengths:
        total = 0
        while total < run and i < len(pattern):
            total += pattern[i]
            i += 1
        if total != run:
            return False
    return i == len(pattern)


def split_title_line(text: str) -> tuple[str | None, str]:
    """(title, rest) when `text` starts with a title line ``《题目》作者``, else (None, text).

    Models trained on the pretrain corpus like to start a poem with its title line; the grader
    checks that title and reads the form from the rest.
    """
    stripped = text.lstrip()
    first, _, rest = stripped.partition("\n")
    m = _TITLE_LINE.fullmatch(first.strip())
    return (m.group(1), rest) if m else (None, text)


def named_form(answer: str) -> str | None:
    """The first form an answer names: one of the four regulated forms, or a 《词牌》; None.

    ``"七言绝句" -> "七言绝句"``, ``"词，词牌《浣溪沙》" -> "浣溪沙"``.
    """
    found = [(m.start(), m.group(0)) for m in _FORM_NAME.finditer(answer)][:1]
    found += [(m.start(), m.group(1)) for m in _TITLE_LINE.finditer(answer)][:1]
    return min(found)[1] if found else None


__all__ = ["HAN", "SHI_FORMS", "FORM_BY_NAME", "clauses", "pattern_of", "shi_form", "form_of_pattern",
           "shi_pattern",
           "matches_pattern", "split_title_line", "named_form"]
