"""The cleaning funnel: raw poems in, a clean, deduplicated, decontaminated corpus out (stage 18 glue).

Provided code: it only strings together the learner's functions of ``workbook/data/clean.py``
(whichever the mode switch serves) and counts what each step removes::

    raw records ─ normalise, strip notes ─ drop_reason ─ exact dedup ─ MinHash/LSH near dedup
                ─ split (1 in 50 to validation) ─ decontaminate train against validation + grader

    python -m workbook.data.funnel                       # the funnel of data/poetry_raw.jsonl.xz
    python -m workbook.data.funnel --json out/funnel.json --out-dir out/clean
    python -m workbook.data.funnel --leak      # also: validation poems of the SHIPPED split with a
                                               # near-duplicate in its training split

Bad input (a missing file, a line that is not a JSON object) ends with one line
``错误：FILE:LINE: …`` and exit status 2.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import lzma
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbook.data import clean

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "data" / "poetry_raw.jsonl.xz"
EVAL_PROMPTS = ROOT / "data" / "sft_eval_prompts.jsonl"
VAL_MODULUS = 50  # 1 record in 50 to validation, by a hash of its text (as data/build_corpus.py)

# The near-duplicate settings: character 3-grams, 128 permutations in 32 bands of 4 rows (a pair
# of Jaccard s becomes a candidate with probability 1 − (1 − s⁴)³²: 0.87 at s = 0.5, 0.988 at 0.6,
# 0.9998 at 0.7, 0.05 at 0.2), and a true near-duplicate from Jaccard 0.5 on.
# Decontamination: any shared run of 10 Han characters.
K, NUM_PERM, BANDS, ROWS, THRESHOLD, SEED = 3, 128, 32, 4, 0.5, 1
NGRAM = 10


class FunnelError(ValueError):
    """Bad input: the message is "file:line: what is wrong"."""


@dataclass
class Record:
    source: str
    title: str
    author: str
    body: str

    @property
    def text(self) -> str:
        """The pretraining text, as data/build_corpus.py writes it."""
        return f"《{self.title}》{self.author}\n{self.body}"


@dataclass
class Funnel:
    counts: dict = field(default_factory=dict)  # step -> number, in funnel order
    examples: dict = field(default_factory=dict)  # step -> a few examples
    seconds: dict = field(default_factory=dict)  # step -> wall seconds
    train: list = field(default_factory=list)  # Record
    val: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"counts": self.counts, "examples": self.examples,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


def read_raw(path: Path = RAW) -> list[dict]:
    """The raw records of data/build_raw.py: dicts with source, title, author, paragraphs."""
    path = Path(path)
    if not path.is_file():
        raise FunnelError(f"{path}: 文件不存在 (file not found)")
    opener = lzma.open if path.suffix == ".xz" else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FunnelError(f"{path}:{lineno}: 不是 JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise FunnelError(f"{path}:{lineno}: 每行要是一个 JSON 对象 (object)")
                out.append(rec)
    except (lzma.LZMAError, EOFError, UnicodeDecodeError) as e:
        raise FunnelError(f"{path}: 读不了这个文件：{type(e).__name__}: {e}") from None
    return out


def read_eval_texts(path: Path = EVAL_PROMPTS) -> list[str]:
    """Everything the grader shows or expects: each prompt's messages and its reference answer."""
    texts = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FunnelError(f"{path}:{lineno}: 不是 JSON ({e.msg})") from None
                messages = rec.get("messages") if isinstance(rec, dict) else None
                if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                    raise FunnelError(f"{path}:{lineno}: 要有 \"messages\"：一个由 {{\"role\", \"content\"}} 组成的列表")
                texts += [str(m.get("content", "")) for m in messages]
                texts.append(str(rec.get("reference") or ""))
    except (OSError, UnicodeDecodeError) as e:
        raise FunnelError(f"{path}: 读不了这个文件：{type(e).__name__}: {e}") from None
    return texts


def _field(value) -> str:
    return value if isinstance(value, str) else ""


