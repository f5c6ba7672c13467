"""LoRA task data (data/build_lora.py): ci to a given tune, its eval prompts, and a one-task report."""
import gzip
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT
from workbook import _modes
from workbook.data.validate import check_chat_data
from workbook.eval import TASKS, evaluate, format_comparison, format_table, grade_answer, load_prompts
from workbook.eval.forms import clauses

DATA = ROOT / "data"
TRAIN, VAL = DATA / "lora_ci_train.jsonl.gz", DATA / "lora_ci_val.jsonl.gz"
PROMPTS = DATA / "lora_eval_prompts.jsonl"

sys.path.insert(0, str(DATA))
import build_lora  # noqa: E402  (data/ is not a package)
import build_sft  # noqa: E402


def conversations(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus():
    """(train poems, val poems, 词牌 table, tune names, held-out lines), as the builder reads them."""
    return build_sft.load_corpus(DATA)


@pytest.fixture(scope="module")
def sets():
    return {"train": conversations(TRAIN), "val": conversations(VAL)}


@pytest.fixture(scope="module")
def prompts():
    return load_prompts(PROMPTS)


def reply(row):
    return row["conversations"][-1]["content"]


def request(row):
    return row["conversations"][-2]["content"]


def long_lines(texts):
    return {ln for t in texts for ln in t.split("\n")
            if len("".join(clauses(ln))) >= build_sft.LEAK_MIN_CHARS}


# ---- the builder --------------------------------------------------------------------------------

def test_build_reproduces_the_committed_files_byte_for_byte(tmp_path):
    # one build (~2 s) under another hash seed: no set or dict order leaks into the output
    env = dict(os.environ, PYTHONHASHSEED="54321")
    out = subprocess.run([sys.executable, str(DATA / "build_lora.py"), "--out-dir", str(tmp_path),
                          "--no-tokens"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in build_lora.OUTPUTS:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    assert not list(tmp_path.glob("*.tmp"))


def test_every_conversation_is_valid_chat_data(sets):
    for split, path in (("train", TRAIN), ("val", VAL)):
        summary = check_chat_data(path)
        assert summary["conversations"] == len(sets[split]) == summary["assistant_turns"]
        assert all(r["task"] == "ci" for r in sets[split])


def test_each_split_holds_every_ci_of_a_table_tune_in_its_pattern_once(corpus, sets):
    train, val, table, tunes, held_out = corpus
    for split, poems in (("train", train), ("val", val)):
        want = sorted((p.title, p.body) for p in poems if p.kind == "ci" and p.title in table
                      and list(p.pattern) == table[p.title]["pattern"]
                      and not (split == "train" and any(ln in held_out for ln in p.lines)))
        assert sorted((r["tune"], reply(r)) for r in sets[split]) == want, split
    assert {r["tune"] for r in sets["train"]} == set(table)


def test_every_reply_fits_its_tune_under_the_grader(corpus, sets):
    table = corpus[2]
    stated = 0
    for split, rows in sets.items():
        for r in rows:
            tune, pattern = r["tune"], table[r["tune"]]["pattern"]
            record = {"task": "ci", "title": tune, "form": build_sft.ci_form_record(tune, pattern)}
            scores = grade_answer("ci", record, reply(r), stopped=True)
            assert scores["pass"] and scores["lines"] == pattern, (split, tune, reply(r))
            assert tune in request(r)  # the request names the tune
            if build_lora.states_pattern(r):  # … and, when it states the pattern, states it right
                stated += 1
                assert "、".join(build_lora.cn_number(k) for k in pattern) in request(r)
                assert len(pattern) <= build_lora.PATTERN_MAX_CLAUSES
    assert 0 < stated < sum(map(len, sets.values())) / 5


def test_no_validation_or_eval_text_reaches_the_training_conversations(corpus, sets, prompts):
    train_lines = long_lines(reply(r) for r in sets["train"])  # every ci is one body line per line
    assert not long_lines(reply(r) for r in sets["val"]) & train_lines
    references = [p["reference"] for p in prompts if p["reference"] is not None]
    assert not long_lines(references) & train_lines
    assert not {reply(r) for r in sets["train"]} & (set(references) | {reply(r) for r in sets["val"]})
    # the eval prompts hold requests and validation poems only
    val = {(p.title, p.author, p.body) for p in corpus[1]}
    for p in prompts:
        for m in p["messages"]:  # requests and system prompts: no line of a training ci
            assert not any(ln in m["content"] for ln in train_lines if len(ln) <= len(m["content"]))
        if p["reference"] is not None:
            (src,) = p["source"]
            assert (src["title"], src["author"], p["reference"]) in val and src["title"] == p["title"]


def test_eval_prompts_cover_every_tune_and_grade_unchanged(corpus, sets, prompts):
    table = corpus[2]
    sft_keys = set(json.loads((DATA / "sft_eval_prompts.jsonl").read_text(encoding="utf-8")
                              .split("\n", 1)[0]))
    counts = build_lora.eval_counts(table)
    assert len(prompts) == sum(counts.values()) >= len(table) == 58
    assert {p["title"]: sum(q["title"] == p["title"] for q in prompts) for p in prompts} == counts
    assert len({p["title"] for p in prompts[:len(table)]}) == len(table)  # --limit 58: one per tune
    train_requests = {request(r) for r in sets["train"]}
    for i, p in enumerate(prompts, 1):
        assert set(p) == sft_keys and p["task"] == "ci" and p["id"] == f"ci-{i:03d}"
        assert p["form"] == build_sft.ci_form_record(p["title"], table[p["title"]]["pattern"])
        asked = p["messages"][-1]["content"]
        assert p["title"] in asked and not build_lora.states_pattern({"conversations": p["messages"]})
        if i % build_lora.EVAL_HELD_OUT_EVERY == 0:  # a phrasing training never shows
            assert asked in {t.format(tune=p["title"]) for t in build_lora.EVAL_HELD_OUT_CI}
            assert asked not in train_requests, p["id"]
        else:
            assert asked in {t.format(tune=p["title"]) for t in build_lora.LORA_CI}, p["id"]
        assert p["system"] == (p["messages"][0]["role"] == "system") == (i % build_sft.EVAL_SYSTEM_EVERY == 0)
        if p["reference"] is not None:  # the real ci passes, a ci of another tune does not
            assert grade_answer("ci", p, p["reference"], stopped=True)["pass"], p["id"]
    other = next(reply(r) for r in sets["train"] if r["tune"] == "菩萨蛮")
    assert not grade_answer("ci", prompts[0], other, stopped=True)["pass"]  # prompts[0]: 浣溪沙


def test_counts_and_token_figures_are_those_the_readme_states(corpus, sets, prompts):
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    section = readme.split("## LoRA 任务数据", 1)[1].split("\n## ", 1)[0]
    train, val = sets["train"], sets["val"]
    assert f"训练集 {len(train):,} 段" in section and f"留出集 {len(val):,} 段" in section
    assert f"评分提示 {len(prompts)} 条" in section and f"{len(corpus[2])} 个" in section
    assert f"{len({r['tune'] for r in val})} 个词牌" in section
    assert f"{sum(p['reference'] is not None for p in prompts)} 条" in section
    stated = [sum(map(build_lora.states_pattern, rows)) for rows in (train, val)]
    assert f"训练集 {stated[0]:,} 段，留出集 {stated[1]} 段" in section
    system = [sum(r["conversations"][0]["role"] == "system" for r in rows) for rows in (train, val)]
    assert f"训练集 {system[0]:,} 段，留出集 {system[1]} 段" in section
    for name, rows in (("训练集", train), ("留出集", val)):
        f = build_lora.token_figures(rows, DATA / "tokenizer")
        row = (f"| {name} | {len(rows):,} | {f['tokens']:,} | {f['assistant_tokens']:,} | {f['mean']:.1f} "
               f"| {f['max']} | {f['over_max_seq_len']} |")
        assert row in section, row
    assert f"--max_seq_len {build_lora.MAX_SEQ_LEN}" in section


def test_cn_number():
    assert [build_lora.cn_number(n) for n in (2, 7, 10, 12, 20, 26)] == [
        "二", "七", "十", "十二", "二十", "二十六"]


# ---- a report of one task -----------------------------------------------------------------------

def test_a_one_task_prompt_set_gets_a_one_task_report_and_table(prompts):
    from transformers import AutoTokenizer

    config = _modes.reference_module("config").MiniMindConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=6400)
    torch.manual_seed(0)
    model = _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config)
    tok = AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))
    report = evaluate(model, tok, prompts[:3], max_new_tokens=2)
    assert list(report["tasks"]) == ["ci"] and report["tasks"]["ci"]["n"] == report["overall"]["n"] == 3
    table = format_table(report)
    assert TASKS["ci"] in table and "全部 (all)" in table
    assert not any(label in table for task, label in TASKS.items() if task != "ci")
    assert TASKS["ci"] in format_comparison(report, report)
