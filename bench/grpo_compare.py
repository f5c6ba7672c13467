"""GRPO against DPO, offline and on-policy, from the stage-14 model at the same budget (stage 20).

    python bench/grpo_compare.py [--steps 100] [--runs grpo,grpo_loose,dpo,dpo_onpolicy] [--report data/base/grpo_compare.json]

From the shipped SFT model (data/base/full_sft_320.pth), three ways to make its poems keep the form
and rhyme, each with the workbook's trainers (whatever WORKBOOK_IMPL selects; ``make grpo-demo``
uses the reference) and the same budget — ``--steps`` optimizer updates on 16 answers each:

- ``grpo``: ``python -m workbook.train.grpo`` on data/grpo_prompts.jsonl.gz, 2 prompts × 8 samples
  per step, the checkable reward (form, stop, rhyme, tones);
- ``grpo_loose``: the same with the rhyme rule that lets one rhyme character repeat
  (``--reward_distinct_rhymes 0``): the reward hole GRPO finds (repeated_rhyme_char);
- ``dpo``: ``python -m workbook.train.dpo`` on the offline pairs (data/dpo_train.jsonl.gz), 8 pairs
  per step (the paper's summed log-prob, β 0.1: dpo-demo's best setting);
- ``dpo_onpolicy``: the start model answers ``2 × steps`` GRPO prompts 8 times each (as much
  sampling as GRPO does), data/build_dpo_onpolicy.py keeps a pair where the grader passes one answer
  and fails another, then DPO as above on those pairs.

Then, for the start and every run, greedy answers to the grader's 120 held-out requests
(``python -m workbook eval``): pass rate and form rate, and the reward's parts on the 80 requests
that ask for a poem (form_poem, ci, continue, multi_turn): mean rhyme score, share of regulated
poems (绝句/律诗) whose even lines all rhyme, mean tone score, mean reward, share of degenerate
(repetitive) answers.  GRPO's reward and KL curves go to data/base/grpo_curves.png.
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
sys.path.insert(0, str(ROOT))
START = ROOT / "data" / "base" / "full_sft_320.pth"
POEM_TASKS = ("form_poem", "ci", "continue", "multi_turn")
COMMON = ["--dtype", "float32", "--num_workers", "0", "--no_progress", "--device", "cpu", "--seed", "42"]


def run(cmd: list[str]) -> float:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT, check=True)
    return round(time.perf_counter() - start, 1)


def grade(weights: Path, out: Path) -> dict:
    """The grader's verdicts and the reward's parts of greedy answers to the held-out requests."""
    from workbook.eval.forms import form_of_pattern
    from workbook.eval.reward import score
    from workbook.eval.runner import load_prompts

    report_path = out / f"{weights.stem}_eval.json"
    seconds = run(["-m", "workbook", "eval", weights, "--json", report_path, "--show", "0"])
    report = json.loads(report_path.read_text(encoding="utf-8"))
    prompts = {p["id"]: p for p in load_prompts(ROOT / "data" / "sft_eval_prompts.jsonl")}
    parts = {"rhyme": 0.0, "tones": 0.0, "reward": 0.0, "repetitive": 0.0}
    n = shi = rhymed = formed = repeated = 0
    for a in report["answers"]:
        p = prompts[a["id"]]
        if p["task"] not in POEM_TASKS:
            continue
        r = score(a["answer"], p["form"]["pattern"], a["stopped"])
        n += 1
        parts["rhyme"] += r.rhyme
        parts["tones"] += r.tones
        parts["reward"] += r.total
        parts["repetitive"] += r.repetitive
        if r.form:  # the hack the strict rhyme rule closes: one rhyme character used twice
            formed += 1
            repeated += r.repeated_end
        if form_of_pattern(p["form"]["pattern"]) and len(p["form"]["pattern"]) in (4, 8):
            shi += 1
            rhymed += r.form == 1 and r.rhyme == 1.0
    overall = report["overall"]
    return {"overall": {k: round(overall[k], 4) for k in ("pass", "form", "stopped")},
            "pass": round(overall["pass"], 4), "form": round(overall["form"], 4),
            "tasks": {t: round(v["pass"], 4) for t, v in report["tasks"].items()},
            **{k: round(v / max(n, 1), 4) for k, v in parts.items()},
            "all_rhyme_regulated": round(rhymed / max(shi, 1), 4), "regulated": shi, "poem_requests": n,
            "repeated_rhyme_char": round(repeated / max(formed, 1), 4), "form_kept": formed,
            "eval_seconds": seconds,
            "answers": [{"request": a["request"], "answer": a["answer"]} for a in report["answers"]
                        if prompts[a["id"]]["task"] in ("form_poem", "continue")][:4]}


def train_grpo(out: Path, steps: int, lr: float, beta: float, extra: list[str], name: str = "grpo") -> dict:
    seconds = run(["-m", "workbook.train.grpo", "--from_weight", START, "--save_dir", out, "--save_weight", name,
                   "--max_steps", steps, "--learning_rate", lr, "--beta", beta, "--log_interval", 5,
                   "--save_interval", 50, "--sample_interval", 25, "--samples", 0, *COMMON, *extra])
    import torch

    history = torch.load(out / f"{name}_320_resume.pth", weights_only=True)["history"]
    curve = [(s, {k: round(v, 4) for k, v in d.items()}) for s, d in history.get("extra", [])]
    return {"weights": out / f"{name}_320.pth", "train_seconds": seconds, "curve": curve}


def repeated_end_shares(curve: list, steps: int) -> dict:
    """Share of training samples in repeated_end over the first and the last quarter of the run.
    A curve point at step s is the mean of the steps since the previous point: weighted by their count."""
    q = max(steps // 4, 1)
    points = [(s, s - prev, d["repeated_end"]) for (prev, _), (s, d) in zip([(0, None), *curve[:-1]], curve)]

    def share(lo: int, hi: int) -> float:
        got = [(w, v) for s, w, v in points if lo < s <= hi]
        return round(sum(w * v for w, v in got) / max(sum(w for w, _ in got), 1), 4)
    return {"steps": q, "first": share(0, q), "last": share(steps - q, steps)}


def train_dpo(out: Path, name: str, data: Path, steps: int, lr: float) -> dict:
    seconds = run(["-m", "workbook.train.dpo", "--from_weight", START, "--save_dir", out, "--save_weight", name,
                   "--data_path", data, "--val_path", "", "--max_steps", steps, "--epochs", 100,
                   "--batch_size", 8, "--max_seq_len", 256, "--learning_rate", lr, "--beta", 0.1,
                   "--length_normalize", 0, "--log_interval", 25, "--save_interval", 50, "--samples", 0, *COMMON])
    return {"weights": out / f"{name}_320.pth", "train_seconds": seconds}


def onpolicy_pairs(out: Path, prompts: int) -> tuple[Path, float, int]:
    pairs = out / "dpo_onpolicy_grpo_prompts.jsonl.gz"
    seconds = run([ROOT / "data" / "build_dpo_onpolicy.py", "--model", START, "--prompts",
                   ROOT / "data" / "grpo_prompts.jsonl.gz", "--samples", 8, "--limit", prompts, "--out", pairs])
    import gzip

    with gzip.open(pairs, "rt", encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    return pairs, seconds, n


def plot(curves: dict, path: Path) -> None:
    """GRPO's sample rewards and KL; with grpo_loose, each rule's share of samples in repeated_end."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = curves["grpo"]
    steps = [s for s, _ in curve]
    fig, (ax, kl, hole) = plt.subplots(1, 3, figsize=(15, 3.8))
    for key in ("reward", "form", "rhyme", "tones"):
        ax.plot(steps, [d[key] for _, d in curve], label=key, lw=1.2)
    ax.set_xlabel("optimizer step"); ax.set_title("GRPO: reward of the samples (mean of 5 steps)")
    ax.grid(alpha=0.3); ax.legend(fontsize=8)
    kl.plot(steps, [d["kl"] for _, d in curve], "k-", lw=1.2, label="KL (k3, per token)")
    kl.plot(steps, [d["length"] / 1000 for _, d in curve], "c--", lw=1, label="length / 1000 (tokens)")
    kl.set_xlabel("optimizer step"); kl.set_title("GRPO: KL to the reference, answer length")
    kl.grid(alpha=0.3); kl.legend(fontsize=8)
    for name, label in (("grpo", "strict rule (no repeated rhyme char)"), ("grpo_loose", "loose rule (a repeat rhymes)")):
        if name in curves:
            hole.plot([s for s, _ in curves[name]], [d["repeated_end"] for _, d in curves[name]], lw=1.2, label=label)
    hole.set_xlabel("optimizer step"); hole.set_title("samples in form ending two even lines alike")
    hole.grid(alpha=0.3); hole.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


