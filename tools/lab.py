"""Start JupyterLab on the workbook: repository root as the file root, opened at the welcome
notebook, with the workbook's own kernel, solutions/ and build leftovers hidden from the file
browser, and no news pop-up.  `make lab` runs this.

    python tools/lab.py [--no-browser] [--port N] [--token T]
    python tools/lab.py --install          # only the two files below (`make setup` runs this)

What it installs, into this Python environment (sys.prefix: .venv, or the conda env), never into
the user's ~/.jupyter:

- the kernelspec "MiniMind Workbook" (name minimind-workbook), which the notebooks ask for;
- a JupyterLab settings override: fetchNews "false", checkForUpdates false, so Lab never asks
  "Would you like to get notified about official Jupyter news?" and fetches nothing.  It is a file
  of its own in overrides.d/, so an overrides.json of the user's is left alone and wins.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "notebooks/00_welcome.ipynb"
KERNEL_NAME = "minimind-workbook"
KERNEL_DISPLAY_NAME = "MiniMind Workbook"
# jupyter_server's defaults, the reference implementation, and build/test leftovers.  out/ stays
# visible: the learner's checkpoints and loss curves are there.  Dot-folders (.venv, .workbook,
# .pytest_cache, ...) are hidden anyway; .pytest_cache is listed for "show hidden files".
HIDE = ["__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "*.so", "*.dylib", "solutions",
        "*.egg-info", "build", "dist", ".pytest_cache"]
OVERRIDES = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}
OVERRIDES_FILE = f"{KERNEL_NAME}.json"


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def install_kernel() -> Path:
    """Register this interpreter as the kernel "MiniMind Workbook" (like `python -m ipykernel
    install --sys-prefix --name minimind-workbook --display-name "MiniMind Workbook"`); kept as is
    when it is already there and runs this interpreter."""
    from ipykernel.kernelspec import install

    spec = Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"
    try:
        current = json.loads(spec.read_text(encoding="utf-8"))
        if current["argv"][0] == sys.executable and current["display_name"] == KERNEL_DISPLAY_NAME:
            return spec.parent
    except (OSError, ValueError, KeyError, IndexError):
        pass
    return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix))


def install_settings() -> Path:
    """Write the settings override into JupyterLab's application settings of this environment."""
    from jupyterlab.commands import get_app_dir

    path = Path(get_app_dir()) / "settings" / "overrides.d" / OVERRIDES_FILE
    _write_if_changed(path, json.dumps(OVERRIDES, indent=2) + "\n")
    return path


def lab_argv(no_browser: bool = False, port: int | None = None, token: str | None = None) -> list[str]:
    argv = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.root_dir={ROOT}",
        f"--ContentsManager.hide_globs={HIDE!r}",
        f"--LabApp.default_url=/lab/tree/{START}",
        # new notebooks and the Launcher's first card use the workbook's kernel too
        f"--MultiKernelManager.default_kernel_name={KERNEL_NAME}",
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
    p.add_argument("--install", action="store_true",
                   help="只注册 kernel、写 JupyterLab 设置，然后退出（make setup 运行它）")
    a = p.parse_args()
    # also on every start: a set-up without make (pip or conda) gets them on the first launch
    kernel, settings = install_kernel(), install_settings()
    if a.install:
        print(f"已注册 kernel「{KERNEL_DISPLAY_NAME}」：{kernel}\nJupyterLab 设置（不弹新闻通知）：{settings}")
        return
    argv = lab_argv(a.no_browser, a.port, a.token)
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
