"""Build the LoRA task data from the poetry corpus: the acrostic poem (藏头诗), a skill SFT never taught.

An acrostic hides a word in the line heads: the first character of each line (句), read in order,
spells it.  Every conversation is made from a real poem: take a 五言绝句 or 七言绝句, read its four
heads, ask for "a 五言绝句 acrostic titled 《春江花月》", and answer with the poem itself.

Reads ``pretrain_poetry_{train,val}.jsonl.gz`` (see data/README.md) and writes

- ``lora_acrostic_train.jsonl.gz`` — one conversation per usable **train-split** quatrain (every
  one, once);
- ``lora_acrostic_val.jsonl.gz`` — the same from the **validation split**, less the poems the eval
  prompts use (validation loss);
- ``lora_eval_prompts.jsonl`` — the grader's prompts for this skill, in the record format of
  ``sft_eval_prompts.jsonl`` (task "acrostic", the heads in "expected" and "title"):
  EVAL_PER_FORM of each form, made from validation poems (``python -m workbook eval MODEL
  --prompts data/lora_eval_prompts.jsonl --max_new_tokens 96``).

Usable = a regulated shi of one of ACROSTIC_FORMS by shape, written one couplet per text line
(so that every answer is laid out alike), not a Tang ci, its body not seen before in the split
(the corpus holds a few poems twice, under two titles), and — train split only — no line shared
with the validation split (build_sft's leak rule).  The corpus reading, the leak rule, the chat
format, the system prompts and the writer are build_sft.py's, imported from it.
One line = ``{"conversations": [{"role": "user", ...}, {"role": "assistant", ...}], "task":
"acrostic", "form": 五言绝句|七言绝句, "heads": "春江花月"}``; about 1 in SYSTEM_EVERY starts with one
of build_sft's shi system prompts.

Deterministic: every choice comes from ``random.Random`` seeded with a fixed string, the input is
read in file order, and gzip is written without a timestamp, so a rebuild is byte-identical.

    python data/build_lora.py                 # ~3 s of CPU; prints the counts and token figures
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
from build_sft import (CN, SYSTEM_EVERY, EVAL_SYSTEM_EVERY, SYSTEM_PROMPTS, Poem,  # noqa: E402
                       assistant, load_corpus, make_pools, shi_form_record, token_lengths, user,
                       write_jsonl)

from workbook.eval.forms import FORM_BY_NAME, clauses  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = "minimind-workbook-lora-acrostic-v1"
OUTPUTS = ("lora_acrostic_train.jsonl.gz", "lora_acrostic_val.jsonl.gz", "lora_eval_prompts.jsonl")
MAX_SEQ_LEN = 224  # the LoRA runs' --max_seq_len (bench/lora_compare.py): no conversation should exceed it
ACROSTIC_FORMS = ("五言绝句", "七言绝句")  # four heads; 律诗 would ask for eight
EVAL_PER_FORM = 60  # eval prompts per form (the validation split has 75 五言绝句 and 192 七言绝句)

# The requests of the training and validation conversations.  Every one names the form and gives
# the hidden word in 《》, as an acrostic's title; {heads} = "春江花月", {k} = "四" (lines).  They
# extend stage 14's form_poem requests ("请以《…》为题，写一首五言绝句。"), whose form the SFT model
# already keeps: what the adapter must add is the heads.  (Listing the heads one by one, "依次是春、
# 江、花、月", or saying 五绝 / 七绝 throws the SFT model off the form altogether: not used.)
ACROSTIC = [
    "以《{heads}》为题，写一首{form}藏头诗。",
    "请以《{heads}》为题，写一首{form}，每句的第一个字连起来是“{heads}”。",
    "写一首藏头诗《{heads}》，{form}。",
    "帮我写一首题为《{heads}》的{form}，把题目的{k}个字藏在句首。",
    "藏头诗：《{heads}》。请写成一首{form}。",
    "请作{form}一首，题为《{heads}》，每句首字连读即是题目。",
    "写一首{form}藏头诗，题目《{heads}》，{k}句依次以题目的{k}个字开头。",
    "我想要一首藏头的{form}，藏《{heads}》{k}个字。",
]
# Phrasings only the eval prompts use (every EVAL_HELD_OUT_EVERY-th prompt): does the skill
# survive a request worded in a way training never showed?
EVAL_HELD_OUT_ACROSTIC = [
    "用《{heads}》作一首{form}，{k}个字要藏在{k}句的句首。",
    "请写{form}一首，题目《{heads}》，做成藏头诗。",
    "以《{heads}》{k}字藏头，赋{form}一首。",
]
EVAL_HELD_OUT_EVERY = 5


def heads_of(body: str) -> str:
    """The first character of each clause (句): ``"床前明月光，疑是地上霜。…" -> "床疑举低"``."""
    return "".join(c[0] for c in clauses(body))


def request(form: str, heads: str, templates: list[str], rng: random.Random) -> str:
    """An acrostic request for `heads` in `form`, in one of `templates`."""
    return rng.choice(templates).format(form=form, heads=heads, k=CN[FORM_BY_NAME[form][0]])


def usable(pools_couplets: dict) -> dict[str, list[Poem]]:
    """Form -> the poems of ACROSTIC_FORMS written one couplet per line, each body once (file order)."""
    seen: set[str] = set()
    out: dict[str, list[Poem]] = {}
    for form in ACROSTIC_FORMS:
        out[form] = []
        for p in pools_couplets.get(form, []):
            if p.body not in seen:
                seen.add(p.body)
                out[form].append(p)
    return out


def conversation(p: Poem, rng: random.Random) -> dict:
    """One training / validation conversation made from poem p (its heads, its form)."""
    heads = heads_of(p.body)
    messages = [user(request(p.form, heads, ACROSTIC, rng)), assistant(p.body)]
    if rng.randrange(SYSTEM_EVERY) == 0:
        messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS["shi"])})
    return {"conversations": messages, "task": "acrostic", "form": p.form, "heads": heads}


def build_conversations(poems: dict[str, list[Poem]], seed: str) -> list[dict]:
    """One conversation per poem of `poems` (form -> poems), in a seeded shuffled order."""
    rng = random.Random(seed)
    rows = [conversation(p, rng) for form in ACROSTIC_FORMS for p in poems[form]]
    rng.shuffle(rows)
    return rows


def split_eval(val: dict[str, list[Poem]], seed: str) -> tuple[dict, dict]:
    """(EVAL_PER_FORM validation poems of each form for the prompts, the rest for the val file)."""
    rng = random.Random(seed)
    chosen, rest = {}, {}
    for form in ACROSTIC_FORMS:
        if len(val[form]) < EVAL_PER_FORM:
            raise SystemExit(f"eval {form}: only {len(val[form])} of {EVAL_PER_FORM} validation poems")
        picked = rng.sample(val[form], EVAL_PER_FORM)
        ids = {id(p) for p in picked}
        chosen[form], rest[form] = picked, [p for p in val[form] if id(p) not in ids]
    return chosen, rest


def build_eval(chosen: dict[str, list[Poem]], seed: str) -> list[dict]:
    """The grader's prompts, alternating the forms (五言绝句, 七言绝句, 五言绝句, …) so that any
    ``--limit N`` covers both; every EVAL_HELD_OUT_EVERY-th in a held-out phrasing, every
    EVAL_SYSTEM_EVERY-th with a system prompt.  "expected" and "title" are the heads (the request
    names them in 《》: a title line the answer writes must be them); the reference is the poem
    the heads come from."""
    rng = random.Random(seed)
    records: list[dict] = []
    for rnd in range(EVAL_PER_FORM):
        for form in ACROSTIC_FORMS:
            p = chosen[form][rnd]
            k = len(records) + 1
            held_out = k % EVAL_HELD_OUT_EVERY == 0
            heads = heads_of(p.body)
            messages = [user(request(form, heads, EVAL_HELD_OUT_ACROSTIC if held_out else ACROSTIC, rng))]
            system = k % EVAL_SYSTEM_EVERY == 0
            if system:
                messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS["shi"])})
            records.append({"id": f"acrostic-{k:03d}", "task": "acrostic", "messages": messages,
                            "system": system, "form": shi_form_record(form), "title": heads,
                            "expected": heads, "first_line": None, "reference": p.body,
                            "source": [{"title": p.title, "author": p.author}]})
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
    train_pools = make_pools(train, table, tunes, banned_lines=held_out)
    train_poems = usable(train_pools.couplets)
    val_poems = usable(make_pools(val, table, tunes).couplets)
    chosen, rest = split_eval(val_poems, f"{SEED}:eval-poems")
    sets = {"train": build_conversations(train_poems, f"{SEED}:train"),
            "val": build_conversations(rest, f"{SEED}:val")}
    prompts = build_eval(chosen, f"{SEED}:eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / OUTPUTS[0], sets["train"], compress=True)
    write_jsonl(out_dir / OUTPUTS[1], sets["val"], compress=True)
    write_jsonl(out_dir / OUTPUTS[2], prompts, compress=False)

    # what "usable" leaves out of the train split's quatrains, by the first rule that drops them
    unbanned = make_pools(train, table, tunes)
    quatrains = {f: len(unbanned.shi.get(f, [])) for f in ACROSTIC_FORMS}
    leaked = {f: quatrains[f] - len(train_pools.shi.get(f, [])) for f in ACROSTIC_FORMS}
    figures: dict = {"train_quatrains": quatrains, "leak": leaked, "splits": {}}
    for split, rows in sets.items():
        fig = {"conversations": len(rows), "per_form": dict(collections.Counter(r["form"] for r in rows)),
               "system": sum(r["conversations"][0]["role"] == "system" for r in rows)}
        if tokens:
            fig.update(token_figures(rows, corpus_dir / "tokenizer"))
        figures["splits"][split] = fig
    fig = {"prompts": len(prompts), "per_form": dict(collections.Counter(r["form"]["name"] for r in prompts)),
           "held_out_phrasing": sum(i % EVAL_HELD_OUT_EVERY == 0 for i in range(1, len(prompts) + 1)),
           "system": sum(r["system"] for r in prompts)}
    if tokens:
        refs = [{"conversations": r["messages"] + [assistant(r["reference"])]} for r in prompts]
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
    args = ap.parse_args()
    fig = build(args.corpus_dir, args.out_dir, tokens=not args.no_tokens)
    q, leak = fig["train_quatrains"], fig["leak"]
    per_form = fig["splits"]["train"]["per_form"]
    print("train quatrains: " + "; ".join(
        f"{f} {q[f]:,}, {leak[f]} share a line with the validation split, "
        f"{q[f] - leak[f] - per_form.get(f, 0):,} not one couplet per line or a repeated body"
        for f in ACROSTIC_FORMS))
    for split, f in fig["splits"].items():
        print(f"[{split}] {f['conversations']:,} conversations ("
              + ", ".join(f"{form} {f['per_form'].get(form, 0):,}" for form in ACROSTIC_FORMS)
              + f"); {f['system']:,} have a system prompt")
        if "tokens" in f:
            print(f"  tokens {f['tokens']:,} (replies {f['assistant_tokens']:,}), per conversation mean "
                  f"{f['mean']:.1f}, max {f['max']}; {f['over_max_seq_len']} over {MAX_SEQ_LEN}; "
                  f"longest reply {f['reply_max']} tokens")
    e = fig["eval"]
    print(f"[eval] {e['prompts']} prompts ("
          + ", ".join(f"{form} {e['per_form'].get(form, 0)}" for form in ACROSTIC_FORMS)
          + f"); {e['held_out_phrasing']} held-out phrasings; {e['system']} with a system prompt"
          + (f"; longest reference {e['reference_reply_max']} tokens" if "reference_reply_max" in e else ""))
    print(f"done in {fig['seconds']:.1f} s")


if __name__ == "__main__":
    main()
