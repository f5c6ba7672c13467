"""Evaluation of the chat model on the fixed poetry prompts (provided infrastructure, Part 2).

- :mod:`.forms` — clauses, patterns and the four regulated forms (shared with data/build_sft.py)
- :mod:`.tasks` — the six task types and the checks of each
- :mod:`.grader` — :func:`grade_answer`, rule-based scores of one answer
- :mod:`.runner` — :func:`evaluate` (greedy, batched exactly), :func:`evaluate_weights`
- :mod:`.table` — :func:`format_table`
- :mod:`.cli` — ``python -m workbook eval MODEL [--limit N] [--json F]``

In a notebook::

    from workbook.eval import evaluate_weights, format_table
    report = evaluate_weights("out/full_sft_512.pth", limit=30)
    print(format_table(report))

The runner needs torch and transformers; it is imported on first use, so that data scripts can
use the forms and the grader without them.
"""
from __future__ import annotations

from .grader import grade_answer
from .table import format_comparison, format_table
from .tasks import CHECKS, METRICS, TASKS

_RUNNER = ("evaluate", "evaluate_weights", "generate_answers", "load_prompts", "load_model",
           "load_tokenizer", "write_report")


def __getattr__(name: str):
    if name in _RUNNER:
        from . import runner
        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["grade_answer", "format_table", "format_comparison", "TASKS", "CHECKS", "METRICS", *_RUNNER]
