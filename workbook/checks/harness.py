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
import os
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from .. import _modes, stages

PASS, FAIL, TODO, BLOCKED, REFERENCE, SOON = "pass", "fail", "todo", "blocked", "reference", "soon"
TAMPERED = "tampered"  # the learner's file borrows the reference (see checks.tamper)
NO_REFERENCE = "no_reference"  # nothing to compare with (a classroom release without solutions/)
STATUSES = (PASS, FAIL, TODO, BLOCKED, REFERENCE, SOON, TAMPERED, NO_REFERENCE)


class CheckFailed(AssertionError):
    """A check found a mistake; ``str(e)`` is the diagnostic for the learner."""


@dataclass
class Result:
    stage: stages.Stage
    status: str  # one of PASS, FAIL, TODO, BLOCKED, REFERENCE, SOON
    message: str
    seconds: float = 0.0  # wall time of the check itself (0 when it did not run)

    @property
    def passed(self) -> bool:
        """Good enough to build on: the learner's code passed, or the stage is served by the
        reference (so later stages may go on).  Not the same as *done*, see `done`."""
        return self.status in (PASS, REFERENCE)

    @property
    def done(self) -> bool:
        """The learner's own code passed: what progress counts and export requires."""
        return self.status == PASS

    def to_dict(self) -> dict:
        return {"stage": self.stage.id, "status": self.status, "message": self.message,
                "seconds": round(self.seconds, 2)}

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        return cls(stages.get(d["stage"]), d["status"], d["message"], float(d.get("seconds", 0.0)))

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
    text = short_text(str(exc)) or "这个函数还是占位 (stub)"
    return f"还没写 (not written yet)：{text}"


def blocked_by(stage: stages.Stage, results: dict[str, Result]) -> Result | None:
    """A BLOCKED result if a prerequisite in `results` did not pass (it names the first one)."""
    for pid in stage.requires:
        pres = results.get(pid)
        if pres is not None and not pres.passed and pres.status != SOON:
            p = stages.get(pid)
            return Result(stage, BLOCKED,
                          f"先通过 {p.id} {p.slug}（{p.title}）：这一阶段要用到它。"
                          f"运行 python -m workbook check {p.id} 看看哪里不对。")
    return None


def run_one(stage: stages.Stage, impl: types.ModuleType | None = None, *,
            reload: bool = True) -> Result:
    """Run `stage`'s own check (no prerequisites); every outcome becomes a Result.

    impl None: the exercise module in the current mode (the reference when the mode serves this
    stage from it: then the status is REFERENCE, never PASS).  A pass is only ever returned
    after the check function itself returned; an exception, SystemExit included, is a failure.
    """
    mod = check_module(stage)
    if mod is None:
        return Result(stage, SOON, "这一阶段还在编写中 (coming soon)。")
    if not _modes.reference_available():
        return Result(stage, NO_REFERENCE, _modes.missing_reference_message())
    on_reference = impl is None and _runs_reference(stage)
    if impl is None and not on_reference:
        from . import tamper

        findings = tamper.scan([_modes.PACKAGE_DIR.parent / f for f in stage.files()],
                               _modes.PACKAGE_DIR.parent)
        if findings:
            return Result(stage, TAMPERED, tamper.message(findings))
    mode_before = (os.environ.get(_modes.ENV_VAR), _modes.reference_stages())
    start = time.perf_counter()

    def result(status: str, message: str) -> Result:
        if (os.environ.get(_modes.ENV_VAR), _modes.reference_stages()) != mode_before:
            return Result(stage, TAMPERED, "你的代码在运行时改了 WORKBOOK_IMPL 或模式开关 (tamper evidence)："
                                           "这一阶段不算通过。练习里的代码不要碰这些。",
                          time.perf_counter() - start)
        return Result(stage, status, message, time.perf_counter() - start)

    def call():
        nonlocal impl
        if impl is None:
            if reload:
                _modes.reload_exercises()
            impl = _load_impl(stage)
        return mod.check(impl, _load_reference(stage))

    status, message = outcome(call)
    if status != PASS:
        return result(status, message)
    summary = message
    if on_reference:
        return result(REFERENCE, summary + "（当前模式用的是参考实现）")
    return result(PASS, summary)


