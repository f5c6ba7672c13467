"""Stage 18's data: the shipped raw records, the reference's MinHash + LSH against datasketch, and the
funnel glue (counts per reason, duplicates under other names, near-duplicates, decontamination,
no near-duplicate across train and validation, bad input).

The funnel runs on the reference here (this process is in learner mode, where clean.py is a stub).
"""
import json
import lzma

import numpy as np
import pytest

from tests.helpers import ROOT, run_py
from workbook import _modes
from workbook.data import funnel

ref = _modes.reference_module("data.clean")


@pytest.fixture
def on_reference(monkeypatch):
    monkeypatch.setattr(funnel, "clean", ref)
    return funnel


def test_raw_file_holds_the_package_records():
    counts = {"tang": 0, "songci": 0}
    notes = lost = 0
    with lzma.open(ROOT / "data" / "poetry_raw.jsonl.xz", "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            assert set(rec) == {"source", "title", "author", "paragraphs"}
            counts[rec["source"]] += 1
            text = "".join(p for p in rec["paragraphs"] if isinstance(p, str))
            notes += "一作" in text
            lost += "□" in text
    assert counts == {"tang": 57_607, "songci": 21_053}  # data/README.md: the package's numbers
    assert notes > 200 and lost > 1000  # raw: notes (270) and lost characters (1,323) are still there


def _sets(n=1500):
    raw = funnel.read_raw()[:n]
    keys = [ref.dedup_key(ref.strip_notes(ref.normalize("\n".join(r["paragraphs"])))) for r in raw]
    return [ref.shingles(k) for k in keys]


def test_minhash_and_lsh_equal_datasketch():
    datasketch = pytest.importorskip("datasketch")
    sets = _sets()
    perms = ref.make_permutations(128, seed=1)
    m0 = datasketch.MinHash(num_perm=128, seed=1)
    assert np.array_equal(m0.permutations, perms)  # the same permutations ...
    ours = np.stack([ref.minhash_signature(s, perms) for s in sets])
    theirs = []
    for s in sets:
        m = datasketch.MinHash(num_perm=128, seed=1)
        m.update_batch([x.encode("utf-8") for x in s])
        theirs.append(m)
    assert np.array_equal(ours, np.stack([m.hashvalues for m in theirs]))  # ... the same signatures
    for bands, rows in ((32, 4), (16, 8)):
        lsh = datasketch.MinHashLSH(num_perm=128, params=(bands, rows))
        for i, m in enumerate(theirs):
            lsh.insert(i, m)
        pairs = {(min(i, j), max(i, j)) for i, m in enumerate(theirs) for j in lsh.query(m) if j != i}
        mine = ref.lsh_candidates(ours, bands, rows)
        assert mine == pairs and len(pairs) > 10  # ... the same candidate pairs on the same banding


def _raw(title, author, *lines, source="tang"):
    return {"source": source, "title": title, "author": author, "paragraphs": list(lines)}


POEM = ("床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。")
OTHER = ("白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。")
THIRD = ("千山鳥飛絕，萬徑人蹤滅。", "孤舟蓑笠翁，獨釣寒江雪。")
FOURTH = ("春眠不覺曉，處處聞啼鳥。", "夜來風雨聲，花落知多少。")


def test_funnel_counts_each_step(on_reference):
    raw = [
        _raw("靜夜思", "李白", *POEM),
        _raw("夜思", "不詳", "床前明月光，疑是地上霜（一作「雪」）。", POEM[1]),  # the same poem, another name
        _raw("登鸛雀樓", "王之渙", *OTHER),
        _raw("登樓", "王之渙", "白日依山盡，黃河入海流。", "欲窮千里目，更上一重樓。"),  # one character: near dup
        _raw("江雪", "柳宗元", THIRD[0], "孤舟□笠翁，獨釣寒江雪。"),  # lost character
        _raw("", "無名", *FOURTH),  # no title
        _raw("殘句", "某", "屏欲除奢政返淳。"),  # too short
        _raw("春曉", "孟浩然", *FOURTH),
    ]
    # the grader's reference is 春晓: its training copy must go
    fn = on_reference.run(raw, ["请续写：春眠不觉晓，处处闻啼鸟。", "夜来风雨声，花落知多少。"])
    c = fn.counts
    assert c["records in"] == 8
    assert c["dropped: lost_char"] == 1 and c["dropped: empty"] == 1 and c["dropped: too_short"] == 1
    assert c["dropped: exact duplicate"] == 1 and c["  of which under another title or author"] == 1
    assert c["dropped: near duplicate"] == 1
    kept = [r.text for r in fn.train + fn.val]
    assert any(t.startswith("《静夜思》李白\n床前明月光") for t in kept)  # the first of each cluster stays
    assert any(t.startswith("《登鹳雀楼》王之涣") for t in kept)
    assert not any("春晓" in t for t in (r.text for r in fn.train))  # decontaminated
    assert c["out: train"] + c["out: validation"] == len(kept)


def test_no_near_duplicate_straddles_the_split(on_reference):
    fn = on_reference.run(funnel.read_raw()[:6000], [])
    train, val = [r.text for r in fn.train], [r.text for r in fn.val]
    assert val and train
    assert on_reference.straddling(train, val) == []
    # while the shipped split (hash of the whole text) has some: what the lesson measures
    shipped_train = [t for r in funnel.read_raw()[:6000] for t in [on_reference.clean_record(r)]
                     if t[1] is None]
    texts = [rec.text for rec, _ in shipped_train]
    val_old = [t for t in texts if funnel.is_validation(t)]
    train_old = [t for t in texts if not funnel.is_validation(t)]
    assert on_reference.straddling(train_old, val_old)


def test_funnel_cli_reports_bad_input_in_one_line(tmp_path):
    missing = tmp_path / "nope.jsonl.xz"
    out = run_py(["-m", "workbook.data.funnel", "--raw", str(missing)], mode="solutions")
    assert out.returncode == 2 and out.stderr.strip().startswith("错误：") and "Traceback" not in out.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "tang"}\nnot json\n', encoding="utf-8")
    out = run_py(["-m", "workbook.data.funnel", "--raw", str(bad)], mode="solutions")
    assert out.returncode == 2 and f"{bad}:2:" in out.stderr and "Traceback" not in out.stderr
    bad_eval = tmp_path / "eval.jsonl"
    bad_eval.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{"messages": 3}\n', encoding="utf-8")
    out = run_py(["-m", "workbook.data.funnel", "--eval", str(bad_eval)], mode="solutions")
    assert out.returncode == 2 and f"{bad_eval}:2:" in out.stderr and "Traceback" not in out.stderr


