"""``python -m workbook chat WEIGHTS``: talk to your model in the terminal.

The model sees exactly what it was trained on: the conversation rendered with the tokenizer's
ChatML template (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
``<|im_start|>assistant\\n``), no default system line unless ``--system`` gives one.  Its answer is
printed token by token as it is written (``workbook.model.generate.stream``: KV cache, one token
per forward) and kept in the history, so the next request sees the whole conversation; when the
conversation no longer fits the context, the oldest turns are dropped.

Commands: ``/reset`` forgets the conversation, ``/exit`` (or end of input) leaves.  It runs the
model code of the current mode, like every command: your own, or the reference with
``WORKBOOK_IMPL=solutions``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "在终端里和你的模型聊天：流式输出、多轮历史、/reset 清空、/exit 退出"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .eval.runner import DEFAULT_TOKENIZER

    p.add_argument("model", help="权重 .pth（例如 data/base/full_sft_320.pth）；形状取自旁边的 {权重名}_config.json")
    p.add_argument("--lora", metavar="ADAPTER", default=None, help="再装上一个 LoRA 适配器")
    p.add_argument("--system", default=None, help="系统提示 (system prompt)；默认没有（和训练时一样）")
    p.add_argument("--temperature", type=float, default=0.8, help="采样温度，0 = 贪心解码（默认 0.8）")
    p.add_argument("--top_p", type=float, default=0.9, help="核采样 (nucleus) 的概率质量（默认 0.9）")
    p.add_argument("--max_new_tokens", type=int, default=256, help="每个回答最多多少 token（默认 256）")
    p.add_argument("--seed", type=int, default=0, help="采样的随机种子：同一段对话、同一个种子，回答一样")
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="分词器目录，默认 data/tokenizer")
    p.add_argument("--device", default="cpu", help="cpu 或 cuda:0 …")
    from .train.shapes import add_shape_arguments
    add_shape_arguments(p)


class Conversation:
    """The messages so far, and their rendering as the model's prompt (token ids)."""

    def __init__(self, tokenizer, system: str | None = None, context: int = 32768, reserve: int = 256):
        self.tokenizer, self.system = tokenizer, system
        self.context, self.reserve = context, reserve
        self.reset()

    def reset(self) -> None:
        self.turns: list[dict] = []

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def prompt_ids(self) -> list[int]:
        """The rendered conversation with the generation prompt; oldest turns dropped to fit."""
        while True:
            text = self.tokenizer.apply_chat_template(self.messages(), tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + self.reserve <= self.context or len(self.turns) <= 1:
                return ids[-(self.context - self.reserve):]
            self.turns = self.turns[2:]  # one request and its answer


def reply(model, tokenizer, ids: list[int], sampling, max_new_tokens: int, device, write=None) -> str:
    """The model's answer to `ids`, streamed to `write(text)` as it grows; returns the whole text."""
    from .model.generate import stream

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    new: list[int] = []
    shown = ""
    for token in stream(model, ids, max_new_tokens, eos, sampling, device):
        if token == eos:
            break
        new.append(token)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if not text.endswith("\ufffd") and write is not None:  # a character still cut in two bytes: wait
            write(text[len(shown):])
            shown = text
    text = tokenizer.decode(new, skip_special_tokens=True)
    if write is not None and text != shown:
        write(text[len(shown):])
    return text


def load(args: argparse.Namespace):
    """(model in eval mode, tokenizer) from chat's or serve's flags; ValueError names bad input."""
    from .eval.runner import load_model, load_tokenizer
    from .train.shapes import shape_overrides

    if not Path(args.model).is_file():
        raise ValueError(f"找不到权重文件 (weights) {args.model}")
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except FileNotFoundError as e:
        raise ValueError(f"--tokenizer：{e}") from None
    try:
        model, _ = load_model(args.model, args.device, lora=args.lora, shape=shape_overrides(args))
    except NotImplementedError as e:
        raise ValueError(f"模型还有没写完的部分：{e}。先通过 00–08 的检查，或者用参考实现 "
                         "WORKBOOK_IMPL=solutions 试跑。") from None
    return model.eval(), tokenizer


def run(args: argparse.Namespace) -> int:
    from .model.generate import Sampling

    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, seed=args.seed)  # ValueError: exit 2
    if args.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens {args.max_new_tokens}：至少 1")
    model, tokenizer = load(args)
    conversation = Conversation(tokenizer, args.system, model.config.max_position_embeddings, args.max_new_tokens)
    print(f"和 {Path(args.model).name} 聊天（{'贪心' if sampling.greedy else f'temperature {args.temperature}'}）。"
          f"/reset 清空对话，/exit 退出。", flush=True)
    while True:
        try:
            line = input("\n你：")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        request = line.strip()
        if not request:
            continue
        if request in ("/exit", "/quit"):
            return 0
        if request == "/reset":
            conversation.reset()
            print("（对话已清空）", flush=True)
            continue
        conversation.turns.append({"role": "user", "content": request})
        print("模型：", end="", flush=True)
        try:
            answer = reply(model, tokenizer, conversation.prompt_ids(), sampling, args.max_new_tokens, args.device,
                           write=lambda text: print(text, end="", flush=True))
        except KeyboardInterrupt:  # stop this answer, keep the chat
            print("（已停止）", flush=True)
            conversation.turns.pop()
            continue
        print(flush=True)
        conversation.turns.append({"role": "assistant", "content": answer})


__all__ = ["HELP", "add_arguments", "load", "run", "reply", "Conversation"]
