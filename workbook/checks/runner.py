"""Runs stage checks in a child process, under a time limit: a pass must be earned.

Every learner-facing command (``check``, ``progress``, ``export``, the notebook's check cell)
comes through here.  The checks themselves run in a child Python (``workbook.checks._child``)
that reports each stage on a private pipe as one JSON line; this parent only believes what
arrives there:

- a stage that runs longer than the time limit is killed (the whole process group) and reported
  as "运行超过 N 秒：死循环？" — the remaining stages go on in a fresh child;
- learner code that ends the process (``os._exit``, a crash, a signal) leaves a stage without a
  result: that stage fails with the exit status, never a silent success;
- ``sys.exit`` inside learner code is caught in the child (``harness.run_one``) and fails too.

The child runs in the mode given here (not whatever the environment says), with the same
``workbook`` package as this process first on its path.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import _modes, stages
from .harness import FAIL, Result

ENV_TIMEOUT = "WORKBOOK_CHECK_TIMEOUT"
DEFAULT_TIMEOUT = 180.0  # seconds per stage; the slowest check takes ~6 s on a 2-core CPU
_TAIL_LINES = 15


class CheckInterrupted(KeyboardInterrupt):
    """Ctrl-C while checks were running; the child has been stopped."""


def default_timeout() -> float:
    value = os.environ.get(ENV_TIMEOUT, "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT}={value!r} 不是数字（每个阶段的检查最多运行多少秒）") from None


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _with_output(message: str, output: str) -> str:
    if not output.strip():
        return message
    return f"{message}\n进程最后的输出：\n" + "\n".join("  | " + ln for ln in output.splitlines())


def _exit_message(returncode: int, output: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = f"检查进程被信号 {name} 终止了（崩溃？内存不够？）"
    else:
        why = (f"检查进程提前退出了（退出码 {returncode}）：你的代码里有 os._exit / sys.exit 或 "
               f"quit()？练习里的代码不能结束进程，出错时请抛出异常 (raise)")
    return _with_output(why + "。这一阶段没有通过。", output)


def run_stages(stage_ids: list[str], *, mode: str | None = None, timeout: float | None = None,
               prereqs: bool = True, run_reference: bool = True, echo: bool = False,
               known: dict[str, Result] | None = None,
               unreliable: set[str] | None = None) -> dict[str, Result]:
    """Check `stage_ids` (and, with prereqs, what they build on) in child processes.

    mode: a WORKBOOK_IMPL value for the child ("learner", "solutions:01-03"); None = the mode
        this process runs in.
    timeout: seconds each stage may take (default: $WORKBOOK_CHECK_TIMEOUT or 180).
    run_reference: False = a stage served by the reference counts as such without running.
    echo: print what the child printed (the learner's own print() calls) as it comes.
    known: results already known (e.g. from the cache); these stages are not run again.
    unreliable: if given, receives the ids whose result this parent made up (a time-out, a
        process that died): not the check's own verdict, so not worth caching.
    Returns {stage id: Result} for every stage that was looked at, requested ones included.
    Raises CheckInterrupted on Ctrl-C (after stopping the child).
    """
    ids = [stages.get(s).id for s in stage_ids]
    mode = _modes.format_mode(_modes.reference_stages()) if mode is None else mode
    _modes.parse_mode(mode)  # a bad mode is the caller's error, said once, here
    timeout = default_timeout() if timeout is None else timeout
    known = dict(known or {})
    made_up = set() if unreliable is None else unreliable
    while True:
        done = _run_child(ids, known, mode=mode, timeout=timeout, prereqs=prereqs,
                          run_reference=run_reference, echo=echo, made_up=made_up)
        if done or all(i in known for i in ids):
            return known


def _run_child(ids, known: dict[str, Result], *, mode, timeout, prereqs, run_reference,
               echo, made_up: set[str]) -> bool:
    """One child process; fills `known`.  True when the child finished its whole job."""
    job = {"stages": ids, "prereqs": prereqs, "run_reference": run_reference,
           "known": [r.to_dict() for r in known.values()]}
    env = dict(os.environ)
    env[_modes.ENV_VAR] = mode
    # the same `workbook` as this process, whatever the current directory or install
    root = str(_modes.PACKAGE_DIR.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.setdefault("MPLBACKEND", "Agg")
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryDirectory(prefix="workbook-check-") as tmp:
        out_path = Path(tmp) / "output.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workbook.checks._child", str(write_fd)],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
                pass_fds=(write_fd,), start_new_session=True)  # its own group: killed as one
        os.close(write_fd)
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        current: str | None = None  # the stage the child is running now
        deadline = time.monotonic() + timeout
        finished = False
        buf = b""
        echoed = 0
        sel = selectors.DefaultSelector()
        sel.register(read_fd, selectors.EVENT_READ)
        try:
            while True:
                if echo:
                    echoed = _echo_new_output(out_path, echoed)
                wait = deadline - time.monotonic()
                if wait <= 0:
                    _kill(proc)
                    stage = current or _first_open(ids, known)
                    if stage is not None:
                        made_up.add(stage)
                        known[stage] = Result(stages.get(stage), FAIL, _with_output(
                            f"运行超过 {timeout:g} 秒：死循环？（检查被停止了。）看看循环的退出条件；"
                            f"确实需要更久就设环境变量 {ENV_TIMEOUT}=秒数。", _tail(out_path)),
                            timeout)
                    return False
                if not sel.select(timeout=min(wait, 0.5)):
                    continue
                chunk = os.read(read_fd, 65536)
                if not chunk:  # the child closed the pipe: it exited
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    event = json.loads(line)
                    if "start" in event:
                        current = event["start"]
                        deadline = time.monotonic() + timeout
                    elif "result" in event:
                        r = Result.from_dict(event["result"])
                        known[r.stage.id] = r
                        current = None
                    elif event.get("done"):
                        finished = True
        except KeyboardInterrupt:
            _kill(proc)
            raise CheckInterrupted() from None
        finally:
            sel.close()
            os.close(read_fd)
        returncode = proc.wait()
        if echo:
            _echo_new_output(out_path, echoed, final=True)
        if finished and returncode == 0:
            return True
        # the child ended without finishing: the stage it was on takes the blame
        stage = current or _first_open(ids, known)
        if stage is None:
            return True
        known[stage] = Result(stages.get(stage), FAIL, _exit_message(returncode, _tail(out_path)))
        made_up.add(stage)
        if current is None:  # it died before starting any stage: nothing more to learn
            for sid in ids:
                if sid not in known:
                    made_up.add(sid)
                    known[sid] = Result(stages.get(sid), FAIL, known[stage].message)
            return True
        return False


def _first_open(ids, known) -> str | None:
    return next((i for i in ids if i not in known), None)


def _echo_new_output(path: Path, already: int, final: bool = False) -> int:
    """Print the child's output written since byte `already`, whole lines only (a multi-byte
    character is never cut); returns the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(already)
            data = f.read()
    except OSError:
        return already
    if not final:
        data = data[:data.rfind(b"\n") + 1]
    if data:
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
    return already + len(data)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
