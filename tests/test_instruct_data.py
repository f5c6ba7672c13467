"""Stage 19's data: the stage-19 rules on the shipped corpus (the figures data/README.md states), and
data/build_sft.py on the learner's functions — a stub or a malformed conversation is one line, exit 2,
nothing written — and on bad corpus lines (file:line).  The byte-for-byte rebuild with the reference is in test_sft_data.py.

This process is in learner mode: the reference is taken from the private namespace.
"""
import gzip
import json
import sys

import pytest

from tests.helpers import ROOT
from workbook import _modes

DATA = ROOT / "data"
sys.path.insert(0, str(DATA))
import build_sft  # noqa: E402  (data/ is not a package)

ref = _modes.reference_module("data.instruct")


@pytest.fixture(scope="module")
def corpus():
    return build_sft.load_corpus(DATA)  # ~3 s: read once for the whole file


def test_split_by_poem_and_decontamination_on_the_shipped_corpus(corpus):
    train, val, _, _, held_out = corpus
    bodies = [p.body for p in train]
    straddle = ref.straddling_poems(bodies, [p.body for p in val], build_sft.LEAK_MIN_CHARS)
    as_written = [i for i, p in enumerate(train) if any(ln in held_out for ln in p.lines)]
    # data/README.md: 135 by Han-only line keys, the 134 of lines as written among them
    assert len(straddle) == 135 and set(as_written) < set(straddle) and len(as_written) == 134
    with open(DATA / "sft_eval_prompts.jsonl", encoding="utf-8") as f:
        requests = [json.loads(line) for line in f]
    dirty = ref.contaminated_by_requests(bodies, requests, build_sft.DECONTAMINATE_N)
    assert len(dirty) == 7 and set(dirty) <= set(straddle)  # the grader's poems are validation poems


def _main(monkeypatch, corpus, out_dir):
    monkeypatch.setattr(build_sft, "load_corpus", lambda _dir: corpus)
    monkeypatch.setattr(sys, "argv", ["build_sft.py", "--out-dir", str(out_dir), "--no-tokens"])
    with pytest.raises(SystemExit) as e:
        build_sft.main()
    return e.value.code


def test_builder_on_a_stub_says_so_in_one_line(monkeypatch, capsys, corpus, tmp_path):
    # this process is in learner mode: build_sft's `instruct` is the stub of a fresh clone
    assert _main(monkeypatch, corpus, tmp_path) == 2
    err = capsys.readouterr().err
    assert "python -m workbook check 19" in err and "WORKBOOK_IMPL=solutions" in err and "TODO(19" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_builder_refuses_a_malformed_conversation_from_the_learner(monkeypatch, capsys, corpus, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_instruct_broken", ref.__file__)
    broken = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(broken)
    right = broken.task_messages
    # a learner's task_messages that forgets multi_turn's second answer
    broken.task_messages = lambda task, poems, rng: right(task, poems, rng)[:3] if task == "multi_turn" else right(task, poems, rng)
    monkeypatch.setattr(build_sft, "instruct", broken)
    assert _main(monkeypatch, corpus, tmp_path) == 2
    err = capsys.readouterr().err
    assert "malformed conversation" in err and "no_final_answer" in err
    assert not list(tmp_path.glob("sft_poetry_*"))


@pytest.mark.parametrize("line, says", [(b"{not json\n", "不是合法的 JSON"), (b'{"title": "x"}\n', '每行要是 {"text"')])
def test_bad_corpus_line_is_named_with_file_and_line(tmp_path, line, says):
    path = tmp_path / "pretrain_poetry_val.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write('{"text": "《静夜思》李白\\n床前明月光"}\n'.encode("utf-8") + line)
    with pytest.raises(SystemExit) as e:
        build_sft.load_split(path, "val")
    assert f"{path}:2:" in str(e.value) and says in str(e.value)


def test_measured_comparison_is_the_one_the_readmes_state():
    # make instruct-compare (bench/instruct_compare.py): the figures quoted in README.md, data/README.md, notebook 19
    report = json.loads((DATA / "base" / "instruct_compare.json").read_text(encoding="utf-8"))
    assert all(report["builds"]["shipped"]["identical_to_shipped"].values())
    assert report["builds"]["record"]["leaks"]["with_a_grader_request_poem"] > 0
    readmes = [(ROOT / "README.md").read_text(encoding="utf-8"), (DATA / "README.md").read_text(encoding="utf-8")]
    notebook = (ROOT / "notebooks" / "19_instruction_data.ipynb").read_text(encoding="utf-8")
    assert all(f"{r['overall']['pass']:.1%}" in notebook for r in report["runs"].values())
    runs = report["runs"]
    assert {r["steps"] for r in runs.values()} == {report["settings"]["steps"]}
    line = " / ".join(f"{runs[v]['overall']['pass']:.1%}" for v in ("shipped", "record", "equal_mix"))
    for text in readmes:
        assert line in text
        assert f"{runs['shipped']['val_loss']:.3f} / {runs['record']['val_loss']:.3f}" in text
