"""Runs a stage's check and turns every outcome into one short, human message.

A stage's check lives in ``workbook/checks/stage{id}.py`` and defines::

    def check(impl, ref) -> str | None

``impl`` is the module under test (the learner's, or whatever the mode resolves to; the tests
pass mutants here), ``ref`` the reference module.  The check raises :class:`CheckFailed` with a
diagnostic in Chinese (what was expected, what was seen, the likely cause) or returns an
optional one-line summary of what it verified.
"""
from __future__ import annotations

import importlib
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from .. import _modes, stages

PASS, FAIL, TODO, BLOCKED, REFERENCE, SOON = "pass", "fail", "todo", "blocked", "reference", "soon"


class CheckFailed(AssertionError):
    """A check found a mistake; ``str(e)`` is the diagnostic for the learner."""


@dataclass
class Result:
    stage: stages.Stage
    status: str  # one of PASS, FAIL, TODO, BLOCKED, REFERENCE, SOON
    message: str

    @property
    def passed(self) -> bool:
        return self.status in (PASS, REFERENCE)

    def report(self) -> str:
        """The text `python -m workbook check` prints and the notebook shows."""
        head = f"{'✓' if self.passed else '✗'} {self.stage.id} {self.stage.title}"
        if self.passed:
            return f"{head}\n  {self.message}" if self.message else head
        tail = f"\n  提示 (hint)：python -m workbook hint {self.stage.id}"
        if self.status == BLOCKED:
            tail = ""
        return f"{head}\n  " + self.message.replace("\n", "\n  ") + tail


def check_module(stage: stages.Stage) -> types.ModuleType | None:
    try:
        return importlib.import_module(f"workbook.checks.stage{stage.id}")
    except ModuleNotFoundError as e:
        if e.name == f"workbook.checks.stage{stage.id}":
            return None
        raise


def _where(exc: BaseException) -> str:
    """The deepest frame of the traceback that lies in an exercise file: 'norm.py line 31'."""
    exercise_files = {
        str((_modes.PACKAGE_DIR / f).resolve()) for s in stages.STAGES for f in
        (m.replace(".", "/") + ".py" for m in s.modules)
    } | {
        str((_modes.SOLUTIONS_DIR / f).resolve()) for s in stages.STAGES for f in
        (m.replace(".", "/") + ".py" for m in s.modules)
    }
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) in exercise_files:
            rel = Path(frame.filename).resolve().relative_to(_modes.PACKAGE_DIR.parent)
            where = f"{rel} 第 {frame.lineno} 行：{(frame.line or '').strip()}"
    return where


def _todo_message(exc: NotImplementedError) -> str:
    text = str(exc) or "这个函数还是占位 (stub)"
    return f"还没写 (not written yet)：{text}"


def run_check(stage_id: str, impl: types.ModuleType | None = None, *,
              prereqs: bool = True, _memo: dict | None = None) -> Result:
    """Run one stage's check and return a Result; never raises for a learner's mistake.

    impl: the module to test (default: the exercise module in the current mode, freshly
    reloaded so that edits made since the last import count).
    prereqs: first require the checks of the stages this one builds on.
    """
    stage = stages.get(stage_id)
    memo = {} if _memo is None else _memo
    mod = check_module(stage)
    if mod is None:
        return Result(stage, SOON, "这一阶段还在编写中 (coming soon)。")

    if prereqs:
        for pid in stage.requires:
            if pid in memo:
                pres = memo[pid]
            else:
                pres = memo[pid] = run_check(pid, prereqs=True, _memo=memo)
            if not pres.passed and pres.status != SOON:
                p = stages.get(pid)
                return Result(stage, BLOCKED,
                              f"先通过 {p.id} {p.slug}（{p.title}）：这一阶段要用到它。"
                              f"运行 python -m workbook check {p.id} 看看哪里不对。")

    # As a prerequisite (or in `progress`), a stage served by the reference counts as passed
    # without running; asked for directly, its check really runs (reference against reference).
    on_reference = impl is None and bool(stage.modules) and _modes.uses_reference(stage.id)
    if on_reference and _memo is not None:
        return Result(stage, REFERENCE, "当前模式使用参考实现 (reference)。")

    try:
        if impl is None:
            if _memo is None:
                _modes.reload_exercises()
            impl = _load_impl(stage)
        ref = _load_reference(stage)
        summary = mod.check(impl, ref)
    except NotImplementedError as e:
        return Result(stage, TODO, _todo_message(e))
    except CheckFailed as e:
        return Result(stage, FAIL, str(e))
    except SyntaxError as e:
        return Result(stage, FAIL, f"文件有语法错误 (SyntaxError)：{e.filename} 第 {e.lineno} 行：{e.msg}")
    except Exception as e:  # the learner's code crashed inside the check
        where = _where(e)
        msg = f"你的代码在检查中抛出了异常 {type(e).__name__}: {e}"
        if where:
            msg += f"\n出错位置：{where}"
        return Result(stage, FAIL, msg)
    if on_reference:
        return Result(stage, REFERENCE, (summary or "全部检查通过。") + "（当前模式用的是参考实现）")
    return Result(stage, PASS, summary or "全部检查通过。")


def _load_impl(stage: stages.Stage) -> types.ModuleType:
    if len(stage.modules) == 1:
        return _modes.impl_module(stage.modules[0])
    return _merged([_modes.impl_module(m) for m in stage.modules])


def _load_reference(stage: stages.Stage) -> types.ModuleType:
    if len(stage.modules) == 1:
        return _modes.reference_module(stage.modules[0])
    return _merged([_modes.reference_module(m) for m in stage.modules])


def _merged(mods: list[types.ModuleType]) -> types.ModuleType:
    ns = types.ModuleType("merged")
    for m in mods:
        ns.__dict__.update({k: v for k, v in vars(m).items() if not k.startswith("__")})
    return ns
