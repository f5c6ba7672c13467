"""SFT chat data (data/build_sft.py), its validation (check_chat_data) and the grader (workbook/eval)."""
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
from workbook.data.validate import DataError, check_chat_data, describe
from workbook.eval import evaluate, format_table, grade_answer, load_prompts
from workbook.eval.forms import clauses, matches_pattern, named_form, shi_form
from workbook.eval.tasks import SFT_TASKS  # the six tasks of the SFT data (TASKS adds the LoRA task)

DATA = ROOT / "data"
TRAIN, VAL = DATA / "sft_poetry_train.jsonl.gz", DATA / "sft_poetry_val.jsonl.gz"
PROMPTS = DATA / "sft_eval_prompts.jsonl"
OUTPUTS = ("sft_poetry_train.jsonl.gz", "sft_poetry_val.jsonl.gz", "sft_eval_prompts.jsonl")

sys.path.insert(0, str(DATA))
import build_sft  # noqa: E402  (data/ is not a package)

# The builder runs stage 19's functions (workbook/data/instruct.py): the shipped files are the
# reference's.  The counts the mix gives, as the reference computes them.
_instruct = _modes.reference_module("data.instruct")
TRAIN_COUNTS = _instruct.mix_counts(build_sft.TRAIN_MIX, build_sft.TRAIN_SIZE)
VAL_COUNTS = _instruct.mix_counts(build_sft.VAL_MIX, build_sft.VAL_SIZE)


