"""`make lab`, run headless: JupyterLab answers on localhost, serves the welcome notebook,
and hides solutions/ from its file browser."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import ROOT

TOKEN = "workbook-test-token"


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
        deadline = time.time() + 120
        while True:
            try:
                status, _ = _get(port, "/api/status")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert proc.poll() is None, f"JupyterLab exited early:\n{proc.stdout.read()}"
            assert time.time() < deadline, "JupyterLab did not answer within 120 s"
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
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