EXCEPTION_LINES = 6  # a learner's exception text is cut to its last lines ...
EXCEPTION_CHARS = 600  # ... and characters: it may hold anything, even a whole file


def short_text(text: str, lines: int = EXCEPTION_LINES, chars: int = EXCEPTION_CHARS) -> str:
    """The last `lines` lines of `text`, at most `chars` characters (marked where cut)."""
    kept = text.rstrip().splitlines()
    cut = len(kept) > lines
    kept = kept[-lines:]
    out = "\n".join(kept)
    if len(out) > chars:
        out, cut = out[-chars:], True
    return ("…" + out) if cut else out


def outcome(call) -> tuple[str, str]:
    """Run `call()` (which imports the learner's code and runs a check) and turn every ending into
    (status, message): PASS with the check's summary only when `call` returned."""
    try:
        summary = call()
    except NotImplementedError as e:
        return TODO, _todo_message(e)
    except CheckFailed as e:
        return FAIL, str(e)
    except SyntaxError as e:
        return FAIL, f"文件有语法错误 (SyntaxError)：{e.filename} 第 {e.lineno} 行：{short_text(str(e.msg))}"
    except SystemExit as e:  # sys.exit() in learner code must not end the check as a success
        where = _where(e)
        return FAIL, (f"你的代码在检查中调用了 sys.exit({short_text(repr(e.code), 1, 80)})：练习里的代码不能退出进程，"
                      f"出错时请抛出异常 (raise)。" + (f"\n位置：{where}" if where else ""))
    except Exception as e:  # the learner's code crashed inside the check
        where = _where(e)
        msg = f"你的代码在检查中抛出了异常 {type(e).__name__}: {short_text(str(e))}"
        if where:
            msg += f"\n出错位置：{where}"
        return FAIL, msg
    return PASS, summary or "全部检查通过。"


def _runs_reference(stage: stages.Stage) -> bool:
    """Does this stage's check run reference code in the current mode?  A stage with files: when
    it is served from the reference.  A stage without (13 runs the whole package): when any
    stage it builds on is, since then the package it trains is not all the learner's."""
    if stage.modules:
        return _modes.uses_reference(stage.id)
    seen, todo = set(), list(stage.requires)
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        dep = stages.get(sid)
        if dep.modules and _modes.uses_reference(sid):
            return True
        todo.extend(dep.requires)
    return False


def run_check(stage_id: str, impl: types.ModuleType | None = None, *,
              prereqs: bool = True, _memo: dict | None = None) -> Result:
    """Run one stage's check *in this process* and return a Result.

    Used by the tests (mutants are passed as `impl`) and inside the check runner's child
    process; learners' commands go through ``workbook.checks.runner``, which adds the time
    limit and survives ``os._exit`` in learner code.
    prereqs: first require the checks of the stages this one builds on.
    _memo: results already known (progress); a stage served by the reference then counts as
    passed without running.  Asked for directly, its check really runs (reference vs reference).
    """
    stage = stages.get(stage_id)
    memo = {} if _memo is None else _memo
    if check_module(stage) is None:
        return Result(stage, SOON, "这一阶段还在编写中 (coming soon)。")
    if prereqs:
        for pid in stage.requires:
            if pid not in memo:
                memo[pid] = run_check(pid, prereqs=True, _memo=memo)
        blocked = blocked_by(stage, memo)
        if blocked is not None:
            return blocked
    if impl is None and _memo is not None and stage.modules and _modes.uses_reference(stage.id):
        return Result(stage, REFERENCE, "当前模式使用参考实现 (reference)。")
    return run_one(stage, impl, reload=_memo is None)


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
