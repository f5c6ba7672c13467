"""Build the DPO preference pairs from the poetry corpus: a real poem against a realistic failure.

Reads ``pretrain_poetry_{train,val}.jsonl.gz`` (see data/README.md) and writes

- ``dpo_train.jsonl.gz`` — pairs made from the **train split** only (stage 16 trains on them);
- ``dpo_val.jsonl.gz`` — the same from the **validation split** (held-out pairs: reward accuracy).

A pair answers one request twice.  The requests are those of the SFT tasks that have a form to
keep (form_poem, ci, continue, multi_turn; build_sft.py writes them the same way).  **chosen** is the
real poem, which obeys the request; **rejected** is the same poem spoiled in one of four ways a
small model really fails (FAILURES), drawn in equal numbers per task with a seeded RNG:

- ``line_length`` — one clause (句) 1–2 characters too long or too short;
- ``wrong_form`` — a real poem of another form (五言 for 七言, 绝句 for 律诗) or a ci of another tune;
- ``repeat`` — the model degenerates: a clause runs into one character repeated 4+ times and the
  answer ends there;
- ``no_stop`` — the poem does not end where it should: the start of another poem follows it
  (sometimes with its title line, as the pretrained model writes one).

One line = ``{"chosen": [messages], "rejected": [messages], "task", "failure", "form", "title",
"first_line"}``: two conversations in MiniMind's chat format, identical up to the last assistant
reply, plus what the grader needs to score them (the fields of an eval prompt record).  The builder
grades every pair with workbook/eval's grader and stops unless chosen passes, rejected fails, and
the failure the grader sees (:func:`failure_kind`) is the one the pair names.

Deterministic: every choice comes from ``random.Random`` seeded with a fixed string, the input is
read in file order, and gzip is written without a timestamp, so a rebuild is byte-identical.

    python data/build_dpo.py                 # ~2 s of CPU; prints the counts and token figures
    python data/build_dpo.py --out-dir /tmp/dpo --no-tokens
"""
from __future__ import annotations

import argparse
import collections
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_sft.py sits beside this file
from build_sft import (SYSTEM_EVERY, Drawer, Pools, add_system, assistant,  # noqa: E402
                       groups_for, kinds_for, load_corpus, make_pools, sample, token_lengths,
                       write_jsonl)
from workbook.eval.forms import HAN, matches_pattern  # noqa: E402
from workbook.eval.grader import grade_answer  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = "minimind-workbook-dpo-v1"
OUTPUTS = ("dpo_train.jsonl.gz", "dpo_val.jsonl.gz")

# The SFT tasks with a form to keep (the grader's "form" check); name_form and give_title have none.
TRAIN_COUNTS = {"form_poem": 1000, "ci": 1000, "continue": 500, "multi_turn": 500}
VAL_COUNTS = {"form_poem": 60, "ci": 60, "continue": 40, "multi_turn": 40}
DRAW_ORDER = ("ci", "form_poem", "multi_turn", "continue")  # the pickiest pools first

# failure kind -> Chinese label (English term), as data/README.md names them
FAILURES = {
    "line_length": "一句多字或少字 (line length)",
    "wrong_form": "体裁不对 (wrong form)",
    "repeat": "重复字 (repeated characters)",
    "no_stop": "不停 (no stop)",
}
REPEAT_MIN = 4        # a run of this many equal characters is degeneration; the few real poems
                      # with one (囗囗囗囗 for lost characters …) are left out (see clean)
REPEAT_MAX = 10
TRIES = 20            # attempts at one failure before the build stops (rarely more than one is needed)

_RUN = re.compile(f"[{HAN}]+")
_SAME = re.compile(f"([{HAN}])\\1{{{REPEAT_MIN - 1},}}")


# ---- what the grader sees ---------------------------------------------------------------------

def failure_kind(record: dict, answer: str, scores: dict) -> str | None:
    """Name the failure of a graded answer (None when it passes), by these rules in order:

    - ``no_stop`` — no ``<|im_end|>`` within max_new_tokens (not stopped);
    - ``repeat`` — one character REPEAT_MIN or more times in a row;
    - ``no_stop`` — the clauses fit the pattern and then go on (the answer runs past its end);
    - ``line_length`` — as many clauses as the pattern, 1 or 2 of them the wrong length;
    - ``wrong_form`` — any other shape;
    - ``title`` / ``correct`` — the shape is right but a title line or a named form is wrong.

    record: a prompt or pair record ("form" {"pattern"}, …); scores: grade_answer's result.
    """
    if scores["pass"]:
        return None
    if not scores["stopped"]:
        return "no_stop"
    if _SAME.search(answer):
        return "repeat"
    if scores["form"] is False:
        lines, pattern = scores["lines"], record["form"]["pattern"]
        if any(matches_pattern(lines[:k], pattern) for k in range(1, len(lines))):
            return "no_stop"
        if len(lines) == len(pattern) and sum(a != b for a, b in zip(lines, pattern)) <= 2:
            return "line_length"
        return "wrong_form"
    return "title" if scores["title"] is False else "correct"


