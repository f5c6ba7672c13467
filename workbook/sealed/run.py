"""The parent side of sealed grading: judge a submission stage by stage, each in a fresh child.

For every requested stage (and, first, every prerequisite the learner wrote) in registry order:

- a stage whose files the learner never touched is reported as not written, and the stages that
  build on it get the reference in its place ("前置阶段由参考实现提供: 00–13"), so a course may start
  at any part;
- a stage whose written prerequisite did not pass is blocked;
- any other stage is judged by ``workbook.sealed.judge`` in an isolated interpreter with a time
  limit and a memory limit; only a verdict line carrying the job's nonce is believed.
"""
from __future__ import annotations

import json
import os
import resource
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import _modes, stages
from ..checks import harness, tamper
from ..checks.harness import BLOCKED, FAIL, NO_REFERENCE, PASS, TAMPERED, TODO, Result
from ..checks.runner import _exit_message, _kill, _tail, default_timeout
from . import judge, tree as tree_mod

ENV_MEMORY = "WORKBOOK_GRADE_MEMORY_GB"
DEFAULT_MEMORY_GB = 8.0


@dataclass
class Graded:
    """One submission's grade: a Result per requested stage, and what was graded."""

    submission: Path
    results: list[Result]
    files: dict[str, tree_mod.Owned]
    served: dict[str, list[str]] = field(default_factory=dict)  # stage -> prerequisites from the reference
    notebooks: dict[str, tuple[str, str]] = field(default_factory=dict)  # stage -> (PASS|FAIL, message)


def default_memory_gb() -> float:
    value = os.environ.get(ENV_MEMORY, "")
    try:
        return float(value) if value else DEFAULT_MEMORY_GB
    except ValueError:
        raise ValueError(f"{ENV_MEMORY}={value!r} 不是数字（每个阶段的评分进程最多用多少 GB 内存）") from None


def ranges(ids: list[str]) -> str:
    """['00', '01', '02', '05'] -> '00–02, 05' (runs of consecutive stages, registry order)."""
    order = [s.id for s in stages.STAGES]
    runs: list[list[str]] = []
    for sid in sorted(ids, key=order.index):
        if runs and order.index(runs[-1][-1]) == order.index(sid) - 1:
            runs[-1].append(sid)
        else:
            runs.append([sid])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WORKBOOK_"))}
    env["MPLBACKEND"] = "Agg"
    return env


def _protected(graded: tree_mod.GradingTree, reference_source: Path) -> list[str]:
    paths = [graded.reference, reference_source, graded.course / "solutions"]
    for rel in tree_mod.JUDGE_PATHS:
        paths += [graded.tree / rel, graded.course / rel]
    return [str(p) for p in paths]


def judge_stage(graded: tree_mod.GradingTree, stage: stages.Stage, served: list[str], *,
                reference_source: Path, timeout: float, memory_gb: float) -> Result:
    """Run ``workbook.sealed.judge`` for one stage; every ending becomes a Result."""
    nonce = secrets.token_hex(16)
    job = {"stage": stage.id, "tree": str(graded.tree), "course": str(graded.course),
           "reference": str(graded.reference), "served": served, "nonce": nonce,
           "learner_files": [rel for rel, o in graded.files.items() if o.status == tree_mod.OK],
           "protected": _protected(graded, reference_source)}
    limit = int(memory_gb * 1024 ** 3)

    def limits():  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="workbook-judge-") as tmp:
        out_path = Path(tmp) / "output.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-X", "utf8", "-c", judge.BOOT, str(graded.tree), str(write_fd)],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=_child_env(),
                cwd=graded.tree, pass_fds=(write_fd,), start_new_session=True, preexec_fn=limits)
        os.close(write_fd)
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        data = b""
        timed_out = False
        sel = selectors.DefaultSelector()
        sel.register(read_fd, selectors.EVENT_READ)
        try:
            while True:
                wait = start + timeout - time.monotonic()
                if wait <= 0:
                    timed_out = True
                    _kill(proc)
                    break
                if not sel.select(timeout=min(wait, 0.5)):
                    continue
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                data += chunk[: max(0, 4_000_000 - len(data))]  # a flood from learner code is cut
        except KeyboardInterrupt:
            _kill(proc)
            raise
        finally:
            sel.close()
            os.close(read_fd)
        returncode = proc.wait()
        seconds = time.monotonic() - start
        if timed_out:
            return Result(stage, FAIL, _short_output(
                f"运行超过 {timeout:g} 秒：死循环？（评分被停止了。）看看循环的退出条件。", _tail(out_path)), timeout)
        verdict = _verdict(data, nonce)
        if verdict is None:
            return Result(stage, FAIL, _short_output(_exit_message(returncode, ""), _tail(out_path)), seconds)
        status, child_seconds, message = verdict
        return Result(stage, status, message, child_seconds)


def _short_output(message: str, output: str) -> str:
    lines = [ln[:200] for ln in output.splitlines()[-8:]]
    return message + ("\n进程最后的输出：\n" + "\n".join("  | " + ln for ln in lines) if lines else "")


def _verdict(data: bytes, nonce: str) -> tuple[str, float, str] | None:
    """The judge's line: it starts with the nonce (anything else on the pipe is ignored)."""
    for line in data.split(b"\n"):
        parts = line.split(b"\t")
        if len(parts) == 4 and parts[0] == nonce.encode():
            try:
                status = parts[1].decode()
                if status not in harness.STATUSES:
                    return None
                return status, float(parts[2]), bytes.fromhex(parts[3].decode()).decode("utf-8", "replace")
            except ValueError:
                return None
    return None


