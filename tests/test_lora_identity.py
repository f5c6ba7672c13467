"""The LoRA identity task (data/build_identity.py): deterministic, held-out questions, graded by name."""
import gzip
import json
import subprocess
import sys

from tests.helpers import ROOT
from workbook.data.validate import check_chat_data
from workbook.eval import grade_answer, load_prompts

sys.path.insert(0, str(ROOT / "data"))
import build_identity  # noqa: E402  (data/ is not a package)


def read(name):
    with gzip.open(ROOT / "data" / name, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_build_reproduces_the_committed_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / "build_identity.py"), "--out-dir", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True)
    for name in build_identity.OUTPUTS:
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / name).read_bytes(), name


def test_files_are_valid_and_the_graded_questions_are_held_out():
    for name in build_identity.OUTPUTS[:2]:
        assert check_chat_data(ROOT / "data" / name)["conversations"] > 0
    train_questions = {c["conversations"][-2]["content"] for c in read("lora_identity_train.jsonl.gz")}
    prompts = load_prompts(ROOT / "data" / "lora_identity_eval_prompts.jsonl")
    assert len(prompts) == 40 and all(p["task"] == "identity" for p in prompts)
    asked = {p["messages"][-1]["content"] for p in prompts}
    assert not asked & train_questions  # the grader never asks a training question
    # every training answer says the name: what the grader checks
    assert all(build_identity.NAME in c["conversations"][-1]["content"] for c in read("lora_identity_train.jsonl.gz"))


def test_grader_passes_an_answer_that_says_the_name_and_stops():
    rec = {"task": "identity", "expected": build_identity.NAME}
    assert grade_answer("identity", rec, build_identity.ANSWERS[0], stopped=True)["pass"]
    assert not grade_answer("identity", rec, build_identity.ANSWERS[0], stopped=False)["pass"]  # runs on
    poem = grade_answer("identity", rec, "床前明月光，疑是地上霜。", stopped=True)
    assert poem["correct"] is False and not poem["pass"] and poem["form"] is None
