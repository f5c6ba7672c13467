"""Build GRPO's prompts from the SFT training conversations: a request and the form its answer must take.

GRPO (stage 20) needs prompts, not answers: the policy writes the answers itself and a reward
scores them.  MiniMind's ``RLAIFDataset`` takes a conversation and drops its last turn; so does
this script, and it keeps what the reward needs to check the model's answer: the clause-length
pattern of the dropped reply (``form.pattern``, e.g. ``[5, 5, 5, 5]`` for a 五言绝句).  Each line is a
prompt record in the grader's format (``data/sft_eval_prompts.jsonl``'s: ``id``, ``task``,
``messages`` ending with the user's request, ``form``), so ``workbook.eval.runner.load_prompts``
reads and checks it.

Only the tasks whose answer is a poem of a known shape are kept — ``form_poem``, ``ci``, ``continue``
and ``multi_turn`` — and only from the training split (``sft_poetry_train.jsonl.gz``): the grader's
120 held-out requests come from the validation poems, so the reward never trains on them.
The same number of prompts per task, drawn with a fixed seed: a rerun writes the same file.

    python data/build_grpo.py                      # data/grpo_prompts.jsonl.gz, 500 per task
    python data/build_grpo.py --per_task 100 --out /tmp/grpo_small.jsonl.gz
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the workbook package, when run as a script from a clone
from workbook.eval.forms import form_of_pattern, pattern_of  # noqa: E402

TASKS = ("form_poem", "ci", "continue", "multi_turn")
SEED = "minimind-workbook grpo prompts v1"


def prompt_record(conv: dict, index: int) -> dict | None:
    """The conversation minus its last (assistant) turn, with the reply's clause pattern; None when
    the reply has no poem shape (fewer than two clauses)."""
    turns = conv["conversations"]
    reply = turns[-1]["content"]
    pattern = pattern_of(reply)
    if turns[-1]["role"] != "assistant" or len(pattern) < 2:
        return None
    return {"id": f"{conv['task']}-{index}", "task": conv["task"], "messages": turns[:-1],
            "form": {"name": form_of_pattern(pattern), "pattern": pattern}}


def build(source: Path, per_task: int, seed: str = SEED) -> list[dict]:
    by_task: dict[str, list[dict]] = {t: [] for t in TASKS}
    with gzip.open(source, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            conv = json.loads(line)
            if conv.get("task") in by_task and (rec := prompt_record(conv, i)) is not None:
                by_task[conv["task"]].append(rec)
    rng = random.Random(seed)
    out: list[dict] = []
    for task in TASKS:
        pool = by_task[task]
        rng.shuffle(pool)
        out.extend(pool[:per_task])
    rng.shuffle(out)  # tasks interleaved, so a short run sees all of them
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", type=Path, default=HERE / "sft_poetry_train.jsonl.gz")
    p.add_argument("--out", type=Path, default=HERE / "grpo_prompts.jsonl.gz")
    p.add_argument("--per_task", type=int, default=500)
    args = p.parse_args(argv)
    if args.per_task < 1:
        p.error(f"--per_task must be at least 1, got {args.per_task}")
    rows = build(args.source, args.per_task)
    # mtime 0: the same rows give the same bytes
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    print(f"{args.out}: {len(rows)} prompts {dict(Counter(r['task'] for r in rows))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
