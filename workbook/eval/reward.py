"""A reward that can be checked: form, stop, rhyme and tones of a classical poem.

Reinforcement learning needs a number for every sampled answer.  MiniMind's GRPO asks a 1.8B
reward model; for a poetry model every part of this reward is a rule a learner can check by eye:

- **form** — the answer's clauses fit the requested pattern (``workbook.eval.forms``: the grader's
  own rule, punctuation-tolerant);
- **stop** — the generation ended with ``<|im_end|>``;
- **rhyme** — the last characters of the even lines (2nd, 4th, …) share a rhyme group.  Groups are
  the 14 of 中华新韵, computed from modern Mandarin finals (``pypinyin``): an approximation of the
  historical rhymes (平水韵), good enough that 81% of the corpus's 五言绝句 rhyme lines 2 and 4,
  against ~10% for two random line endings;
- **tones** (平仄, optional) — modern tones 1/2 count as 平, 3/4 as 仄 (the entering tone is lost
  in Mandarin, another approximation): even lines end on 平, and inside each line the 2nd and 4th
  (and 6th) characters alternate (二四不同, 二四六分明);
- **repetition** — a guard against reward hacking: the same character three times in a row, or
  the same line twice, zeroes the rhyme and tone parts (``AAAAA，AAAAA`` rhymes perfectly); and a
  rhyme character used twice (``…云 / …云``) does not rhyme (不重韵), a hole the loose rule leaves
  open (``repeated_end`` counts its use; ``make grpo-demo`` measures it under both rules).

``score(answer, pattern, stopped)`` returns every part and their weighted ``total``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache

from .forms import clauses, matches_pattern, split_title_line

# 中华新韵: the 14 rhyme groups, by the final (pypinyin's FINALS style, ü written v)
_GROUPS = {
    "麻": ("a", "ia", "ua"), "波": ("o", "e", "uo"), "皆": ("ie", "ve", "ue"), "开": ("ai", "uai"),
    "微": ("ei", "ui", "uei"), "豪": ("ao", "iao"), "尤": ("ou", "iu", "iou"),
    "寒": ("an", "ian", "uan", "van"), "文": ("en", "in", "un", "uen", "vn"),
    "唐": ("ang", "iang", "uang"), "庚": ("eng", "ing", "ong", "iong", "ueng"),
    "齐": ("i", "er", "v"), "支": (), "姑": ("u",),
}
FINAL_GROUP = {final: group for group, finals in _GROUPS.items() for final in finals}
# zhi chi shi ri zi ci si: their "i" is the apical vowel, its own group 支
_APICAL_INITIALS = {"zh", "ch", "sh", "r", "z", "c", "s"}
WEIGHTS = {"form": 1.0, "stop": 0.5, "rhyme": 0.5, "tones": 0.25}
_RUN_OF_THREE = re.compile(r"(.)\1\1")


@lru_cache(maxsize=20000)
def reading(char: str) -> tuple[str | None, int | None]:
    """(rhyme group, tone 1-4) of one character's most common reading; (None, None) if unknown."""
    from pypinyin import Style, pinyin

    initial = pinyin(char, style=Style.INITIALS, strict=False)[0][0]
    final_tone = pinyin(char, style=Style.FINALS_TONE3, strict=False, neutral_tone_with_five=True)[0][0]
    match = re.fullmatch(r"([a-zv]+)([1-5])", final_tone)
    if not match:
        return None, None
    final, tone = match.group(1), int(match.group(2))
    if final == "i" and initial in _APICAL_INITIALS:
        return "支", tone
    return FINAL_GROUP.get(final), tone if tone <= 4 else None


def level(char: str) -> str | None:
    """"平" (tones 1, 2) or "仄" (tones 3, 4), by the modern reading; None if unknown."""
    tone = reading(char)[1]
    return None if tone is None else ("平" if tone <= 2 else "仄")


def even_ends(lines: list[str]) -> list[str]:
    """The last character of lines 2, 4, 6, …: where a poem rhymes."""
    return [line[-1] for line in lines[1::2] if line]


def rhyme_score(lines: list[str], distinct: bool = True) -> float:
    """Share of the even lines' last characters in the most common rhyme group (1.0: all rhyme).
    Fewer than two even lines: nothing to rhyme, 0.

    distinct: a rhyme character used again (云 … 云) counts as not rhyming (不重韵: classical verse
    does not rhyme a character with itself).  Without it the rule pays for repeating one ending;
    ``distinct=False`` is that hackable rule (``make grpo-demo`` trains with both).
    """
    ends = even_ends(lines)
    seen: set[str] = set()
    groups = []
    for char in ends:
        groups.append(None if distinct and char in seen else reading(char)[0])
        seen.add(char)
    if len(groups) < 2:
        return 0.0
    known = [g for g in groups if g is not None]
    if not known:
        return 0.0
    return Counter(known).most_common(1)[0][1] / len(groups)


def tone_score(lines: list[str]) -> float:
    """Share of the tone rules kept: even lines end on 平; in every line of 5 or 7 characters the
    2nd/4th (and 4th/6th) characters differ in tone."""
    kept, rules = 0, 0
    for i, line in enumerate(lines):
        if i % 2 == 1 and line:
            rules += 1
            kept += level(line[-1]) == "平"
        if len(line) in (5, 7):
            positions = (1, 3) if len(line) == 5 else (1, 3, 5)
            for a, b in zip(positions, positions[1:]):
                rules += 1
                la, lb = level(line[a]), level(line[b])
                kept += la is not None and lb is not None and la != lb
    return kept / rules if rules else 0.0


def repetitive(lines: list[str]) -> bool:
    """The same character three times in a row, or the same line twice: degenerate text."""
    return any(_RUN_OF_THREE.search(line) for line in lines) or len(set(lines)) < len(lines)


def repeated_end(lines: list[str]) -> bool:
    """Two even lines end on the same character (…山云 / …白云): the hole the strict rhyme rule
    closes (not counted as rhyme with ``distinct``; the loose rule pays for it)."""
    ends = even_ends(lines)
    return len(set(ends)) < len(ends)


@dataclass
class Reward:
    form: float
    stop: float
    rhyme: float
    tones: float
    repetitive: bool
    total: float
    repeated_end: bool = False  # form right and an even-line end character used twice

    def to_dict(self) -> dict:
        return asdict(self)


def score(answer: str, pattern: list[int], stopped: bool, *, tones: bool = True,
          distinct_rhymes: bool = True) -> Reward:
    """Every part of the reward of `answer` to a request for a poem of clause lengths `pattern`.
    distinct_rhymes: see :func:`rhyme_score` (False: a repeated rhyme character still rhymes).

    total = 1.0·form + 0.5·stop + 0.5·rhyme + 0.25·tones (tones only when asked); rhyme and tones
    count only when the form is right (so a wrong shape cannot collect them) and the text is not
    repetitive.
    """
    _, body = split_title_line(answer)
    lines = clauses(body)
    form = float(matches_pattern([len(c) for c in lines], pattern))
    degenerate = repetitive(lines)
    rhyme = rhyme_score(lines, distinct_rhymes) if form and not degenerate else 0.0
    tone = tone_score(lines) if form and not degenerate and tones else 0.0
    stop = float(stopped)
    total = (WEIGHTS["form"] * form + WEIGHTS["stop"] * stop + WEIGHTS["rhyme"] * rhyme
             + (WEIGHTS["tones"] * tone if tones else 0.0))
    return Reward(form, stop, rhyme, tone, degenerate, round(total, 6), bool(form) and repeated_end(lines))
