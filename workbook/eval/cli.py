"""``python -m workbook eval MODEL``: grade a model's answers to the fixed prompt set.

The flags live here; workbook/__main__.py only adds the subcommand and calls :func:`run`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..train.shapes import add_shape_arguments, shape_overrides
from .runner import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS, DEFAULT_TOKENIZER

HELP = "用固定的提示集给模型的回答打分（体裁、题目、停止）：SFT 前后对比"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="权重 .pth（例如 out/full_sft_512.pth）；模型形状取自旁边的 "
                                 "{权重名}_config.json，训练命令会写它")
    p.add_argument("--lora", metavar="ADAPTER", default=None,
                   help="再装上一个 LoRA 适配器（python -m workbook.train.lora 存的 {lora_name}_{hidden}.pth）")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS),
                   help="提示集 (prompt set)，默认 data/sft_eval_prompts.jsonl")
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="分词器目录，默认 data/tokenizer")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="只评前 N 条提示（快速试跑）")
    p.add_argument("--json", dest="json_path", metavar="F", help="把完整报告（含每条回答）写成 JSON")
    p.add_argument("--device", default="cpu", help="cpu 或 cuda:0 …")
    p.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"每个回答最多生成多少 token（默认 {DEFAULT_MAX_NEW_TOKENS}）")
    p.add_argument("--batch_size", type=int, default=16, help="一批最多几条提示（左侧补齐 left padding，按长度相近分批）")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="CPU 上生成时用几个线程（默认 1：解码每步的矩阵很小，多线程在共享的机器上反而慢很多）")
    p.add_argument("--sample", action="store_true",
                   help="采样 (temperature 0.8, top-p 0.9, 固定种子) 而不是贪心解码 (greedy)")
    p.add_argument("--show", type=int, default=1, metavar="K", help="每个任务打印前 K 个回答（默认 1，0 = 不打印）")
    add_shape_arguments(p)


class _Progress:
    """Answers done so far, the time spent and an estimate of the time left, on stderr: one
    line rewritten in place on a terminal, a new line every 10 seconds otherwise (a log, a notebook)."""

    def __init__(self) -> None:
        import time

        self.clock, self.tty = time.perf_counter, sys.stderr.isatty()
        self.start = self.shown = self.clock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if not self.tty and done < total and now - self.shown < 10:
            return
        self.shown = now
        spent = now - self.start
        left = spent / max(done, 1) * (total - done)
        line = f"已生成 {done}/{total} 个回答，用时 {spent:.0f} 秒" + (f"，预计还要 {left:.0f} 秒" if done < total else "")
        if self.tty:
            print("\r" + line, end="" if done < total else "\n", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """The subcommand; ValueError (bad files, weights that do not fit) goes to the caller."""
    from .runner import evaluate, load_model, load_prompts, load_tokenizer, write_report
    from .table import format_table

    if args.threads < 1:
        raise ValueError(f"--threads {args.threads}：至少 1")
    if args.batch_size < 1:
        raise ValueError(f"--batch_size {args.batch_size}：至少 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit {args.limit}：至少 1")
    if not Path(args.model).is_file():
        raise ValueError(f"找不到权重文件 (weights) {args.model}：训练命令把它写在 --save_dir 里，"
                         "例如 out/full_sft_512.pth")
    prompts = load_prompts(args.prompts, args.limit)
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except FileNotFoundError as e:
        raise ValueError(f"--tokenizer：{e}") from None
    try:
        model, config_path = load_model(args.model, args.device, lora=args.lora, shape=shape_overrides(args))
        print(f"评分 (eval)：{len(prompts)} 条提示，每条最多生成 {args.max_new_tokens} 个 token"
              + ("" if args.limit else "（快速试跑：--limit 30 只评前 30 条，六种任务各 5 条）")
              + "……", file=sys.stderr, flush=True)
        report = evaluate(model, tokenizer, prompts, args.device, max_new_tokens=args.max_new_tokens,
                          greedy=not args.sample, batch_size=args.batch_size, num_threads=args.threads,
                          progress=_Progress())
    except NotImplementedError as e:
        print(f"错误：模型还有没写完的部分：{e}。先通过 00–08 的检查，或者用参考实现 "
              "WORKBOOK_IMPL=solutions 试跑。", file=sys.stderr)
        return 2
    report["settings"].update(weights=str(args.model), config=str(config_path) if config_path else None,
                              lora=args.lora)
    print(format_table(report))
    if args.show:
        shown: dict = {}
        for row in report["answers"]:
            if shown.get(row["task"], 0) >= args.show:
                continue
            shown[row["task"]] = shown.get(row["task"], 0) + 1
            mark = "✓" if row["scores"]["pass"] else "✗"
            ending = "" if row["stopped"] else " …（没有停止）"
            print(f"\n[{row['id']}] {mark}\n{row['answer']}{ending}")
    if args.json_path:
        print(f"\n报告已写到 {write_report(report, args.json_path)}")
    return 0


__all__ = ["HELP", "add_arguments", "run"]
