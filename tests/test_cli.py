"""python -m workbook progress | check | hint."""
import pytest

from tests.helpers import run_py
from workbook.stages import STAGES


def test_check_fails_on_stub_and_passes_on_reference():
    out = run_py(["-m", "workbook", "check", "01"], mode="learner")
    assert out.returncode == 1
    assert "还没写 (not written yet)" in out.stdout and "notebooks/01_rmsnorm.ipynb" in out.stdout
    out = run_py(["-m", "workbook", "check", "1"], mode="solutions")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ 01" in out.stdout


def test_check_unknown_stage():
    out = run_py(["-m", "workbook", "check", "42"])
    assert out.returncode == 2 and "没有阶段" in out.stderr


def test_progress_lists_every_stage_and_the_next_step():
    out = run_py(["-m", "workbook", "progress"], mode="solutions:00")
    assert out.returncode == 0, out.stderr
    for stage in STAGES:
        assert f"  {stage.id}  " in out.stdout
    assert "◇ 参考实现（不算完成）" in out.stdout and "✗ 还没写" in out.stdout
    assert f"已完成 0/{len(STAGES)}" in out.stdout  # a stage served by the reference is not the learner's work
    assert "下一步 (next)：打开 notebooks/01_rmsnorm.ipynb" in out.stdout
    assert "python -m workbook check 01" in out.stdout


def test_hint_levels_are_revealed_one_at_a_time(tmp_path, monkeypatch):
    import workbook.hints as hints

    monkeypatch.setattr(hints, "STATE_FILE", tmp_path / "state.json")
    first = hints.show("01")
    assert "第 1/4 级" in first and "提示 1" in first
    assert "第 2/4 级" in hints.show("01")
    assert "第 3/4 级" in hints.show("01")
    last = hints.show("01")  # the generated last level: the guided stub's walkthrough
    assert "第 4/4 级" in last and "逐步提示 (the guided walkthrough)" in last and "最后一级" in last
    assert "第 1/4 级" in hints.show("01", level=1)


def test_hint_cli_bad_level():
    out = run_py(["-m", "workbook", "hint", "00", "--level", "9"])
    assert out.returncode == 2 and "只有" in out.stderr


def test_a_bad_mode_is_one_clear_line():
    out = run_py(["-m", "workbook", "progress"], mode="solutionz")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "错误：WORKBOOK_IMPL='solutionz' 无法识别。可选：learner、solutions、solutions:01,02,05-08"]


def test_check_piped_into_head_has_no_broken_pipe_traceback():
    import subprocess
    import sys

    from tests.helpers import ROOT
    import os

    env = dict(os.environ, WORKBOOK_IMPL="solutions", PYTHONIOENCODING="utf-8")
    # `true` reads nothing and exits at once: every write of the report hits a closed pipe
    out = subprocess.run(f"{sys.executable} -m workbook check 02 | true", shell=True, cwd=ROOT,
                         env=env, capture_output=True, timeout=120)
    err = out.stderr.decode("utf-8", errors="replace")
    assert "BrokenPipe" not in err and "Traceback" not in err, err


@pytest.mark.slow
def test_progress_reuses_results_until_a_file_they_depend_on_changes(tmp_path):
    import json

    from tests.helpers import learner_tree, run_in_tree

    tree = learner_tree(tmp_path / "wb")
    probe = ("import json, sys\nfrom workbook.progress import results\n"
             "print(json.dumps({r.stage.id: [r.status, r.message] for r in results(use_cache=True)}))\n")
    first = run_in_tree(tree, ["-c", probe], timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    cache_file = tree / ".workbook" / "check_cache.json"
    data = json.loads(cache_file.read_text(encoding="utf-8"))
    assert set(data) == {s.id for s in STAGES}
    # mark the cached verdicts: a second run that reuses them shows the mark
    for sid in ("00", "01", "06", "09"):
        data[sid]["result"]["message"] = f"cached {sid}"
    cache_file.write_text(json.dumps(data), encoding="utf-8")
    norm = tree / "workbook" / "model" / "norm.py"
    norm.write_text(norm.read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
    second = json.loads(run_in_tree(tree, ["-c", probe], timeout=900).stdout.strip().splitlines()[-1])
    assert second["00"] == ["pass", "cached 00"] and second["09"] == ["pass", "cached 09"]  # untouched
    assert second["01"][1] != "cached 01" and second["06"][1] != "cached 06"  # norm.py and what needs it
    assert second["01"][0] == second["06"][0] == "pass"


def test_a_stage_that_runs_reference_code_is_not_counted_as_done():
    # 13 has no file of its own: it trains the whole package, here made of reference modules
    out = run_py(["-m", "workbook", "progress", "--no-cache"], mode="solutions:00-13", timeout=600)
    assert out.returncode == 0, out.stderr
    row13 = next(ln for ln in out.stdout.splitlines() if ln.startswith("  13  "))
    assert "参考实现" in row13 and "通过" not in row13
    assert f"已完成 0/{len(STAGES)}" in out.stdout and "00-13 用的是参考实现" in out.stdout
    assert "第二部分" in out.stdout  # progress lists Part 2


def test_progress_counts_minimind_trainers_rebuilt_with_the_learners_code():
    from types import SimpleNamespace

    from workbook.progress import trainers_line

    def res(done_ids):
        return [SimpleNamespace(stage=s, done=s.id in done_ids) for s in STAGES]

    assert "MiniMind 的 6 个训练脚本" in trainers_line(res(set()))
    assert "0/6" in trainers_line(res(set())) and "· train_dpo.py" in trainers_line(res(set()))
    # pretrain needs the model head, the dataset, the loop and DDP; SFT its own stage on top
    line = trainers_line(res({"08", "10", "11", "12", "14"}))
    assert "2/6" in line and "✓ train_pretrain.py" in line and "✓ train_full_sft.py" in line
    assert "· train_lora.py" in line
    line = trainers_line(res({s.id for s in STAGES}))
    assert "6/6" in line and "✓ train_grpo.py" in line and "全部训练脚本都用你自己的代码重写了" in line
