"""The mode switch: which file each exercise module is loaded from.

`WORKBOOK_IMPL` (read once, when `workbook` is first imported; when it is not set, the choice
saved in this checkout by ``python -m workbook use MODE``, in ``.workbook/mode``):

- unset or ``learner``: every exercise module is the learner's own file under ``workbook/``.
- ``solutions``: every exercise module is loaded from ``solutions/`` instead.
- ``solutions:01,02,05-08``: only the listed stages come from ``solutions/``.

The swap happens in an import hook, under the *same* module name: ``workbook.model.attention``
is either ``workbook/model/attention.py`` or ``solutions/model/attention.py``.  So a learner's
``block.py`` that does ``from workbook.model.attention import Attention`` gets the reference
Attention exactly when stage 03 is in the list.

A second, private namespace, ``_workbook_reference``, always maps to the reference.  The checks
import the reference from there to compare it with the learner's code.  Reference files import
each other with relative imports (``from .rope import ...``), so inside ``_workbook_reference``
they form a closed, all-reference world.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

from . import stages

ENV_VAR = "WORKBOOK_IMPL"
REFERENCE_ENV = "WORKBOOK_REFERENCE"  # where the reference lives, when not in ./solutions
PACKAGE_DIR = Path(__file__).resolve().parent
# A classroom release has no solutions/; the teacher's grading job points here instead.
SOLUTIONS_DIR = Path(os.environ.get(REFERENCE_ENV) or PACKAGE_DIR.parent / "solutions").resolve()
REF_PACKAGE = "_workbook_reference"


class ReferenceMissing(RuntimeError):
    """The reference implementation is not available (a classroom release without solutions/)."""


def reference_available() -> bool:
    return all((SOLUTIONS_DIR / (m.replace(".", "/") + ".py")).is_file() for m in stages.MODULE_STAGE)


def missing_reference_message() -> str:
    return (f"找不到参考实现 (reference)：{SOLUTIONS_DIR} 不存在或不完整。这像是一份课堂发布版 "
            f"(classroom release)，里面没有 solutions/；检查要拿它来比较你的代码。老师的评分任务用 "
            f"--reference PATH 或环境变量 {REFERENCE_ENV}=PATH 指向参考实现的 solutions/ 目录。")


class ModeError(ValueError):
    """A malformed WORKBOOK_IMPL value."""


def parse_mode(value: str | None) -> frozenset[str]:
    """Return the set of stage ids that use the reference implementation.

    >>> sorted(parse_mode("solutions:01,05-07"))
    ['01', '05', '06', '07']
    """
    text = (value or "").strip()
    if text in ("", "learner"):
        return frozenset()
    if text == "solutions":
        return frozenset(stages.BY_ID)
    if not text.startswith("solutions:"):
        raise ModeError(
            f"{ENV_VAR}={value!r} 无法识别。可选：learner、solutions、solutions:01,02,05-08"
        )
    chosen: set[str] = set()
    for part in text[len("solutions:"):].split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            ids = [stages.get(lo).id] if not hi else [
                s.id for s in stages.STAGES if stages.get(lo).id <= s.id <= stages.get(hi).id
            ]
        except stages.UnknownStage as e:
            raise ModeError(f"{ENV_VAR}={value!r}：{e}") from None
        if hi and not ids:
            raise ModeError(f"{ENV_VAR}={value!r}：范围 '{part}' 是空的（起点要小于终点）")
        chosen.update(ids)
    if not chosen:
        raise ModeError(f"{ENV_VAR}={value!r}：冒号后面没有阶段编号，例如 solutions:01-03")
    return frozenset(chosen)


def _ranges(ids: frozenset[str]) -> str:
    """'00,01,02,05' -> '00-02,05' (runs of consecutive stages in registry order)."""
    order = [s.id for s in stages.STAGES]
    runs: list[list[str]] = []
    for sid in order:
        if sid in ids:
            if runs and order.index(runs[-1][-1]) == order.index(sid) - 1:
                runs[-1].append(sid)
            else:
                runs.append([sid])
    return ",".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def format_mode(reference: frozenset[str]) -> str:
    """The WORKBOOK_IMPL value that selects exactly `reference` (inverse of parse_mode)."""
    if not reference:
        return "learner"
    if reference == frozenset(stages.BY_ID):
        return "solutions"
    return "solutions:" + _ranges(reference)


def friendly_mode_errors() -> None:
    """Make an uncaught ModeError print one line, not a traceback (command-line tools).

    `import workbook` reads WORKBOOK_IMPL; a typo there would otherwise end every command
    (``python -m workbook …``, the trainers) in a stack trace through the import system.
    """
    previous = sys.excepthook

    def hook(etype, value, tb):
        if issubclass(etype, ModeError):
            print(f"错误：{value}", file=sys.stderr)
        else:
            previous(etype, value, tb)

    sys.excepthook = hook


def describe(reference: frozenset[str]) -> str:
    """One line for humans: which mode is active."""
    if not reference:
        return "learner（全部用你自己的代码）"
    if reference == frozenset(stages.BY_ID):
        return "solutions（全部用参考实现）"
    return "solutions:" + _ranges(reference) + "（这些阶段用参考实现，其余用你的代码）"


def _file_spec(fullname: str, path: Path) -> importlib.machinery.ModuleSpec | None:
    if not path.is_file():
        return None
    return importlib.util.spec_from_file_location(fullname, path)


class _BlankPackage(importlib.abc.Loader):
    """Loader for the packages of the reference namespace: empty modules with a __path__."""

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "Reference namespace package (see workbook._modes)."


class ReferenceFinder(importlib.abc.MetaPathFinder):
    """Serves a namespace ``name`` (``name.model.norm`` …) that maps to the reference in `root`.

    Exercise modules come from `root`; the packages are blank; provided (non-exercise) modules the
    reference imports relatively are the workbook's own files, re-executed inside the namespace.
    `root` is read at find time when None (the module-level SOLUTIONS_DIR, which a classroom
    release's --reference may change)."""

    def __init__(self, name: str, root: Path | None = None):
        self.name = name
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name and not fullname.startswith(self.name + "."):
            return None
        rel = fullname[len(self.name) + 1:]
        rel_path = rel.replace(".", "/")
        if rel in stages.MODULE_STAGE:
            return _file_spec(fullname, (self.root or SOLUTIONS_DIR) / (rel_path + ".py"))
        if rel == "" or (PACKAGE_DIR / rel_path).is_dir():
            spec = importlib.machinery.ModuleSpec(fullname, _BlankPackage(), is_package=True)
            spec.submodule_search_locations = []
            return spec
        # provided (non-exercise) module used by the reference: the workbook's own file
        return _file_spec(fullname, PACKAGE_DIR / (rel_path + ".py"))


class ImplFinder(importlib.abc.MetaPathFinder):
    """Resolves exercise modules to the learner's file or the reference file."""

    def __init__(self, reference: frozenset[str]):
        self.reference = reference
        self._private = ReferenceFinder(REF_PACKAGE)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("workbook."):
            rel = fullname[len("workbook."):]
            stage_id = stages.MODULE_STAGE.get(rel)
            if stage_id is not None and stage_id in self.reference:
                return _file_spec(fullname, SOLUTIONS_DIR / (rel.replace(".", "/") + ".py"))
            return None  # the normal path finder loads the learner's file
        return self._private.find_spec(fullname, path, target)


_finder: ImplFinder | None = None


# The checkout's saved choice (``python -m workbook use``); .workbook/ is git-ignored.
MODE_FILE = PACKAGE_DIR.parent / ".workbook" / "mode"


def mode_setting() -> tuple[str | None, str]:
    """The mode value in force and where it comes from: ``WORKBOOK_IMPL`` when it is set;
    else the choice saved in this checkout (MODE_FILE, written by ``python -m workbook use``);
    else (None, "default"), i.e. learner."""
    if ENV_VAR in os.environ:
        return os.environ[ENV_VAR], ENV_VAR
    try:
        return MODE_FILE.read_text(encoding="utf-8").strip(), str(MODE_FILE)
    except OSError:
        return None, "default"


def install() -> ImplFinder:
    """Put the finder first on sys.meta_path (idempotent). Reads the mode (mode_setting)."""
    global _finder
    if _finder is None:
        value, source = mode_setting()
        try:
            reference = parse_mode(value)
        except ModeError:
            if source == ENV_VAR:
                raise
            # a hand-edited file must not lock `python -m workbook use` (which fixes it) out
            print(f"警告：{source} 里保存的模式 {value!r} 无法识别，这次按 learner 运行；"
                  f"用 python -m workbook use learner|solutions|solutions:00-13 重新选。", file=sys.stderr)
            reference = frozenset()
        _finder = ImplFinder(reference)
        sys.meta_path.insert(0, _finder)
    return _finder


def reference_stages() -> frozenset[str]:
    """Stage ids that currently resolve to the reference."""
    return install().reference


def uses_reference(stage_id: str) -> bool:
    return stages.get(stage_id).id in reference_stages()


def impl_module(rel: str) -> types.ModuleType:
    """The module the workbook runs for `rel` (e.g. "model.norm") in the current mode."""
    install()
    return importlib.import_module(f"workbook.{rel}")


# Set by the sealed judge (workbook.sealed.judge): there the reference lives under a private name
# that is not in sys.modules, and this function is how the checks reach it.
_sealed_lookup = None


def reference_module(rel: str) -> types.ModuleType:
    """The reference implementation of `rel`, whatever the mode."""
    if _sealed_lookup is not None:
        return _sealed_lookup(rel)
    install()
    return importlib.import_module(f"{REF_PACKAGE}.{rel}")


def reload_exercises() -> None:
    """Re-execute every loaded exercise module, in stage order.

    A learner edits ``norm.py`` and re-runs the check cell in the same kernel: without this the
    check would test the code as it was when first imported.  Stage order makes a reloaded
    ``block.py`` pick up the freshly reloaded ``attention.py``.
    """
    importlib.invalidate_caches()
    for stage in stages.STAGES:
        for rel in stage.modules:
            mod = sys.modules.get(f"workbook.{rel}")
            if mod is not None:
                importlib.reload(mod)