def table(report: dict) -> str:
    head = (f"{'run':<16}{'train s':>9}{'pass':>7}{'form':>7}{'ci':>6}{'multi':>7}{'rhyme':>7}{'all rhyme':>10}"
            f"{'same end':>9}{'tones':>7}{'reward':>8}{'repeat':>7}")
    lines = [head]
    for row in report["rows"]:
        g = row["grader"]
        lines.append(f"{row['run']:<16}{row.get('seconds', 0):>9.0f}{g['pass']:>7.1%}{g['form']:>7.1%}"
                     f"{g['tasks'].get('ci', 0):>6.0%}{g['tasks'].get('multi_turn', 0):>7.0%}{g['rhyme']:>7.3f}"
                     f"{g['all_rhyme_regulated']:>10.1%}{g['repeated_rhyme_char']:>9.1%}{g['tones']:>7.3f}{g['reward']:>8.3f}{g['repetitive']:>7.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="optimizer updates per run (16 answers each)")
    ap.add_argument("--runs", default="grpo,dpo,dpo_onpolicy",
                    help="any of grpo, grpo_loose (the hackable rhyme rule), dpo, dpo_onpolicy")
    ap.add_argument("--lr", type=float, default=1e-4, help="GRPO's learning rate")
    ap.add_argument("--dpo_lr", type=float, default=2e-5, help="the DPO runs' learning rate (dpo-demo's)")
    ap.add_argument("--beta", type=float, default=0.02, help="GRPO's β")
    ap.add_argument("--grpo_args", default="", help="more flags for the GRPO run, e.g. '--reward_tones 0'")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "grpo_compare")
    ap.add_argument("--report", type=Path, default=ROOT / "data" / "base" / "grpo_compare.json")
    ap.add_argument("--curves", type=Path, default=ROOT / "data" / "base" / "grpo_curves.png")
    args = ap.parse_args(argv)
    runs = [r for r in args.runs.split(",") if r]
    unknown = set(runs) - {"grpo", "grpo_loose", "dpo", "dpo_onpolicy"}
    if unknown or args.steps < 1:
        ap.error(f"--runs: unknown {sorted(unknown)}" if unknown else f"--steps must be >= 1, got {args.steps}")
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    env = "".join(f"{k}={os.environ[k]} " for k in ("WORKBOOK_IMPL", "OMP_NUM_THREADS") if k in os.environ)
    report = {"command": env + "python bench/grpo_compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "steps": args.steps, "answers_per_step": 16, "start": str(START.relative_to(ROOT)),
              "machine": f"{os.cpu_count()} CPU cores, {os.environ.get('OMP_NUM_THREADS', 'torch default')} threads, "
                         f"load average at start {os.getloadavg()[0]:.1f}",
              "dtype": "float32", "rows": [{"run": "sft (start)", "seconds": 0, "grader": grade(START, args.out)}]}
    report["rows"][0]["reward"] = report["rows"][0]["grader"]["reward"]
    for name in runs:
        row: dict = {"run": name}
        if name == "grpo":
            got = train_grpo(args.out, args.steps, args.lr, args.beta, args.grpo_args.split())
            row.update(learning_rate=args.lr, beta=args.beta, seconds=got["train_seconds"], curve=got["curve"])
        elif name == "grpo_loose":  # the rhyme rule before 不重韵: does GRPO find the hole?
            got = train_grpo(args.out, args.steps, args.lr, args.beta,
                             ["--reward_distinct_rhymes", "0", *args.grpo_args.split()], name="grpo_loose")
            row.update(learning_rate=args.lr, beta=args.beta, seconds=got["train_seconds"],
                       reward_distinct_rhymes=False, curve=got["curve"])
        elif name == "dpo":
            got = train_dpo(args.out, "dpo_offline", ROOT / "data" / "dpo_train.jsonl.gz", args.steps, args.dpo_lr)
            row.update(learning_rate=args.dpo_lr, beta=0.1, seconds=got["train_seconds"])
        else:
            pairs, sample_seconds, n = onpolicy_pairs(args.out, 2 * args.steps)
            got = train_dpo(args.out, "dpo_onpolicy", pairs, args.steps, args.dpo_lr)
            row.update(learning_rate=args.dpo_lr, beta=0.1, pairs=n, sampling_seconds=sample_seconds,
                       seconds=round(sample_seconds + got["train_seconds"], 1))
        row["grader"] = grade(got["weights"], args.out)
        row["reward"] = row["grader"]["reward"]
        report["rows"].append(row)
    curves = {row["run"]: row["curve"] for row in report["rows"] if "curve" in row}
    for row in report["rows"]:
        if "curve" in row:  # the training samples: 16 per step, so a quarter of the run is 400 of them
            row["samples_repeated_end"] = repeated_end_shares(row["curve"], args.steps)
    if "grpo" in curves:
        plot(curves, args.curves)
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    report["load_average_at_end"] = round(os.getloadavg()[0], 1)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    print(table(report))
    for row in report["rows"]:
        if "samples_repeated_end" in row:
            h = row["samples_repeated_end"]
            print(f"{row['run']}: 训练样本里格式对、偶数句末字重复的比例 (repeated_end)：前 {h['steps']} 步 {h['first']:.1%}，"
                  f"最后 {h['steps']} 步 {h['last']:.1%}（每步 16 个样本）")
    print(f"总用时 {report['total_seconds']:.0f} 秒；报告 {args.report}；GRPO 曲线 {args.curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
