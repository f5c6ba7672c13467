"""DPO preference data: the offline builder (data/build_dpo.py) and the on-policy one (data/build_dpo_onpolicy.py)."""
import collections
import gzip
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, run_py
from workbook import _modes
from workbook.data.validate import check_pair_data
from workbook.eval import grade_answer, load_prompts
from workbook.eval.forms import clauses

DATA = ROOT / "data"
TRAIN, VAL = DATA / "dpo_train.jsonl.gz", DATA / "dpo_val.jsonl.gz"
SAMPLE = DATA / "dpo_onpolicy_sample.jsonl.gz"

sys.path.insert(0, str(DATA))
import build_dpo  # noqa: E402  (data/ is not a package)
import build_dpo_onpolicy  # noqa: E402
import build_sft  # noqa: E402


def pairs(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def sets():
    return {"train": pairs(TRAIN), "val": pairs(VAL)}


@pytest.fixture(scope="module")
def corpus():
    return build_sft.load_corpus(DATA)


def good(pair):
    return pair["chosen"][-1]["content"]


def bad(pair):
    return pair["rejected"][-1]["content"]


def long_lines(texts):
    return {ln for t in texts for ln in t.split("\n")
            if len("".join(clauses(ln))) >= build_sft.LEAK_MIN_CHARS}


# ---- the offline builder ------------------------------------------------------------------------

def test_build_reproduces_the_committed_files_byte_for_byte(tmp_path):
    # one build (~2 s) under another hash seed: no set or dict order leaks into the output
    # build_dpo.py makes its chosen answers with build_sft.sample: stage 19's reference functions
    env = dict(os.environ, PYTHONHASHSEED="2024", WORKBOOK_IMPL="solutions")
    out = subprocess.run([sys.executable, str(DATA / "build_dpo.py"), "--out-dir", str(tmp_path),
                          "--no-tokens"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in build_dpo.OUTPUTS:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    assert not list(tmp_path.glob("*.tmp"))
    assert "line_length" in out.stdout and "[val] 200 pairs" in out.stdout
    assert sum((DATA / n).stat().st_size for n in build_dpo.OUTPUTS) < 1.5e6


def test_every_pair_is_valid_preference_data(sets):
    for split, path in (("train", TRAIN), ("val", VAL)):
        assert check_pair_data(path)["pairs"] == len(sets[split])


def test_chosen_passes_and_rejected_fails_the_grader_for_every_pair(sets):
    for split, rows in sets.items():
        for p in rows:
            assert p["chosen"][:-1] == p["rejected"][:-1], (split, p)  # the same request
            assert p["chosen"][-1]["role"] == p["rejected"][-1]["role"] == "assistant"
            assert good(p) != bad(p)
            ok = grade_answer(p["task"], p, good(p), stopped=True)
            assert ok["pass"], (split, p["task"], good(p))
            no = grade_answer(p["task"], p, bad(p), stopped=True)
            assert not no["pass"] and no["stopped"], (split, p["failure"], bad(p))
            # the failure the pair names is the one the grader sees
            assert build_dpo.failure_kind(p, bad(p), no) == p["failure"], (split, p["failure"], bad(p))


def test_each_failure_is_the_mistake_it_names(sets, corpus):
    lines = {"train": {ln for p in corpus[0] for ln in p.lines}, "val": {ln for p in corpus[1] for ln in p.lines}}
    for split, rows in sets.items():
        for p in rows:
            g, b = good(p), bad(p)
            if p["failure"] == "line_length":  # one clause changed by 1–2 characters, the rest kept
                cg, cb = clauses(g), clauses(b)
                diff = [(x, y) for x, y in zip(cg, cb) if x != y]
                assert len(cg) == len(cb) and len(diff) == 1, b
                assert 1 <= abs(len(diff[0][0]) - len(diff[0][1])) <= 2, b
            elif p["failure"] == "repeat":  # the poem up to a point, then one character 4+ times
                m = re.search(r"(.)\1{3,}$", b)
                assert m and g.startswith(b[:m.start() + 1]), b
            elif p["failure"] == "no_stop":  # the whole poem, then more
                assert b.startswith(g + "\n") and len(clauses(b)) > len(clauses(g)), b
            else:  # wrong_form: another real poem of the same split, of another shape
                assert set(b.split("\n")) <= lines[split] and not set(b.split("\n")) & set(g.split("\n")), b


def test_counts_tasks_and_failures_are_balanced(sets):
    for split, counts in (("train", build_dpo.TRAIN_COUNTS), ("val", build_dpo.VAL_COUNTS)):
        table = collections.Counter((p["task"], p["failure"]) for p in sets[split])
        want = {(t, f): n // len(build_dpo.FAILURES) for t, n in counts.items() for f in build_dpo.FAILURES}
        assert table == want, split
    assert 2800 <= len(sets["train"]) <= 3200 and 150 <= len(sets["val"]) <= 250
    # only tasks with a form to keep
    assert {p["task"] for p in sets["train"]} == {"form_poem", "ci", "continue", "multi_turn"}


def test_train_and_val_share_no_poem_and_every_chosen_is_a_real_poem(sets, corpus):
    train, val = corpus[0], corpus[1]
    texts = {s: [m["content"] for p in rows for side in ("chosen", "rejected") for m in p[side]
                 if m["role"] == "assistant"] for s, rows in sets.items()}
    assert not long_lines(texts["train"]) & long_lines(texts["val"])
    for split, poems in (("train", train), ("val", val)):
        body_lines = {ln for q in poems for ln in q.lines}
        chosen = [good(p) for p in sets[split]]
        assert all(set(c.split("\n")) <= body_lines for c in chosen), split
        assert len(set(chosen)) == len(chosen)  # a poem serves one pair
    # the validation requests never reach the training pairs
    assert not long_lines(m["content"] for p in sets["val"] for m in p["chosen"][:-1]) & long_lines(texts["train"])


def test_failure_kind_rules():
    rec = {"task": "form_poem", "title": "静夜思", "form": {"name": "五言绝句", "pattern": [5, 5, 5, 5]}}
    poem = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"

    def kind(answer, stopped=True):
        return build_dpo.failure_kind(rec, answer, grade_answer("form_poem", rec, answer, stopped))

    assert kind(poem) is None
    assert kind(poem, stopped=False) == "no_stop"
    assert kind(poem + "\n《春晓》孟浩然\n春眠不觉晓") == "no_stop"
    assert kind(poem.replace("床前", "床前的")) == "line_length"
    assert kind("床前明月光，疑是地上霜霜霜霜霜") == "repeat"
    assert kind("一曲新词酒一杯，去年天气旧亭台。") == "wrong_form"
    assert kind("《春晓》\n" + poem) == "title"
    assert kind("床前明月光，疑是地上霜。\n举头望明月，低头思故故故") == "line_length"  # 3 in a row: no repeat


def test_readme_states_the_counts(sets):
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    section = readme.split("## DPO 偏好数据", 1)[1].split("\n## ", 1)[0]
    for name, rows in (("训练集", sets["train"]), ("留出集", sets["val"])):
        tokens = build_dpo.token_figures(rows, DATA / "tokenizer")
        row = (f"| {name} | {len(rows):,} | {tokens['chosen']['mean']:.1f} | {tokens['chosen']['max']} "
               f"| {tokens['rejected']['mean']:.1f} | {tokens['rejected']['max']} |")
        assert row in section, row
        system = sum(p["chosen"][0]["role"] == "system" for p in rows)
        assert f"{name} {system} 对" in section
    for task, n in build_dpo.TRAIN_COUNTS.items():
        row = f"| `{task}` | " + " | ".join(f"{n // 4:,}" for _ in build_dpo.FAILURES) + f" | {n:,} |"
        assert row in section, row
    sample = pairs(SAMPLE)
    assert f"{len(sample)} 对" in section


# ---- the on-policy builder ----------------------------------------------------------------------

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400)


def tiny_model(seed=0):
    config = _modes.reference_module("config").MiniMindConfig(**TINY)
    torch.manual_seed(seed)
    return _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config), config


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))


