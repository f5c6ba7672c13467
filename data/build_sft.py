"""Build the SFT chat data from the poetry corpus: six tasks, a held-out set, the eval prompts.

Reads ``pretrain_poetry_{train,val}.jsonl.gz`` (see data/README.md) and writes

- ``sft_poetry_train.jsonl.gz`` — conversations made from the **train split** only;
- ``sft_poetry_val.jsonl.gz`` — the same tasks from the **validation split** (validation loss);
- ``sft_eval_prompts.jsonl`` — the grader's fixed prompts, also from the validation split
  (``python -m workbook eval MODEL``; see workbook/eval/).

One line = one conversation in MiniMind's chat format,
``{"conversations": [{"role": "system"|"user"|"assistant", "content": ...}, ...], "task": ...}``
(MiniMind's loader reads "conversations"; "task" names the task type).  The six tasks
(workbook/eval/tasks.py): form_poem (a title and a regulated form → a real poem of that form),
ci (a 词牌 → a real ci of the tune's usual line-length pattern), continue (a form and the first
couplet → the rest), name_form (a poem → its form or 词牌), give_title (a poem → 《title》),
multi_turn (a poem or ci, then "再写一首同样体裁的" → another of the same form).  Forms are read from
the poems' shapes with workbook/eval/forms.py, the rules the grader uses.

The core is stage 19's (``workbook/data/instruct.py``; ``notebooks/19_instruction_data.ipynb``):
the templates and the chat shape of each conversation (``task_messages``, ``to_chat_record``), the
split by poem (``straddling_poems``: a train poem that shares a long line with a validation poem
is the same poem, and stays out of training), the task mix (``mix_counts``) and the
decontamination against the grader's requests (``contaminated_by_requests``).  Like the trainers,
this script runs **whichever implementation the mode switch serves**: your file in learner mode,
the reference with ``WORKBOOK_IMPL=solutions`` (which rebuilds the shipped files byte for byte).
What stays here is the plumbing: reading the corpus, the 词牌 table, the pools and the balanced
draws over forms, the grader's metadata, the files.

Deterministic: every choice comes from ``random.Random`` seeded with a fixed string, the input is
read in file order, and gzip is written without a timestamp, so a rebuild is byte-identical.

    python data/build_sft.py                 # ~5 s of CPU; prints the counts and token figures
    python data/build_sft.py --table         # also the 词牌 table (Markdown, as in data/README.md)
    python data/build_sft.py --out-dir /tmp/sft --no-tokens
    python data/build_sft.py --out-dir /tmp/leaky --split record   # no split by poem, no
                                                 # decontamination: the leaky variant (bench/instruct_compare.py)
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from workbook.data import instruct  # stage 19: the learner's file, or the reference (WORKBOOK_IMPL)
from workbook.data.instruct import CN, SYSTEM_PROMPTS  # noqa: F401 (build_lora.py imports them from here)
from workbook.data.validate import DataError, decode_json_line
from workbook.eval.forms import HAN, SHI_FORMS, clauses, form_of_pattern, pattern_of
from workbook.eval.tasks import SFT_TASKS as TASKS  # the six SFT tasks (TASKS also holds the LoRA task)

HERE = Path(__file__).resolve().parent
SEED = "minimind-workbook-sft-v1"

# build_corpus.py writes all Tang poems first, then all Song ci; these counts (data/README.md)
# tell them apart.  A rebuilt corpus with other counts stops the build (see load_split).
CORPUS = {"train": (75_353, 55_678), "val": (1_447, 1_071)}  # (poems, of which Tang)

# The 词牌 table: a tune is used when the train split has at least CIPAI_MIN_POEMS ci of it and
# its most common line-length pattern covers at least CIPAI_MIN_SHARE of them.
CIPAI_MIN_POEMS = 30
CIPAI_MIN_SHARE = 0.8
UNKNOWN_TUNE = "失调名"  # "tune name lost": not a 词牌

# A train poem that shares a body line of at least this many Han characters with a validation poem
# (the same poem under another title or author) is left out of the training conversations
# (stage 19's straddling_poems; build_lora.py and build_dpo.py compare the lines as written).
LEAK_MIN_CHARS = 8
TITLE_RE = re.compile(f"[{HAN}]{{2,12}}")  # titles a request can use: 2–12 characters, no series number

EVAL_PER_TASK = 20
SYSTEM_EVERY = 8    # about 1 conversation in 8 starts with a system prompt (train and val)
EVAL_SYSTEM_EVERY = 4  # every 4th eval prompt of a task has one (5 of 20)
# The order tasks draw their poems in (a poem serves one conversation): the pickiest pools first.
DRAW_ORDER = ("ci", "form_poem", "multi_turn", "give_title", "continue", "name_form")
TITLED_TASKS = ("form_poem", "multi_turn", "give_title")  # they need a usable title

# The train and validation mixes: weights per task, apportioned to the sizes by the stage-19
# function mix_counts (largest remainder); name_form and multi_turn split their share between shi and
# ci by CI_MIX the same way.
TRAIN_MIX = {"form_poem": 30, "ci": 15, "continue": 15, "name_form": 15, "give_title": 15, "multi_turn": 10}
TRAIN_SIZE = 20_000
VAL_MIX = {"form_poem": 150, "ci": 80, "continue": 100, "name_form": 90, "give_title": 100, "multi_turn": 60}
VAL_SIZE = 580
CI_MIX = {"name_form": {"shi": 2, "ci": 1}, "multi_turn": {"shi": 3, "ci": 1}}  # 1/3 and 1/4 ci
# Decontamination: a train poem that shares a run of this many Han characters with anything the
# grader's requests show or expect is left out of the training conversations.
DECONTAMINATE_N = 10

# ---- the corpus ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Poem:
    title: str
    author: str
    body: str           # the lines joined with "\n", as in the corpus
    kind: str           # "shi" (全唐诗) or "ci" (宋词)
    pattern: tuple      # clause lengths
    form: str | None    # 五言绝句 … 七言律诗 (shi of a regulated shape), else None

    @property
    def lines(self) -> list[str]:
        return self.body.split("\n")


def parse_text(text: str) -> tuple[str, str, str]:
    """``"《题目》作者\\n正文"`` -> (title, author, body)."""
    head, _, body = text.partition("\n")
    title, _, author = head[1:].partition("》")
    return title, author, body


def load_split(path: Path, split: str) -> list[Poem]:
    """Every poem of a corpus file, in file order, with its kind, pattern and shi form."""
    texts = []
    try:
        with gzip.open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                rec = decode_json_line(raw, path, lineno)  # DataError "file:line: …" on bad bytes or JSON
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    raise DataError(path, '每行要是 {"text": "《题目》作者\\n正文"}', lineno)
                texts.append(rec["text"])
    except DataError as e:
        raise SystemExit(str(e)) from None
    except (OSError, EOFError) as e:
        raise SystemExit(f"{path}: 读不了这个文件：{type(e).__name__}: {e}") from None
    total, n_tang = CORPUS[split]
    if len(texts) != total:
        raise SystemExit(f"{path}: {len(texts):,} poems, expected {total:,}: the corpus was rebuilt; "
                         f"update CORPUS in {Path(__file__).name} from build_corpus.py's counts")
    poems = []
    for i, text in enumerate(texts):
        title, author, body = parse_text(text)
        kind = "shi" if i < n_tang else "ci"
        pattern = tuple(pattern_of(body))
        poems.append(Poem(title, author, body, kind, pattern,
                          form_of_pattern(pattern) if kind == "shi" else None))
    return poems


def cipai_table(ci: list[Poem]) -> dict[str, dict]:
    """词牌 -> {"pattern", "poems", "share"} for the tunes with a dominant pattern (train split)."""
    by_tune = collections.defaultdict(collections.Counter)
    for p in ci:
        by_tune[p.title][p.pattern] += 1
    table = {}
    for tune in sorted(by_tune):
        counts = by_tune[tune]
        n = sum(counts.values())
        # most common pattern; ties go to the smaller tuple, so the choice never depends on order
        pattern, k = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if tune != UNKNOWN_TUNE and n >= CIPAI_MIN_POEMS and k / n >= CIPAI_MIN_SHARE:
            table[tune] = {"pattern": list(pattern), "poems": n, "share": round(k / n, 3)}
    return table


def distinct_tunes(table: dict) -> set[str]:
    """Tunes whose pattern is no other tune's and no regulated shi's: only these can be named
    from the shape (鹧鸪天 and 思佳客 share a pattern; 玉楼春 is shaped like a 七言律诗)."""
    uses = collections.Counter(tuple(t["pattern"]) for t in table.values())
    return {tune for tune, t in table.items()
            if uses[tuple(t["pattern"])] == 1 and form_of_pattern(t["pattern"]) is None}


def long_lines(poems: list[Poem]) -> set[str]:
    return {ln for p in poems for ln in p.lines if len("".join(clauses(ln))) >= LEAK_MIN_CHARS}


def load_corpus(corpus_dir: Path) -> tuple[list[Poem], list[Poem], dict, set[str], set[str]]:
    """(train poems, validation poems, the 词牌 table, every tune name, the held-out lines).

    Tune names (with both halves of an alias pair "望江南·忆江南") keep Tang ci out of the shi
    pools; the held-out lines are the validation split's long lines (see LEAK_MIN_CHARS).
    data/build_lora.py starts from the same five.
    """
    train = load_split(corpus_dir / "pretrain_poetry_train.jsonl.gz", "train")
    val = load_split(corpus_dir / "pretrain_poetry_val.jsonl.gz", "val")
    table = cipai_table([p for p in train if p.kind == "ci"])
    tunes = {name for p in train + val if p.kind == "ci" for name in [p.title, *p.title.split("·")]}
    return train, val, table, tunes, long_lines(val)


@dataclass
class Pools:
    """The poems each task can use, grouped so that draws can be balanced across groups."""
    shi: dict          # form -> [Poem]: regulated shi, not titled by a 词牌
    titled: dict       # form -> [Poem]: the same with a title a request can use
    couplets: dict     # form -> [Poem]: shi written one couplet (two clauses) per line
    ci: dict           # 词牌 -> [Poem]: ci of a table tune in the tune's pattern
    ci_distinct: dict  # the same, for tunes whose pattern tells them apart (name_form)


def make_pools(poems: list[Poem], table: dict, tunes: set[str], banned_lines: set[str] = frozenset(),
               banned_titles: set[str] = frozenset(), leave_out: set[int] = frozenset()) -> Pools:
    """The pools of `poems`, without those at the indices `leave_out` or with a line in `banned_lines`."""
    pools = Pools(*(collections.defaultdict(list) for _ in range(5)))
    distinct = distinct_tunes(table)
    for i, p in enumerate(poems):
        if i in leave_out or (banned_lines and any(ln in banned_lines for ln in p.lines)):
            continue
        if p.kind == "ci":
            if p.title in table and list(p.pattern) == table[p.title]["pattern"]:
                pools.ci[p.title].append(p)
                if p.title in distinct:
                    pools.ci_distinct[p.title].append(p)
            continue
        if p.form is None or p.title.split(" ")[0] in tunes:  # a Tang ci (菩萨蛮 …) is not shi
            continue
        pools.shi[p.form].append(p)
        if TITLE_RE.fullmatch(p.title) and p.title not in banned_titles:
            pools.titled[p.form].append(p)
        if all(len(clauses(ln)) == 2 for ln in p.lines):
            pools.couplets[p.form].append(p)
    return pools


class Drawer:
    """Balanced draws without replacement: round-robin over the groups (forms or 词牌), each group
    shuffled once; a poem drawn by one task is not drawn again by another."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[int] = set()
        self._order: dict[int, list] = {}

    def _shuffled(self, items: list) -> list:
        key = id(items)
        if key not in self._order:
            self._order[key] = self.rng.sample(items, len(items))
        return self._order[key]

    def draw(self, groups: dict, n: int, size: int = 1, caps: dict | None = None) -> list[tuple]:
        """n draws of `size` poems from one group each (multi_turn pairs: size 2); at most
        caps[key] draws from a group (the others make up the difference)."""
        keys = sorted(groups)
        cursors = dict.fromkeys(keys, 0)
        taken = dict.fromkeys(keys, 0)
        out: list[tuple] = []
        while len(out) < n and keys:
            for key in list(keys):
                if caps and caps.get(key) is not None and taken[key] >= caps[key]:
                    keys.remove(key)
                    continue
                items = self._shuffled(groups[key])
                picked = []
                while len(picked) < size and cursors[key] < len(items):
                    p = items[cursors[key]]
                    cursors[key] += 1
                    if id(p) not in self.used:
                        picked.append(p)
                if len(picked) < size:
                    keys.remove(key)
                    continue
                self.used.update(id(p) for p in picked)
                taken[key] += 1
                out.append(tuple(picked))
                if len(out) == n:
                    break
        return out


