"""Build the LoRA task data from the poetry corpus: ci to a given tune (词牌), the SFT model's weakest task.

Reads ``pretrain_poetry_{train,val}.jsonl.gz`` (see data/README.md) and writes

- ``lora_ci_train.jsonl.gz`` — one conversation per **train-split** ci of a table tune written in
  the tune's dominant pattern (every such ci, once);
- ``lora_ci_val.jsonl.gz`` — the same from the **validation split** (validation loss);
- ``lora_eval_prompts.jsonl`` — the grader's prompts for this skill, in the record format of
  ``sft_eval_prompts.jsonl`` (task "ci"): one per tune, plus one for every EVAL_EXTRA_PER train
  ci of the tune; references from the validation split (``python -m workbook eval MODEL
  --prompts data/lora_eval_prompts.jsonl``).

The 词牌 table (58 tunes), the corpus reading, the leak rule, the chat format and the writer are
build_sft.py's, imported from it: the adapter is taught exactly the patterns the grader checks.
One line = ``{"conversations": [{"role": "user", ...}, {"role": "assistant", ...}], "task": "ci",
"tune": 词牌}``; about 1 in SYSTEM_EVERY starts with one of build_sft's ci system prompts, and about
1 in PATTERN_EVERY requests also states the tune's clause lengths (see PATTERN_CI).

Deterministic: every choice comes from ``random.Random`` seeded with a fixed string, the input is
read in file order, and gzip is written without a timestamp, so a rebuild is byte-identical.

    python data/build_lora.py                 # ~2 s of CPU; prints the counts and token figures
    python data/build_lora.py --table         # also the per-tune counts (Markdown)
    python data/build_lora.py --out-dir /tmp/lora --no-tokens
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_sft.py sits beside this file
from build_sft import (CI, SYSTEM_EVERY, EVAL_SYSTEM_EVERY, SYSTEM_PROMPTS, Poem,  # noqa: E402
                       assistant, ci_form_record, load_corpus, make_pools, token_lengths, user,
                       write_jsonl)

HERE = Path(__file__).resolve().parent
SEED = "minimind-workbook-lora-v1"
OUTPUTS = ("lora_ci_train.jsonl.gz", "lora_ci_val.jsonl.gz", "lora_eval_prompts.jsonl")
MAX_SEQ_LEN = 224  # the SFT run's --max_seq_len (Makefile sft-demo): no conversation should exceed it

# The requests of the training and validation conversations: build_sft's seven, and five more
# (none says 字数: states_pattern tells the two kinds apart by that word).
LORA_CI = CI + [
    "以《{tune}》为词牌写一首词。",
    "按《{tune}》的格律填一首词。",
    "请填一首词，调寄《{tune}》。",
    "作一首《{tune}》词。",
    "《{tune}》：请填一首。",
]
# About 1 in PATTERN_EVERY requests also states the pattern, in Chinese numerals (the corpus has no
# digits, so the base model never saw one).  Not extra conversations: the same ci, another request.
# Only for patterns of at most PATTERN_MAX_CLAUSES clauses: stated, the 21 of 齐天乐 and the 26 of
# 金缕曲·贺新郎 would push a conversation past MAX_SEQ_LEN.
PATTERN_EVERY = 10
PATTERN_MAX_CLAUSES = 20
PATTERN_CI = [
    "请按《{tune}》填一首词：共{n}句，每句的字数依次是{seq}。",
    "填一首《{tune}》。这个词牌{n}句，每句字数：{seq}。",
]
# Phrasings only the eval prompts use (every EVAL_HELD_OUT_EVERY-th prompt): does the skill
# survive a request worded in a way training never showed?
EVAL_HELD_OUT_CI = [
    "试以《{tune}》调填词一阕。",
    "请你用《{tune}》这个调子写一首词。",
    "我想读一首新填的《{tune}》。",
]
EVAL_HELD_OUT_EVERY = 5
EVAL_EXTRA_PER = 100  # eval prompts per tune: 1 + (train ci of the tune, table column) // this

DIGITS = "零一二三四五六七八九"


def cn_number(n: int) -> str:
    """1 … 99 in Chinese numerals: ``7 -> "七"``, ``12 -> "十二"``, ``26 -> "二十六"``."""
    if not 0 < n < 100:
        raise ValueError(n)
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else DIGITS[tens] + "十")
    return head + (DIGITS[ones] if ones else "") if tens else DIGITS[ones]


def request(tune: str, pattern: list[int], rng: random.Random) -> str:
    """The request for a ci of `tune`; about 1 in PATTERN_EVERY states the pattern."""
    if len(pattern) <= PATTERN_MAX_CLAUSES and rng.randrange(PATTERN_EVERY) == 0:
        seq = "、".join(cn_number(k) for k in pattern)
        return rng.choice(PATTERN_CI).format(tune=tune, n=cn_number(len(pattern)), seq=seq)
    return rng.choice(LORA_CI).format(tune=tune)


def states_pattern(row: dict) -> bool:
    """Does the conversation's request state the pattern (a PATTERN_CI request)?"""
    return "字数" in next(m["content"] for m in row["conversations"] if m["role"] == "user")