def clean_record(raw: dict) -> tuple[Record, str | None]:
    """Normalise and strip one raw record; return it with its drop reason (None: keep)."""
    lines = raw.get("paragraphs")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        lines = []
    title = clean.strip_notes(clean.normalize(_field(raw.get("title"))))
    # inside the 《…》 that will wrap the title, a 《》 of its own becomes 〈〉
    title = " ".join(title.replace("《", "〈").replace("》", "〉").split())
    # "王炎2": the package numbers authors of the same name; the number is not part of the name
    author = re.sub(r"[0-9]+$", "", " ".join(clean.strip_notes(clean.normalize(_field(raw.get("author")))).split()))
    body = clean.strip_notes(clean.normalize("\n".join(lines)))
    rec = Record(_field(raw.get("source")), title, author.strip(), body)
    return rec, clean.drop_reason(rec.title, rec.author, rec.body)


def is_validation(text: str) -> bool:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % VAL_MODULUS == 0


def signatures(shingle_sets: list[set[str]], num_perm: int = NUM_PERM, seed: int = SEED) -> np.ndarray:
    """(N, num_perm) uint32: the learner's minhash_signature of every set, one permutation table."""
    perms = clean.make_permutations(num_perm, seed)
    out = np.empty((len(shingle_sets), num_perm), dtype=np.uint32)
    for i, s in enumerate(shingle_sets):
        out[i] = clean.minhash_signature(s, perms)
    return out


def _show(rec: Record) -> str:
    head = rec.body.split("\n")[0]
    return f"《{rec.title}》{rec.author}｜{head[:24]}"


def run(raw: list[dict], eval_texts: list[str], *, examples: int = 3) -> Funnel:
    """The whole funnel over raw records; counts, examples and timings per step."""
    fn = Funnel()
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        fn.seconds[step] = now - clock
        clock = now

    fn.counts["records in"] = len(raw)
    kept: list[Record] = []
    dropped = collections.defaultdict(list)
    for r in raw:
        rec, why = clean_record(r)
        if why is None:
            kept.append(rec)
        else:
            dropped[why].append((r, rec))
    for reason in clean.REASONS:
        fn.counts[f"dropped: {reason}"] = len(dropped[reason])
        fn.examples[f"dropped: {reason}"] = [
            {"raw": "《%s》%s｜%s" % (_field(r.get("title")), _field(r.get("author")),
                                     "".join(x for x in (r.get("paragraphs") or []) if isinstance(x, str))[:40]),
             "clean": rec.text[:60]}
            for r, rec in dropped[reason][:examples]]
    lap("normalise + filter")

    # exact duplicates: the same Han characters, whatever the title, author or punctuation
    first: dict[str, int] = {}
    unique: list[Record] = []
    exact_examples = []
    other_name = 0
    for rec in kept:
        key = clean.dedup_key(rec.body)
        if key in first:
            orig = unique[first[key]]
            if (orig.title, orig.author) != (rec.title, rec.author):
                other_name += 1
                if len(exact_examples) < examples:
                    exact_examples.append({"kept": _show(orig), "dropped": _show(rec)})
            continue
        first[key] = len(unique)
        unique.append(rec)
    fn.counts["dropped: exact duplicate"] = len(kept) - len(unique)
    fn.counts["  of which under another title or author"] = other_name
    fn.examples["dropped: exact duplicate"] = exact_examples
    lap("exact dedup")

    keys = [clean.dedup_key(rec.body) for rec in unique]
    sets = [clean.shingles(key, K) for key in keys]
    sigs = signatures(sets)
    lap("minhash")
    cands = clean.lsh_candidates(sigs, BANDS, ROWS)
    roots = clean.near_duplicate_clusters(sets, cands, THRESHOLD)
    lap("lsh + clusters")
    near = [i for i, root in enumerate(roots) if root != i]
    fn.counts["near-duplicate candidates (LSH)"] = len(cands)
    fn.counts["dropped: near duplicate"] = len(near)
    fn.examples["dropped: near duplicate"] = [
        {"kept": _show(unique[roots[i]]), "dropped": _show(unique[i]),
         "jaccard": round(clean.jaccard(sets[i], sets[roots[i]]), 3)} for i in near[:examples]]
    survivors = [rec for i, rec in enumerate(unique) if roots[i] == i]
    survivor_keys = [keys[i] for i in range(len(unique)) if roots[i] == i]

    train_idx = [i for i, rec in enumerate(survivors) if not is_validation(rec.text)]
    val_idx = [i for i, rec in enumerate(survivors) if is_validation(rec.text)]
    eval_keys = [survivor_keys[i] for i in val_idx] + [clean.dedup_key(t) for t in eval_texts]
    bad = clean.contaminated([survivor_keys[i] for i in train_idx], eval_keys, NGRAM)
    bad_set = set(bad)
    fn.counts["dropped: contaminated (train shares a 10-gram with val or grader)"] = len(bad)
    fn.examples["dropped: contaminated (train shares a 10-gram with val or grader)"] = [
        _show(survivors[train_idx[j]]) for j in bad[:examples]]
    fn.train = [survivors[i] for j, i in enumerate(train_idx) if j not in bad_set]
    fn.val = [survivors[i] for i in val_idx]
    fn.counts["out: train"] = len(fn.train)
    fn.counts["out: validation"] = len(fn.val)
    lap("split + decontaminate")
    return fn


