"""DPO's end-of-run validation on the 200 held-out pairs: trimmed batches against MiniMind's width.

    WORKBOOK_IMPL=solutions python bench/dpo_val_speed.py [--max_seq_len 1024]

``workbook.train.dpo.evaluate_pairs`` on data/dpo_val.jsonl.gz with the shipped SFT model as the
policy and its frozen copy as the reference (MiniMind's DPO starts so), batch 8, torch's default
threads (as the trainer runs it): once with each batch cut to its longest pair (the trainer's
way), once with every pair padded to --max_seq_len (MiniMind's; 1024 is its default).  Prints
both wall times and their ratio.  (Policy = reference, so the figures are a run's starting ones,
loss ln 2; that trimming leaves the DPO loss unchanged is tests/test_batching.py's.)
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max_seq_len", type=int, default=1024)
    args = ap.parse_args(argv)

    from workbook.eval.runner import load_model, load_tokenizer
    from workbook.train.dpo import DPOObjective, evaluate_pairs, make_dataset

    tok = load_tokenizer()
    policy = load_model(ROOT / "data" / "base" / "full_sft_320.pth")[0]
    objective = DPOObjective(policy, copy.deepcopy(policy), beta=0.1, length_normalize=False)
    pairs = make_dataset(str(ROOT / "data" / "dpo_val.jsonl.gz"), tok, args.max_seq_len)
    print(f"{len(pairs)} pairs, max_seq_len {args.max_seq_len}, {torch.get_num_threads()} threads, "
          f"load {[round(x, 2) for x in os.getloadavg()]}", flush=True)
    seconds, figures = {}, {}
    for trim in (True, False):
        start = time.perf_counter()
        figures[trim] = evaluate_pairs(objective, pairs, "cpu", trim_padding=trim)
        seconds[trim] = time.perf_counter() - start
        print(f"{'trimmed' if trim else 'padded ':8} {seconds[trim]:7.1f} s   {figures[trim]}", flush=True)
    print(f"padded / trimmed: {seconds[False] / seconds[True]:.1f}x; "
          f"load at the end {[round(x, 2) for x in os.getloadavg()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
