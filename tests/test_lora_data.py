"""LoRA task data (data/build_lora.py): the acrostic poem (藏头诗), its eval prompts, a one-task report.

The SFT model's score on these prompts is measured and written in data/README.md, not asserted here."""
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
from workbook.eval.forms import clauses, shi_form

DATA = ROOT / "data"
TRAIN, VAL = DATA / "lora_acrostic_train.jsonl.gz", DATA / "lora_acrostic_val.jsonl.gz"
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


def record(form, heads):
    """An eval record for an acrostic of `heads` in `form` (what the grader reads)."""
    return {"task": "acrostic", "form": build_sft.shi_form_record(form), "title": heads, "expected": heads}


def long_lines(texts):
    return {ln for t in texts for ln in t.split("\n")
            if len("".join(clauses(ln))) >= build_sft.LEAK_MIN_CHARS}


# ---- the builder --------------------------------------------------------------------------------

def test_build_reproduces_the_committed_files_byte_for_byte(tmp_path):
    # one build (~3 s) under another hash seed: no set or dict order leaks into the output
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
        assert all(r["task"] == "acrostic" for r in sets[split])


def test_each_usable_quatrain_is_used_once(corpus, sets, prompts):
    train, val, table, tunes, held_out = corpus
    forms = build_lora.ACROSTIC_FORMS

    def quatrains(poems, banned=frozenset()):
        # the builder's rule, written out: a 五言/七言绝句 by shape, not a Tang ci, one couplet per
        # line, no line shared with the validation split (train), each body once
        seen, out = set(), []
        for p in poems:
            if (p.kind == "shi" and p.form in forms and p.title.split(" ")[0] not in tunes
                    and all(len(clauses(ln)) == 2 for ln in p.lines)
                    and not any(ln in banned for ln in p.lines) and p.body not in seen):
                seen.add(p.body)
                out.append((p.form, p.body))
        return sorted(out)

    assert sorted((r["form"], reply(r)) for r in sets["train"]) == quatrains(train, held_out)
    # the validation quatrains are split between the val file and the eval prompts
    used = [(r["form"], reply(r)) for r in sets["val"]] + [(p["form"]["name"], p["reference"]) for p in prompts]
    assert sorted(used) == quatrains(val)
    assert len(sets["train"]) > 10_000 and 100 <= len(sets["val"]) <= 200
    assert {r["form"] for rows in sets.values() for r in rows} == set(forms)


def test_every_reply_hides_the_requested_heads(sets):
    system = 0
    for split, rows in sets.items():
        for r in rows:
            heads, form, answer = r["heads"], r["form"], reply(r)
            assert len(heads) == 4 and shi_form(answer) == form, (split, answer)
            assert "".join(c[0] for c in clauses(answer)) == heads  # read straight off the poem …
            scores = grade_answer("acrostic", record(form, heads), answer, stopped=True)
            assert scores["pass"] and scores["correct"] and scores["heads"] == heads  # … and by the grader
            asked = request(r)
            assert f"《{heads}》" in asked and form in asked, asked  # the request names both
            assert asked in {t.format(form=form, heads=heads, k="四") for t in build_lora.ACROSTIC}, asked
            system += r["conversations"][0]["role"] == "system"
    total = sum(map(len, sets.values()))
    assert total / 12 < system < total / 5  # about 1 in build_sft.SYSTEM_EVERY


def test_the_heads_of_another_poem_fail(sets):
    # the answers are not interchangeable: a reply graded against another row's heads is wrong
    rows = sets["val"]
    for a, b in zip(rows, rows[1:]):
        if a["heads"] != b["heads"]:
            scores = grade_answer("acrostic", record(b["form"], b["heads"]), reply(a), stopped=True)
            assert not scores["correct"] and not scores["pass"]


def test_no_validation_or_eval_poem_reaches_the_training_conversations(corpus, sets, prompts):
    train_lines = long_lines(reply(r) for r in sets["train"])  # every poem is one couplet per line
    references = [p["reference"] for p in prompts]
    assert not long_lines(references) & train_lines
    assert not long_lines(reply(r) for r in sets["val"]) & train_lines
    assert not set(references) & {reply(r) for r in sets["val"]}
    # no eval prompt asks for the heads of a training poem (the adapter cannot recall its way to a pass)
    train_heads = {(r["form"], r["heads"]) for r in sets["train"]}
    assert not {(p["form"]["name"], p["expected"]) for p in prompts} & train_heads
    # every reference is a validation poem, named in "source"
    val = {(p.title, p.author, p.body) for p in corpus[1]}
    for p in prompts:
        (src,) = p["source"]
        assert (src["title"], src["author"], p["reference"]) in val, p["id"]


