"""DPO from the stage-14 model at two values of β: what it changes, and what it costs (stage 16).

    python bench/dpo_compare.py [--steps 100] [--runs sum:0.1,sum:0.5] [--report data/base/dpo_compare.json]

From the shipped SFT model (data/base/full_sft_320.pth), each run trains on the offline preference
pairs (data/dpo_train.jsonl.gz) with the workbook's trainer (whatever WORKBOOK_IMPL selects; `make
dpo-demo` uses the reference), same data, steps, learning rate and seed; a run is a sequence
log-prob (`sum`: the paper's and TRL's; `mean`: MiniMind's length-normalised) and a β.  Then, for
the start and every run:
- reward accuracy on the 200 held-out pairs (data/dpo_val.jsonl.gz): the share where the implicit
  reward β·(log π − log π_ref) ranks chosen above rejected; and, model alone, the share where the
  model's own sequence log-prob already prefers chosen (the start model's preference);
- the stage-14 grader (data/sft_eval_prompts.jsonl, greedy): pass rate and form compliance;
- the validation loss on the SFT poems (data/sft_poetry_val.jsonl.gz): how much is forgotten.
It prints a table and writes the figures (and a few answers) to a JSON report.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "data" / "base" / "full_sft_320.pth"
MAX_SEQ_LEN = 256


def train(beta: float, out: Path, steps: int, lr: float, length_normalize: int, common: list[str]) -> dict:
    name = f"dpo_{'mean' if length_normalize else 'sum'}_b{beta:g}"
    cmd = [sys.executable, "-m", "workbook.train.dpo", "--from_weight", str(START), "--save_dir", str(out),
           "--save_weight", name, "--max_steps", str(steps), "--learning_rate", str(lr), "--beta", str(beta),
           "--length_normalize", str(length_normalize), *common]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    summary = json.loads((out / f"{name}_320_summary.json").read_text(encoding="utf-8"))
    return {"beta": beta, "length_normalize": bool(length_normalize), "learning_rate": lr, "weights": str(out / f"{name}_320.pth"),
            "seconds": round(time.perf_counter() - start, 1), "dpo_val_loss": summary.get("val_loss")}


def measure(weights: Path, beta: float, length_normalize: bool) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from workbook.data.sft import SFTDataset
    from workbook.eval import evaluate, load_model, load_prompts, load_tokenizer
    from workbook.train.dpo import DPOObjective, evaluate_pairs, make_dataset

    tokenizer = load_tokenizer()
    policy, _ = load_model(weights)
    ref, _ = load_model(START)
    objective = DPOObjective(policy, ref, beta, length_normalize)
    pairs = make_dataset(str(ROOT / "data" / "dpo_val.jsonl.gz"), tokenizer, MAX_SEQ_LEN)
    row = {"pairs": evaluate_pairs(objective, pairs, "cpu")}
    # the model's own preference, no reference: sequence log-prob of chosen > rejected
    row["pairs"]["model_prefers_chosen"] = preference(objective, pairs, length_normalize)
    # forgetting: the LM loss on the held-out SFT conversations (assistant tokens only)
    sft = SFTDataset(str(ROOT / "data" / "sft_poetry_val.jsonl.gz"), tokenizer, 224)
    total = k = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(DataLoader(sft, batch_size=16)):
            if i >= 20:
                break
            total += policy(x, labels=y).loss.item()
            k += 1
    row["sft_val_loss"] = round(total / k, 4)
    report = evaluate(policy, tokenizer, load_prompts(ROOT / "data" / "sft_eval_prompts.jsonl"), "cpu",
                      max_new_tokens=128)
    row["grader"] = {"overall": report["overall"], "tasks": report["tasks"]}
    row["answers"] = [{"request": a["request"], "answer": a["answer"], "pass": a["scores"].get("pass")}
                      for a in report["answers"][::20]]
    return row


def preference(objective, pairs, length_normalize: bool) -> float:
    """The share of pairs where the policy's own sequence log-prob prefers chosen (no reference)."""
    import torch
    from torch.utils.data import DataLoader

    from workbook.train.dpo_loss import sequence_log_probs

    prefer = n = 0
    with torch.no_grad():
        for x, y in DataLoader(pairs, batch_size=8):
            lp, _, mask, _ = objective.log_probs(x, y)
            s = sequence_log_probs(lp, mask, length_normalize)
            prefer += (s[:len(x)] > s[len(x):]).sum().item()
            n += len(x)
    return round(prefer / n, 4)


