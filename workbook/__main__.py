"""Learner CLI: ``python -m workbook progress | check ID | hint ID [--level N]``."""
from __future__ import annotations

import argparse
import os
import sys

from . import stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbook",
        description="MiniMind Workbook 学习工具：看进度、跑检查、要提示。")
    sub = parser.add_subparsers(dest="command", required=True)
    p_progress = sub.add_parser("progress", help="每个阶段的状态和下一步")
    p_check = sub.add_parser("check", help="运行某一阶段的检查（通过时退出码 0，否则 1）")
    p_check.add_argument("stage", help="阶段编号，例如 01")
    for p in (p_progress, p_check):
        p.add_argument("--timeout", type=float, default=None,
                       help="每个阶段的检查最多运行多少秒（默认 $WORKBOOK_CHECK_TIMEOUT 或 180）")
    p_hint = sub.add_parser("hint", help="显示某一阶段的下一级提示")
    p_hint.add_argument("stage", help="阶段编号，例如 01")
    p_hint.add_argument("--level", type=int, default=None, help="直接显示第 N 级提示")
    p_export = sub.add_parser("export", help="导出你的包（可安装，带 torchrun 启动脚本）")
    p_export.add_argument("dir", help="导出到这个目录（不存在或为空）")
    p_export.add_argument("--force", action="store_true", help="有阶段没通过也导出")
    p_export.add_argument("--reference", action="store_true", help="导出参考实现而不是你的代码")
    p_hf = sub.add_parser("export-hf", help="把训练好的 .pth 权重导出成 Hugging Face 目录")
    p_hf.add_argument("weights", help="MiniMind 格式的 .pth（例如 out/pretrain_512.pth）")
    p_hf.add_argument("out", help="输出目录")
    p_hf.add_argument("--hidden_size", type=int, default=512)
    p_hf.add_argument("--num_hidden_layers", type=int, default=8)
    p_hf.add_argument("--num_attention_heads", type=int, default=8)
    p_hf.add_argument("--num_key_value_heads", type=int, default=2)
    p_hf.add_argument("--use_moe", type=int, default=0, choices=[0, 1])
    p_hf.add_argument("--pth", help="同时另存一份 MiniMind 格式的 .pth（fp16）")
    args = parser.parse_args(argv)

    from .checks.runner import CheckInterrupted

    try:
        if args.command == "progress":
            from .progress import results, table
            print(table(results(timeout=args.timeout)))
            return 0
        if args.command == "check":
            from .checks.runner import run_stages
            stage = stages.get(args.stage)
            result = run_stages([stage.id], timeout=args.timeout, echo=True)[stage.id]
            print(result.report())
            return 0 if result.passed else 1
        if args.command == "export":
            from .export import (ExportRefused, describe_failures, export_package, failing,
                                 judge_learner_files)
            results = None
            if not args.reference:
                print("先按你自己的文件检查每个阶段 (WORKBOOK_IMPL=learner) …", file=sys.stderr)
                results = judge_learner_files()
            try:
                dest = export_package(args.dir, reference=args.reference, force=args.force,
                                      results=results)
            except (ExportRefused, FileExistsError) as e:
                print(f"没有导出：{e}", file=sys.stderr)
                return 1
            bad = failing(results or [])
            if bad:
                print(f"警告：用 --force 导出了 {len(bad)} 个没有通过检查的阶段（已记在 "
                      f"{dest}/workbook/export_status.json 和 README.md 里，导入时也会提醒）：\n"
                      + describe_failures(bad), file=sys.stderr)
            print(f"已导出到 {dest}：pip install {dest}，然后 {dest}/train.sh --data_path ...")
            return 0
        if args.command == "export-hf":
            from .export import export_hf
            out = export_hf(args.weights, args.out, pth=args.pth, config_kwargs=dict(
                hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
                num_attention_heads=args.num_attention_heads,
                num_key_value_heads=args.num_key_value_heads, use_moe=bool(args.use_moe)))
            print(f"已导出 Hugging Face 目录 {out}："
                  f"AutoModelForCausalLM.from_pretrained('{out}', trust_remote_code=True)")
            return 0
        if args.command == "hint":
            from .hints import show
            print(show(args.stage, args.level))
            return 0
    except (stages.UnknownStage, ValueError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    except (CheckInterrupted, KeyboardInterrupt):
        print("\n已中断 (Ctrl-C)：检查没有跑完，什么都没有改动。", file=sys.stderr)
        return 130
    return 2


def _run() -> int:
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `python -m workbook check 02 | head`: the reader left early; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(_run())
