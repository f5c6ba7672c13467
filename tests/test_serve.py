"""``python -m workbook serve``: an OpenAI-compatible API, driven by the official ``openai`` client
against a server started on a free local port: a completion, a streamed one, a malformed request
(a 4xx JSON error, and the server keeps serving), and two concurrent requests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import ROOT

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
SFT = ROOT / "data" / "base" / "full_sft_320.pth"
REQUESTS = ["写一首五言绝句，题目是《山中秋夜》。", "给这首诗起个题目：\n春风吹绿岸，细雨湿青苔。\n燕子归来早，花开满院台。"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = dict(os.environ, WORKBOOK_IMPL="solutions", PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "workbook", "serve", str(SFT), "--port", str(port),
                             "--max_tokens", "64"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300  # a budget, not a measurement: the model loads on a busy machine
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            if httpx.get(f"{base}/models", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.5)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _client(base):
    return openai.OpenAI(base_url=base, api_key="none", timeout=300, max_retries=0)


def _ask(base, request, **kw):
    r = _client(base).chat.completions.create(model="minimind", messages=[{"role": "user", "content": request}],
                                              temperature=0, **kw)
    return r.choices[0].message.content, r.choices[0].finish_reason


def test_models_and_a_completion(server):
    assert [m.id for m in _client(server).models.list().data] == ["minimind"]
    text, finish = _ask(server, REQUESTS[0])
    assert finish == "stop" and text == "一夕山初出，千株竹叶垂。\n不知何处见，应向月中看。"
    _, finish = _ask(server, REQUESTS[0], max_tokens=3)
    assert finish == "length"


def test_a_streamed_completion_is_the_same_answer(server):
    whole, _ = _ask(server, REQUESTS[0])
    chunks = list(_client(server).chat.completions.create(
        model="minimind", messages=[{"role": "user", "content": REQUESTS[0]}], temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "stop" and len(chunks) > 5


def test_a_malformed_request_gets_a_json_4xx_and_the_server_keeps_serving(server):
    for body in ({"model": "minimind"}, {"messages": [{"role": "robot", "content": "x"}]},
                 {"messages": [{"role": "user", "content": "x"}], "temperature": -1},
                 {"messages": [{"role": "assistant", "content": "x"}]}):
        r = httpx.post(f"{server}/chat/completions", json=body, timeout=60)
        assert 400 <= r.status_code < 500 and r.headers["content-type"].startswith("application/json"), r.text
    r = httpx.post(f"{server}/chat/completions", content=b"{not json", timeout=60,
                   headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert _ask(server, REQUESTS[1])[1] == "stop"


def test_two_concurrent_requests_are_both_answered_uncorrupted(server):
    alone = [_ask(server, q)[0] for q in REQUESTS]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda q: _ask(server, q)[0], REQUESTS))
    assert together == alone


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium (Debian's chromium package; .ci/run installs it)")
def test_the_web_page_streams_an_answer_in_a_real_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    expected, _ = _ask(server, REQUESTS[0])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(server.removesuffix("/v1") + "/", timeout=120_000)
            page.wait_for_function("document.getElementById('model').textContent === 'minimind'", timeout=120_000)
            page.fill("#input", REQUESTS[0])
            page.keyboard.press("Enter")
            page.wait_for_selector(".assistant[data-done='1']", timeout=300_000)
            answer = page.locator(".assistant").inner_text()
            chunks = int(page.locator(".assistant").get_attribute("data-chunks"))
            assert page.locator(".user").inner_text() == REQUESTS[0]
            assert answer == expected and chunks > 5  # it arrived piece by piece
            page.screenshot(path=str(tmp_path / "web_chat.png"))
        finally:
            browser.close()
    shot = os.environ.get("WORKBOOK_WEB_SCREENSHOT")  # maintainers: where to keep the README's picture
    if shot:
        import shutil

        shutil.copyfile(tmp_path / "web_chat.png", shot)
