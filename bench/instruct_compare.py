"""What the stage-19 decisions do to an SFT model: the same short SFT on three builds of the chat data.

    WORKBOOK_IMPL=solutions python bench/instruct_compare.py [--steps 80] [--variants shipped,record] [--report data/base/instruct_compare.json]
    make instruct-compare

The builds (``data/build_sft.py``, which calls stage 19's functions: whatever WORKBOOK_IMPL selects):
- **shipped**: the stage-19 builder as it is — split by poem, decontaminated against the grader's
  requests, the 30/15/15/15/15/10 mix.  With the reference functions it rebuilds the shipped files
  byte for byte (checked here: the SHA-256 of each file), so "learner-built = shipped" needs no
  training; the run is the yardstick for the two below.
- **record**: ``--split record`` — the corpus's per-record split trusted (a train poem that is the same
  poem as a validation poem stays), no decontamination.  What leaks is counted without training:
  training conversations that contain a long line (>= 8 Han characters) of a validation poem, and
  of a poem behind one of the grader's 120 requests.
- **equal_mix**: the shipped split, but every task the same share (the weights ignored).

Each is trained from the shipped base (``data/base/pretrain_320.pth``) with
``python -m workbook.train.full_sft``, same steps, batch, learning rate and seed (the sft-demo
settings, fp32: bf16 autocast is emulated and ~8x slower on CPUs without AMX), and graded with
``python -m workbook eval`` on the 120 held-out requests (greedy).  Reported per run: pass and form
rates (overall and per task), the answer-part validation loss on the shipped validation set, wall
time; and the share of answers that copy a run of 10 characters from the request's reference poem.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

FILES = ("sft_poetry_train.jsonl.gz", "sft_poetry_val.jsonl.gz", "sft_eval_prompts.jsonl")
EQUAL_MIX = {"form_poem": 1, "ci": 1, "continue": 1, "name_form": 1, "give_title": 1, "multi_turn": 1}
VARIANTS = ("shipped", "record", "equal_mix")
DEFAULT_VARIANTS = VARIANTS
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _conversations(path: Path) -> list[list[dict]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["conversations"] for line in f if line.strip()]


def build(variant: str, out: Path) -> dict:
    import build_sft

    kwargs = {"split": "record"} if variant == "record" else {}
    if variant == "equal_mix":
        kwargs["train_mix"] = EQUAL_MIX
    fig = build_sft.build(build_sft.HERE, out, tokens=False, **kwargs)
    info = {"train_tasks": fig["splits"]["train"]["tasks"], "left_out_train_poems": fig["left_out_train_poems"],
            "identical_to_shipped": {name: _sha(out / name) == _sha(ROOT / "data" / name) for name in FILES}}
    return info


def leaks(train_file: Path) -> dict:
    """Training conversations that carry a long line of a validation poem / of a grader request's poem."""
    import build_sft
    from workbook.data import instruct

    train, val, *_ = build_sft.load_corpus(build_sft.HERE)
    with open(ROOT / "data" / "sft_eval_prompts.jsonl", encoding="utf-8") as f:
        prompts = [json.loads(line) for line in f if line.strip()]
    sources = {(s["title"], s["author"]) for p in prompts for s in p["source"]}
    eval_bodies = [p.body for p in val if (p.title, p.author) in sources]
    convs = ["\n".join(m["content"] for m in c) for c in _conversations(train_file)]
    return {"conversations": len(convs),
            "with_a_validation_poem": len(instruct.straddling_poems(convs, [p.body for p in val])),
            "with_a_grader_request_poem": len(instruct.straddling_poems(convs, eval_bodies)),
            "grader_request_poems": len(eval_bodies)}


def train_and_grade(name: str, data_dir: Path, out: Path, args) -> dict:
    run_dir = out / f"run_{name}"
    cmd = [sys.executable, "-m", "workbook.train.full_sft", "--from_weight", str(ROOT / "data" / "base" / "pretrain_320.pth"),
           "--save_dir", str(run_dir), "--data_path", str(data_dir / "sft_poetry_train.jsonl.gz"),
           "--val_path", str(ROOT / "data" / "sft_poetry_val.jsonl.gz"),
           "--max_steps", str(args.steps), "--batch_size", "16", "--learning_rate", "5e-4", "--max_seq_len", "224",
           "--accumulation_steps", "1", "--log_interval", "20", "--save_interval", "100000", "--eval_interval", "0",
           "--eval_batches", "20", "--num_workers", "1", "--dtype", args.dtype, "--samples", "0", "--device", "cpu",
           "--no_progress"]
    start = time.time()
    load0 = os.getloadavg()[0]
    subprocess.run(cmd, cwd=ROOT, check=True)
    train_s = time.time() - start
    summary = json.loads((run_dir / "full_sft_320_summary.json").read_text(encoding="utf-8"))
    report = run_dir / "eval.json"
    start = time.time()
    subprocess.run([sys.executable, "-m", "workbook", "eval", str(run_dir / "full_sft_320.pth"), "--json", str(report),
                    "--show", "0"], cwd=ROOT, check=True)
    grade = json.loads(report.read_text(encoding="utf-8"))
    copied = 0
    refs = {}
    with open(ROOT / "data" / "sft_eval_prompts.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            refs[r["id"]] = "".join(_HAN.findall(r["reference"]))
    for a in grade["answers"]:
        key = "".join(_HAN.findall(a["answer"]))
        ref = refs[a["id"]]
        grams = {ref[i:i + 10] for i in range(len(ref) - 9)}
        copied += any(key[i:i + 10] in grams for i in range(len(key) - 9))
    return {"train_seconds": round(train_s, 1), "eval_seconds": round(time.time() - start, 1),
            "load_at_start": round(load0, 2), "load_at_end": round(os.getloadavg()[0], 2),
            "val_loss": summary.get("val_loss"), "steps": summary.get("steps"),
            "overall": {k: grade["overall"][k] for k in ("pass", "form", "correct", "title", "stopped")},
            "tasks": {t: {"pass": v["pass"], "form": v["form"]} for t, v in grade["tasks"].items()},
            "answers_copying_the_reference": copied}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, of {VARIANTS}")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "instruct_compare")
    ap.add_argument("--report", type=Path, default=ROOT / "data" / "base" / "instruct_compare.json")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"错误：不认识的变体 {unknown}；可选 {VARIANTS}", file=sys.stderr)
        return 2
    report = {"settings": {"steps": args.steps, "batch_size": 16, "learning_rate": 5e-4, "max_seq_len": 224,
                           "dtype": args.dtype, "from_weight": "data/base/pretrain_320.pth", "seed": "the trainer's (42)",
                           "impl": os.environ.get("WORKBOOK_IMPL", "learner"), "cpus": os.cpu_count(),
                           "command": "make instruct-compare"},
              "builds": {}, "runs": {}}
    for v in VARIANTS:  # every build is seconds: all are counted
        data_dir = args.out / f"data_{v}"
        t = time.time()
        report["builds"][v] = build(v, data_dir)
        report["builds"][v]["seconds"] = round(time.time() - t, 1)
        report["builds"][v]["leaks"] = leaks(data_dir / "sft_poetry_train.jsonl.gz")
        print(f"[build {v}] {json.dumps(report['builds'][v], ensure_ascii=False)}", flush=True)
    for v in variants:
        report["runs"][v] = train_and_grade(v, args.out / f"data_{v}", args.out, args)
        print(f"[run {v}] {json.dumps(report['runs'][v], ensure_ascii=False)}", flush=True)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
