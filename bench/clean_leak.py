"""How optimistic is the shipped validation loss?  The validation leak of stage 18, measured without training.

    WORKBOOK_IMPL=solutions python bench/clean_leak.py [--weights data/base/pretrain_320.pth] [--json F]
    make clean-leak

The shipped base model was pretrained on ``data/pretrain_poetry_train.jsonl.gz``.  Its validation
split was drawn by a hash of the whole text, so a poem filed twice under two titles can sit on both
sides.  This script finds, with stage 18's MinHash + LSH (``workbook.data.funnel.straddling``), the
validation poems that have a near-duplicate (Jaccard >= 0.5) in training, and computes the model's
loss (mean cross-entropy per token, every token of ``bos + poem + eos`` after the first, as in
pretraining) on all validation poems, on the leaked ones, and on the rest: the last figure is the
validation loss of a split where near-duplicates cannot straddle.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook.data import funnel  # noqa: E402
from workbook.eval import load_model, load_tokenizer  # noqa: E402


@torch.no_grad()
def token_losses(model, tok, texts: list[str], batch: int = 32, max_len: int = 512) -> list[tuple[float, int]]:
    """(sum of next-token cross-entropies, number of predicted tokens) per text."""
    out = []
    for start in range(0, len(texts), batch):
        ids = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"][:max_len - 2] + [tok.eos_token_id]
               for t in texts[start:start + batch]]
        width = max(map(len, ids))
        x = torch.full((len(ids), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for i, row in enumerate(ids):
            x[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = True
        logits = model(x).logits.float()  # (B, T, V)
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")  # (B, T-1)
        m = mask[:, 1:]
        out += [(float((ce[i] * m[i]).sum()), int(m[i].sum())) for i in range(len(ids))]
    return out


def mean(rows: list[tuple[float, int]]) -> float:
    return sum(s for s, _ in rows) / max(1, sum(n for _, n in rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=ROOT / "data" / "base" / "pretrain_320.pth")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.weights.is_file():
        print(f"错误：找不到权重文件 {args.weights}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train = funnel._read_texts(ROOT / "data" / "pretrain_poetry_train.jsonl.gz")
    val = funnel._read_texts(ROOT / "data" / "pretrain_poetry_val.jsonl.gz")
    hits = funnel.straddling(train, val)
    leaked = {v for v, _, _ in hits}
    t_find = time.perf_counter() - t0
    model, _ = load_model(args.weights)
    tok = load_tokenizer()
    rows = token_losses(model, tok, val)
    report = {
        "weights": str(args.weights.relative_to(ROOT) if args.weights.is_relative_to(ROOT) else args.weights),
        "val_poems": len(val), "leaked_poems": len(leaked),
        "loss_all_validation": round(mean(rows), 4),
        "loss_leaked": round(mean([r for i, r in enumerate(rows) if i in leaked]), 4),
        "loss_not_leaked": round(mean([r for i, r in enumerate(rows) if i not in leaked]), 4),
        "tokens": {"all": sum(n for _, n in rows), "leaked": sum(n for i, (_, n) in enumerate(rows) if i in leaked)},
        "seconds": {"find_leaks": round(t_find, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    report["optimism"] = round(report["loss_not_leaked"] - report["loss_all_validation"], 4)
    print(json.dumps(report, ensure_ascii=False, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
