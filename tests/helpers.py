"""Helpers shared by the tests."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_py(args, mode="learner", timeout=300, **kw):
    """Run `python ARGS` from the repository root in WORKBOOK_IMPL=mode; returns CompletedProcess."""
    env = dict(os.environ, WORKBOOK_IMPL=mode, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)