def build_conversations(ci: dict[str, list[Poem]], table: dict, seed: str) -> list[dict]:
    """One conversation per ci of `ci` (词牌 -> poems in file order), in a seeded shuffled order."""
    rng = random.Random(seed)
    rows = []
    for tune in sorted(ci):
        for p in ci[tune]:
            text = request(tune, table[tune]["pattern"], rng)
            messages = [user(text), assistant(p.body)]
            if rng.randrange(SYSTEM_EVERY) == 0:
                messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS["ci"])})
            rows.append({"conversations": messages, "task": "ci", "tune": tune})
    rng.shuffle(rows)
    return rows


def eval_counts(table: dict) -> dict[str, int]:
    """词牌 -> eval prompts: one each, one more per EVAL_EXTRA_PER train ci (the table's count)."""
    return {tune: 1 + t["poems"] // EVAL_EXTRA_PER for tune, t in table.items()}


def build_eval(val_ci: dict[str, list[Poem]], table: dict, seed: str) -> list[dict]:
    """The grader's prompts, round by round over the tunes (most train ci first), so that the
    first len(table) prompts hold one of each tune (``--limit 58``).  A prompt's reference is an
    unused validation ci of its tune, or None where the validation split has none left."""
    rng = random.Random(seed)
    order = sorted(table, key=lambda t: (-table[t]["poems"], t))
    counts = eval_counts(table)
    refs = {t: rng.sample(val_ci.get(t, []), len(val_ci.get(t, []))) for t in order}
    records: list[dict] = []
    for rnd in range(max(counts.values())):
        for tune in order:
            if counts[tune] <= rnd:
                continue
            k = len(records) + 1
            ref = refs[tune][rnd] if rnd < len(refs[tune]) else None
            held_out = k % EVAL_HELD_OUT_EVERY == 0
            messages = [user(rng.choice(EVAL_HELD_OUT_CI if held_out else LORA_CI).format(tune=tune))]
            system = k % EVAL_SYSTEM_EVERY == 0
            if system:
                messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS["ci"])})
            records.append({"id": f"ci-{k:03d}", "task": "ci", "messages": messages, "system": system,
                            "form": ci_form_record(tune, table[tune]["pattern"]), "title": tune,
                            "expected": None, "first_line": None,
                            "reference": ref.body if ref else None,
                            "source": [{"title": ref.title, "author": ref.author}] if ref else []})
    return records


def token_figures(rows: list[dict], tokenizer_dir: Path) -> dict:
    """Tokens of the rendered conversations (total, mean, max, how many exceed MAX_SEQ_LEN) and of
    the replies (assistant content + <|im_end|>\\n, the part with a loss)."""
    full, replies = token_lengths(rows, tokenizer_dir)
    return {"tokens": sum(full), "assistant_tokens": sum(replies), "mean": sum(full) / len(full),
            "max": max(full), "over_max_seq_len": sum(n > MAX_SEQ_LEN for n in full),
            "reply_max": max(replies)}


