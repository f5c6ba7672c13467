"""What the notebooks call: ``check``, ``hint``, ``needs``, ``progress``, ``mode``."""
from __future__ import annotations

from contextlib import contextmanager

from . import _modes, stages


class CheckNotPassed(Exception):
    """Raised by the notebook's check cell so that the cell (and nbval) shows a failure."""


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    """IPython handler for CheckNotPassed: the diagnostic is already printed; skip the stack."""
    stb = [f"{etype.__name__}:\n{value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def _install_ipython_handler() -> None:
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.set_custom_exc((CheckNotPassed,), _short_traceback)


def check(stage_id: str | int) -> None:
    """Run a stage's check, print the result, and raise CheckNotPassed if it failed.

    Same check, same message, same time limit as ``python -m workbook check ID``: the check
    runs in a child process in the mode this kernel started with, on the files as saved now.
    The exception's text is the whole diagnostic, so nbval's report and JUnit XML carry it.
    """
    from .checks.runner import CheckInterrupted, run_stages

    _install_ipython_handler()
    stage = stages.get(stage_id)
    try:
        result = run_stages([stage.id], echo=True)[stage.id]
    except CheckInterrupted:
        raise CheckNotPassed(f"{stage.id} 的检查被中断了 (KeyboardInterrupt)，没有跑完。") from None
    if not result.passed:
        raise CheckNotPassed(result.report()) from None
    print(result.report())


def hint(stage_id: str | int, level: int | None = None) -> None:
    """Print the next hint of a stage (or hint `level`)."""
    from .hints import show

    print(show(str(stage_id), level))


def progress() -> None:
    """Print every stage's status and the next step (same as ``python -m workbook progress``)."""
    from .progress import results, table

    print(table(results(use_cache=True)))


def mode() -> str:
    """Describe the active WORKBOOK_IMPL mode."""
    return _modes.describe(_modes.reference_stages())


@contextmanager
def needs(stage_id: str | int):
    """For experiment cells that run the learner's code before it is written.

    Inside the block, a stub's NotImplementedError is turned into a short note instead of an
    error, so the notebook still runs top to bottom.  Any other exception goes through.
    """
    stage = stages.get(stage_id)
    try:
        yield
    except NotImplementedError as e:
        # name the stub that was actually hit (it may be an earlier stage than `stage`)
        print(f"⏳ 这个实验要用到第 {stage.id} 阶段（及之前）的代码，还有没写完的部分：\n   {e}\n"
              f"   写完后重新运行这个单元格。")