def _wanted(stage_ids: list[str]) -> list[stages.Stage]:
    needed = set(stage_ids)
    for sid in stage_ids:
        needed.update(tree_mod.prerequisites(stages.get(sid)))
    return [s for s in stages.STAGES if s.id in needed]


def grade_submission(submission: Path, stage_ids: list[str], *, course: Path | None = None,
                     reference: Path | None = None, timeout: float | None = None,
                     memory_gb: float | None = None, notebooks: bool = False, echo=None) -> Graded:
    """Grade `submission` (a learner's checkout) on `stage_ids`, judged by the course at `course`
    (default: this package's checkout) against `reference` (default: the course's solutions/ or
    $WORKBOOK_REFERENCE).  notebooks: also run the course's notebook of every passed stage
    (``workbook.sealed.notebooks``).  echo(result) is called as each requested stage is decided."""
    course = Path(course or _modes.PACKAGE_DIR.parent).resolve()
    reference = Path(reference or _modes.SOLUTIONS_DIR)
    timeout = default_timeout() if timeout is None else timeout
    memory_gb = default_memory_gb() if memory_gb is None else memory_gb
    if not all((reference / (m.replace(".", "/") + ".py")).is_file() for m in stages.MODULE_STAGE):
        results = [Result(stages.get(s), NO_REFERENCE, _modes.missing_reference_message()) for s in stage_ids]
        return Graded(Path(submission), results, {})
    graded = tree_mod.build(course, Path(submission), reference)
    try:
        result = _grade(graded, stage_ids, reference=reference, timeout=timeout, memory_gb=memory_gb, echo=echo)
        if notebooks:
            from .notebooks import run_notebook

            for r in result.results:
                if r.status == PASS:
                    result.notebooks[r.stage.id] = run_notebook(graded, r.stage, result.served.get(r.stage.id, []))
        return result
    finally:
        graded.cleanup()


def _grade(graded: tree_mod.GradingTree, stage_ids: list[str], *, reference, timeout, memory_gb, echo) -> Graded:
    known: dict[str, Result] = {}
    served: dict[str, list[str]] = {}
    unwritten = {s.id for s in stages.STAGES if not graded.written(s)}
    for stage in _wanted(stage_ids):
        requested = stage.id in stage_ids
        result = _decide_without_running(graded, stage, known, unwritten, requested)
        if result is None:  # judged: the prerequisites the learner did not write come from the reference
            served[stage.id] = [s for s in tree_mod.prerequisites(stage) if s in unwritten and stages.get(s).modules]
            result = judge_stage(graded, stage, served[stage.id], reference_source=reference,
                                 timeout=timeout, memory_gb=memory_gb)
            if result.status == PASS and served[stage.id]:
                result.message += f"\n前置阶段由参考实现提供: {ranges(served[stage.id])}"
        known[stage.id] = result
        if requested and echo is not None:
            echo(result)
    return Graded(graded.submission, [known[s] for s in stage_ids], graded.files,
                  {s: served[s] for s in stage_ids if served.get(s)})


def _decide_without_running(graded, stage, known, unwritten, requested) -> Result | None:
    refused = graded.refused(stage)
    if refused:
        lines = "".join(f"\n  {o.rel}：{o.why}" for o in refused)
        status = TAMPERED if any(o.tampered for o in refused) else FAIL
        return Result(stage, status, "提交的文件没有被收下（评分只收普通文件）：" + lines)
    findings = tamper.scan([graded.tree / f for f in stage.files()], graded.tree)
    if findings:
        return Result(stage, TAMPERED, tamper.message(findings))
    if stage.id in unwritten and not stage.modules:
        missing = [s for s in tree_mod.prerequisites(stage) if s in unwritten and stages.get(s).modules]
        return Result(stage, TODO if len(missing) == len([s for s in tree_mod.prerequisites(stage)
                                                          if stages.get(s).modules]) else BLOCKED,
                      f"这一阶段训练的是你自己写的整个包：先写完 {ranges(missing)}。")
    if stage.id in unwritten and not requested:
        return Result(stage, harness.REFERENCE, "没有写：由参考实现提供。")
    if stage.id in unwritten:  # an untouched stub: what running it would say, without the wait
        return Result(stage, TODO, harness._todo_message(NotImplementedError(_first_todo(stage))))
    for pid in stage.requires:
        pres = known.get(pid)
        if pres is not None and pres.status not in (PASS, harness.REFERENCE) and pid not in unwritten:
            p = stages.get(pid)
            return Result(stage, BLOCKED, f"先通过 {p.id} {p.slug}（{p.title}）：这一阶段要用到它。")
    return None


def _first_todo(stage: stages.Stage) -> str:
    """The text of the stub's first ``raise NotImplementedError("TODO(...)")``."""
    import ast

    from .. import stubs

    for rel in stage.files():
        raises = [node for node in ast.walk(ast.parse(stubs.guided(rel)))
                  if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args
                  and isinstance(node.exc.args[0], ast.Constant) and isinstance(node.exc.args[0].value, str)]
        if raises:
            return min(raises, key=lambda n: n.lineno).exc.args[0].value
    return f"TODO({stage.id} {stage.slug})：这一阶段的文件还是占位 (stub)"
