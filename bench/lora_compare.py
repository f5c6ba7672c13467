"""LoRA at two ranks against full fine-tuning, on the same data, steps and seed (stage 15).

    python bench/lora_compare.py [--task identity|acrostic] [--steps N] [--report data/base/lora_compare.json]

From the shipped SFT model (data/base/full_sft_320.pth), each run trains on one task's
conversations with the workbook's trainers (whatever WORKBOOK_IMPL selects; `make lora-demo` uses
the reference), then the grader scores:
- the task, on its held-out requests;
- forgetting: the stage-14 prompts (data/sft_eval_prompts.jsonl).
Tasks (see data/README.md): ``identity`` (the default, MiniMind's lora_identity: the model says
who it is; 64 conversations, 100 steps) and ``acrostic`` (藏头诗: the heads of a quatrain spell
the requested word; 14,794 conversations, 300 steps — it did not move in that budget).
It prints a table (trainable parameters, optimizer-state memory, wall time, validation loss, task
pass rate, stage-14 pass rate) and writes the figures to a JSON report.
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
# per task: data, the grader's prompts, max_new_tokens, max_seq_len, steps, epochs (enough to reach the steps)
TASKS = {
    # the longest conversation is 166 tokens (Latin "MiniMind Workbook" is spelt letter by letter)
    "identity": {"train": "lora_identity_train.jsonl.gz", "val": "lora_identity_val.jsonl.gz",
                 "prompts": "lora_identity_eval_prompts.jsonl", "max_new_tokens": 128, "max_seq_len": 176,
                 "steps": 100, "epochs": 100},
    # a 4-line poem is at most ~40 tokens: room for a title line, bounds a runaway
    "acrostic": {"train": "lora_acrostic_train.jsonl.gz", "val": "lora_acrostic_val.jsonl.gz",
                 "prompts": "lora_eval_prompts.jsonl", "max_new_tokens": 96, "max_seq_len": 224,
                 "steps": 300, "epochs": 1},
}


def train(kind: str, rank: int | None, out: Path, steps: int, lr: float, common: list[str], task: str) -> dict:
    name = f"lora_{task}_r{rank}" if kind == "lora" else f"full_{task}"
    module = "workbook.train.lora" if kind == "lora" else "workbook.train.full_sft"
    extra = ["--lora_name", name, "--lora_rank", str(rank)] if kind == "lora" else ["--save_weight", name]
    cmd = [sys.executable, "-m", module, "--from_weight", str(START), "--save_dir", str(out),
           "--max_steps", str(steps), "--learning_rate", str(lr), *extra, *common]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    weights = out / f"{name}_320.pth"
    state = __import__("torch").load(out / f"{name}_320_resume.pth", weights_only=True)
    # Adam keeps two fp32 moments per trained value: exp_avg and exp_avg_sq
    opt_bytes = sum(t.numel() * t.element_size() for s in state["optimizer"]["state"].values()
                    for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))
    trainable = sum(t.numel() for t in __import__("torch").load(weights, weights_only=True).values()) \
        if kind == "lora" else sum(t.numel() for k, t in state["model"].items()
                                   if k != "lm_head.weight")  # the tied pair counted once
    summary = json.loads((out / f"{name}_320_summary.json").read_text(encoding="utf-8"))
    return {"kind": kind, "rank": rank, "weights": str(weights), "seconds": round(seconds, 1),
            "val_loss": summary.get("val_loss"),
            "trainable_params": trainable, "optimizer_state_bytes": opt_bytes,
            "weights_file_bytes": weights.stat().st_size}


def grade(weights: Path, prompts: Path, lora: Path | None, max_new_tokens: int) -> dict:
    from workbook.eval import evaluate, load_model, load_prompts, load_tokenizer

    model, _ = load_model(START if lora is not None else weights, lora=lora)
    report = evaluate(model, load_tokenizer(), load_prompts(prompts), "cpu", max_new_tokens=max_new_tokens)
    return {"overall": report["overall"], "tasks": report["tasks"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="identity", choices=sorted(TASKS))
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps of every run (default: the task's)")
    ap.add_argument("--ranks", default="4,16", help="the LoRA ranks to compare")
    ap.add_argument("--lora_lr", type=float, default=1e-2)
    ap.add_argument("--full_lr", type=float, default=5e-4)
    ap.add_argument("--out", default="out/lora")
    ap.add_argument("--report", default="out/lora/lora_compare.json")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="default: bfloat16 on a CPU with native bf16 (AMX, AVX512-BF16), else float32")
    args = ap.parse_args(argv)
    from workbook.train.trainer import cpu_dtype

    dtype = args.dtype or cpu_dtype()
    out = (ROOT / args.out).resolve()
    task = TASKS[args.task]
    steps = args.steps or task["steps"]
    common = ["--data_path", str(ROOT / "data" / task["train"]),
              "--val_path", str(ROOT / "data" / task["val"]), "--epochs", str(task["epochs"]),
              "--batch_size", "16", "--accumulation_steps", "1", "--max_seq_len", str(task["max_seq_len"]),
              "--log_interval", "50", "--save_interval", "100", "--eval_interval", "100", "--eval_batches", "11",
              "--num_workers", "1", "--dtype", dtype, "--device", "cpu", "--samples", "0", "--no_progress",
              "--seed", "42"]
    task_prompts = ROOT / "data" / task["prompts"]
    sft_prompts = ROOT / "data" / "sft_eval_prompts.jsonl"
    rows = [{"kind": "sft (start)", "rank": None, "trainable_params": 0, "optimizer_state_bytes": 0,
             "seconds": 0.0, "task": grade(START, task_prompts, None, task["max_new_tokens"]),
             "stage14": grade(START, sft_prompts, None, 128)}]
    runs = [("lora", int(r), args.lora_lr) for r in args.ranks.split(",")] + [("full", None, args.full_lr)]
    for kind, rank, lr in runs:
        row = train(kind, rank, out, steps, lr, common, args.task)
        lora = Path(row["weights"]) if kind == "lora" else None
        row["task"] = grade(Path(row["weights"]), task_prompts, lora, task["max_new_tokens"])
        row["stage14"] = grade(Path(row["weights"]), sft_prompts, lora, 128)
        row["learning_rate"] = lr
        rows.append(row)
    report = {"dtype": dtype, "task": args.task, "steps": steps, "batch_size": 16, "max_seq_len": task["max_seq_len"],
              "start": str(START.relative_to(ROOT)), "data": f"data/{task['train']}", "rows": rows,
              "env": {"WORKBOOK_IMPL": os.environ.get("WORKBOOK_IMPL", "learner"), "cpu_count": os.cpu_count()}}
    path = (ROOT / args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(table(report))
    print(f"\n报告：{path}")
    return 0


def table(report: dict) -> str:
    """One line per run: what trains, what it costs, the task score, the stage-14 score."""
    head = (f"{'run':<14}{'trainable':>12}{'optimizer state':>17}{'time':>9}"
            f"{'task pass':>11}{'stage-14 pass':>15}")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        name = r["kind"] if r["rank"] is None else f"lora r={r['rank']}"
        lines.append(f"{name:<14}{r['trainable_params']:>12,}{r['optimizer_state_bytes'] / 2**20:>14.2f} MB"
                     f"{r['seconds']:>8.0f}s{_loss(r.get('val_loss')):>10}{r['task']['overall']['pass']:>11.0%}"
                     f"{r['stage14']['overall']['pass']:>15.0%}")
    return "\n".join(lines)


def _loss(v) -> str:
    return "-" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
