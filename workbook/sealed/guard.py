"""Tamper evidence inside the sealed judge: an audit hook (PEP 578) and an integrity snapshot.

The judge (``workbook.sealed.judge``) arms a :class:`Guard` before the learner's code is imported.
From then on, for the rest of the process (an audit hook cannot be removed), whenever code in a
learner file tries one of these, the action is refused (an exception in the learner's code) and
recorded with the learner's file and line:

- opening, listing or hard-linking a file of the reference or of the judge (its checks, registry,
  mode switch), by any route: ``open``, ``runpy``, ``io.open_code``, a symlink, ``/proc/self/fd``;
- compiling or executing source text (``exec``, ``eval``, ``compile``) called from a learner file;
- importing the reference or the judge by module name (a fresh import);
- frame, trace and gc introspection (``sys._getframe``, ``inspect.currentframe``, a traceback's
  ``tb_frame``, ``sys.settrace``, ``gc.get_objects``/``get_referrers``), ``ctypes``, a new audit
  hook, and starting processes.

"Code in a learner file" is judged from the call stack: for file and import access, any learner
frame on the stack counts (so ``runpy`` or ``importlib`` called by the learner do too); for the
rest, the nearest frame outside the standard library (so ``logging``, ``dataclasses`` and torch's
own use of these are left alone).  The integrity snapshot catches what no audit event reports:
rebinding a function of the judge, torch or builtins (``torch.allclose = …``) or a finder slipped
into ``sys.meta_path``.

This is tamper evidence for a course, not a security sandbox: code running in the same process
can always do more than a hook sees (a container is the tool for that).
"""
from __future__ import annotations

import os
import sys
import sysconfig
import threading
import types
from dataclasses import dataclass
from pathlib import Path