# ---- the conversations --------------------------------------------------------------------------

def shi_form_record(form: str, skip: int = 0) -> dict:
    n, chars = next(k for k, v in SHI_FORMS.items() if v == form)
    return {"name": form, "pattern": [chars] * (n - skip), "lines": n - skip, "chars": chars}


def ci_form_record(tune: str, pattern) -> dict:
    return {"name": tune, "pattern": list(pattern), "lines": len(pattern), "chars": None}


def form_of(p: Poem) -> dict:
    return shi_form_record(p.form) if p.kind == "shi" else ci_form_record(p.title, p.pattern)


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def sample(task: str, poems: tuple, rng: random.Random) -> dict:
    """One conversation of `task` made from real poems (stage 19's task_messages), with what the
    grader needs to score it."""
    p = poems[0]
    rec = {"task": task, "source": [{"title": q.title, "author": q.author} for q in poems],
           "messages": instruct.task_messages(task, poems, rng)}
    if task in ("form_poem", "ci"):
        rec.update(form=form_of(p), title=p.title)
    elif task == "continue":
        rec.update(form=shi_form_record(p.form, skip=2), first_line=p.lines[0])
    elif task == "name_form":
        rec.update(form=form_of(p), expected=p.form if p.kind == "shi" else p.title)
    elif task == "give_title":
        rec.update(form=form_of(p), expected=p.title)
    elif task == "multi_turn":
        q = poems[1]
        # the title / 词牌 the second request names, if it names one (for the record only)
        named = f"《{q.title}》" in rec["messages"][2]["content"]
        rec.update(form=form_of(q), title=q.title if named else None)
    rec["system"] = False
    return rec


