"""The task types the grader knows, and which checks grade each.

Six are the SFT tasks of the poetry chat data: their ids are stored in every line of
``data/sft_poetry_*.jsonl.gz`` (field "task") and of ``data/sft_eval_prompts.jsonl``.  Two more
are skills for stage 15's LoRA adapter: saying who the model is (``data/lora_identity_*``, the
shipped demo) and the acrostic poem (``data/lora_acrostic_*.jsonl.gz``, ``data/lora_eval_prompts.jsonl``).  The labels are what the learner sees in the table.
"""
from __future__ import annotations

# id -> Chinese label (English term): the tasks of the SFT data (data/build_sft.py) …
SFT_TASKS = {
    "form_poem": "按题目和体裁写诗 (title + form)",
    "ci": "按词牌填词 (ci to a tune)",
    "continue": "续写 (continue)",
    "name_form": "说出体裁 (name the form)",
    "give_title": "起题目 (give a title)",
    "multi_turn": "多轮：再写一首 (multi-turn)",
}
# … and the LoRA tasks: who the model is (data/build_identity.py, MiniMind's lora_identity; the
# shipped demo) and a quatrain whose line heads spell the requested word (data/build_lora.py)
LORA_TASKS = {"identity": "自我介绍 (identity)", "acrostic": "藏头诗 (acrostic)"}
TASKS = {**SFT_TASKS, **LORA_TASKS}

# The checks a task must pass (besides "stopped", which every task has):
#   form    — the answer's clauses fit the expected pattern (lines × characters, or the 词牌's)
#   title   — give_title: a title in 《》 of sensible length
#   correct — name_form: the form named is the poem's form;
#             acrostic: the first character of each line, in order, is the requested heads;
#             identity: the answer says the model's name ("expected": 墨小诗)
CHECKS = {
    "form_poem": ("form",),
    "ci": ("form",),
    "continue": ("form",),
    "name_form": ("correct",),
    "give_title": ("title",),
    "multi_turn": ("form",),
    "acrostic": ("form", "correct"),
    "identity": ("correct",),
}
# Checked only when the answer gives occasion: a title line 《…》 at the top of a poem must be the
# title / 词牌 asked for (no title line: None, not graded — the training answers have none).
# An acrostic request gives the hidden word in 《》 as the poem's title: "title" = the heads.
TITLE_IF_WRITTEN = ("form_poem", "ci", "acrostic")

METRICS = ("pass", "form", "title", "correct", "stopped")

__all__ = ["TASKS", "SFT_TASKS", "LORA_TASKS", "CHECKS", "TITLE_IF_WRITTEN", "METRICS"]