def test_onpolicy_on_a_fresh_tiny_model_counts_and_writes_nothing(tmp_path, tokenizer):
    model, _ = tiny_model()
    prompts = load_prompts(DATA / "sft_eval_prompts.jsonl", limit=2)
    out = tmp_path / "pairs.jsonl.gz"
    eval_temperature = build_dpo_onpolicy.runner.SAMPLING["temperature"]
    pairs_, fig = build_dpo_onpolicy.build(model, tokenizer, prompts, out, k=3, max_new_tokens=4, seed=1)
    # random weights never write <|im_end|> in 4 tokens: every sample fails, no pair
    assert pairs_ == [] and fig["pairs"] == 0 and fig["no_pass"] == 2 and fig["all_pass"] == 0
    assert fig["prompts"] == 2 and fig["samples"] == 6 and fig["passed"] == 0 and fig["pass_rate"] == 0
    assert out.exists() and gzip.decompress(out.read_bytes()) == b""
    assert "pairs 0" in build_dpo_onpolicy.report(fig)
    # seeded: the same call samples the same answers; another seed others
    a = build_dpo_onpolicy.sample_answers(model, tokenizer, prompts, 3, 1.0, 4, seed=1)
    assert a == build_dpo_onpolicy.sample_answers(model, tokenizer, prompts, 3, 1.0, 4, seed=1)
    assert [len(x) for x in a] == [3, 3]
    assert a != build_dpo_onpolicy.sample_answers(model, tokenizer, prompts, 3, 1.0, 4, seed=2)
    assert build_dpo_onpolicy.runner.SAMPLING["temperature"] == eval_temperature  # restored


