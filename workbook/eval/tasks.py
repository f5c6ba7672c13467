"""The six SFT task types of the poetry chat data, and which checks grade each.

The ids are stored in every line of ``data/sft_poetry_*.jsonl.gz`` (field "task") and of
``data/sft_eval_prompts.jsonl``; the labels are what the learner sees in the table.
"""
from __future__ import annotations

# id -> Chinese label (English term)
TASKS = {
    "form_poem": "按题目和体裁写诗 (title + form)",
    "ci": "按词牌填词 (ci to a tune)",
    "continue": "续写 (continue)",
    "name_form": "说出体裁 (name the form)",
    "give_title": "起题目 (give a title)",
    "multi_turn": "多轮：再写一首 (multi-turn)",
}

# The checks a task must pass (besides "stopped", which every task has):
#   form    — the answer's clauses fit the expected pattern (lines × characters, or the 词牌's)
#   title   — give_title: a title in 《》 of sensible length
#   correct — name_form: the form named is the poem's form
CHECKS = {
    "form_poem": ("form",),
    "ci": ("form",),
    "continue": ("form",),
    "name_form": ("correct",),
    "give_title": ("title",),
    "multi_turn": ("form",),
}
# Checked only when the answer gives occasion: a title line 《…》 at the top of a poem must be the
# title / 词牌 asked for (no title line: None, not graded — the training answers have none).
TITLE_IF_WRITTEN = ("form_poem", "ci")

METRICS = ("pass", "form", "title", "correct", "stopped")

__all__ = ["TASKS", "CHECKS", "TITLE_IF_WRITTEN", "METRICS"]
