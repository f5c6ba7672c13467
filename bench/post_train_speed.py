"""Useful tokens/s of SFT, DPO and distillation steps: padded to max_seq_len vs trimmed batches.

    WORKBOOK_IMPL=solutions python bench/post_train_speed.py [--steps 8] [--threads 1] [--json F]

MiniMind's trainers pad every sample to ``max_seq_len`` and run the model over the padding;
MiniMind's own ``train_full_sft.py`` is not available offline, so the baseline is the workbook's
harness doing exactly that (``--trim_padding 0``, today's behaviour).  For each trainer, with its
default shape (batch × max_seq_len: SFT 16 × 340, DPO 4 × 1024 pairs, distillation 32 × 340) and
data (the shipped train files), the same batches in MiniMind's order (DistributedSampler, seed
42, epoch 0) are timed as full training steps (forward, backward, AdamW; fp32 on CPU):

- **padded**: every row max_seq_len long (MiniMind; ``--trim_padding 0``);
- **trimmed**: each batch cut to its longest row (``--trim_padding 1``, the new default);
- **grouped**: trimmed, in the length-grouped order (``--group_by_length 1``; other samples).

Useful tokens are the non-padding ones (each row up to its last real token, chosen and rejected
rows both for DPO); tokens/s = useful tokens / step time.  The arms alternate step by step, so
all three see the same machine load; the ratio to padded is what counts.  Models: SFT and DPO on
the shipped stage-14 model (data/base/full_sft_320.pth: 320 wide, 5 layers; DPO with its frozen
copy as reference); distillation: a 128-wide, 4-layer student (bench/distill_compare.py's) under
that model as the teacher.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MODEL = DATA / "base" / "full_sft_320.pth"
SHAPES = {"sft": (16, 340), "dpo": (4, 1024), "distillation": (32, 340)}


def batches(dataset, batch_size: int, steps: int, grouped: bool, pad_id: int, lengths=None):
    from workbook.train.batching import LengthGroupedSampler

    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=42)
    sampler.set_epoch(0)
    order = list(LengthGroupedSampler(sampler, lengths, batch_size) if grouped else sampler)
    return [[dataset[i] for i in order[k * batch_size:(k + 1) * batch_size]] for k in range(steps)]


def build(trainer: str, tok, max_seq_len: int):
    """(dataset, a function making a fresh trainable objective)."""
    from workbook.eval.runner import load_model

    if trainer == "dpo":
        from workbook.data.dpo import DPODataset
        from workbook.train.dpo import DPOObjective, PairTensors

        ds = PairTensors(DPODataset(str(DATA / "dpo_train.jsonl.gz"), tok, max_seq_len))

        def make():
            policy = load_model(MODEL)[0].train()
            return DPOObjective(policy, copy.deepcopy(policy), beta=0.1, length_normalize=True)
        return ds, make
    from workbook.data.sft import SFTDataset

    ds = SFTDataset(str(DATA / "sft_poetry_train.jsonl.gz"), tok, max_seq_len)
    if trainer == "sft":
        return ds, lambda: load_model(MODEL)[0].train()
    from workbook.config import MiniMindConfig
    from workbook.model.causal_lm import MiniMindForCausalLM
    from workbook.train.distillation import DistillObjective

    teacher = load_model(MODEL)[0]

    def make():
        torch.manual_seed(0)
        student = MiniMindForCausalLM(MiniMindConfig(hidden_size=128, num_hidden_layers=4)).train()
        return DistillObjective(student, teacher, alpha=0.5, temperature=1.0)
    return ds, make


def step(model, opt, x, y) -> float:
    start = time.perf_counter()
    loss = model(x, labels=y).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(trainer: str, tok, steps: int) -> dict:
    from torch.utils.data.dataloader import default_collate

    from workbook.train.batching import TrimPadding, real_lengths, sample_lengths

    batch_size, max_seq_len = SHAPES[trainer]
    pad = tok.pad_token_id or 0
    ds, make = build(trainer, tok, max_seq_len)
    t0 = time.perf_counter()
    lengths = sample_lengths(ds, pad)
    length_s = time.perf_counter() - t0
    trim = TrimPadding(pad)
    arms = {"padded": default_collate, "trimmed": trim, "grouped": trim}
    data = {"padded": batches(ds, batch_size, steps, False, pad),
            "grouped": batches(ds, batch_size, steps, True, pad, lengths)}
    data["trimmed"] = data["padded"]
    models = {a: make() for a in arms}
    opts = {a: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-6)
            for a, m in models.items()}
    times = {a: [] for a in arms}
    useful = {a: 0 for a in arms}
    widths = {a: [] for a in arms}
    for k in range(steps + 1):  # step 0 warms up (allocator, first-call costs) and is not counted
        for a, collate in arms.items():
            x, y = collate(data[a][k % steps])
            t = step(models[a], opts[a], x, y)
            if k > 0:
                times[a].append(t)
                useful[a] += int(real_lengths(x, y, pad).sum())
                widths[a].append(x.shape[-1])
        print(f"\r{trainer}: step {k}/{steps}", end="", flush=True)
    print()
    out = {"batch_size": batch_size, "max_seq_len": max_seq_len, "steps": steps,
           "lengths_pass_s": round(length_s, 1), "arms": {}}
    for a in arms:
        total = sum(times[a])
        out["arms"][a] = {"useful_tokens": useful[a], "seconds": round(total, 2),
                          "median_step_s": round(statistics.median(times[a]), 3),
                          "useful_tok_s": round(useful[a] / total, 1),
                          "mean_width": round(statistics.mean(widths[a]), 1)}
    base = out["arms"]["padded"]["useful_tok_s"]
    for a in arms:
        out["arms"][a]["ratio_to_padded"] = round(out["arms"][a]["useful_tok_s"] / base, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per arm (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--trainers", default="sft,dpo,distillation")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    trainers = args.trainers.split(",")
    if args.steps < 1 or args.threads < 1 or not set(trainers) <= set(SHAPES):
        ap.error(f"--steps/--threads >= 1, --trainers from {','.join(SHAPES)}")
    from workbook.eval.runner import load_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = load_tokenizer()
    report = {"settings": {**vars(args), "torch": torch.__version__,
                           "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}}
    for trainer in trainers:
        r = report[trainer] = measure(trainer, tok, args.steps)
        print(f"{trainer} (batch {r['batch_size']} × {r['max_seq_len']}, {args.steps} steps each):")
        for a, f in r["arms"].items():
            print(f"  {a:<8} width {f['mean_width']:>6}  step {f['median_step_s']:>7.3f} s  "
                  f"useful {f['useful_tok_s']:>8.1f} tok/s  {f['ratio_to_padded']:>5.2f}x", flush=True)
    report["settings"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    print(f"load average: start {report['settings']['loadavg_at_start']}, end {report['settings']['loadavg_at_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
