"""Build on-policy DPO pairs from a model: sample K answers per request, let the grader choose.

This is how preference data is made in practice when a reward can be computed: the model that
will be trained answers each request several times, a reward (here the rule-based grader of
workbook/eval, the one ``python -m workbook eval`` uses) scores every answer, and a request whose
answers disagree gives one pair — an answer that passes (chosen) against one that fails
(rejected).  Unlike data/build_dpo.py's pairs, both answers are the model's own: the pairs show
the mistakes this model really makes, in the proportions it makes them.

For each request of the prompt set (default: the requests of ``dpo_train.jsonl.gz``, the training
pairs; or ``--prompts FILE``: another pair file, or a prompt file such as the grader's
``sft_eval_prompts.jsonl`` -- to look at, never to train on: the grader would then score its own
training requests) the model writes ``--samples K`` answers by temperature + top-p sampling
(seeded: a rerun gives the same file), every answer is graded, and when at least one passes and
one fails the **first** passing and the **first** failing sample make the pair.  A line is
build_dpo.py's record — ``{"chosen", "rejected", "task", "failure", "form", "title",
"first_line"}`` — plus ``"id"`` (the prompt's), ``"scores"`` (the grader's, of both answers) and
``"samples"`` (``{"k", "passed"}``).  ``"failure"`` names what the grader saw in the rejected
answer (build_dpo.failure_kind).

The model is loaded with workbook.eval's ``load_model`` in the current ``WORKBOOK_IMPL``: your own
stage-14 model works as it does in ``python -m workbook eval``; ``--lora`` adds a stage-15 adapter.

    WORKBOOK_IMPL=solutions python data/build_dpo_onpolicy.py --limit 60 --out data/dpo_onpolicy_sample.jsonl.gz
    python data/build_dpo_onpolicy.py --model out/full_sft_512.pth --prompts data/dpo_train.jsonl.gz --limit 500
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_dpo.py sits beside this file
from build_dpo import FAILURES, failure_kind  # noqa: E402
from build_sft import assistant, write_jsonl  # noqa: E402
from workbook.eval import runner  # noqa: E402
from workbook.eval.grader import grade_answer  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "base" / "full_sft_320.pth"
DEFAULT_OUT = HERE.parent / "out" / "dpo_onpolicy.jsonl.gz"
DEFAULT_SAMPLES = 4
DEFAULT_TEMPERATURE = 1.0  # above eval's 0.8: more varied answers, more requests with a pair


def load_requests(path: str | Path, limit: int | None = None) -> list[dict]:
    """Prompt records (``sft_eval_prompts.jsonl`` format) from a prompt file or a pair file.

    A pair file (lines with "chosen", as build_dpo.py writes) gives one request per pair: the
    chosen conversation without its last reply, with the pair's "task", "form", "title" and
    "first_line"; ids ``{task}-{line}``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    if '"chosen"' not in first:
        return runner.load_prompts(path, limit)
    records = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            pair = json.loads(line)
            records.append({"id": f"{pair['task']}-{lineno}", "task": pair["task"],
                            "messages": pair["chosen"][:-1], "form": pair["form"],
                            "title": pair.get("title"), "expected": pair.get("expected"),
                            "first_line": pair.get("first_line")})
            if limit is not None and len(records) >= limit:
                break
    return records


@contextlib.contextmanager
def temperature(value: float):
    """Sample at `value` inside the block (workbook.eval samples at SAMPLING["temperature"])."""
    old = runner.SAMPLING["temperature"]
    runner.SAMPLING["temperature"] = value
    try:
        yield
    finally:
        runner.SAMPLING["temperature"] = old


