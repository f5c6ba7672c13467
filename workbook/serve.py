"""``python -m workbook serve WEIGHTS``: your model behind an OpenAI-compatible HTTP API.

What MiniMind's ``scripts/serve_openai_api.py`` does, on FastAPI + uvicorn + sse-starlette:

- ``GET /v1/models`` — the one model served;
- ``GET /`` — a chat page for the browser (``workbook/web_chat.html``), streaming over the same API;
- ``POST /v1/chat/completions`` — ``messages`` rendered with the training ChatML template (no
  default system line), answered greedily (``temperature`` 0) or sampled (``temperature``,
  ``top_p``, ``seed``), at most ``max_tokens``; with ``"stream": true`` the answer arrives as
  server-sent events, one ``chat.completion.chunk`` per piece of text, then ``[DONE]``.

A malformed request gets a 4xx JSON error and the server keeps serving.  Requests are answered
concurrently: each has its own KV cache, and the model's forward passes take turns under one lock,
a token at a time, so two answers interleave instead of queueing.  Any OpenAI client works::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8998/v1", api_key="none")
    client.chat.completions.create(model="minimind", messages=[{"role": "user", "content": "…"}])
"""
# (no "from __future__ import annotations": FastAPI and pydantic read the local models' annotations at run time)

import argparse
import json
import threading
import time
import uuid
from pathlib import Path

HELP = "把模型放到一个兼容 OpenAI 的 HTTP 接口后面（/v1/chat/completions、/v1/models，支持流式）"
DEFAULT_PORT = 8998  # MiniMind's


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .eval.runner import DEFAULT_TOKENIZER

    p.add_argument("model", help="权重 .pth；形状取自旁边的 {权重名}_config.json")
    p.add_argument("--lora", metavar="ADAPTER", default=None, help="再装上一个 LoRA 适配器")
    p.add_argument("--host", default="127.0.0.1", help="监听的地址（默认只有本机能连：127.0.0.1）")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"端口（默认 {DEFAULT_PORT}，和 MiniMind 一样）")
    p.add_argument("--name", default="minimind", help="接口里的模型名 (model id)，默认 minimind")
    p.add_argument("--max_tokens", type=int, default=256, help="请求没给 max_tokens 时最多生成多少 token")
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="分词器目录，默认 data/tokenizer")
    p.add_argument("--device", default="cpu", help="cpu 或 cuda:0 …")
    from .train.shapes import add_shape_arguments
    add_shape_arguments(p)


def make_app(model, tokenizer, name: str = "minimind", default_max_tokens: int = 256, device="cpu"):
    """The FastAPI application serving `model` (eval mode) with `tokenizer`."""
    from typing import Literal

    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

    from .model.generate import Sampling, stream

    class Message(BaseModel):
        role: Literal["system", "user", "assistant"]
        content: str

    class ChatRequest(BaseModel):
        model: str | None = None
        messages: list[Message] = Field(min_length=1)
        temperature: float = Field(default=0.0, ge=0.0, le=2.0)
        top_p: float = Field(default=1.0, gt=0.0, le=1.0)
        max_tokens: int | None = Field(default=None, ge=1, le=4096)
        stream: bool = False
        seed: int | None = None

    app = FastAPI(title="MiniMind Workbook", version="1")
    lock = threading.Lock()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    created = int(time.time())

    @app.exception_handler(HTTPException)
    async def _error(request, exc: HTTPException):  # OpenAI's error shape
        return JSONResponse(status_code=exc.status_code,
                            content={"error": {"message": exc.detail, "type": "invalid_request_error"}})

    page = (Path(__file__).with_name("web_chat.html")).read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def web_chat():  # a chat page in the browser, on the same API
        return page

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                            "owned_by": "minimind-workbook"}]}

    def tokens(req: ChatRequest):
        """The answer's new token ids one at a time (a sync generator: runs in the thread pool)."""
        if req.messages[-1].role == "assistant":
            raise HTTPException(400, "the last message must be the user's (or the system's): nothing to answer")
        text = tokenizer.apply_chat_template([m.model_dump() for m in req.messages], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = req.max_tokens or default_max_tokens
        if len(ids) + limit > model.config.max_position_embeddings:
            raise HTTPException(400, f"the conversation ({len(ids)} tokens) plus max_tokens ({limit}) does not fit "
                                     f"the model's context ({model.config.max_position_embeddings})")
        sampling = Sampling(temperature=req.temperature, top_p=req.top_p, seed=req.seed or 0)
        steps = stream(model, ids, limit, eos, sampling, device)
        while True:
            with lock:  # forward passes take turns, a token at a time
                token = next(steps, None)
            if token is None:
                return
            yield token

    def pieces(req: ChatRequest):
        """(text piece, finish_reason or None) as the answer grows; a cut multi-byte character waits."""
        new, shown, count = [], "", 0
        for token in tokens(req):
            count += 1
            if token == eos:
                break
            new.append(token)
            text = tokenizer.decode(new, skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                yield text[len(shown):], None
                shown = text
        finish = "stop" if count == 0 or token == eos else "length"
        text = tokenizer.decode(new, skip_special_tokens=True)
        yield text[len(shown):], finish

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if not req.stream:
            def whole():
                parts = list(pieces(req))
                return "".join(p for p, _ in parts), parts[-1][1]

            text, finish = await run_in_threadpool(whole)
            return {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish}]}

        # errors in the request are raised before the stream starts, as a plain 4xx
        await run_in_threadpool(lambda: _precheck(req))

        async def events():
            def chunk(delta: dict, finish=None) -> str:
                return json.dumps({"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                                   "model": name, "choices": [{"index": 0, "delta": delta,
                                                               "finish_reason": finish}]}, ensure_ascii=False)

            yield {"data": chunk({"role": "assistant", "content": ""})}
            async for piece, finish in iterate_in_threadpool(pieces(req)):
                if piece:
                    yield {"data": chunk({"content": piece})}
                if finish:
                    yield {"data": chunk({}, finish)}
            yield {"data": "[DONE]"}

        return EventSourceResponse(events())

    def _precheck(req: ChatRequest) -> None:
        if req.messages[-1].role == "assistant":
            raise HTTPException(400, "the last message must be the user's (or the system's): nothing to answer")

    return app


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .chat import load

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port}：要在 1–65535 之间")
    model, tokenizer = load(args)
    app = make_app(model, tokenizer, args.name, args.max_tokens, args.device)
    print(f"在 http://{args.host}:{args.port}/v1 提供 {args.name}（{Path(args.model).name}）；"
          f"浏览器打开 http://{args.host}:{args.port}/ 聊天。Ctrl-C 停止。", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["HELP", "add_arguments", "make_app", "run"]
