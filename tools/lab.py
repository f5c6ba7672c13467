"""Start JupyterLab on the workbook: repository root as the file root, opened at the welcome
notebook, solutions/ hidden from the file browser.  `make lab` runs this.

    python tools/lab.py [--no-browser] [--port N] [--token T]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "notebooks/00_welcome.ipynb"
# jupyter_server's defaults plus the reference implementation.
HIDE = ["__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "*.so", "*.dylib", "solutions"]


def lab_argv(no_browser: bool = False, port: int | None = None, token: str | None = None) -> list[str]:
    argv = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.root_dir={ROOT}",
        f"--ContentsManager.hide_globs={HIDE!r}",
        f"--LabApp.default_url=/lab/tree/{START}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # containers and cloud notebooks often run as root
    if no_browser:
        argv.append("--no-browser")
    if port is not None:
        argv += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    return argv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--port", type=int)
    p.add_argument("--token")
    a = p.parse_args()
    argv = lab_argv(a.no_browser, a.port, a.token)
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