# ---- the failures -----------------------------------------------------------------------------

class Spare:
    """More poems for the rejected answers (wrong_form, no_stop): each group in a shuffled order,
    skipping the poems the drawer has used; a poem taken here is used too (one pair each)."""

    def __init__(self, drawer: Drawer):
        self.drawer = drawer
        self.order: dict[int, list] = {}
        self.cursor: dict[int, int] = {}

    def take(self, items: list):
        """The next unused poem of `items`, or None when none is left."""
        key = id(items)
        if key not in self.order:
            self.order[key] = self.drawer.rng.sample(items, len(items))
            self.cursor[key] = 0
        order, i = self.order[key], self.cursor[key]
        while i < len(order) and id(order[i]) in self.drawer.used:
            i += 1
        if i == len(order):
            self.cursor[key] = i
            return None
        self.cursor[key] = i + 1
        self.drawer.used.add(id(order[i]))
        return order[i]


def spoil_line_length(good: str, rng: random.Random) -> str:
    """One clause 1–2 characters longer (characters of the poem itself) or shorter."""
    spans = [m.span() for m in _RUN.finditer(good)]
    start, end = rng.choice(spans)
    clause = list(good[start:end])
    d = rng.choice((1, 2))
    if len(clause) > d and rng.random() < 0.5:
        for _ in range(d):
            del clause[rng.randrange(len(clause))]
    else:
        chars = [c for m in _RUN.finditer(good) for c in m.group(0)]
        for _ in range(d):
            clause.insert(rng.randrange(len(clause) + 1), rng.choice(chars))
    return good[:start] + "".join(clause) + good[end:]


def spoil_repeat(good: str, rng: random.Random) -> str:
    """Degeneration: a clause turns into one character repeated, past the clause's length, and
    the answer stops there (``……春风风风风风风``)."""
    spans = [m.span() for m in _RUN.finditer(good)]
    start, end = rng.choice(spans[1:] or spans)         # not the first clause: it goes wrong later
    keep = rng.randint(1, end - start)                  # characters of the clause kept, the last repeated
    least = max(REPEAT_MIN, end - start - keep + 2)     # the clause must come out too long
    run = rng.randint(least, max(least, REPEAT_MAX))
    return good[:start + keep] + good[start + keep - 1] * (run - 1)


def answer_of(task: str, poem) -> str:
    """What a poem gives as an answer to `task`: its body, or for continue all but the first line."""
    return "\n".join(poem.lines[1:]) if task == "continue" else poem.body


def spoil_wrong_form(task: str, kind: str, form: dict, pools: Pools, spare: Spare,
                     rng: random.Random) -> str | None:
    """A real poem of another form (shi) or a ci of another tune (ci), as the whole answer."""
    if kind == "ci":
        others = sorted(t for t, poems in pools.ci.items() if poems[0].pattern != tuple(form["pattern"]))
        poem = spare.take(pools.ci[rng.choice(others)])
    else:
        groups = pools.couplets if task == "continue" else pools.shi
        poem = spare.take(groups[rng.choice(sorted(f for f in groups if f != form["name"]))])
    return None if poem is None else answer_of(task, poem)


def spoil_no_stop(good: str, task: str, kind: str, form: dict, pools: Pools, spare: Spare,
                  rng: random.Random) -> str | None:
    """The answer goes on: the first 1–2 lines (shi) or 2–4 lines (ci) of another poem of the same
    kind follow it, half the time after that poem's title line."""
    if kind == "ci":
        poem = spare.take(pools.ci[rng.choice(sorted(pools.ci))])
        n = rng.randint(2, 4)
    else:
        poem = spare.take((pools.couplets if task == "continue" else pools.shi)[form["name"]])
        n = rng.randint(1, 2)
    if poem is None:
        return None
    head = [f"《{poem.title}》{poem.author}"] if rng.random() < 0.5 else []
    return good + "\n" + "\n".join(head + poem.lines[:n])


def rejected_answer(failure: str, rec: dict, good: str, kind: str, pools: Pools, spare: Spare,
                    rng: random.Random) -> str:
    """A rejected answer of the kind `failure`: the grader must fail it and name this failure."""
    for _ in range(TRIES):
        if failure == "line_length":
            bad = spoil_line_length(good, rng)
        elif failure == "repeat":
            bad = spoil_repeat(good, rng)
        elif failure == "wrong_form":
            bad = spoil_wrong_form(rec["task"], kind, rec["form"], pools, spare, rng)
        elif failure == "no_stop":
            bad = spoil_no_stop(good, rec["task"], kind, rec["form"], pools, spare, rng)
        else:
            raise ValueError(failure)
        if bad is not None and failure_kind(rec, bad, grade_answer(rec["task"], rec, bad, True)) == failure:
            return bad
    raise SystemExit(f"{rec['task']}: no {failure} answer the grader fails as {failure} in {TRIES} tries "
                     f"for {good[:30]!r}")


