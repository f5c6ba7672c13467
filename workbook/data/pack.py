"""Command line for the packed format: tokenise a jsonl corpus once into uint16 ids.

    python -m workbook.data.pack data/pretrain_poetry_train.jsonl.gz out/poetry_train.bin \\
        --tokenizer data/tokenizer

Writes OUTPUT.bin and OUTPUT.bin.json (see ``workbook.data.packed``) and prints the counts and
the speed in MB of input per second.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .packed import pack_jsonl


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m workbook.data.pack",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path,
                    help="INPUT.jsonl or INPUT.jsonl.gz, one {\"text\": ...} per line")
    ap.add_argument("output", type=Path, help="OUTPUT.bin (its sidecar is OUTPUT.bin.json)")
    ap.add_argument("--tokenizer", default="data/tokenizer", help="Hugging Face tokenizer folder")
    ap.add_argument("--batch-size", type=int, default=4096, help="documents per encode_batch call")
    args = ap.parse_args(argv)
    if not args.input.is_file():
        ap.error(f"找不到输入文件 (input not found): {args.input}")

    from transformers import AutoTokenizer  # slow import: only after the arguments are valid

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    start = time.perf_counter()
    meta = pack_jsonl(args.input, tokenizer, args.output, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    mb = args.input.stat().st_size / 1e6
    print(f"{args.input} ({mb:.1f} MB) → {args.output}: {meta['num_docs']:,d} documents, "
          f"{meta['num_tokens']:,d} tokens ({args.output.stat().st_size / 1e6:.1f} MB) "
          f"in {seconds:.1f} s = {mb / seconds:.1f} MB/s of input"
          + (" (compressed size)" if args.input.suffix == ".gz" else ""))
    return meta


if __name__ == "__main__":
    main()