def measure_preference(weights: Path, length_normalize: bool) -> float:
    """preference() of the model at `weights` on the held-out pairs."""
    from workbook.eval import load_model, load_tokenizer
    from workbook.train.dpo import DPOObjective, make_dataset

    model, _ = load_model(weights)
    pairs = make_dataset(str(ROOT / "data" / "dpo_val.jsonl.gz"), load_tokenizer(), MAX_SEQ_LEN)
    return preference(DPOObjective(model, model, 0.1, length_normalize), pairs, length_normalize)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps of every run")
    ap.add_argument("--runs", default="sum:0.1,sum:0.5",
                    help="the runs: sequence log-prob (sum | mean) and β, comma-separated")
    ap.add_argument("--learning_rate", type=float, default=2e-5)
    ap.add_argument("--out", default="out/dpo")
    ap.add_argument("--report", default="out/dpo/dpo_compare.json")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="default: bfloat16 on a CPU with native bf16 (AMX, AVX512-BF16), else float32")
    args = ap.parse_args(argv)
    from workbook.train.trainer import cpu_dtype

    dtype = args.dtype or cpu_dtype()
    out = (ROOT / args.out).resolve()
    common = ["--data_path", str(ROOT / "data" / "dpo_train.jsonl.gz"),
              "--val_path", str(ROOT / "data" / "dpo_val.jsonl.gz"), "--epochs", "1", "--batch_size", "8",
              "--accumulation_steps", "1", "--max_seq_len", str(MAX_SEQ_LEN), "--log_interval", "25",
              "--save_interval", "100", "--eval_interval", "100", "--eval_batches", "25", "--num_workers", "1",
              "--dtype", dtype, "--device", "cpu", "--samples", "0", "--no_progress", "--seed", "42"]
    runs = []
    for spec in args.runs.split(","):
        mode, beta = spec.split(":")
        if mode not in ("sum", "mean"):
            ap.error(f"--runs: {spec!r}: the sequence log-prob is sum or mean")
        runs.append((mode == "mean", float(beta)))
    # the start: its own preference (sum and mean), its grader score and SFT loss
    rows = [{"run": "sft (start)", "beta": None, "length_normalize": None, "seconds": 0.0,
             **measure(START, 0.1, False)}]
    rows[0]["pairs"]["model_prefers_chosen_mean"] = measure_preference(START, True)
    print(table({"rows": rows}), flush=True)
    for length_normalize, beta in runs:
        row = train(beta, out, args.steps, args.learning_rate, int(length_normalize), common)
        row.update(run=f"{'mean' if length_normalize else 'sum'} β={beta:g}",
                   **measure(Path(row["weights"]), beta, length_normalize))
        rows.append(row)
        print(table({"rows": rows}), flush=True)
    report = {"dtype": dtype, "steps": args.steps, "batch_size": 8, "max_seq_len": MAX_SEQ_LEN, "learning_rate": args.learning_rate,
              "start": str(START.relative_to(ROOT)),
              "data": "data/dpo_train.jsonl.gz", "held_out": "data/dpo_val.jsonl.gz", "rows": rows,
              "env": {"WORKBOOK_IMPL": os.environ.get("WORKBOOK_IMPL", "learner"), "cpu_count": os.cpu_count()}}
    path = ROOT / args.report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"\n报告：{path}")
    return 0


def table(report: dict) -> str:
    """One line per model: held-out pair figures, the grader, the poems' loss."""
    head = (f"{'run':<14}{'time':>7}{'reward acc':>12}{'prefers chosen':>16}{'grader pass':>13}"
            f"{'form':>7}{'SFT val loss':>14}")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        acc = "-" if r["beta"] is None else f"{r['pairs']['reward_accuracy']:.0%}"
        form = r["grader"]["overall"].get("form")
        lines.append(f"{r['run']:<14}{r['seconds']:>6.0f}s{acc:>12}{r['pairs']['model_prefers_chosen']:>16.0%}"
                     f"{r['grader']['overall']['pass']:>13.0%}{'-' if form is None else f'{form:.0%}':>7}"
                     f"{r['sft_val_loss']:>14.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
