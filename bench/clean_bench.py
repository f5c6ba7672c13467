"""Time stage 18's cleaning + dedup of the whole raw corpus, against datasketch on the same data.

    WORKBOOK_IMPL=solutions python bench/clean_bench.py [--json bench/results/clean_bench.json]
    make clean-bench

Runs the funnel of ``workbook.data.funnel`` (the code the mode switch serves: the learner's, or the
reference) over ``data/poetry_raw.jsonl.xz`` and reports wall and CPU seconds per step.  Then the
near-duplicate step again with ``datasketch`` on the same shingle sets: ``MinHash(num_perm, seed)``
updated with every shingle, and ``MinHashLSH(num_perm, params=(bands, rows))``; it checks that the
signatures and the candidate pairs are the same and times both.  Wall time on a shared machine
moves with the load; CPU time moves much less, so both are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbook.data import clean, funnel  # noqa: E402


class Timer:
    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def __call__(self, name: str):
        timer = self

        class _Block:
            def __enter__(self):
                self.w, self.c = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                timer.rows[name] = {"wall_s": round(time.perf_counter() - self.w, 2),
                                    "cpu_s": round(time.process_time() - self.c, 2)}
        return _Block()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print("错误：需要 datasketch（pip install -e \".[dev]\"）", file=sys.stderr)
        return 2

    t = Timer()
    with t("read raw (xz)"):
        raw = funnel.read_raw()
    with t("whole funnel (learner's code)"):
        fn = funnel.run(raw, funnel.read_eval_texts())
    steps = dict(fn.seconds)

    # the same near-duplicate step, ours vs datasketch, on the records that reach it
    kept = [rec for rec in (funnel.clean_record(r) for r in raw) if rec[1] is None]
    keys = list(dict.fromkeys(clean.dedup_key(rec.body) for rec, _ in kept))  # exact dups removed
    sets = [clean.shingles(k, funnel.K) for k in keys]
    with t("ours: minhash signatures"):
        ours = funnel.signatures(sets)
    with t("ours: lsh candidates"):
        ours_pairs = clean.lsh_candidates(ours, funnel.BANDS, funnel.ROWS)
    with t("datasketch: MinHash.update_batch"):
        hashes = []
        for s in sets:
            m = MinHash(num_perm=funnel.NUM_PERM, seed=funnel.SEED)
            m.update_batch([x.encode("utf-8") for x in s])
            hashes.append(m)
    with t("datasketch: MinHashLSH insert + query"):
        lsh = MinHashLSH(num_perm=funnel.NUM_PERM, params=(funnel.BANDS, funnel.ROWS))
        for i, m in enumerate(hashes):
            lsh.insert(i, m)
        ds_pairs = {(min(i, j), max(i, j)) for i, m in enumerate(hashes) for j in lsh.query(m) if j != i}
    same_sigs = bool(np.array_equal(np.stack([m.hashvalues for m in hashes]), ours))
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
                   f"Python {platform.python_version()}",
        "records": len(raw), "records_into_near_dedup": len(sets),
        "settings": {"k": funnel.K, "num_perm": funnel.NUM_PERM, "bands": funnel.BANDS, "rows": funnel.ROWS,
                     "threshold": funnel.THRESHOLD, "ngram": funnel.NGRAM},
        "timings": t.rows, "funnel_steps_wall_s": {k: round(v, 2) for k, v in steps.items()},
        "same_signatures_as_datasketch": same_sigs,
        "candidate_pairs": {"ours": len(ours_pairs), "datasketch": len(ds_pairs),
                            "same": ours_pairs == ds_pairs},
        "counts": fn.counts,
    }
    for name, row in t.rows.items():
        print(f"{name:40s} wall {row['wall_s']:7.2f} s   cpu {row['cpu_s']:7.2f} s")
    print(f"signatures equal to datasketch: {same_sigs}; candidate pairs ours {len(ours_pairs):,d}, "
          f"datasketch {len(ds_pairs):,d}, equal: {ours_pairs == ds_pairs}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0 if same_sigs and ours_pairs == ds_pairs else 1


if __name__ == "__main__":
    sys.exit(main())
