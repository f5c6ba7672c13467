"""Train the shipped tokenizer (data/tokenizer/) on the poetry train split with the reference code.

Uses ``solutions/data/tokenizer.py`` (through the workbook's import hook, whatever WORKBOOK_IMPL
says), saves the Hugging Face folder, then reloads it with ``AutoTokenizer`` and reports the
training time and the characters per token on the validation split.

    python data/build_tokenizer.py            # ~1 minute on 2 cores
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from transformers import AutoTokenizer

from workbook import _modes

HERE = Path(__file__).resolve().parent


def chars_per_token(tokenizer, texts: list[str]) -> float:
    """Characters of text per token (no special tokens): higher = shorter sequences."""
    n_tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return sum(len(t) for t in texts) / n_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=HERE / "pretrain_poetry_train.jsonl.gz")
    ap.add_argument("--val", type=Path, default=HERE / "pretrain_poetry_val.jsonl.gz")
    ap.add_argument("--out", type=Path, default=HERE / "tokenizer")
    ap.add_argument("--vocab-size", type=int, default=6400)
    args = ap.parse_args()

    ref = _modes.reference_module("data.tokenizer")
    start = time.perf_counter()
    tok = ref.train_tokenizer(ref.iter_texts(args.train), vocab_size=args.vocab_size)
    seconds = time.perf_counter() - start
    ref.save_tokenizer(tok, args.out)

    hf = AutoTokenizer.from_pretrained(args.out)
    val = list(ref.iter_texts(args.val))
    print(f"trained vocab {tok.get_vocab_size()} in {seconds:.1f} s; saved to {args.out}")
    print(f"specials: {[hf.convert_ids_to_tokens(i) for i in (0, 1, 2)]}")
    print(f"validation: {len(val)} poems, {chars_per_token(hf, val):.3f} characters/token")


if __name__ == "__main__":
    main()
