"""The eval report as a text table: one row per task, rates in %, Chinese columns aligned.

A Chinese character takes two columns in a terminal, so padding counts display width
(``unicodedata.east_asian_width``), not ``len``.
"""
from __future__ import annotations

import unicodedata

from .tasks import METRICS, TASKS

HEADERS = {"pass": "通过 pass", "form": "格式 form", "title": "题目 title", "correct": "答对 correct",
           "stopped": "停止 stopped"}


def width(text: str) -> int:
    """Terminal columns of `text`: 2 for wide / full-width characters, 1 otherwise."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def pad(text: str, cols: int, right: bool = False) -> str:
    fill = " " * max(cols - width(text), 0)
    return fill + text if right else text + fill


def _pct(value) -> str:
    return "—" if value is None else f"{value:.0%}"


def format_table(report: dict) -> str:
    """Per-task rates of a report of :func:`workbook.eval.evaluate`, and a settings line."""
    header = ["任务 (task)", "数量 n"] + [HEADERS[m] for m in METRICS]
    rows = [[TASKS[t], str(r["n"])] + [_pct(r[m]) for m in METRICS]
            for t, r in report["tasks"].items()]
    overall = report["overall"]
    rows.append(["全部 (all)", str(overall["n"])] + [_pct(overall[m]) for m in METRICS])
    cols = [max(width(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(pad(cell, cols[i], right=i > 0) for i, cell in enumerate(row)).rstrip()
             for row in [header] + rows]
    rule = "-" * width(lines[0])
    lines[1:1] = [rule]
    lines.insert(len(lines) - 1, rule)
    s = report.get("settings", {})
    decoding = "贪心解码 (greedy)" if s.get("greedy", True) else "采样 (sampling)"
    lines.append(f"{decoding}，max_new_tokens={s.get('max_new_tokens')}，{s.get('prompts')} 条提示，"
                 f"{s.get('seconds', 0):.1f} 秒。— = 这个任务不考这一项。")
    return "\n".join(lines)


def format_comparison(before: dict, after: dict, names: tuple[str, str] = ("前 before", "后 after"),
                      metrics: tuple[str, ...] = ("pass", "form", "stopped")) -> str:
    """Two reports side by side: for each task and metric, before -> after (in %)."""
    header = ["任务 (task)", "数量 n"] + [f"{HEADERS[m]} {names[0]}→{names[1]}" for m in metrics]

    def cell(a, b) -> str:
        return "—" if a is None and b is None else f"{_pct(a)} → {_pct(b)}"

    rows = [[TASKS[t], str(r["n"])] + [cell(r[m], after["tasks"][t][m]) for m in metrics]
            for t, r in before["tasks"].items() if t in after["tasks"]]
    rows.append(["全部 (all)", str(before["overall"]["n"])]
                + [cell(before["overall"][m], after["overall"][m]) for m in metrics])
    cols = [max(width(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(pad(c, cols[i], right=i > 0) for i, c in enumerate(row)).rstrip()
             for row in [header] + rows]
    lines[1:1] = ["-" * width(lines[0])]
    lines.insert(len(lines) - 1, "-" * width(lines[0]))
    return "\n".join(lines)


__all__ = ["format_table", "format_comparison", "width", "pad"]
