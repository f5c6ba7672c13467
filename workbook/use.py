"""``python -m workbook use MODE``: choose, once for this checkout, which stages run the reference.

A learner who starts at Part 2 would otherwise set ``WORKBOOK_IMPL=solutions:00-13`` on every
command.  The choice is saved in ``.workbook/mode`` (git-ignored); ``import workbook`` reads it
when ``WORKBOOK_IMPL`` is not set (``workbook._modes.mode_setting``), so the Lab, ``check``,
``progress`` and the trainers all follow it.  The environment variable still wins when it is set.
"""
from __future__ import annotations

import argparse
import os

from . import _modes

HELP = "记住这份代码用哪种模式（learner / solutions / solutions:00-13），不用每条命令都设 WORKBOOK_IMPL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mode", nargs="?", default=None,
                   help="learner（全部用你的代码）、solutions（全部用参考实现）或 solutions:00-13 这样的阶段列表；"
                        "不给 = 显示现在的选择")


def current() -> str:
    """One line: the mode in force and where it comes from."""
    value, source = _modes.mode_setting()
    where = {_modes.ENV_VAR: f"环境变量 {_modes.ENV_VAR} 选定", "default": "默认"}.get(
        source, f"{source} 里保存的选择（python -m workbook use）")
    return f"{_modes.describe(_modes.reference_stages())}，{where}"


def run(args: argparse.Namespace) -> int:
    if args.mode is None:
        print(f"现在的模式：{current()}")
        return 0
    try:
        reference = _modes.parse_mode(args.mode)
    except _modes.ModeError:
        raise ValueError(f"python -m workbook use {args.mode}：无法识别。可选：learner、solutions、"
                         f"solutions:00-13 或 solutions:01,02,05-08") from None
    value = _modes.format_mode(reference)
    _modes.MODE_FILE.parent.mkdir(parents=True, exist_ok=True)
    _modes.MODE_FILE.write_text(value + "\n", encoding="utf-8")
    print(f"已选定模式 {value}：{_modes.describe(reference)}。保存在 {_modes.MODE_FILE}（不进 git）；"
          f"progress、check、训练命令从现在起按它运行，已经打开的笔记本要重启 kernel。")
    if _modes.ENV_VAR in os.environ:
        print(f"注意：这个终端设了 {_modes.ENV_VAR}={os.environ[_modes.ENV_VAR]}，它优先于保存的选择；"
              f"unset {_modes.ENV_VAR} 之后才按 {value} 运行。")
    return 0