def build(corpus_dir: Path, out_dir: Path, tokens: bool = True) -> dict:
    """Write the three files into out_dir; return the figures data/README.md reports."""
    start = time.perf_counter()
    train, val, table, tunes, held_out = load_corpus(corpus_dir)
    train_ci = make_pools(train, table, tunes, banned_lines=held_out).ci
    val_ci = make_pools(val, table, tunes).ci
    sets = {"train": build_conversations(train_ci, table, f"{SEED}:train"),
            "val": build_conversations(val_ci, table, f"{SEED}:val")}
    prompts = build_eval(val_ci, table, f"{SEED}:eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / OUTPUTS[0], sets["train"], compress=True)
    write_jsonl(out_dir / OUTPUTS[1], sets["val"], compress=True)
    write_jsonl(out_dir / OUTPUTS[2], prompts, compress=False)

    in_pattern = sum(1 for p in train if p.kind == "ci" and p.title in table
                     and list(p.pattern) == table[p.title]["pattern"])
    figures: dict = {"table": table, "train_ci_in_pattern": in_pattern, "splits": {}}
    for split, rows in sets.items():
        per_tune = collections.Counter(r["tune"] for r in rows)
        fig = {"conversations": len(rows), "tunes": len(per_tune), "per_tune": dict(per_tune),
               "pattern_stated": sum(map(states_pattern, rows)),
               "system": sum(r["conversations"][0]["role"] == "system" for r in rows)}
        if tokens:
            fig.update(token_figures(rows, corpus_dir / "tokenizer"))
        figures["splits"][split] = fig
    fig = {"prompts": len(prompts), "per_tune": dict(collections.Counter(r["title"] for r in prompts)),
           "with_reference": sum(r["reference"] is not None for r in prompts),
           "held_out_phrasing": sum(i % EVAL_HELD_OUT_EVERY == 0 for i in range(1, len(prompts) + 1)),
           "system": sum(r["system"] for r in prompts)}
    if tokens:
        refs = [{"conversations": r["messages"] + [assistant(r["reference"])]} for r in prompts
                if r["reference"] is not None]
        fig["reference_reply_max"] = token_figures(refs, corpus_dir / "tokenizer")["reply_max"]
    figures["eval"] = fig
    figures["seconds"] = time.perf_counter() - start
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-dir", type=Path, default=HERE,
                    help="folder with pretrain_poetry_*.jsonl.gz and tokenizer/")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--no-tokens", action="store_true", help="skip the token counts")
    ap.add_argument("--table", action="store_true", help="print the per-tune counts as Markdown")
    args = ap.parse_args()
    fig = build(args.corpus_dir, args.out_dir, tokens=not args.no_tokens)
    table = fig["table"]
    print(f"词牌 table: {len(table)} tunes; {fig['train_ci_in_pattern']:,} train ci in their tune's "
          f"pattern, {fig['train_ci_in_pattern'] - fig['splits']['train']['conversations']:,} left out "
          f"(they share a line with the validation split)")
    for split, f in fig["splits"].items():
        counts = sorted(f["per_tune"].values())
        print(f"[{split}] {f['conversations']:,} conversations of {f['tunes']} tunes (per tune "
              f"{counts[0]}–{counts[-1]}); {f['pattern_stated']:,} state the pattern, "
              f"{f['system']:,} have a system prompt")
        if "tokens" in f:
            print(f"  tokens {f['tokens']:,} (replies {f['assistant_tokens']:,}), per conversation mean "
                  f"{f['mean']:.1f}, max {f['max']}; {f['over_max_seq_len']} over {MAX_SEQ_LEN}; "
                  f"longest reply {f['reply_max']} tokens")
    e = fig["eval"]
    print(f"[eval] {e['prompts']} prompts of {len(e['per_tune'])} tunes; {e['with_reference']} with a "
          f"validation reference; {e['held_out_phrasing']} held-out phrasings; {e['system']} with a "
          f"system prompt" + (f"; longest reference {e['reference_reply_max']} tokens"
                              if "reference_reply_max" in e else ""))
    if args.table:
        val, prompts = fig["splits"]["val"]["per_tune"], e["per_tune"]
        print("\n| 词牌 | 训练 | 留出 | 评测 |\n|---|---:|---:|---:|")
        for tune in sorted(table, key=lambda t: (-table[t]["poems"], t)):
            print(f"| {tune} | {fig['splits']['train']['per_tune'].get(tune, 0)} | {val.get(tune, 0)} "
                  f"| {prompts[tune]} |")
    print(f"done in {fig['seconds']:.1f} s")


if __name__ == "__main__":
    main()