def conversations(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def train():
    return conversations(TRAIN)


@pytest.fixture(scope="module")
def prompts():
    return load_prompts(PROMPTS)


# ---- the builder --------------------------------------------------------------------------------

def test_build_reproduces_the_committed_files_byte_for_byte(tmp_path):
    # one build (~5 s of CPU) under another hash seed: no set or dict order leaks into the output;
    # the reference's stage-19 functions rebuild the shipped files
    env = dict(os.environ, PYTHONHASHSEED="12345", WORKBOOK_IMPL="solutions")
    out = subprocess.run([sys.executable, str(DATA / "build_sft.py"), "--out-dir", str(tmp_path),
                          "--no-tokens"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in OUTPUTS:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    assert not list(tmp_path.glob("*.tmp"))


def test_every_conversation_is_valid_chat_data():
    for path, counts in ((TRAIN, TRAIN_COUNTS), (VAL, VAL_COUNTS)):
        summary = check_chat_data(path)
        assert summary["conversations"] == sum(counts.values())
        assert "段对话 (conversations)" in describe(summary)


def test_task_counts_are_those_the_readme_states(train):
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    val = conversations(VAL)
    for task in SFT_TASKS:
        n_train = sum(r["task"] == task for r in train)
        n_val = sum(r["task"] == task for r in val)
        assert n_train == TRAIN_COUNTS[task] and n_val == VAL_COUNTS[task], task
        # the README's task table: | `task` | … | train | val | eval |
        row = re.search(rf"^\| `{task}` \|.*\| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", readme, re.M)
        assert row, f"no README row for {task}"
        assert [int(x.replace(",", "")) for x in row.groups()] == [
            n_train, n_val, build_sft.EVAL_PER_TASK], task
    assert f"{len(train):,}" in readme


def test_no_validation_poem_reaches_the_training_conversations(train, prompts):
    # every poem is written one body line per text line, so a line set finds any copy
    lines = {ln for r in train for m in r["conversations"] for ln in m["content"].split("\n")}
    val = build_sft.load_split(DATA / "pretrain_poetry_val.jsonl.gz", "val")
    leaked = [p.title for p in val if any(ln in lines for ln in p.lines
                                          if len("".join(clauses(ln))) >= build_sft.LEAK_MIN_CHARS)]
    assert not leaked
    # the eval prompts are made of validation poems only (so none of them leaks either) …
    by_source = {(p.title, p.author): p for p in val}
    for p in prompts:
        poems = [by_source[(s["title"], s["author"])] for s in p["source"]]
        if p["task"] in ("form_poem", "ci", "continue", "multi_turn"):
            assert set(p["reference"].split("\n")) <= set(poems[-1].lines), p["id"]
    # … and the poem titles they ask for or expect never occur in a training conversation
    # (a 词牌 does, by design: the ci tasks teach the tunes)
    titles = {t for r in train for m in r["conversations"] for t in re.findall(r"《([^》]+)》", m["content"])}
    for p in prompts:
        if p["task"] in ("form_poem", "give_title", "multi_turn") and p["form"]["chars"]:
            named = {p.get("title"), p.get("expected")} - {None}
            assert not named & titles, p["id"]


def test_eval_prompts_cover_every_task_and_their_references_pass(prompts):
    assert len(prompts) >= 100
    for task in SFT_TASKS:
        assert sum(p["task"] == task for p in prompts) >= 15, task
    # interleaved: the first six prompts are one of each task (so --limit N covers every task)
    assert [p["task"] for p in prompts[:6]] == list(SFT_TASKS)
    for p in prompts:  # the real poem / the right answer scores as correct
        assert grade_answer(p["task"], p, p["reference"], stopped=True)["pass"], p["id"]


def test_the_chat_template_is_the_tokenizers(train):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))
    system = next(r for r in train if r["conversations"][0]["role"] == "system")
    multi = next(r for r in train if r["task"] == "multi_turn")
    for r in (train[0], system, multi):
        msgs = r["conversations"]
        assert build_sft.render(msgs) == tok.apply_chat_template(msgs, tokenize=False)
        assert not build_sft.render(msgs).startswith("<|im_start|>system") or msgs[0]["role"] == "system"


def test_cipai_table_is_learned_from_the_train_split():
    train = build_sft.load_split(DATA / "pretrain_poetry_train.jsonl.gz", "train")
    table = build_sft.cipai_table([p for p in train if p.kind == "ci"])
    assert table["浣溪沙"]["pattern"] == [7] * 6 and table["菩萨蛮"]["pattern"] == [7, 7, 5, 5, 5, 5, 5, 5]
    assert "失调名" not in table and "水调歌头" not in table  # no dominant pattern
    assert all(t["poems"] >= build_sft.CIPAI_MIN_POEMS and t["share"] >= build_sft.CIPAI_MIN_SHARE
               for t in table.values())
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert f"{len(table)} 个词牌" in readme


# ---- the grader ---------------------------------------------------------------------------------

JINGYESI = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
QUATRAIN = {"task": "form_poem", "title": "静夜思",
            "form": {"name": "五言绝句", "pattern": [5, 5, 5, 5], "lines": 4, "chars": 5}}
HUANXISHA = {"task": "ci", "title": "浣溪沙", "form": {"name": "浣溪沙", "pattern": [7] * 6}}


def test_grader_scores_a_real_poem_and_catches_a_wrong_form():
    assert shi_form(JINGYESI) == "五言绝句"
    ok = grade_answer("form_poem", QUATRAIN, JINGYESI, stopped=True)
    assert ok["pass"] and ok["form"] and ok["lines"] == [5, 5, 5, 5] and ok["title"] is None
    # punctuation-tolerant: a missing comma, other marks, a title line of the asked title
    assert grade_answer("form_poem", QUATRAIN, "床前明月光疑是地上霜\n举头望明月；低头思故乡!", True)["pass"]
    assert grade_answer("form_poem", QUATRAIN, "《静夜思》李白\n" + JINGYESI, True)["pass"]
    # a line too long, a line missing, another title, not stopped
    assert not grade_answer("form_poem", QUATRAIN, JINGYESI.replace("床前", "床前的"), True)["form"]
    assert not grade_answer("form_poem", QUATRAIN, JINGYESI.split("\n")[0], True)["form"]
    wrong_title = grade_answer("form_poem", QUATRAIN, "《春晓》\n" + JINGYESI, True)
    assert wrong_title["title"] is False and not wrong_title["pass"]
    cut = grade_answer("form_poem", QUATRAIN, JINGYESI, stopped=False)
    assert cut["form"] and not cut["stopped"] and not cut["pass"]


def test_grader_checks_the_cipai_pattern():
    huanxisha = "一曲新词酒一杯，去年天气旧亭台。夕阳西下几时回。\n无可奈何花落去，似曾相识燕归来。小园香径独徘徊。"
    assert grade_answer("ci", HUANXISHA, huanxisha, True)["pass"]
    pusaman = "平林漠漠烟如织，寒山一带伤心碧。\n暝色入高楼，有人楼上愁。\n玉阶空伫立，宿鸟归飞急。\n何处是归程，长亭连短亭。"
    wrong = grade_answer("ci", HUANXISHA, pusaman, True)
    assert wrong["form"] is False and not wrong["pass"] and wrong["lines"] == [7, 7, 5, 5, 5, 5, 5, 5]
    assert grade_answer("ci", HUANXISHA, "《浣溪沙》晏殊\n" + huanxisha, True)["title"] is True
    assert grade_answer("ci", HUANXISHA, "《菩萨蛮》\n" + huanxisha, True)["title"] is False
    assert matches_pattern([14, 7], [7, 7, 7]) and not matches_pattern([8, 6, 7], [7, 7, 7])


def test_grader_name_form_title_and_continue():
    rec = {"task": "name_form", "form": {"pattern": []}, "expected": "五言绝句"}
    assert grade_answer("name_form", rec, "五言绝句", True)["correct"]
    assert not grade_answer("name_form", rec, "这是一首七言绝句，不是五言绝句", True)["correct"]
    assert named_form("词，词牌是《浣溪沙》") == "浣溪沙"
    rec = {"task": "give_title", "form": {"pattern": []}, "expected": "静夜思"}
    assert grade_answer("give_title", rec, "《月夜》", True)["pass"]
    assert grade_answer("give_title", rec, "《静夜思》", True)["exact"]
    assert not grade_answer("give_title", rec, "月夜", True)["title"]  # no 《》
    assert not grade_answer("give_title", rec, "《" + "月" * 17 + "》", True)["title"]  # too long
    rec = {"task": "continue", "first_line": "床前明月光，疑是地上霜。",
           "form": {"name": "五言绝句", "pattern": [5, 5]}}
    assert grade_answer("continue", rec, "举头望明月，低头思故乡。", True)["pass"]
    assert grade_answer("continue", rec, JINGYESI, True)["pass"]  # repeating the first line is forgiven
    assert not grade_answer("continue", rec, "举头望明月。", True)["pass"]
    with pytest.raises(ValueError, match="unknown task"):
        grade_answer("poem", rec, "", True)


def test_grader_checks_the_heads_of_an_acrostic():
    # 静夜思 read as an acrostic: its heads are 床疑举低
    rec = {"task": "acrostic", "title": "床疑举低", "expected": "床疑举低",
           "form": {"name": "五言绝句", "pattern": [5, 5, 5, 5], "lines": 4, "chars": 5}}
    ok = grade_answer("acrostic", rec, JINGYESI, stopped=True)
    assert ok["pass"] and ok["form"] and ok["correct"] and ok["heads"] == "床疑举低" and ok["title"] is None
    # a missing comma: the run is cut at the form's line length, its second head still counts
    assert grade_answer("acrostic", rec, "床前明月光疑是地上霜\n举头望明月，低头思故乡。", True)["heads"] == "床疑举低"
    # a title line: set aside for the heads; it must be the hidden word the request gives
    titled = grade_answer("acrostic", rec, "《床疑举低》\n" + JINGYESI, True)
    assert titled["pass"] and titled["title"] is True
    other_title = grade_answer("acrostic", rec, "《静夜思》李白\n" + JINGYESI, True)
    assert other_title["correct"] and other_title["title"] is False and not other_title["pass"]
    # the heads in another order, one head wrong: the form holds, the heads do not
    swapped = grade_answer("acrostic", rec, "举头望明月，低头思故乡。\n床前明月光，疑是地上霜。", True)
    assert swapped["form"] and swapped["correct"] is False and swapped["heads"] == "举低床疑" and not swapped["pass"]
    assert grade_answer("acrostic", rec, JINGYESI.replace("低头", "抬头"), True)["correct"] is False
    # the right heads in the wrong form: a fifth line, a line too long, a 七言 request
    fifth = grade_answer("acrostic", rec, JINGYESI + "\n床头一盏灯。", True)
    assert fifth["form"] is False and fifth["correct"] is False and fifth["heads"] == "床疑举低床"
    long = grade_answer("acrostic", rec, JINGYESI.replace("床前", "床之前"), True)
    assert long["form"] is False and long["correct"] is True and not long["pass"]
    seven = dict(rec, form={"name": "七言绝句", "pattern": [7, 7, 7, 7], "lines": 4, "chars": 7})
    assert not grade_answer("acrostic", seven, JINGYESI, True)["form"]
    # nothing written, or cut off: no pass
    empty = grade_answer("acrostic", rec, "", True)
    assert empty["heads"] == "" and empty["correct"] is False and not empty["pass"]
    cut = grade_answer("acrostic", rec, JINGYESI, stopped=False)
    assert cut["form"] and cut["correct"] and not cut["pass"]


# ---- evaluate on a tiny random model ------------------------------------------------------------

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400)


