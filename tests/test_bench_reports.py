"""The speed figures the README quotes are the ones the bench scripts wrote, and the Part 2
pipeline bench times exactly the README's commands."""
import importlib.util
import json

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = ROOT / "bench" / "results"


def _load(name):
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _pipeline_module():
    spec = importlib.util.spec_from_file_location("part2_pipeline", ROOT / "bench" / "part2_pipeline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_pipeline_reads_the_readme_part2_commands():
    cmds = [c for _, c in _pipeline_module().readme_commands(README)]
    trainers = [c.split(" -m ")[1].split()[0] for c in cmds]
    assert trainers == ["workbook.train.full_sft", "workbook.train.lora", "workbook.train.dpo",
                        "workbook.train.distillation", "workbook.train.grpo", "workbook", "workbook"]
    assert all("\\" not in c and "  " not in c for c in cmds)  # continuations joined
    assert cmds[0].endswith("--eval_interval 50") and "--from_weight data/base/pretrain_320.pth" in cmds[0]
    assert cmds[-1].endswith("--limit 30")  # the trailing remark is not part of the command


def test_readme_quotes_the_pipeline_run():
    report = _load("part2_pipeline_cpu.json")
    assert report["command"].startswith("WORKBOOK_IMPL=solutions")
    assert len(report["steps"]) == 7 and all(s["rc"] == 0 for s in report["steps"])
    # the commands timed are the README's of today
    assert [s["cmd"] for s in report["steps"]] == [c for _, c in _pipeline_module().readme_commands(README)]
    for step in report["steps"][:5]:
        assert f"{step['wall_s'] / 60:.1f} 分钟" in README and f"{step['wall_s'] / 60:.1f} min" in README, step["what"]
    assert f"{report['total_s'] / 60:.1f} 分钟" in README and f"{report['total_s'] / 60:.1f} min" in README


def test_readme_quotes_the_generation_ratios():
    rows = {r["case"]: r for r in _load("generate_speed_cpu.json")["rows"]}
    for case in ("greedy, batch 16", "sampled, batch 16", "greedy, batch 1", "sampled, batch 1"):
        assert rows[case]["ratio"] >= 1.0, case  # the goal: at least transformers' speed
        assert f"{rows[case]['ratio']:.2f}×" in README, case


def test_readme_quotes_the_post_training_speedups():
    report = _load("post_train_speed_cpu.json")
    for trainer in ("sft", "dpo", "distillation"):
        arms = report[trainer]["arms"]
        assert arms["padded"]["mean_width"] == report[trainer]["max_seq_len"] - 1 or \
            arms["padded"]["mean_width"] == report[trainer]["max_seq_len"], trainer  # really padded
        for arm in ("trimmed", "grouped"):
            assert f"{arms[arm]['ratio_to_padded']:.2f}×" in README, (trainer, arm)
    assert report["sft"]["arms"]["trimmed"]["ratio_to_padded"] >= 2.0  # the goal: 2x MiniMind's padded SFT


def test_readme_quotes_the_dpo_validation_times():
    import re
    text = (RESULTS / "dpo_val_speed_cpu.txt").read_text(encoding="utf-8")
    seconds = {arm: float(re.search(rf"^{arm}\s+([\d.]+) s", text, re.M).group(1)) for arm in ("trimmed", "padded")}
    ratio = seconds["padded"] / seconds["trimmed"]
    assert f"{seconds['trimmed']:.0f} 秒，不裁剪 {seconds['padded']:.0f} 秒（{ratio:.1f}×" in README
    assert f"{seconds['trimmed']:.0f} s, against {seconds['padded']:.0f} s padded ({ratio:.1f}×" in README