def add_system(rec: dict, rng: random.Random, kind: str) -> None:
    rec["messages"].insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS[kind])})
    rec["system"] = True


def groups_for(task: str, pools: Pools, kind: str) -> tuple[dict, int]:
    """(the groups to draw from, poems per draw)."""
    if kind == "ci":
        return (pools.ci_distinct if task == "name_form" else pools.ci), 2 if task == "multi_turn" else 1
    return {"form_poem": pools.titled, "continue": pools.couplets, "name_form": pools.shi,
            "give_title": pools.titled, "multi_turn": pools.titled}[task], (
        2 if task == "multi_turn" else 1)


def kinds_for(task: str, n: int) -> list[tuple[str, int]]:
    """[(kind, count)]: how many of a task's n conversations are shi and how many ci (CI_MIX)."""
    if task == "ci":
        return [("ci", n)]
    if task not in CI_MIX:
        return [("shi", n)]
    split = instruct.mix_counts(CI_MIX[task], n)
    return [("shi", split["shi"])] + ([("ci", split["ci"])] if split["ci"] else [])


def fair_caps(pools: Pools, counts: dict) -> dict[str, dict]:
    """task -> {form: most draws} for the forms too scarce to give every titled task its share.

    Titled 五言绝句 are few (2,256 in train): drawn task by task, the first task would take them
    all.  A scarce form is split among form_poem, multi_turn and give_title in proportion to
    what each asks of it; the other forms make up the difference.
    """
    forms = sorted(pools.titled)
    per_form = {t: dict(kinds_for(t, counts[t]))["shi"] / len(forms) * (2 if t == "multi_turn" else 1)
                for t in TITLED_TASKS}
    caps: dict[str, dict] = {t: {} for t in TITLED_TASKS}
    for form in forms:
        scale = len(pools.titled[form]) / sum(per_form.values())
        if scale < 1:
            for t in TITLED_TASKS:
                caps[t][form] = int(per_form[t] * scale) // (2 if t == "multi_turn" else 1)
    return caps