def tiny_model(seed=0):
    config = _modes.reference_module("config").MiniMindConfig(**TINY)
    torch.manual_seed(seed)
    return _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config), config


def test_evaluate_batches_exactly_and_reports_every_task(prompts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))
    model, _ = tiny_model()
    # prompts that share a token length, so that a batch really holds several rows
    length = {p["id"]: len(tok.apply_chat_template(p["messages"], add_generation_prompt=True,
                                                   tokenize=True, return_dict=False)) for p in prompts}
    by_len: dict = {}
    for p in prompts:
        by_len.setdefault(length[p["id"]], []).append(p)
    shared = [p for group in by_len.values() if len(group) > 1 for p in group][:6]
    assert len(shared) >= 4
    chosen = prompts[:6] + shared  # one of each task, then the shared-length ones
    batched = evaluate(model, tok, chosen, max_new_tokens=4, batch_size=8)
    single = evaluate(model, tok, chosen, max_new_tokens=4, batch_size=1)
    assert [a["answer"] for a in batched["answers"]] == [a["answer"] for a in single["answers"]]
    assert set(batched["tasks"]) == set(SFT_TASKS)
    for rates in batched["tasks"].values():
        assert rates["n"] >= 1 and 0 <= rates["pass"] <= 1 and 0 <= rates["stopped"] <= 1
    assert batched["settings"]["greedy"] and len(batched["answers"]) == len(chosen)
    table = format_table(batched)
    assert all(label in table for label in SFT_TASKS.values()) and "全部 (all)" in table
    assert model.training  # evaluate put the model back as it found it


