"""Ship the raw poems of the npm package, as the package has them, for stage 18 (cleaning).

The pretraining corpus (``build_corpus.py``) is already cleaned; stage 18 makes the cleaning the
learner's own work, so it needs the records before any rule touched them: Traditional Chinese,
editorial notes such as ``（一作「东风」）``, lost characters ``□``, mojibake, duplicates and all.
This script copies them out of ``chinese-poetry@2.0.1`` (MIT; the texts are public domain) into
one xz-compressed JSON-lines file, one record per line in package order::

    {"source": "tang", "title": "…", "author": "…", "paragraphs": ["…", "…"]}

``source`` is ``tang`` (全唐诗, ``dist/quantangshi/poet.tang.*.json``, title = ``title``) or
``songci`` (宋词, ``dist/songci/ci.song.*.json``, title = the tune ``rhythmic``): the same files and
order as ``build_corpus.py``.  Nothing else is changed; the package's per-poem ``id`` (a UUID, a
quarter of the size after compression) and the 6 ci ``prologue`` fields are left out.  Values
that are not what the package usually has (a missing title, a paragraph that is not a string)
are kept as they are: the cleaning must cope with them.

Run (needs npm; normal set-up never runs this)::

    python data/build_raw.py                        # npm pack into a temp dir, then build
    python data/build_raw.py --npm-dir /tmp/cp/package
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_corpus import SOURCES, fetch_package, source_files  # noqa: E402

OUT_NAME = "poetry_raw.jsonl.xz"


def iter_raw(npm_dir: Path):
    """Yield one raw record per poem: both sources, files in numeric order, entries in file order."""
    for source, (_, title_key) in SOURCES.items():
        for path in source_files(npm_dir, source):
            with open(path, encoding="utf-8") as f:
                for entry in json.load(f):
                    yield {"source": source, "title": entry.get(title_key), "author": entry.get("author"),
                           "paragraphs": entry.get("paragraphs")}


def build(npm_dir: Path, out: Path) -> int:
    for source in SOURCES:  # fail before touching any output
        source_files(npm_dir, source)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    # xz (stdlib lzma) is 26 % smaller than gzip -9 here; no time stamp is written, so a rebuild
    # is byte-identical
    with lzma.open(tmp, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        for record in iter_raw(npm_dir):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, out)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npm-dir", type=Path, help="unpacked package folder (contains dist/); "
                    "default: npm pack into a temporary folder")
    ap.add_argument("--out", type=Path, default=HERE / OUT_NAME)
    args = ap.parse_args()
    if args.npm_dir is not None:
        n = build(args.npm_dir, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            n = build(fetch_package(Path(tmp)), args.out)
    print(f"{args.out.name}: {n:,d} records, {os.path.getsize(args.out) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
