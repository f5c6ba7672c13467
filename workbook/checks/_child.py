"""The child side of ``workbook.checks.runner``: run checks, report each on a pipe.

    python -m workbook.checks._child FD      (the job arrives as JSON on stdin)

Writes one JSON line per event to file descriptor FD: ``{"start": id}`` before a stage's check
runs, ``{"result": {...}}`` after, ``{"done": true}`` at the end.  Stages run in stage order;
a prerequisite that failed blocks the stages that need it.  Not for direct use.
"""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    fd = int(argv[0])
    job = json.loads(sys.stdin.read())
    out = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def emit(event: dict) -> None:
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
        out.flush()

    from workbook import _modes, stages
    from workbook.checks.harness import REFERENCE, Result, blocked_by, check_module, run_one

    results = {d["stage"]: Result.from_dict(d) for d in job["known"]}
    wanted = {stages.get(s).id for s in job["stages"]}
    needed = set(wanted)
    if job["prereqs"]:
        for stage in reversed(stages.STAGES):  # requires always point to earlier stages
            if stage.id in needed:
                needed.update(stage.requires)
    for stage in stages.STAGES:
        if stage.id not in needed or stage.id in results:
            continue
        result = blocked_by(stage, results) if job["prereqs"] else None
        served = bool(stage.modules) and _modes.uses_reference(stage.id)
        if result is None and served and check_module(stage) is not None and (
                stage.id not in wanted or not job["run_reference"]):
            result = Result(stage, REFERENCE, "当前模式使用参考实现 (reference)。")
        if result is None:
            emit({"start": stage.id})
            result = run_one(stage, reload=False)
        results[stage.id] = result
        emit({"result": result.to_dict()})
    emit({"done": True})
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