def straddling(train_texts: list[str], val_texts: list[str]) -> list[tuple[int, int, float]]:
    """Validation records with a near-duplicate (or exact duplicate body) in training:
    (val index, train index, Jaccard), one per such validation record, by the same MinHash/LSH."""
    bodies = [t.split("\n", 1)[-1] for t in train_texts + val_texts]
    sets = [clean.shingles(clean.dedup_key(b), K) for b in bodies]
    cands = clean.lsh_candidates(signatures(sets), BANDS, ROWS)
    n_train = len(train_texts)
    best: dict[int, tuple[int, float]] = {}
    for i, j in cands:
        if (i < n_train) == (j < n_train):
            continue
        t, v = (i, j) if i < n_train else (j, i)
        s = clean.jaccard(sets[t], sets[v])
        if s >= THRESHOLD and s > best.get(v - n_train, (0, -1.0))[1]:
            best[v - n_train] = (t, s)
    return sorted((v, t, s) for v, (t, s) in best.items())


def _read_texts(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def shipped_leak(examples: int = 5) -> dict:
    """How many validation poems of the shipped corpus have a near-duplicate in its training split."""
    train = _read_texts(ROOT / "data" / "pretrain_poetry_train.jsonl.gz")
    val = _read_texts(ROOT / "data" / "pretrain_poetry_val.jsonl.gz")
    hits = straddling(train, val)
    same = sum(clean.dedup_key(val[v].split("\n", 1)[-1]) == clean.dedup_key(train[t].split("\n", 1)[-1])
               for v, t, _ in hits)
    return {"val": len(val), "val_with_near_duplicate_in_train": len(hits), "share": len(hits) / len(val),
            "identical_body": same,
            "examples": [{"val": val[v].replace("\n", "｜")[:48], "train": train[t].replace("\n", "｜")[:48],
                          "jaccard": round(s, 3)} for v, t, s in hits[:examples]]}


def _write(records: list[Record], path: Path) -> None:
    import gzip
    import io

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, io.TextIOWrapper(
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0), encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps({"text": rec.text}, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, default=RAW, help="raw records (data/build_raw.py)")
    ap.add_argument("--eval", type=Path, default=EVAL_PROMPTS, help="the grader's prompts")
    ap.add_argument("--json", type=Path, help="write counts, examples and timings here")
    ap.add_argument("--out-dir", type=Path, help="write clean_train.jsonl.gz and clean_val.jsonl.gz here")
    ap.add_argument("--leak", action="store_true", help="also count the shipped validation poems that have a "
                    "near-duplicate in the shipped training split (data/pretrain_poetry_*.jsonl.gz)")
    args = ap.parse_args(argv)
    try:
        if not args.eval.is_file():
            raise FunnelError(f"{args.eval}: 文件不存在 (file not found)")
        eval_texts = read_eval_texts(args.eval)
        raw = read_raw(args.raw)
        fn = run(raw, eval_texts)
    except FunnelError as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    report = fn.to_dict()
    if args.leak:
        report["leak"] = shipped_leak()
    for step, n in fn.counts.items():
        print(f"{step:68s} {n:>8,d}")
    if args.leak:
        leak = report["leak"]
        print(f"shipped split: {leak['val_with_near_duplicate_in_train']:,d} of {leak['val']:,d} validation poems "
              f"({leak['share']:.1%}) have a near-duplicate (Jaccard >= {THRESHOLD}) in the training split; "
              f"{leak['identical_body']:,d} of them the same characters")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in fn.seconds.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if args.out_dir:
        _write(fn.train, args.out_dir / "clean_train.jsonl.gz")
        _write(fn.val, args.out_dir / "clean_val.jsonl.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
