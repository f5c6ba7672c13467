"""Command line for the packed format: tokenise a jsonl corpus once into uint16 ids.

    python -m workbook.data.pack data/pretrain_poetry_train.jsonl.gz out/poetry_train.bin \\
        --tokenizer data/tokenizer

Writes OUTPUT.bin and OUTPUT.bin.json (see ``workbook.data.packed``) and prints the counts and
the speed in MB of input per second.  The input is checked completely before tokenising
(``workbook.data.validate``), and only local files are read: the tokenizer must be a folder on
disk (nothing is downloaded).  Bad input ends with one line on stderr naming the file (and line)
and exit status 2; nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

from .validate import DataError, check_jsonl, describe


def main(argv: list[str] | None = None) -> dict:
    """Pack as the command line says; returns the sidecar dict.  Raises DataError / OSError."""
    ap = argparse.ArgumentParser(prog="python -m workbook.data.pack",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path,
                    help="INPUT.jsonl or INPUT.jsonl.gz, one {\"text\": ...} per line")
    ap.add_argument("output", type=Path, help="OUTPUT.bin (its sidecar is OUTPUT.bin.json)")
    ap.add_argument("--tokenizer", type=Path, default=Path("data/tokenizer"),
                    help="Hugging Face tokenizer folder (local; never downloaded)")
    ap.add_argument("--batch-size", type=int, default=4096, help="documents per encode_batch call")
    args = ap.parse_args(argv)
    # every path is checked before the slow imports (torch, transformers): a typo fails at once
    if not args.input.is_file():
        raise DataError(args.input, "找不到输入文件 (input not found)")
    if args.output.suffix != ".bin":
        raise DataError(args.output, "输出文件名要以 .bin 结尾：训练命令靠这个后缀认出打包格式 (packed format)")
    if args.output.is_dir():
        raise DataError(args.output, "输出路径是一个目录 (directory)：要写的是 OUTPUT.bin 文件")
    if args.batch_size <= 0:
        raise DataError("--batch-size", f"必须是正整数，现在是 {args.batch_size}")
    flag = f"--tokenizer {args.tokenizer}"
    if not args.tokenizer.is_dir():
        what = "不是目录，要的是分词器目录" if args.tokenizer.exists() else "找不到分词器目录"
        raise DataError(flag, f"{what} (tokenizer directory)；打包只读本地文件 (local files only)，"
                              "不会去 Hugging Face Hub 下载")
    if not (args.tokenizer / "tokenizer.json").is_file():
        raise DataError(flag, "目录里没有 tokenizer.json：打包要 fast tokenizer 的这个文件")

    # the whole input checked first (~100 MB/s, against ~3–6 MB/s for tokenising): a bad line
    # near the end of a big corpus is named in seconds, not after minutes of packing
    print(describe(check_jsonl(args.input)), flush=True)

    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    except (OSError, ValueError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise DataError(flag, f"读不了分词器 (cannot load tokenizer)：{detail}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(flag, "不是 fast tokenizer：打包要 tokenizers 的 encode_batch")

    from .packed import pack_jsonl

    start = time.perf_counter()
    meta = pack_jsonl(args.input, tokenizer, args.output, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    mb = args.input.stat().st_size / 1e6
    print(f"{args.input} ({mb:.1f} MB) → {args.output}: {meta['num_docs']:,d} documents, "
          f"{meta['num_tokens']:,d} tokens ({args.output.stat().st_size / 1e6:.1f} MB) "
          f"in {seconds:.1f} s = {mb / seconds:.1f} MB/s of input"
          + (" (compressed size)" if args.input.suffix == ".gz" else ""))
    return meta


def error_message(e: BaseException) -> str:
    """One line for the user: an OSError's text without "[Errno 28]", else str(e)."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        if e.errno == errno.ENOSPC:  # pack_jsonl's own message, already in Chinese
            return e.strerror + where
        return f"读写文件出错 (I/O error)：{e.strerror}{where}"
    return str(e)


def cli(argv: list[str] | None = None) -> int:
    """``main`` for the shell: exit status 0, or 2 with one line on stderr (no traceback)."""
    try:
        main(argv)
    except (ValueError, OSError) as e:  # DataError is a ValueError
        print(f"错误：{error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("已中断 (interrupted)：没有写出文件", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