def test_build_raw_copies_the_package_records_unchanged(tmp_path):
    pkg = tmp_path / "package"
    (pkg / "dist" / "quantangshi" / "error").mkdir(parents=True)
    (pkg / "dist" / "songci").mkdir(parents=True)
    tang = [{"id": "x", "title": "靜夜思", "author": "李白", "paragraphs": ["床前明月光，疑是地上霜（一作「雪」）。"]},
            {"id": "y", "title": "", "author": "無名", "paragraphs": ["□□□"]}]
    (pkg / "dist" / "quantangshi" / "poet.tang.1000.json").write_text(json.dumps(tang[1:], ensure_ascii=False), "utf-8")
    (pkg / "dist" / "quantangshi" / "poet.tang.0.json").write_text(json.dumps(tang[:1], ensure_ascii=False), "utf-8")
    (pkg / "dist" / "quantangshi" / "error" / "poet.tang.0.json").write_text("[]", "utf-8")  # not a source
    ci = [{"rhythmic": "浣溪沙", "author": "晏殊", "paragraphs": ["一曲新词酒一杯。"], "prologue": "序"}]
    (pkg / "dist" / "songci" / "ci.song.0.json").write_text(json.dumps(ci, ensure_ascii=False), "utf-8")
    out = tmp_path / "raw.jsonl.xz"
    res = run_py(["data/build_raw.py", "--npm-dir", str(pkg), "--out", str(out)])
    assert res.returncode == 0, res.stderr
    with lzma.open(out, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert rows == [  # numeric file order, the ci's tune as its title, nothing cleaned
        {"source": "tang", "title": "靜夜思", "author": "李白", "paragraphs": ["床前明月光，疑是地上霜（一作「雪」）。"]},
        {"source": "tang", "title": "", "author": "無名", "paragraphs": ["□□□"]},
        {"source": "songci", "title": "浣溪沙", "author": "晏殊", "paragraphs": ["一曲新词酒一杯。"]},
    ]
    first = out.read_bytes()
    assert run_py(["data/build_raw.py", "--npm-dir", str(pkg), "--out", str(out)]).returncode == 0
    assert out.read_bytes() == first  # byte-identical rebuilds
