"""The child side of sealed grading: judge ONE stage of a grading tree, in a fresh interpreter.

Started by ``workbook.sealed.run`` as ``python -I -c BOOT TREE FD`` (isolated mode: no user site,
no ``PYTHON*`` variables, no current directory on the path; ``WORKBOOK_*`` removed from the
environment) with the job as JSON on stdin.  In order:

1. the mode switch is set from the job (prerequisites the learner did not write come from the
   reference), never from the environment or a file;
2. the reference is loaded under a random private package name, from the private copy, and that
   name is removed from ``sys.modules``: the modules live only in this module's local variables,
   and the checks reach them through ``_modes.reference_module``, which walks up the stack to
   them and refuses when learner code stands in between;
3. the guard (``workbook.sealed.guard``) is armed, the prerequisites the reference serves are
   imported, and the integrity snapshot is taken;
4. the learner's module is imported and the stage's check runs, every ending mapped to a status;
5. refusals and integrity changes turn the stage into "tampered"; the verdict goes to file
   descriptor FD as one line that starts with the job's nonce (learner code, which never sees the
   nonce, cannot forge it), written with functions captured before any learner code ran.
"""
from __future__ import annotations

import importlib
import os
import secrets
import sys
import time
from pathlib import Path

BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
        "from workbook.sealed.judge import main; main(sys.argv[2])")


PRIVATE = "_wbref_"  # every private reference namespace starts so: a name nobody is given


class _Nowhere:
    """A finder that finds nothing: the public reference namespace is closed while judging."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        return None


def _encode(nonce: str, status: str, seconds: float, message: str) -> bytes:
    # builtin types' own methods only: nothing learner code could have rebound
    return ("\n" + nonce + "\t" + status + "\t" + str(round(seconds, 2)) + "\t"
            + message.encode("utf-8", "replace").hex() + "\n").encode("ascii")


def main(fd_text: str, _write=os.write, _exit=os._exit, _time=time.perf_counter) -> None:
    job = __import__("json").loads(sys.stdin.read())
    fd = int(fd_text)
    start = _time()
    try:
        status, message = _judge(job)
    except BaseException as e:  # the judge itself broke (or was broken): never a pass
        status, message = "fail", f"评分器出错 (judge error)：{type(e).__name__}: {str(e)[-300:]}"
    _write(fd, _encode(job["nonce"], status, _time() - start, message))
    _exit(0)  # no atexit handler, no thread of the learner's, runs after the verdict


def _judge(job: dict) -> tuple[str, str]:
    tree = Path(job["tree"])
    course = os.path.realpath(job["course"])
    # the grading copy itself (an editable install puts it on sys.path) is not importable here
    sys.path[:] = [p for p in sys.path if not p or os.path.realpath(p) != course]
    from workbook import _modes, stages
    from workbook.checks import harness
    from workbook.sealed import guard as guard_mod

    private = Path(job["reference"])
    _modes.SOLUTIONS_DIR = private
    finder = _modes.install()
    finder.reference = frozenset(job["served"])
    finder._private = _Nowhere()
    stage = stages.get(job["stage"])

    # 2. the reference, under a name nobody is given: the stage's own modules and its prerequisites'
    #    now; anything else a check asks for later, the same way (_reference_lookup)
    from workbook.sealed.tree import prerequisites

    prefix = PRIVATE + secrets.token_hex(8)
    wanted = [m for sid in [*prerequisites(stage), stage.id] for m in stages.get(sid).modules]
    reference = _load_reference(prefix, private, wanted, _modes)
    check_mod = harness.check_module(stage)
    if check_mod is None:
        return harness.SOON, "这一阶段还在编写中 (coming soon)。"

    # 3. the guard, the served prerequisites, the snapshot
    learner_files = [tree / rel for rel in job["learner_files"]]
    served_files = [private / (rel.replace(".", "/") + ".py")
                    for sid in job["served"] for rel in stages.get(sid).modules]
    guard = guard_mod.Guard(learner_files=learner_files, protected=job["protected"], served_files=served_files,
                            tree=tree, forbidden_modules=("solutions", "_workbook_reference", PRIVATE,
                                                          "workbook.checks", "workbook.sealed",
                                                          "workbook._modes", "workbook.grade"))
    guard.install()
    _modes._sealed_lookup = _reference_lookup
    changes = guard_mod.changes
    before = guard_mod.snapshot()

    # 4. the learner's code, judged (a served prerequisite may import the learner's own modules)
    def call():
        for s in stages.STAGES:
            if s.id in job["served"]:
                for rel in s.modules:
                    importlib.import_module(f"workbook.{rel}")
        impl = harness._load_impl(stage)
        ref = reference[stage.modules[0]] if len(stage.modules) == 1 else \
            harness._merged([reference[m] for m in stage.modules])
        # a tensor subclass's __torch_function__ could answer every comparison "equal": while judging,
        # tensors are plain tensors (an nn.Parameter is one already)
        with torch._C.DisableTorchFunctionSubclass():
            return check_mod.check(impl, ref)

    import torch

    status, message = harness.outcome(call)

    # 5. what the learner's code tried, and what it changed
    if guard.refusals:
        lines = "".join(f"\n  {r.where}\n    → {r.action}" for r in guard.refusals[:6])
        more = f"\n  ……另有 {len(guard.refusals) - 6} 次" if len(guard.refusals) > 6 else ""
        return harness.TAMPERED, ("你的代码在评分时做了不允许的事 (tamper evidence)：这一阶段不算通过。"
                                  "练习代码只需要实现要求的函数，不要去读评分器或参考实现。" + lines + more)
    changed = changes(before, guard.learner)
    if changed:
        return harness.TAMPERED, ("你的代码在评分时改了评分器要用的对象 (tamper evidence)：这一阶段不算通过。改动的有："
                                  + "、".join(changed))
    return status, message


def _load_reference(prefix: str, private: Path, rels, _modes) -> dict:
    """Import reference modules `rels` as ``prefix.<rel>`` from `private`, then take every
    ``prefix`` module out of ``sys.modules`` again: the returned dict is the only way to them."""
    loader = _modes.ReferenceFinder(prefix, private)
    sys.meta_path.insert(0, loader)
    try:
        return {rel: importlib.import_module(f"{prefix}.{rel}") for rel in rels}
    finally:
        sys.meta_path.remove(loader)
        for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
            del sys.modules[name]


def _reference_lookup(rel: str):
    """How the checks reach the reference (``_modes.reference_module`` in a sealed judge): up the
    stack to ``_judge``'s local variables.  Learner code on the way there is refused."""
    frame = sys._getframe(1)
    seen = []
    while frame is not None and frame.f_code is not _judge.__code__:
        seen.append(frame)
        frame = frame.f_back
    if frame is None:
        raise RuntimeError("the sealed reference is only reachable from the judge")
    local = frame.f_locals
    guard = local["guard"]
    for f in seen:
        if f.f_code.co_filename in guard.learner:
            guard._refuse(f, f"向评分器要参考实现 (_modes.reference_module('{rel}'))")
    reference = local["reference"]
    if rel not in reference:
        # a module outside the stage's own world: loaded the same way, in a fresh private namespace
        # (the modules loaded before are gone from sys.modules, so relative imports start over)
        reference.update(_load_reference(PRIVATE + secrets.token_hex(8), local["private"], [rel], local["_modes"]))
    return reference[rel]
