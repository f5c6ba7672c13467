"""Rule-based scores of one answer to one prompt of ``data/sft_eval_prompts.jsonl`` (or of
``data/lora_eval_prompts.jsonl``, the acrostic prompts).

No model judges here: every score is a rule a learner can check by eye.

- **stopped** — the generation ended with ``<|im_end|>`` (eos) before ``max_new_tokens``.
- **form** (form_poem, ci, continue, multi_turn, acrostic) — the answer's clauses fit the expected
  pattern (:func:`workbook.eval.forms.matches_pattern`): the right number of lines, each of the
  right length; punctuation-tolerant (any punctuation separates, a missing comma between two
  clauses is forgiven), and for a ci the 词牌's line-length pattern.  A title line
  ``《…》作者`` at the top is not part of the form; for continue, repeating the given first line
  is forgiven.
- **title** — give_title: the answer's first line holds a title in 《》 of 1–16 characters
  (Chinese characters or "·"); ``exact`` says whether it is the poem's real title (reported,
  not required).  form_poem / ci / acrostic: graded only when the answer writes a title line —
  then it must be the title / 词牌 asked for (acrostic: the hidden word, which the request gives
  in 《》); without one it is None (the training answers have none).
- **correct** (name_form) — the first form the answer names (五言绝句 … 七言律诗, or 《词牌》)
  is the poem's.  (acrostic) — the heads, the first character of each line (句) in order, are
  the requested ones ("expected"), read below a title line as the form is; where a missing
  comma joins two lines of an answer that fits the form, they are cut at the form's line length.
  (identity) — the answer says the model's name ("expected", 墨小诗).
- **pass** — stopped, every required check of the task True (:data:`workbook.eval.tasks.CHECKS`)
  and no other check False.
"""
from __future__ import annotations

import re

from .forms import HAN, clauses, matches_pattern, named_form, split_title_line
from .tasks import CHECKS, TASKS, TITLE_IF_WRITTEN

TITLE_MAX_CHARS = 16
_TITLE = re.compile(r"《([^》\n]*)》")
_SENSIBLE_TITLE = re.compile(f"[{HAN}·]{{1,{TITLE_MAX_CHARS}}}")


def _same_tune(written: str, asked: str) -> bool:
    """"浣溪沙" fits "浣溪沙"; an alias pair "望江南·忆江南" fits either name."""
    return written == asked or written.split("·")[0] in asked.split("·")


def _form_scores(task: str, record: dict, answer: str) -> dict:
    title, body = split_title_line(answer)
    runs = clauses(body)
    if task == "continue" and record.get("first_line"):
        # repeating the given first line before continuing is forgiven
        first = "".join(clauses(record["first_line"]))
        if "".join(runs).startswith(first):
            runs = _drop_chars(runs, len(first))
    lengths = [len(r) for r in runs]
    out = {"lines": lengths, "form": matches_pattern(lengths, record["form"]["pattern"])}
    if task == "acrostic":
        out["heads"] = "".join(_heads(runs, record["form"]["pattern"], out["form"]))
        out["correct"] = out["heads"] == record["expected"]
    if task in TITLE_IF_WRITTEN:
        asked = record.get("title")
        out["written_title"] = title
        out["title"] = None if title is None or asked is None else (
            _same_tune(title, asked) if task == "ci" else title == asked)
    return out


def _heads(runs: list[str], pattern: list[int], fits: bool) -> list[str]:
    """The first character of each line: of each clause of the pattern when the runs fit it
    ("春风…柳江…" joined by a missing comma still has two heads), else of each run."""
    if not fits:
        return [run[0] for run in runs]
    text, heads, at = "".join(runs), [], 0
    for n in pattern:
        heads.append(text[at])
        at += n
    return heads


def _drop_chars(runs: list[str], n: int) -> list[str]:
    """The clauses left after removing the first n characters."""
    out = []
    for run in runs:
        if n >= len(run):
            n -= len(run)
            continue
        out.append(run[n:])
        n = 0
    return out


def grade_answer(task: str, prompt_record: dict, answer_text: str, stopped: bool) -> dict:
    """Score one answer.

    Args:
        task: the task id (one of :data:`workbook.eval.tasks.TASKS`; the record's "task").
        prompt_record: one line of ``sft_eval_prompts.jsonl``: "form" {"name", "pattern", …},
            "title", "expected", "first_line" as the task needs.
        answer_text: the decoded reply, special tokens removed.
        stopped: True when the generation ended with ``<|im_end|>`` before max_new_tokens.
    Returns: ``{"task", "pass", "stopped", "form", "title", "correct", …}``: each check is
        True / False, or None when the task is not graded on it; plus details ("lines": the
        answer's clause lengths, "written_title", "named", "exact", "heads").
    """
    if task not in TASKS:
        raise ValueError(f"不认识的任务 (unknown task) {task!r}：应该是 {', '.join(TASKS)} 之一")
    scores: dict = {"task": task, "stopped": bool(stopped), "form": None, "title": None,
                    "correct": None}
    if "form" in CHECKS[task]:
        scores.update(_form_scores(task, prompt_record, answer_text))
    elif task == "name_form":
        named = named_form(answer_text)
        scores["named"] = named
        scores["correct"] = named == prompt_record["expected"]
    elif task == "identity":
        scores["correct"] = prompt_record["expected"] in answer_text
    elif task == "give_title":
        first_line = answer_text.strip().split("\n", 1)[0]
        m = _TITLE.search(first_line)
        written = m.group(1) if m else None
        scores["written_title"] = written
        scores["title"] = written is not None and bool(_SENSIBLE_TITLE.fullmatch(written))
        scores["exact"] = written == prompt_record.get("expected")
    # every required check True, and no other check False (a wrong title line fails too)
    scores["pass"] = (scores["stopped"] and all(scores[c] is True for c in CHECKS[task])
                      and not any(scores[c] is False for c in ("form", "title", "correct")))
    return scores


__all__ = ["grade_answer", "TITLE_MAX_CHARS"]
