"""`make lab`, run headless: JupyterLab answers on localhost, serves the welcome notebook, hides
solutions/ and build leftovers from its file browser, offers the kernel "MiniMind Workbook" (the
project's venv, with ipywidgets for tqdm's progress bars), and never asks about news."""
import fnmatch
import importlib.util
import json
import os
import py_compile
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT

TOKEN = "workbook-test-token"
_spec = importlib.util.spec_from_file_location("workbook_tools_lab", ROOT / "tools" / "lab.py")
lab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab)


def test_notebooks_ask_for_the_workbook_kernel():
    """(tools/nb.py build writes the kernelspec "python3": set it back after rebuilding a notebook.)"""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for path in notebooks:
        spec = json.loads(path.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert spec == {"display_name": lab.KERNEL_DISPLAY_NAME, "language": "python", "name": lab.KERNEL_NAME}, \
            f"{path.name}: kernelspec {spec}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path):
    url = f"http://127.0.0.1:{port}{path}{'&' if '?' in path else '?'}token={TOKEN}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


@pytest.mark.slow
def test_make_lab_serves_the_workbook():
    port = _free_port()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab",
         f"LAB_ARGS=--no-browser --port {port} --token {TOKEN}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env=dict(os.environ))
    try:
        deadline = time.time() + 600  # a budget: JupyterLab's start-up on a loaded 2-core machine
        while True:
            try:
                status, _ = _get(port, "/api/status")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert proc.poll() is None, f"JupyterLab exited early:\n{proc.stdout.read()}"
            assert time.time() < deadline, "JupyterLab did not answer within 600 s"
            time.sleep(0.5)

        status, body = _get(port, "/api/contents/notebooks/00_welcome.ipynb")
        nb = json.loads(body)
        assert status == 200 and nb["type"] == "notebook"
        assert nb["content"]["cells"][0]["source"].startswith("# 00")

        status, body = _get(port, "/lab/tree/notebooks/00_welcome.ipynb")
        assert status == 200 and b"JupyterLab" in body

        _, body = _get(port, "/api/contents/")
        names = {item["name"] for item in json.loads(body)["content"]}
        assert {"notebooks", "workbook", "data"} & names >= {"notebooks", "workbook"}
        assert "solutions" not in names
        # build leftovers: the set-up's *.egg-info at the top, __pycache__ in the package
        assert list(ROOT.glob("*.egg-info")), "no *.egg-info on disk: the check below would prove nothing"
        py_compile.compile(str(ROOT / "workbook" / "__init__.py"), doraise=True)  # workbook/__pycache__
        _, body = _get(port, "/api/contents/workbook")
        inner = {item["name"] for item in json.loads(body)["content"]}
        assert "__init__.py" in inner
        for listed in (names, inner):
            shown = {n for n in listed for glob in lab.HIDE if fnmatch.fnmatch(n, glob)}
            assert not shown, f"hidden from the file browser, yet listed: {shown}"

        # the workbook's kernel, the default one, runs the project's venv, which has ipywidgets
        _, body = _get(port, "/api/kernelspecs")
        specs = json.loads(body)
        assert specs["default"] == lab.KERNEL_NAME
        spec = specs["kernelspecs"][lab.KERNEL_NAME]["spec"]
        assert spec["display_name"] == "MiniMind Workbook" and spec["language"] == "python"
        out = subprocess.run([spec["argv"][0], "-c", "import sys, ipywidgets; print(sys.prefix)"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert Path(out.stdout.strip()).resolve() == (ROOT / ".venv").resolve()

        # no "Would you like to get notified about official Jupyter news?" and no update check
        plugin = urllib.parse.quote("@jupyterlab/apputils-extension:notification")
        _, body = _get(port, f"/lab/api/settings/{plugin}")
        setting = json.loads(body)
        props = setting["schema"]["properties"]
        composite = {k: (setting.get("settings") or {}).get(k, props[k]["default"]) for k in props}
        assert composite["fetchNews"] == "false" and composite["checkForUpdates"] is False, composite
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