def build_conversations(pools: Pools, counts: dict, seed: str) -> list[dict]:
    """Conversations of every task from `pools`, shuffled into one deterministic order."""
    rng = random.Random(seed)
    drawer = Drawer(rng)
    caps = fair_caps(pools, counts)
    out = []
    for task in DRAW_ORDER:
        for kind, n in kinds_for(task, counts[task]):
            groups, size = groups_for(task, pools, kind)
            draws = drawer.draw(groups, n, size, caps.get(task) if kind == "shi" else None)
            if len(draws) < n:
                raise SystemExit(f"{task}/{kind}: only {len(draws)} of {n} poems available")
            for poems in draws:
                rec = sample(task, poems, rng)
                if rng.randrange(SYSTEM_EVERY) == 0:
                    add_system(rec, rng, kind)
                out.append(rec)
    rng.shuffle(out)
    return out


def build_eval(pools: Pools, seed: str) -> list[dict]:
    """EVAL_PER_TASK prompts per task, balanced over forms / 词牌; interleaved (form_poem-01,
    ci-01, …, multi_turn-01, form_poem-02, …) so that the first N prompts cover every task."""
    rng = random.Random(seed)
    drawer = Drawer(rng)
    records = []
    for task in TASKS:
        recs = []
        for kind, n in kinds_for(task, EVAL_PER_TASK):
            groups, size = groups_for(task, pools, kind)
            draws = drawer.draw(groups, n, size)
            if len(draws) < n:
                raise SystemExit(f"eval {task}/{kind}: only {len(draws)} of {n} poems available")
            recs += [(kind, sample(task, poems, rng)) for poems in draws]
        for i, (kind, rec) in enumerate(recs):
            if i % EVAL_SYSTEM_EVERY == EVAL_SYSTEM_EVERY - 1:
                add_system(rec, rng, kind)
            # the whole conversation must be well-formed before its last answer becomes the reference
            reference = instruct.to_chat_record(rec["messages"], task)["conversations"].pop()["content"]
            rec["messages"].pop()
            records.append({"id": f"{task}-{i + 1:02d}", "task": task, "messages": rec["messages"],
                            "system": rec["system"], "form": rec["form"],
                            "title": rec.get("title"), "expected": rec.get("expected"),
                            "first_line": rec.get("first_line"), "reference": reference,
                            "source": rec["source"]})
    order = {task: k for k, task in enumerate(TASKS)}
    return sorted(records, key=lambda r: (int(r["id"].rsplit("-", 1)[1]), order[r["task"]]))


