"""Learner CLI: ``python -m workbook progress | check ID | hint ID [--level N]``."""
from __future__ import annotations

import argparse
import sys

from . import stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbook",
        description="MiniMind Workbook 学习工具：看进度、跑检查、要提示。")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("progress", help="每个阶段的状态和下一步")
    p_check = sub.add_parser("check", help="运行某一阶段的检查（通过时退出码 0，否则 1）")
    p_check.add_argument("stage", help="阶段编号，例如 01")
    p_hint = sub.add_parser("hint", help="显示某一阶段的下一级提示")
    p_hint.add_argument("stage", help="阶段编号，例如 01")
    p_hint.add_argument("--level", type=int, default=None, help="直接显示第 N 级提示")
    args = parser.parse_args(argv)

    try:
        if args.command == "progress":
            from .progress import table
            print(table())
            return 0
        if args.command == "check":
            from .checks.harness import run_check
            result = run_check(args.stage)
            print(result.report())
            return 0 if result.passed else 1
        if args.command == "hint":
            from .hints import show
            print(show(args.stage, args.level))
            return 0
    except (stages.UnknownStage, ValueError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
