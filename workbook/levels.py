"""Scaffolding levels: ``python -m workbook reset ID|all --level guided|challenge``.

- ``guided`` (引导级, the default): the stub walks through the solution in ``# TODO(learner)``
  comments, step by step.
- ``challenge`` (挑战级): the stub keeps only the signatures and the contract docstrings; the
  walkthrough is the last level of ``python -m workbook hint ID``.

``reset`` puts a stage's pristine stub of the chosen level (``workbook.stubs``) in place of the
learner's file.  It never loses the learner's code: a file that is not an untouched stub of
either level is first copied to ``.workbook/backups/<timestamp>/<path>``, and no file is
overwritten until every backup is written.  The level is remembered per stage in
``.workbook/state.json`` (``"levels": {"01": "challenge"}``), beside the hints' state.
"""
from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import hints, stages, stubs

REPO = Path(__file__).resolve().parent.parent
DEFAULT = "guided"
NAMES = {"guided": "引导级 (guided)", "challenge": "挑战级 (challenge)"}


class ResetRefused(ValueError):
    """Nothing was changed; the message says why (the CLI prints it and exits with 2)."""


def parse_level(value: str | None, stage_id: str | None = None) -> str:
    """A level name; None = the stage's remembered level (guided when none)."""
    if value is None:
        return recorded().get(stage_id, DEFAULT) if stage_id else DEFAULT
    level = value.strip().lower()
    if level not in stubs.LEVELS:
        raise ResetRefused(f"没有 '{value}' 这一级 (level)。可选：guided（引导级，逐步提示写在文件里）、"
                           f"challenge（挑战级，只留签名和文档字符串）")
    return level


def targets(target: str) -> list[stages.Stage]:
    """The stages `target` names: one id, or "all" (every stage with exercise files)."""
    if target.strip().lower() == "all":
        return [s for s in stages.STAGES if s.modules]
    stage = stages.get(target)
    if not stage.modules:
        raise ResetRefused(f"{stage.id} {stage.title} 没有要你写的文件，没有什么可以重置 (reset)。")
    return [stage]


def recorded() -> dict[str, str]:
    """{stage id: level} as remembered in .workbook/state.json (stages never reset are absent)."""
    return {k: v for k, v in hints._load_state().get("levels", {}).items() if v in stubs.LEVELS}


@dataclass
class _Plan:
    rel: str  # exercise file, relative to the repository root
    new: str  # the text it gets
    old: bytes | None  # what it holds now (None: missing)
    pristine: bool  # `old` is an untouched stub of some level: nothing of the learner's to keep
    backup: Path | None = None


def _plan(stage: stages.Stage, level: str) -> list[_Plan]:
    plans = []
    for rel in stage.files():
        path = REPO / rel
        old = path.read_bytes() if path.exists() else None
        try:
            new = stubs.text(rel, level)
            pristine = stubs.is_pristine(rel, old)
        except OSError as e:
            raise ResetRefused(f"找不到 {rel} 的模板 (template)：{e}。什么都没有改动。") from None
        plans.append(_Plan(rel, new, old, pristine))
    return plans


def _backup_root() -> Path:
    """A new, empty .workbook/backups/<timestamp>[-N] folder."""
    base = hints.STATE_FILE.parent / "backups"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise ResetRefused(f"{base} 里建不了新的备份目录，什么都没有改动。")


def _back_up(plans: list[_Plan]) -> None:
    """Copy every file that holds the learner's work into one backup folder, and verify it."""
    todo = [p for p in plans if not p.pristine and p.old != p.new.encode("utf-8")]
    if not todo:
        return
    try:
        root = _backup_root()
        for p in todo:
            dest = root / p.rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / p.rel, dest)
            if dest.read_bytes() != p.old:
                raise OSError(f"{dest} 和原文件不一样")
            p.backup = dest
    except OSError as e:
        raise ResetRefused(f"备份 (backup) 失败：{e}。什么都没有改动。") from None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.reset-tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _shown(path: Path) -> str:
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def reset(target: str, level: str | None = None) -> str:
    """Switch the exercise files of `target` ("01" or "all") to `level`; returns the report.

    level None: each stage's remembered level (guided when none).
    """
    chosen = targets(target)
    if level is not None:
        level = parse_level(level)
    levels = {s.id: parse_level(level, s.id) for s in chosen}
    plans = {s.id: _plan(s, levels[s.id]) for s in chosen}
    _back_up([p for ps in plans.values() for p in ps])

    lines = []
    for stage in chosen:
        name = NAMES[levels[stage.id]]
        for p in plans[stage.id]:
            if p.old == p.new.encode("utf-8"):
                lines.append(f"{p.rel}：已经是{name} 占位 (stub)，没有改动")
                continue
            _write(REPO / p.rel, p.new)
            if p.backup is not None:
                lines.append(f"{p.rel}：已换成{name} 占位 (stub)；你原来的文件备份 (backup) 在 "
                             f"{_shown(p.backup)}")
            elif p.old is None:
                lines.append(f"{p.rel}：原来没有这个文件，已写入{name} 占位 (stub)")
            else:
                lines.append(f"{p.rel}：已换成{name} 占位 (stub)（原来是没改过的占位，不用备份）")

    state = hints._load_state()
    state.setdefault("levels", {}).update(levels)
    hints._save_state(state)
    by_level: dict[str, list[str]] = {}
    for sid, lv in levels.items():
        by_level.setdefault(lv, []).append(sid)
    for lv, ids in by_level.items():
        which = ids[0] if len(ids) == 1 else "ID"
        more = (f"卡住时，python -m workbook hint {which} 的最后一级是逐步提示 (walkthrough)。"
                if lv == "challenge" else "")
        lines.append(f"{'、'.join(ids)} 现在是{NAMES[lv]}。{more}")
    return "\n".join(lines)