# ---- output -------------------------------------------------------------------------------------

def render(messages: list[dict]) -> str:
    """The shipped tokenizer's chat template (plain ChatML, no default system message)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def write_jsonl(path: Path, rows: list[dict], compress: bool) -> None:
    """Write atomically (path.tmp, then rename); gzip with mtime 0 and no name: byte-identical."""
    tmp = path.with_name(path.name + ".tmp")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(tmp, "wb") as raw:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                gz.write(data)
        else:
            raw.write(data)
    os.replace(tmp, path)


def token_lengths(conversations: list[dict], tokenizer_dir: Path) -> tuple[list[int], list[int]]:
    """(tokens of each rendered conversation, tokens of each assistant reply + <|im_end|>\\n = 2)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    full = [len(e.ids) for e in tok.encode_batch([render(c["conversations"]) for c in conversations],
                                                 add_special_tokens=False)]
    replies = [m["content"] for c in conversations for m in c["conversations"]
               if m["role"] == "assistant"]
    return full, [len(e.ids) + 2 for e in tok.encode_batch(replies, add_special_tokens=False)]


def token_stats(conversations: list[dict], tokenizer_dir: Path) -> dict:
    """Tokens of the rendered conversations, and of the assistant replies (+ <|im_end|>\\n = 2)."""
    full, reply_lengths = token_lengths(conversations, tokenizer_dir)
    reply_tokens = sum(reply_lengths)
    ordered = sorted(full)
    return {"tokens": sum(full), "assistant_tokens": reply_tokens, "mean": sum(full) / len(full),
            "p99": ordered[int(0.99 * (len(ordered) - 1))], "max": ordered[-1]}


