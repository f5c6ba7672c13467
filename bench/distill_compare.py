"""A small student with and without a teacher: same data, steps and seed (stage 17).

    python bench/distill_compare.py [--steps 400] [--temperatures 1,2] [--report data/base/distill_compare.json]

The teacher is the shipped stage-14 model (data/base/full_sft_320.pth, frozen).  The student is a
smaller MiniMind (default hidden 128, 4 layers), from random initialisation, trained on the SFT
conversations (data/sft_poetry_train.jsonl.gz) with the workbook's trainer (whatever WORKBOOK_IMPL
selects; `make distill-demo` uses the reference):
- CE alone (α = 1: the teacher is not used);
- α = 0.5 with the teacher at each temperature T.
Every student is measured the same way: validation cross-entropy on the held-out conversations
(data/sft_poetry_val.jsonl.gz, answer tokens), its curve, and the stage-14 grader (greedy).
It prints a table and writes the figures, the curves and a plot to the report's folder.
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
TEACHER = ROOT / "data" / "base" / "full_sft_320.pth"


def train(name: str, alpha: float, temperature: float, out: Path, args, common: list[str]) -> dict:
    cmd = [sys.executable, "-m", "workbook.train.distillation", "--from_student_weight", "none",
           "--student_hidden_size", str(args.student_hidden), "--student_num_layers", str(args.student_layers),
           "--num_attention_heads", "4", "--num_key_value_heads", "2",
           "--from_teacher_weight", str(TEACHER), "--save_dir", str(out), "--save_weight", name,
           "--max_steps", str(args.steps), "--learning_rate", str(args.learning_rate),
           "--alpha", str(alpha), "--temperature", str(temperature), *common]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    stem = f"{name}_{args.student_hidden}"
    summary = json.loads((out / f"{stem}_summary.json").read_text(encoding="utf-8"))
    import torch

    history = torch.load(out / f"{stem}_resume.pth", weights_only=True)["history"]
    return {"run": name, "alpha": alpha, "temperature": temperature if alpha < 1 else None,
            "weights": str(out / f"{stem}.pth"), "seconds": round(time.perf_counter() - start, 1),
            "params_M": summary["params_M"], "val_ce": summary.get("val_loss"),
            "val_curve": [list(p) for p in history["val"]], "train_curve": [list(p) for p in history["train"]]}


def grade(weights: str) -> dict:
    from workbook.eval import evaluate, load_model, load_prompts, load_tokenizer

    model, _ = load_model(weights)
    report = evaluate(model, load_tokenizer(), load_prompts(ROOT / "data" / "sft_eval_prompts.jsonl"), "cpu",
                      max_new_tokens=128)
    return {"overall": report["overall"], "tasks": report["tasks"],
            "answers": [{"request": a["request"], "answer": a["answer"]} for a in report["answers"][::30]]}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if r.get("val_curve"):
            steps, losses = zip(*r["val_curve"])
            ax.plot(steps, losses, marker="o", label=r["label"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation cross-entropy (answer tokens)")
    ax.set_title("student with and without the teacher")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps of every run")
    ap.add_argument("--temperatures", default="1,2", help="the teacher runs' temperatures")
    ap.add_argument("--alpha", type=float, default=0.5, help="α of the teacher runs")
    ap.add_argument("--student_hidden", type=int, default=128)
    ap.add_argument("--student_layers", type=int, default=4)
    ap.add_argument("--learning_rate", type=float, default=2e-3)
    ap.add_argument("--out", default="out/distill")
    ap.add_argument("--report", default="out/distill/distill_compare.json")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="default: bfloat16 on a CPU with native bf16 (AMX, AVX512-BF16), else float32")
    args = ap.parse_args(argv)
    from workbook.train.trainer import cpu_dtype

    dtype = args.dtype or cpu_dtype()
    out = (ROOT / args.out).resolve()
    common = ["--data_path", str(ROOT / "data" / "sft_poetry_train.jsonl.gz"),
              "--val_path", str(ROOT / "data" / "sft_poetry_val.jsonl.gz"), "--epochs", "1", "--batch_size", "16",
              "--accumulation_steps", "1", "--max_seq_len", "224", "--log_interval", "50",
              "--save_interval", "100", "--eval_interval", "50", "--eval_batches", "20", "--num_workers", "1",
              "--dtype", dtype, "--device", "cpu", "--samples", "0", "--no_progress", "--seed", "42"]
    runs = [("ce_only", 1.0, 1.0)] + [(f"kd_T{t}", args.alpha, float(t)) for t in args.temperatures.split(",")]
    rows = []
    for name, alpha, temperature in runs:
        row = train(name, alpha, temperature, out, args, common)
        row["label"] = "CE only (α = 1)" if alpha == 1 else f"α = {alpha:g}, T = {temperature:g}"
        row["grader"] = grade(row["weights"])
        rows.append(row)
        print(table(rows), flush=True)
    report_path = ROOT / args.report
    report_path.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, report_path.with_name("distill_curves.png"))
    report = {"dtype": dtype, "steps": args.steps, "batch_size": 16, "max_seq_len": 224, "learning_rate": args.learning_rate,
              "teacher": str(TEACHER.relative_to(ROOT)), "student": {"hidden_size": args.student_hidden,
                                                                    "num_hidden_layers": args.student_layers},
              "data": "data/sft_poetry_train.jsonl.gz", "rows": rows, "plot": "distill_curves.png",
              "env": {"WORKBOOK_IMPL": os.environ.get("WORKBOOK_IMPL", "learner"), "cpu_count": os.cpu_count()}}
    report_path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"\n报告：{report_path}")
    return 0


def table(rows: list[dict]) -> str:
    head = f"{'student':<20}{'params':>9}{'time':>8}{'val CE':>9}{'grader pass':>13}{'form':>7}{'stopped':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        o = r["grader"]["overall"]
        form = "-" if o.get("form") is None else f"{o['form']:.0%}"
        lines.append(f"{r['label']:<20}{r['params_M']:>8.2f}M{r['seconds']:>7.0f}s{r['val_ce'] or float('nan'):>9.3f}"
                     f"{o['pass']:>13.0%}{form:>7}{o['stopped']:>9.0%}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
