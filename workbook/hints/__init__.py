"""Tiered hints, one Markdown file per stage: ``workbook/hints/{id}_{slug}.md``.

Each level starts with a line ``## 提示 N：title``.  Level 1 nudges, the last level all but
gives the answer.  After the file's levels comes one generated level, the guided walkthrough:
the ``# TODO(learner)`` steps of the pristine guided stub (``workbook.stubs.walkthrough``), so a
learner at the challenge level, or one who has overwritten those comments, can still read them.
A file level titled "(line by line)" (逐行的做法) comes after that walkthrough: it is the answer
spelled out, so it is always the last level.
``python -m workbook hint 01`` reveals the next unseen level and remembers it in
``.workbook/state.json``; ``--level N`` shows one level directly.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .. import stages

HINTS_DIR = Path(__file__).resolve().parent
STATE_FILE = HINTS_DIR.parent.parent / ".workbook" / "state.json"
_HEADING = re.compile(r"^## 提示 (\d+)[：:]?(.*)$", re.MULTILINE)


def levels(stage_id: str) -> list[str]:
    """All hint levels of a stage, in order (level 1 first)."""
    from ..stubs import walkthrough

    stage = stages.get(stage_id)
    path = HINTS_DIR / f"{stage.id}_{stage.slug}.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    marks = list(_HEADING.finditer(text))
    written, spelled_out = [], []  # (title, body) of the file's levels
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        level = (m.group(2).strip(), text[m.end():end].strip())
        (spelled_out if "(line by line)" in level[0] else written).append(level)
    steps = walkthrough(stage.id)
    if steps:
        written.append(("逐步提示 (the guided walkthrough)", steps))
    return [f"## 提示 {n}：{title}\n\n{body}" for n, (title, body) in enumerate(written + spelled_out, 1)]


def _load_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_state(state: dict) -> None:
    try:
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(STATE_FILE)
    except OSError:
        pass  # a read-only checkout still shows hints; it just cannot remember them


def show(stage_id: str, level: int | None = None) -> str:
    """Text of hint `level` (1-based), or of the next unseen level when None."""
    stage = stages.get(stage_id)
    all_levels = levels(stage.id)
    if not all_levels:
        return f"{stage.id} {stage.title} 还没有提示 (hint)。"
    state = _load_state()
    seen = int(state.get("hints", {}).get(stage.id, 0))
    if level is None:
        level = min(seen + 1, len(all_levels))
    if not 1 <= level <= len(all_levels):
        raise ValueError(f"{stage.id} 只有 {len(all_levels)} 级提示，没有第 {level} 级。")
    state.setdefault("hints", {})[stage.id] = max(seen, level)
    _save_state(state)
    more = (f"\n\n（还有 {len(all_levels) - level} 级更具体的提示：再运行一次 "
            f"python -m workbook hint {stage.id}）" if level < len(all_levels) else
            "\n\n（这是最后一级提示。）")
    return f"[{stage.id} {stage.title}] 第 {level}/{len(all_levels)} 级\n\n{all_levels[level - 1]}{more}"