def leaving_training(train: list[Poem], val: list[Poem], prompts: list[dict]) -> dict[str, list[int]]:
    """The train poems that stay out of the training conversations, and why (stage 19):
    "straddling" — the same poem as a validation poem (a shared line of LEAK_MIN_CHARS or more Han
    characters), "contaminated" — shares DECONTAMINATE_N Han characters in a row with a grader request."""
    bodies = [p.body for p in train]
    return {"straddling": instruct.straddling_poems(bodies, [p.body for p in val], LEAK_MIN_CHARS),
            "contaminated": instruct.contaminated_by_requests(bodies, prompts, DECONTAMINATE_N)}


def build(corpus_dir: Path, out_dir: Path, tokens: bool = True, split: str = "poem",
          train_mix: dict | None = None) -> dict:
    """Write the three files into out_dir; return the figures data/README.md reports.

    split="record" trusts the corpus's per-record split: no train poem leaves training for being
    the same poem as a validation one, and none for sharing text with the grader's requests (the
    leaky variant bench/instruct_compare.py measures; never shipped).  train_mix replaces TRAIN_MIX
    (the same bench's equal mix).
    """
    start = time.perf_counter()
    train, val, table, tunes, _ = load_corpus(corpus_dir)
    # eval prompts that name a title use only titles that no train poem has
    eval_pools = make_pools(val, table, tunes, banned_titles={p.title for p in train})
    prompts = build_eval(eval_pools, f"{SEED}:eval")
    leaving = leaving_training(train, val, prompts) if split == "poem" else {"straddling": [], "contaminated": []}
    leave_out = set(leaving["straddling"]) | set(leaving["contaminated"])
    train_pools = make_pools(train, table, tunes, leave_out=leave_out)
    val_pools = make_pools(val, table, tunes)
    counts = {"train": instruct.mix_counts(train_mix or TRAIN_MIX, TRAIN_SIZE), "val": instruct.mix_counts(VAL_MIX, VAL_SIZE)}
    sets = {
        "train": [instruct.to_chat_record(r["messages"], r["task"])
                  for r in build_conversations(train_pools, counts["train"], f"{SEED}:train")],
        "val": [instruct.to_chat_record(r["messages"], r["task"])
                for r in build_conversations(val_pools, counts["val"], f"{SEED}:val")],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "sft_poetry_train.jsonl.gz", sets["train"], compress=True)
    write_jsonl(out_dir / "sft_poetry_val.jsonl.gz", sets["val"], compress=True)
    write_jsonl(out_dir / "sft_eval_prompts.jsonl", prompts, compress=False)

    figures: dict = {"cipai": table, "left_out_train_poems": len(leave_out),
                     "straddling": len(leaving["straddling"]), "contaminated": len(leaving["contaminated"]),
                     "contaminated_only": len(set(leaving["contaminated"]) - set(leaving["straddling"])),
                     "splits": {}}
    for name, rows in sets.items():
        fig = {"conversations": len(rows),
               "tasks": dict(sorted(collections.Counter(r["task"] for r in rows).items())),
               "system": sum(r["conversations"][0]["role"] == "system" for r in rows)}
        if tokens:
            fig.update(token_stats(rows, corpus_dir / "tokenizer"))
        figures["splits"][name] = fig
    figures["eval"] = {"prompts": len(prompts),
                       "tasks": dict(collections.Counter(r["task"] for r in prompts)),
                       "system": sum(r["system"] for r in prompts)}
    figures["seconds"] = time.perf_counter() - start
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-dir", type=Path, default=HERE,
                    help="folder with pretrain_poetry_*.jsonl.gz and tokenizer/")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--no-tokens", action="store_true", help="skip the token counts")
    ap.add_argument("--table", action="store_true", help="print the 词牌 table as Markdown")
    ap.add_argument("--split", choices=("poem", "record"), default="poem",
                    help="record: no split by poem and no decontamination (the leaky variant; never shipped)")
    args = ap.parse_args()
    try:
        fig = build(args.corpus_dir, args.out_dir, tokens=not args.no_tokens, split=args.split)
    except NotImplementedError as e:
        print(f"错误：data/build_sft.py 用的是第 19 课 workbook/data/instruct.py 里的函数，它还没写完：{e}\n"
                 f"先写完它（python -m workbook check 19），或者用参考实现：WORKBOOK_IMPL=solutions python data/build_sft.py", file=sys.stderr)
        sys.exit(2)
    except ValueError as e:
        print(f"错误：workbook/data/instruct.py 做出了不能训练的对话 (malformed conversation)：{e}", file=sys.stderr)
        sys.exit(2)
    print(f"词牌 table: {len(fig['cipai'])} tunes, {sum(t['poems'] for t in fig['cipai'].values()):,} "
          f"train ci; {fig['left_out_train_poems']} train poems left out: {fig['straddling']} the same poem as "
          f"a validation poem (split by poem), {fig['contaminated']} share {DECONTAMINATE_N} characters with a "
          f"grader request ({fig['contaminated_only']} of them only that)")
    for split, f in fig["splits"].items():
        print(f"[{split}] {f['conversations']:,} conversations, {f['system']:,} with a system "
              f"prompt; " + ", ".join(f"{k} {v:,}" for k, v in f["tasks"].items()))
        if "tokens" in f:
            print(f"  tokens {f['tokens']:,} (assistant {f['assistant_tokens']:,}), per conversation "
                  f"mean {f['mean']:.1f}, p99 {f['p99']}, max {f['max']}")
    e = fig["eval"]
    print(f"[eval] {e['prompts']} prompts, {e['system']} with a system prompt; "
          + ", ".join(f"{k} {v}" for k, v in e["tasks"].items()))
    if args.table:
        distinct = distinct_tunes(fig["cipai"])
        print("\n| 词牌 | 训练集首数 | 主句式占比 | 句数 | 字数 | 句式（每句字数） | name_form |\n"
              "|---|---:|---:|---:|---:|---|:-:|")
        for tune, t in sorted(fig["cipai"].items(), key=lambda kv: (-kv[1]["poems"], kv[0])):
            print(f"| {tune} | {t['poems']} | {t['share']:.0%} | {len(t['pattern'])} | "
                  f"{sum(t['pattern'])} | {'-'.join(map(str, t['pattern']))} | "
                  f"{'✓' if tune in distinct else ''} |")
    print(f"done in {fig['seconds']:.1f} s")


if __name__ == "__main__":
    main()
