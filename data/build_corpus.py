"""Build the workbook's pretraining corpus: all Tang poems and all Song ci, one poem per line.

The source is the npm package ``chinese-poetry@2.0.1`` (MIT; the texts are public domain).  Each
poem becomes one MiniMind pretrain record, ``{"text": "《题目》作者\\n正文"}``: the title in 《》,
the author, a newline, then the body lines joined with "\\n" (so the model sees the poem's shape).
Tang texts are Traditional Chinese and are converted to Simplified with OpenCC (``t2s``); the ci
are converted too (a few are mixed).  Editorial notes and garbled entries are removed by the rules
in :func:`clean_poem`; every poem is then sent to train or validation by a hash of its text, so the
split never changes between runs and exact duplicates can never straddle it.

Run (needs npm and ``pip install opencc==1.4.2``; normal set-up never runs this)::

    python data/build_corpus.py                      # npm pack into a temp dir, then build
    python data/build_corpus.py --npm-dir /tmp/cp/package   # reuse an unpacked package
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "chinese-poetry@2.0.1"
HERE = Path(__file__).resolve().parent
VAL_MODULUS = 50  # 1 poem in 50 (2 %) goes to validation

# Which files are poems.  The package also ships poet.tang.*.json under strains/ (tone patterns
# only, no text) and quantangshi/error/ (a flagged subset of the same poems), and ci.song.*.json
# under rank/ (popularity scores): the glob is anchored to the directory for that reason.
SOURCES = {
    "tang": ("dist/quantangshi/poet.tang.*.json", "title"),  # 全唐诗
    "songci": ("dist/songci/ci.song.*.json", "rhythmic"),  # 宋词: the 词牌 is the title
}

# CJK ideographs: URO, Ext A, compatibility, and the supplementary planes (Ext B and later).
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_PUNCT = "，。、：；？！「」『』〈〉《》…·—“”‘’"
_BODY_OK = re.compile(f"[{_HAN}{_PUNCT}\n]+")
_NAME_OK = re.compile(f"[{_HAN}{_PUNCT} ]+")  # titles and authors may contain a space
_HAS_HAN = re.compile(f"[{_HAN}]")
_NOTE = re.compile(r"（[^（）]*）|\([^()]*\)")  # innermost (...) note; may span lines
_FOOTNOTE = re.compile(r"〖[0-9一二三四五六七八九十○]*〗|\[[0-9一二三四五六七八九十]+\]")
_SUPPLIED = re.compile(r"\[([^\[\]]+)\]")  # [X]: a character the editor restored; keep X
_SPACES = re.compile(r"[ \t\u3000]+")


def _strip_notes(s: str) -> str:
    """Remove editorial notes: (…) variants such as （一作「东风」）, footnote marks, [ ] brackets."""
    while True:  # innermost first, so nested notes go too
        t = _NOTE.sub("", s)
        if t == s:
            break
        s = t
    return _SUPPLIED.sub(r"\1", _FOOTNOTE.sub("", s))


def _clean_name(s: str) -> str:
    s = _strip_notes(s).replace("・", "·")  # the ci use the katakana middle dot in 词牌 names
    return _SPACES.sub(" ", s).strip()


def clean_poem(title: str, author: str, lines: list[str]) -> tuple[str | None, str]:
    """Return (text, "ok") for a usable poem, or (None, reason) for one to drop.

    Rules, applied after Traditional→Simplified conversion:
    notes in （）, footnote marks 〖1〗/[一] are removed and [X] becomes X; a line with no Chinese
    character left (e.g. a lone "。") is dropped; the author loses a trailing disambiguation number
    ("王炎2" → "王炎"); a 《》 inside a title becomes 〈〉.  The poem is dropped when the title,
    author or body is empty, or when any character is outside CJK ideographs + ordinary punctuation
    (this catches □ for lost characters, � and kana from mojibake, ○, {}, digits, IDS ⿰).
    """
    title = _clean_name(title).replace("《", "〈").replace("》", "〉")
    author = re.sub(r"[0-9]+$", "", _clean_name(author)).strip()
    body = _strip_notes("\n".join(lines))
    body_lines = [ln.strip() for ln in body.split("\n")]
    body = "\n".join(ln for ln in body_lines if _HAS_HAN.search(ln))
    if not title or not author:
        return None, "no title or author"
    if not body:
        return None, "empty body"
    if not (_NAME_OK.fullmatch(title) and _NAME_OK.fullmatch(author) and _BODY_OK.fullmatch(body)):
        return None, "garbled or unexpected characters"
    return f"《{title}》{author}\n{body}", "ok"


def is_validation(text: str) -> bool:
    """The split rule: SHA-1 of the UTF-8 text, first 8 hex digits as an int, mod 50 == 0."""
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:8], 16) % VAL_MODULUS == 0


def _file_order(path: str) -> tuple[int, str]:
    # poet.tang.1000.json sorts after 9000 as text; order by the number (ci.song.2019y.json last)
    m = re.search(r"\.(\d+)\.json$", path)
    return (int(m.group(1)) if m else 10**9, path)


def fetch_package(workdir: Path) -> Path:
    """`npm pack` the package into workdir, unpack it, return the package root."""
    out = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    with tarfile.open(workdir / out) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package"


def source_files(npm_dir: Path, source: str) -> list[str]:
    """The files of one source in numeric order; FileNotFoundError if there are none."""
    pattern = SOURCES[source][0]
    files = sorted(glob.glob(str(npm_dir / pattern)), key=_file_order)
    if not files:
        raise FileNotFoundError(f"no files match {npm_dir / pattern}: is --npm-dir the unpacked "
                                f"'package' folder of {PACKAGE}?")
    return files


def iter_poems(npm_dir: Path, source: str):
    """Yield (title, author, lines) of one source, files in numeric order, entries in file order."""
    title_key = SOURCES[source][1]
    for path in source_files(npm_dir, source):
        with open(path, encoding="utf-8") as f:
            for entry in json.load(f):
                lines = entry.get("paragraphs") or []
                if not all(isinstance(x, str) for x in lines):
                    lines = []
                # the 6 ci "prologue" fields (prose prefaces) are not part of the poem: left out
                yield entry.get(title_key) or "", entry.get("author") or "", lines


def _gzip_writer(path: Path):
    # mtime=0 and no file name in the header: rebuilding gives byte-identical files
    raw = open(path, "wb")
    return io.TextIOWrapper(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                          compresslevel=9), encoding="utf-8"), raw


def build(npm_dir: Path, out_dir: Path) -> dict:
    """Write both splits into out_dir; return per-source counters (read, dropped, poems, chars)."""
    import opencc  # only the build needs it (extra "corpus" in pyproject.toml)

    for source in SOURCES:  # fail before touching any output
        source_files(npm_dir, source)
    t2s = opencc.OpenCC("t2s")
    seen: set[str] = set()
    stats = collections.defaultdict(collections.Counter)
    # write to .tmp files, renamed only when everything succeeded: a failed build keeps the old data
    final = {split: out_dir / f"pretrain_poetry_{split}.jsonl.gz" for split in ("train", "val")}
    writers = {split: _gzip_writer(path.with_name(path.name + ".tmp"))
               for split, path in final.items()}
    try:
        for source in SOURCES:
            for title, author, lines in iter_poems(npm_dir, source):
                st = stats[source]
                st["read"] += 1
                text, why = clean_poem(t2s.convert(title), t2s.convert(author),
                                       [t2s.convert(x) for x in lines])
                if text is None:
                    st[f"dropped: {why}"] += 1
                    continue
                if text in seen:
                    st["dropped: exact duplicate"] += 1
                    continue
                seen.add(text)
                split = "val" if is_validation(text) else "train"
                writers[split][0].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                st[f"{split} poems"] += 1
                st[f"{split} chars"] += len(text)
    finally:
        for text_io, raw in writers.values():
            text_io.close()
            raw.close()
    for path in final.values():  # not reached after an exception: the .tmp files stay behind
        os.replace(path.with_name(path.name + ".tmp"), path)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npm-dir", type=Path, help="unpacked package folder (contains dist/); "
                    "default: npm pack into a temporary folder")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()
    if args.npm_dir is not None:
        stats = build(args.npm_dir, args.out_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            stats = build(fetch_package(Path(tmp)), args.out_dir)
    for source, st in stats.items():
        print(f"[{source}]")
        for key in sorted(st):
            print(f"  {key:36s} {st[key]:>10,d}")
    for split in ("train", "val"):
        path = args.out_dir / f"pretrain_poetry_{split}.jsonl.gz"
        poems = sum(st[f"{split} poems"] for st in stats.values())
        chars = sum(st[f"{split} chars"] for st in stats.values())
        print(f"{path.name}: {poems:,d} poems, {chars:,d} characters, "
              f"{os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