def test_eval_command_end_to_end(tmp_path):
    from workbook.train.checkpoint import save_weights, write_config

    model, config = tiny_model(1)
    save_weights(model, tmp_path / "tiny_64.pth")
    write_config(config, tmp_path / "tiny_64_config.json")
    report = tmp_path / "report.json"
    out = run_py(["-m", "workbook", "eval", str(tmp_path / "tiny_64.pth"), "--limit", "6",
                  "--max_new_tokens", "4", "--json", str(report)], mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "按词牌填词" in out.stdout and "停止 stopped" in out.stdout
    data = json.loads(report.read_text(encoding="utf-8"))
    assert set(data["tasks"]) == set(SFT_TASKS) and data["settings"]["prompts"] == 6
    assert data["settings"]["config"].endswith("tiny_64_config.json")


def test_eval_command_errors_are_one_line(tmp_path, capsys):
    from workbook.__main__ import main

    assert main(["eval", str(tmp_path / "none.pth")]) == 2
    assert "错误：找不到权重文件" in capsys.readouterr().err
    (tmp_path / "w.pth").write_bytes(b"")
    # an empty file without a config beside it: its shape cannot be read off it — one line
    assert main(["eval", str(tmp_path / "w.pth"), "--limit", "1"]) == 2
    assert "读不出来" in capsys.readouterr().err
    # learner mode on a fresh clone: the model is still a stub — one line, no traceback
    (tmp_path / "w_config.json").write_text("{}", encoding="utf-8")
    assert main(["eval", str(tmp_path / "w.pth"), "--limit", "1"]) == 2
    assert "模型还有没写完的部分" in capsys.readouterr().err


# ---- check_chat_data names each fault -----------------------------------------------------------

GOOD = {"conversations": [{"role": "user", "content": "写一首诗"}, {"role": "assistant", "content": "好"}]}


def msgs(*roles):
    return {"conversations": [{"role": r, "content": "x"} for r in roles]}


FAULTS = [
    ("{not json", "malformed JSON"),
    (json.dumps({"text": "a"}), 'missing "conversations"'),
    (json.dumps({"conversations": "hi"}), "not a list"),
    (json.dumps({"conversations": []}), "empty conversation"),
    (json.dumps({"conversations": ["hi"]}), "第 1 条消息 (message 1)不是 JSON 对象"),
    (json.dumps({"conversations": [{"role": "user"}]}), "content must be a string"),
    (json.dumps({"conversations": [{"content": "x"}]}), "role must be a string"),
    (json.dumps(msgs("user", "bot")), "unknown role"),
    (json.dumps(msgs("user", "user", "assistant")), "roles not alternating"),
    (json.dumps(msgs("assistant")), "roles not alternating"),
    (json.dumps(msgs("user", "system", "assistant")), "system message must come first"),
    (json.dumps(msgs("system", "user", "assistant", "user")), "must end with an assistant turn"),
    (json.dumps({"conversations": [{"role": "user", "content": "a<|im_end|>"},
                                   {"role": "assistant", "content": "b"}]}), "special token"),
]


@pytest.mark.parametrize("line,expected", FAULTS, ids=[f[1] for f in FAULTS])
def test_check_chat_data_names_each_fault_with_file_and_line(tmp_path, line, expected):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        check_chat_data(path)
    assert str(e.value).startswith(f"{path}:3: ") and expected in str(e.value), str(e.value)


def test_check_chat_data_encoding_gzip_and_empty(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"conversations": "床前明月光"}'.encode("gbk") + b"\n")
    with pytest.raises(DataError, match=r"gbk\.jsonl:2: 不是 UTF-8 编码 \(not UTF-8\)"):
        check_chat_data(path)
    whole = gzip.compress(("\n".join([json.dumps(GOOD)] * 3000) + "\n").encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="truncated gzip"):
        check_chat_data(cut)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no conversations"):
        check_chat_data(empty)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    assert check_chat_data(ok)["assistant_turns"] == 1
    with pytest.raises(DataError, match=r"\.jsonl\.gz"):
        check_chat_data(tmp_path / "x.bin")