_STDLIB = tuple(p for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_SITE = tuple(p for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
# stdlib helpers that hand frames back to their caller: their caller is who asks
_FRAME_HELPERS = ("inspect.py", "traceback.py")
_FRAME_ATTRS = ("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back")
_CODE_ATTRS = ("__code__", "__defaults__", "__kwdefaults__")
_PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "pty.spawn", "os.startfile")
_INTROSPECTION = ("sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace",
                  "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents")


SENTINEL_EVENT = "workbook.sealed.import"


class ImportSentinel:
    """First on ``sys.meta_path``: ``importlib.import_module`` raises no "import" audit event, so a
    forbidden name is announced here as an event of our own, which the hook judges by the stack.
    It holds no reference to the guard (learner code can reach ``sys.meta_path``)."""

    def __init__(self, forbidden: tuple[str, ...]):
        self.forbidden = forbidden

    def find_spec(self, fullname, path=None, target=None):
        if forbidden_name(fullname, self.forbidden):
            sys.audit(SENTINEL_EVENT, fullname)
        return None


class Refused(RuntimeError):
    """Raised in the learner's code when the guard refuses an action (a RuntimeError, so that a
    refused ``sys.addaudithook`` is dropped by the interpreter as PEP 578 specifies)."""


@dataclass(frozen=True)
class Refusal:
    action: str  # Chinese, what was tried
    where: str  # "workbook/model/norm.py 第 12 行：<the line>"


def forbidden_name(name: str, forbidden: tuple[str, ...]) -> bool:
    """`name` is one of `forbidden` or inside it; an entry ending in "_" is a plain prefix."""
    return any(name.startswith(m) if m.endswith("_") else (name == m or name.startswith(m + "."))
               for m in forbidden)


def _in(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _is_stdlib(filename: str) -> bool:
    if filename.startswith("<frozen "):
        return True
    return _in(filename, _STDLIB) and not _in(filename, _SITE)


class Guard:
    """The audit hook.  Keep the only reference in the judge's local variables: nothing that
    learner code can reach by name may hold it."""

    def __init__(self, *, learner_files, protected, served_files, tree: Path, forbidden_modules):
        self.learner = {str(f) for f in learner_files} | {os.path.realpath(f) for f in learner_files}
        self.protected = tuple(os.path.realpath(p) for p in protected)
        self.served = {os.path.realpath(f) for f in served_files}
        self.tree = os.path.realpath(tree)
        self.forbidden = tuple(forbidden_modules)
        self.refusals: list[Refusal] = []
        self._local = threading.local()

    def install(self) -> None:
        sys.addaudithook(self._hook)
        sys.meta_path.insert(0, ImportSentinel(self.forbidden))

    # --- the stack ---------------------------------------------------------------------------

    def _learner_frame(self, frame, *, nearest: bool):
        """The learner frame that is behind this action, or None.  nearest: only the nearest
        frame outside the standard library counts (and outside inspect/traceback); otherwise
        any learner frame on the stack."""
        while frame is not None:
            name = frame.f_code.co_filename
            if name in self.learner:
                return frame
            if nearest and not _is_stdlib(name):
                return None
            frame = frame.f_back
        return None

    def _where(self, frame) -> str:
        import linecache

        name = frame.f_code.co_filename
        rel = os.path.relpath(name, self.tree) if name.startswith(self.tree) else os.path.basename(name)
        line = linecache.getline(name, frame.f_lineno).strip()
        return f"{rel} 第 {frame.f_lineno} 行" + (f"：{line[:160]}" if line else "")

    def _refuse(self, frame, action: str):
        self.refusals.append(Refusal(action, self._where(frame)))
        raise Refused(f"评分时不允许：{action} (tamper evidence)")

    # --- the hook ----------------------------------------------------------------------------

    def _path_closed(self, path) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        return real if _in(real, self.protected) else None

    def _hook(self, event: str, args: tuple) -> None:
        local = self._local
        if getattr(local, "busy", False):
            return
        if not (event in ("open", "import", "compile", "exec", "os.listdir", "os.scandir", "os.link", SENTINEL_EVENT,
                          "object.__getattr__", "object.__setattr__", "sys.addaudithook")
                or event.startswith(("sys.", "gc.", "os.", "subprocess.", "ctypes.", "pty."))):
            return
        local.busy = True
        try:
            self._judge(event, args, sys._getframe(1))
        finally:
            local.busy = False

    def _judge(self, event: str, args: tuple, caller) -> None:
        if event in ("open", "os.listdir", "os.scandir", "os.link"):
            real = self._path_closed(args[0] if args else None)
            if real is None:
                return
            learner = self._learner_frame(caller, nearest=False)
            if learner is None:
                return
            if event == "open" and real in self.served and caller.f_code.co_filename.startswith("<frozen importlib"):
                return  # importing a prerequisite the reference serves: allowed, it is theirs to use
            self._refuse(learner, f"读取评分器或参考实现的文件 {os.path.basename(real)} ({event})")
        elif event == "import" or event == SENTINEL_EVENT:
            name = str(args[0])
            if forbidden_name(name, self.forbidden):
                learner = self._learner_frame(caller, nearest=False)
                if learner is not None:
                    self._refuse(learner, f"导入评分器或参考实现 {name} (import)")
            elif name in ("ctypes", "_ctypes"):
                learner = self._learner_frame(caller, nearest=True)
                if learner is not None:
                    self._refuse(learner, "导入 ctypes")
        elif event in ("compile", "exec"):
            if caller.f_code.co_filename in self.learner:
                self._refuse(caller, f"在练习代码里执行字符串代码 ({'exec/eval' if event == 'exec' else 'compile'})")
        elif event == "object.__getattr__" or event == "object.__setattr__":
            name = args[1] if len(args) > 1 else ""
            if name in _FRAME_ATTRS or (event == "object.__setattr__" and name in _CODE_ATTRS):
                learner = self._nearest_asker(caller)
                if learner is not None:
                    verb = "改写函数的代码" if event == "object.__setattr__" else "读取调用栈帧"
                    self._refuse(learner, f"{verb} ({name})")
        elif event in _INTROSPECTION:
            learner = self._nearest_asker(caller)
            if learner is not None:
                self._refuse(learner, f"检查调用栈或对象图 ({event})")
        elif event == "sys.addaudithook":
            learner = self._learner_frame(caller, nearest=True)
            if learner is not None:
                self._refuse(learner, "另装一个审计钩子 (sys.addaudithook)")
        elif event.startswith(_PROCESS_EVENTS):
            learner = self._learner_frame(caller, nearest=True)
            if learner is not None:
                self._refuse(learner, f"启动进程 ({event})")
        elif event.startswith("ctypes."):
            learner = self._learner_frame(caller, nearest=True)
            if learner is not None:
                self._refuse(learner, f"用 ctypes 直接读写内存 ({event})")

    def _nearest_asker(self, frame):
        """For frame-returning calls: skip inspect/traceback, then the nearest frame decides."""
        while frame is not None and frame.f_code.co_filename.endswith(_FRAME_HELPERS) \
                and _is_stdlib(frame.f_code.co_filename):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename in self.learner:
            return frame
        return None


# --- the integrity snapshot -------------------------------------------------------------------

_CALLABLE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, types.ModuleType,
             types.MethodDescriptorType, types.WrapperDescriptorType, classmethod, staticmethod, property)


def _watched_classes(modules: dict[str, types.ModuleType]) -> list[type]:
    import torch

    classes = [torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.nn.Parameter]
    for name, mod in modules.items():
        if name == "workbook" or name.startswith("workbook."):
            classes += [v for v in vars(mod).values() if isinstance(v, type) and v.__module__ == name]
    return classes


# Modules whose functions and classes the judge relies on (besides its own ``workbook.*``): a
# rebinding here is tampering.  Other libraries may rebind their own attributes lazily (tokenizers
# does), so they are not watched.
WATCHED = ("builtins", "torch", "torch.nn", "torch.nn.functional", "torch.nn.modules.module", "torch.testing",
           "torch.linalg", "torch.autograd", "torch.nn.init", "torch.random", "math", "numpy", "operator",
           "functools", "copy", "json", "json.encoder", "os", "os.path", "importlib", "importlib.util", "types",
           "inspect", "pathlib", "tempfile", "contextlib", "traceback", "linecache", "io", "time", "re")


def _judge_module(name: str) -> bool:
    return name == "workbook" or name.startswith("workbook.")


def snapshot() -> dict:
    """What must not change while learner code runs: the values of the judge's own ``workbook.*``
    modules, the functions and classes of the modules in WATCHED, the judge's and torch's core
    class dictionaries, ``sys.modules`` entries of those, ``sys.meta_path`` and ``sys.path_hooks``."""
    modules = {n: m for n, m in list(sys.modules.items())
               if isinstance(m, types.ModuleType) and (_judge_module(n) or n in WATCHED)}
    entries = {}
    for name, mod in modules.items():
        everything = _judge_module(name)
        entries[("module", name)] = (mod, {k: v for k, v in list(vars(mod).items())
                                           if everything or isinstance(v, _CALLABLE)})
    for cls in _watched_classes(modules):
        entries[("class", f"{cls.__module__}.{cls.__qualname__}")] = (cls, dict(vars(cls)))
    return {"entries": entries, "meta_path": list(sys.meta_path), "path_hooks": list(sys.path_hooks),
            "modules": modules}


_GONE = object()


def _from_learner(obj, learner: set[str]) -> bool:
    """Was `obj` (a finder, a hook) made by learner code?  Its class's or its own functions tell."""
    kind = obj if isinstance(obj, type) else type(obj)
    functions = [obj] if isinstance(obj, types.FunctionType) else \
        [v for v in vars(kind).values() if isinstance(v, types.FunctionType)]
    return any(f.__code__.co_filename in learner for f in functions)


def _rewrapped(old, new, learner: set[str]) -> bool:
    """`new` wraps `old` (functools.wraps' ``__wrapped__`` chain), and no wrapper is learner code:
    how torch patches its own functions (dynamo wraps ``torch.manual_seed``, an LR scheduler an
    optimizer's ``step``).  Such a wrapper still calls the original, so nothing is hidden."""
    for _ in range(8):
        code = getattr(new, "__code__", None)
        if code is not None and code.co_filename in learner:
            return False
        new = getattr(new, "__wrapped__", None)
        if new is None:
            return False
        if new is old:
            return True
    return False


def changes(before: dict, learner: set[str], limit: int = 8, *, _vars=vars, _list=list, _len=len, _sys=sys,
            _gone=_GONE) -> list[str]:
    """What learner code changed of the snapshot, as short descriptions (empty: nothing).  The
    builtins it needs are bound at definition, before any learner code could rebind them."""
    found: list[str] = []
    for name in ("meta_path", "path_hooks"):
        now, then = _list(getattr(_sys, name)), before[name]
        if any(x not in now for x in then) or any(_from_learner(x, learner) for x in now if x not in then):
            found.append(f"sys.{name}（导入系统）")
    for name, mod in before["modules"].items():
        if _sys.modules.get(name, mod) is not mod:
            found.append(f"sys.modules['{name}']")
    for (kind, name), (obj, values) in before["entries"].items():
        now = _vars(obj)
        for key, value in values.items():
            current = now.get(key, _gone)
            if current is not value and not _rewrapped(value, current, learner):
                found.append(f"{name}.{key}")
                if _len(found) >= limit:
                    return found
    return found