def test_eval_prompts_alternate_the_forms_and_their_references_pass(sets, prompts):
    sft_keys = set(json.loads((DATA / "sft_eval_prompts.jsonl").read_text(encoding="utf-8")
                              .split("\n", 1)[0]))
    forms = build_lora.ACROSTIC_FORMS
    assert len(prompts) == build_lora.EVAL_PER_FORM * len(forms) == 120
    train_requests = {request(r) for r in sets["train"]}
    for i, p in enumerate(prompts, 1):
        form, heads = p["form"]["name"], p["expected"]
        assert set(p) == sft_keys and p["task"] == "acrostic" and p["id"] == f"acrostic-{i:03d}"
        assert form == forms[(i - 1) % len(forms)]  # alternating: any --limit N covers both forms
        assert p["form"] == build_sft.shi_form_record(form) and p["title"] == heads
        assert heads == "".join(c[0] for c in clauses(p["reference"])) and len(heads) == 4
        asked = p["messages"][-1]["content"]
        if i % build_lora.EVAL_HELD_OUT_EVERY == 0:  # a phrasing training never shows
            assert asked in {t.format(form=form, heads=heads, k="四") for t in build_lora.EVAL_HELD_OUT_ACROSTIC}
            assert asked not in train_requests, p["id"]
        else:
            assert asked in {t.format(form=form, heads=heads, k="四") for t in build_lora.ACROSTIC}, p["id"]
        assert p["system"] == (p["messages"][0]["role"] == "system") == (i % build_sft.EVAL_SYSTEM_EVERY == 0)
        ok = grade_answer("acrostic", p, p["reference"], stopped=True)
        assert ok["pass"] and ok["form"] and ok["correct"] and ok["title"] is None, p["id"]
        # the same poem with a title line: of the hidden word it passes, of another title it fails
        assert grade_answer("acrostic", p, f"《{heads}》\n" + p["reference"], stopped=True)["pass"]
        assert not grade_answer("acrostic", p, "《无题》\n" + p["reference"], stopped=True)["pass"]
    # the reference of the next prompt (the other form) fails: the form and the heads are both wrong
    wrong = grade_answer("acrostic", prompts[0], prompts[1]["reference"], stopped=True)
    assert wrong["form"] is False and wrong["correct"] is False


def test_counts_and_token_figures_are_those_the_readme_states(sets, prompts):
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    section = readme.split("## LoRA 任务数据", 1)[1].split("\n## ", 1)[0]
    train, val = sets["train"], sets["val"]
    assert f"训练集 {len(train):,} 段" in section and f"留出集 {len(val):,} 段" in section
    assert f"评分提示 {len(prompts)} 条" in section
    system = [sum(r["conversations"][0]["role"] == "system" for r in rows) for rows in (train, val)]
    assert f"训练集 {system[0]:,} 段，留出集 {system[1]:,} 段" in section
    for name, rows in (("训练集", train), ("留出集", val)):
        per_form = [sum(r["form"] == f for r in rows) for f in build_lora.ACROSTIC_FORMS]
        assert f"{name}：五言绝句 {per_form[0]:,} 段、七言绝句 {per_form[1]:,} 段" in section, name
        f = build_lora.token_figures(rows, DATA / "tokenizer")
        row = (f"| {name} | {len(rows):,} | {f['tokens']:,} | {f['assistant_tokens']:,} | {f['mean']:.1f} "
               f"| {f['max']} | {f['reply_max']} |")
        assert row in section, row
    for t in build_lora.ACROSTIC + build_lora.EVAL_HELD_OUT_ACROSTIC:  # every phrasing, as an example
        assert t.format(form="五言绝句", heads="春江花月", k="四") in section, t
    assert "--max_new_tokens 96" in section


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
    assert list(report["tasks"]) == ["acrostic"]
    assert report["tasks"]["acrostic"]["n"] == report["overall"]["n"] == 3
    assert all("heads" in a["scores"] for a in report["answers"])
    table = format_table(report)
    assert TASKS["acrostic"] in table and "全部 (all)" in table
    assert not any(label in table for task, label in TASKS.items() if task != "acrostic")
    assert TASKS["acrostic"] in format_comparison(report, report)
