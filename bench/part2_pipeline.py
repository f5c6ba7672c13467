"""Times Part 2 as the README runs it: every demo command of its Part 2 block, in order.

    WORKBOOK_IMPL=solutions python bench/part2_pipeline.py [--json F] [--dry_run]

The commands are read from README.md itself (the ```bash block that starts with "# 14 SFT"), so
the figures belong to exactly what a reader copies: SFT from the shipped base
(data/base/pretrain_320.pth), LoRA, DPO, distillation and GRPO from the shipped SFT model, then
the two gradings.  Each runs as its own process from the repository root (its outputs go to
out/, as the README's do) with the current WORKBOOK_IMPL; the script prints and records each
command's wall time, its exit status, the last lines it printed (the final losses and answers)
and the load average before and after, plus the CPU, thread count and torch version.  A command
that fails stops the pipeline (exit 1), with its output tail.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = "# 14 SFT"


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(comment, command) for each command of the README's Part 2 block, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    block = next((b for b in blocks if b.lstrip().startswith(MARKER)), None)
    if block is None:
        raise SystemExit(f"{README}: no ```bash block starts with {MARKER!r}")
    out, comment, pending = [], "", ""
    for line in block.splitlines():
        line = line.rstrip()
        if not pending and line.startswith("#"):
            comment = line.lstrip("# ")
            continue
        if not line:
            continue
        # a trailing "# ..." after a command is a remark, not part of it
        code = re.sub(r"\s+#\s.*$", "", line)
        if code.endswith("\\"):
            pending += code[:-1].rstrip() + " "
            continue
        out.append((comment, " ".join((pending + code).split())))
        pending = ""
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--dry_run", action="store_true", help="list the commands, run nothing")
    ap.add_argument("--tail", type=int, default=6, help="output lines kept per command")
    args = ap.parse_args(argv)

    commands = readme_commands(README.read_text(encoding="utf-8"))
    if args.dry_run:
        for comment, cmd in commands:
            print(f"# {comment}\n{cmd}")
        return 0

    import torch

    env = dict(os.environ)
    # `python` in the README's commands is this interpreter (the venv's)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    report = {"command": " ".join([f"WORKBOOK_IMPL={env.get('WORKBOOK_IMPL', '')} python bench/part2_pipeline.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "omp_num_threads": env.get("OMP_NUM_THREADS"),
              "load_start": [round(x, 2) for x in os.getloadavg()], "steps": []}
    total = time.perf_counter()
    print(f"# {report['cpu']}, {report['cores']} cores, torch {report['torch']}, "
          f"WORKBOOK_IMPL={env.get('WORKBOOK_IMPL', '(mode file)')}, load {report['load_start']}", flush=True)
    for comment, cmd in commands:
        load = [round(x, 2) for x in os.getloadavg()]
        start = time.perf_counter()
        # stderr into stdout: the lines keep the order a terminal shows them in
        proc = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - start
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        step = {"what": comment, "cmd": cmd, "rc": proc.returncode, "wall_s": round(wall, 1),
                "load_before": load, "tail": lines[-args.tail:]}
        report["steps"].append(step)
        print(f"{wall / 60:6.1f} min  rc {proc.returncode}  {comment}", flush=True)
        for ln in step["tail"]:
            print(f"          | {ln[:160]}")
        if proc.returncode != 0:
            print(f"failed: {cmd}", file=sys.stderr)
            break
    report["total_s"] = round(time.perf_counter() - total, 1)
    report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"total {report['total_s'] / 60:.1f} min, load at the end {report['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0 if all(s["rc"] == 0 for s in report["steps"]) and len(report["steps"]) == len(commands) else 1


if __name__ == "__main__":
    sys.exit(main())