def sample_answers(model, tokenizer, prompts: list[dict], k: int, temp: float, max_new_tokens: int,
                   seed: int, batch_size: int = 16, device="cpu") -> list[list[dict]]:
    """k sampled answers per prompt: [[{"answer", "stopped", "new_tokens"}] * k] in prompt order.

    The k copies of a prompt are k rows of workbook.model.generate's batched decoding, each drawn by its
    own generator seeded from (`seed`, row): the same call gives the same answers, whatever the
    batch size.  Progress goes to stderr (batches done / total).
    """
    repeated = [p for p in prompts for _ in range(k)]
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\rsampled {done}/{total} answers ({time.perf_counter() - start:.0f} s)",
              end="" if done < total else "\n", file=sys.stderr, flush=True)

    with temperature(temp):
        flat = runner.generate_answers(model, tokenizer, repeated, device, max_new_tokens,
                                       greedy=False, batch_size=batch_size, seed=seed, progress=progress)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def make_pairs(prompts: list[dict], answers: list[list[dict]]) -> tuple[list[dict], dict]:
    """Grade every answer; (pair records, figures).

    A prompt with at least one passing and one failing answer gives one pair: the first passing
    answer (chosen) and the first failing one (rejected), in sampling order.
    """
    pairs = []
    fig = {"prompts": len(prompts), "samples": 0, "passed": 0, "pairs": 0, "no_pass": 0, "all_pass": 0,
           "tasks": collections.defaultdict(lambda: collections.Counter()),
           "failures": collections.Counter()}
    for p, outs in zip(prompts, answers):
        scores = [grade_answer(p["task"], p, a["answer"], a["stopped"]) for a in outs]
        passed = [i for i, s in enumerate(scores) if s["pass"]]
        failed = [i for i, s in enumerate(scores) if not s["pass"]]
        task = fig["tasks"][p["task"]]
        task.update(prompts=1, samples=len(outs), passed=len(passed))
        fig["samples"] += len(outs)
        fig["passed"] += len(passed)
        if not passed:
            fig["no_pass"] += 1
            continue
        if not failed:
            fig["all_pass"] += 1
            continue
        good, bad = passed[0], failed[0]
        failure = failure_kind(p, outs[bad]["answer"], scores[bad])
        pairs.append({"chosen": p["messages"] + [assistant(outs[good]["answer"])],
                      "rejected": p["messages"] + [assistant(outs[bad]["answer"])],
                      "task": p["task"], "failure": failure, "form": p["form"], "title": p.get("title"),
                      "first_line": p.get("first_line"), "id": p.get("id"),
                      "scores": {"chosen": scores[good], "rejected": scores[bad]},
                      "samples": {"k": len(outs), "passed": len(passed)}})
        task.update(pairs=1)
        fig["failures"][failure] += 1
    fig["pairs"] = len(pairs)
    fig["pass_rate"] = fig["passed"] / fig["samples"] if fig["samples"] else 0.0
    return pairs, fig


def build(model, tokenizer, prompts: list[dict], out: Path | None, k: int = DEFAULT_SAMPLES,
          temp: float = DEFAULT_TEMPERATURE, max_new_tokens: int = runner.DEFAULT_MAX_NEW_TOKENS,
          seed: int = 0, batch_size: int = 16, device="cpu") -> tuple[list[dict], dict]:
    """Sample, grade, pair; write the pairs to `out` (gzip when it ends in .gz) unless None."""
    start = time.perf_counter()
    answers = sample_answers(model, tokenizer, prompts, k, temp, max_new_tokens, seed, batch_size, device)
    pairs, fig = make_pairs(prompts, answers)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(out, pairs, compress=out.suffix == ".gz")
    fig["seconds"] = time.perf_counter() - start
    return pairs, fig


def report(fig: dict) -> str:
    """The figures as the README reports them."""
    lines = [f"prompts {fig['prompts']}, samples {fig['samples']} (pass rate {fig['pass_rate']:.1%}), "
             f"pairs {fig['pairs']}; prompts with no passing sample {fig['no_pass']}, "
             f"with every sample passing {fig['all_pass']}",
             f"  {'task':<11}{'prompts':>8}{'samples':>8}{'passed':>8}{'pairs':>7}"]
    for task, c in fig["tasks"].items():
        lines.append(f"  {task:<11}{c['prompts']:>8}{c['samples']:>8}{c['passed']:>8}{c['pairs']:>7}")
    if fig["failures"]:
        lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(
            fig["failures"].items(), key=lambda kv: (list(FAILURES) + [kv[0]]).index(kv[0]))))
    lines.append(f"done in {fig['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="weights .pth (shape from the {stem}_config.json beside it); "
                         "default the shipped stage-14 model data/base/full_sft_320.pth")
    ap.add_argument("--lora", default=None, metavar="ADAPTER", help="a stage-15 LoRA adapter to attach")
    ap.add_argument("--prompts", default=str(HERE / "dpo_train.jsonl.gz"),
                    help="prompt file (sft_eval_prompts.jsonl format) or pair file (its requests)")
    ap.add_argument("--tokenizer", default=str(runner.DEFAULT_TOKENIZER))
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="K", help="answers per request")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    ap.add_argument("--max_new_tokens", type=int, default=runner.DEFAULT_MAX_NEW_TOKENS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N requests")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.samples < 2:
        ap.error("--samples: at least 2 (a pair needs two answers)")
    if args.temperature <= 0:
        ap.error("--temperature must be > 0 (sampling; 0 would be greedy: every answer the same)")
    prompts = load_requests(args.prompts, args.limit)
    tokenizer = runner.load_tokenizer(args.tokenizer)
    try:
        model, _ = runner.load_model(args.model, args.device, lora=args.lora)
        _, fig = build(model, tokenizer, prompts, args.out, args.samples, args.temperature,
                       args.max_new_tokens, args.seed, args.batch_size, args.device)
    except NotImplementedError as e:
        print(f"错误：模型还有没写完的部分：{e}。先通过 00–08 的检查，或者用参考实现 "
              "WORKBOOK_IMPL=solutions 试跑。", file=sys.stderr)
        return 2
    print(report(fig))
    print(f"wrote {fig['pairs']} pairs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