# ---- the pairs --------------------------------------------------------------------------------

def clean(poems: list) -> list:
    """The poems without a run of REPEAT_MIN equal characters (a chosen answer must not look like
    a degenerate one), each body once (the corpus has a few under two titles)."""
    seen: set[str] = set()
    out = []
    for p in poems:
        if not _SAME.search(p.body) and p.body not in seen:
            seen.add(p.body)
            out.append(p)
    return out


def build_pairs(pools: Pools, counts: dict, seed: str) -> list[dict]:
    """Pairs of every task from `pools`: equal numbers of each failure per task, shuffled."""
    rng = random.Random(seed)
    drawer = Drawer(rng)
    spare = Spare(drawer)
    out = []
    for task in DRAW_ORDER:
        draws = []
        for kind, n in kinds_for(task, counts[task]):
            groups, size = groups_for(task, pools, kind)
            got = drawer.draw(groups, n, size)
            if len(got) < n:
                raise SystemExit(f"{task}/{kind}: only {len(got)} of {n} poems available")
            draws += [(kind, poems) for poems in got]
        failures = [list(FAILURES)[i % len(FAILURES)] for i in range(len(draws))]
        rng.shuffle(failures)
        for (kind, poems), failure in zip(draws, failures):
            rec = sample(task, poems, rng)
            if rng.randrange(SYSTEM_EVERY) == 0:
                add_system(rec, rng, kind)
            good = rec["messages"][-1]["content"]
            if not grade_answer(task, rec, good, True)["pass"]:
                raise SystemExit(f"{task}: the real poem fails the grader: {good[:40]!r}")
            bad = rejected_answer(failure, rec, good, kind, pools, spare, rng)
            out.append({"chosen": rec["messages"], "rejected": rec["messages"][:-1] + [assistant(bad)],
                        "task": task, "failure": failure, "form": rec["form"], "title": rec.get("title"),
                        "first_line": rec.get("first_line")})
    rng.shuffle(out)
    return out


def token_figures(pairs: list[dict], tokenizer_dir: Path) -> dict:
    """Tokens of the rendered chosen and rejected conversations (mean, max)."""
    out = {}
    for side in ("chosen", "rejected"):
        full, _ = token_lengths([{"conversations": p[side]} for p in pairs], tokenizer_dir)
        out[side] = {"tokens": sum(full), "mean": sum(full) / len(full), "max": max(full)}
    return out


def build(corpus_dir: Path, out_dir: Path, tokens: bool = True) -> dict:
    """Write the two files into out_dir; return the figures data/README.md reports."""
    start = time.perf_counter()
    train, val, table, tunes, held_out = load_corpus(corpus_dir)
    sets = {"train": build_pairs(make_pools(clean(train), table, tunes, banned_lines=held_out),
                                 TRAIN_COUNTS, f"{SEED}:train"),
            "val": build_pairs(make_pools(clean(val), table, tunes), VAL_COUNTS, f"{SEED}:val")}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(OUTPUTS, sets.values()):
        write_jsonl(out_dir / name, rows, compress=True)
    figures: dict = {"splits": {}}
    for split, rows in sets.items():
        fig = {"pairs": len(rows),
               "table": collections.Counter((r["task"], r["failure"]) for r in rows),
               "system": sum(r["chosen"][0]["role"] == "system" for r in rows)}
        if tokens:
            fig["tokens"] = token_figures(rows, corpus_dir / "tokenizer")
        figures["splits"][split] = fig
    figures["seconds"] = time.perf_counter() - start
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-dir", type=Path, default=HERE,
                    help="folder with pretrain_poetry_*.jsonl.gz and tokenizer/")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--no-tokens", action="store_true", help="skip the token counts")
    args = ap.parse_args()
    fig = build(args.corpus_dir, args.out_dir, tokens=not args.no_tokens)
    for split, f in fig["splits"].items():
        print(f"[{split}] {f['pairs']:,} pairs, {f['system']:,} with a system prompt")
        tasks = list(dict.fromkeys(t for t, _ in sorted(f["table"], key=lambda k: DRAW_ORDER.index(k[0]))))
        print(f"  {'task':<11}" + "".join(f"{k:>12}" for k in FAILURES) + f"{'all':>8}")
        for task in tasks:
            row = [f["table"][(task, k)] for k in FAILURES]
            print(f"  {task:<11}" + "".join(f"{n:>12,}" for n in row) + f"{sum(row):>8,}")
        if "tokens" in f:
            print("  tokens " + "; ".join(f"{side} {t['tokens']:,} (mean {t['mean']:.1f}, max {t['max']})"
                                          for side, t in f["tokens"].items()))
    print(f"done in {fig['seconds']:.1f} s")


if __name__ == "__main__":
    main()