def test_onpolicy_pairs_the_first_passing_and_first_failing_answer(tmp_path):
    prompts = load_prompts(DATA / "sft_eval_prompts.jsonl", limit=2)  # form_poem-01, ci-01
    ref = prompts[0]["reference"]
    answers = [[{"answer": "春风", "stopped": True}, {"answer": ref, "stopped": False},
                {"answer": ref, "stopped": True}, {"answer": ref + "\n春风", "stopped": True}],
               [{"answer": prompts[1]["reference"], "stopped": True}] * 4]
    got, fig = build_dpo_onpolicy.make_pairs(prompts, answers)
    assert fig["pairs"] == 1 and fig["all_pass"] == 1 and fig["no_pass"] == 0
    assert fig["samples"] == 8 and fig["passed"] == 5 and fig["pass_rate"] == 5 / 8
    (p,) = got
    assert good(p) == ref and bad(p) == "春风" and p["failure"] == "wrong_form"
    assert p["chosen"][:-1] == p["rejected"][:-1] == prompts[0]["messages"]
    assert p["scores"]["chosen"]["pass"] and not p["scores"]["rejected"]["pass"]
    assert p["samples"] == {"k": 4, "passed": 1} and p["id"] == "form_poem-01"
    path = tmp_path / "p.jsonl"
    build_sft.write_jsonl(path, got, compress=False)
    assert check_pair_data(path)["pairs"] == 1


def test_onpolicy_reads_the_requests_of_a_pair_file(sets):
    reqs = build_dpo_onpolicy.load_requests(TRAIN, limit=5)
    assert len(reqs) == 5
    for r, p in zip(reqs, sets["train"]):
        assert r["messages"] == p["chosen"][:-1] and r["task"] == p["task"] and r["form"] == p["form"]
        assert grade_answer(r["task"], r, good(p), True)["pass"]  # graded as the pair was
    assert build_dpo_onpolicy.load_requests(DATA / "sft_eval_prompts.jsonl", 3) == load_prompts(
        DATA / "sft_eval_prompts.jsonl", 3)


def test_onpolicy_command_end_to_end(tmp_path):
    from workbook.train.checkpoint import save_weights, write_config

    model, config = tiny_model(1)
    save_weights(model, tmp_path / "tiny_64.pth")
    write_config(config, tmp_path / "tiny_64_config.json")
    out = tmp_path / "pairs.jsonl"
    res = run_py([str(DATA / "build_dpo_onpolicy.py"), "--model", str(tmp_path / "tiny_64.pth"),
                  "--prompts", str(TRAIN), "--limit", "2", "--samples", "2", "--max_new_tokens", "3",
                  "--out", str(out)], mode="solutions")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "prompts 2, samples 4" in res.stdout and "prompts with no passing sample 2" in res.stdout
    assert out.read_text(encoding="utf-8") == ""


def test_the_shipped_onpolicy_sample_is_graded_as_recorded():
    sample = pairs(SAMPLE)
    assert 0 < len(sample) and SAMPLE.stat().st_size < 300_000
    assert check_pair_data(SAMPLE)["pairs"] == len(sample)
    for p in sample:
        for side in ("chosen", "rejected"):
            s = p["scores"][side]
            assert grade_answer(p["task"], p, p[side][-1]["content"], s["stopped"]) == s
        assert p["scores"]["chosen"]["pass"] and not p["scores"]["rejected"]["pass"]
        assert build_dpo.failure_kind(p, bad(p), p["scores"]["rejected"]) == p["failure"]
        assert 1 <= p["samples"]["passed"] < p["samples"]["k"]
