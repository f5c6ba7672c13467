"""python -m workbook.train.grpo: sample, score, learn; bad input named; exact resume; torchrun.

The runs start from the shipped SFT model (a tiny random model would write nothing the reward can
tell apart: every group's rewards equal, every advantage 0) on a few GRPO prompts, with short
completions and small groups so that a step takes a second or two."""
import gzip
import json

import pytest
import torch

from tests.helpers import ROOT, kill_and_resume, run_py

SFT = str(ROOT / "data" / "base" / "full_sft_320.pth")
PROMPTS = ROOT / "data" / "grpo_prompts.jsonl.gz"
COMMON = ["--num_workers", "0", "--dtype", "float32", "--no_progress", "--batch_size", "2",
          "--num_generations", "4", "--max_gen_len", "40", "--device", "cpu"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """The first 16 GRPO prompts (a ci, a 五绝, a continuation …)."""
    path = tmp_path_factory.mktemp("prompts") / "grpo_small.jsonl"
    with gzip.open(PROMPTS, "rt", encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(16)), encoding="utf-8")
    return path


def grpo_args(save_dir, prompts, *extra):
    return ["-m", "workbook.train.grpo", "--save_dir", str(save_dir), "--from_weight", SFT,
            "--data_path", str(prompts), *COMMON, *extra]


def log_lines(stdout: str) -> list[dict]:
    """The figures of each log line: {"loss": …, "reward": …, "kl": …, …}."""
    out = []
    for line in stdout.splitlines():
        if " micro-step " in line and " loss " in line:
            words = line.split(") ", 1)[1].split()
            out.append({k: float(v) for k, v in zip(words[::2], words[1::2]) if k not in ("lr",)})
    return out


def test_grpo_samples_scores_and_trains(prompts, tmp_path):
    out = run_py(grpo_args(tmp_path, prompts, "--max_steps", "3", "--save_interval", "3", "--log_interval", "1",
                           "--learning_rate", "1e-4", "--samples", "1"), mode="solutions", timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    logs = log_lines(out.stdout)
    assert len(logs) == 3, out.stdout[-2000:]
    # step 1: the policy is the reference (KL 0) and the batch-normalised advantages average 0
    assert logs[0]["kl"] == 0 and abs(logs[0]["loss"]) < 1e-5, logs[0]
    assert all(0 <= d["reward"] <= 2.25 and 0 <= d["form"] <= 1 and d["length"] > 0 for d in logs), logs
    assert all(0 <= d["repeated_end"] <= d["form"] for d in logs), logs  # counted among samples in form
    assert logs[-1]["kl"] > 0, "the policy never moved away from the reference"
    assert "tok/s" not in out.stdout.split("micro-step 1/")[1].splitlines()[0]  # no made-up token rate
    # a group shown: its best and worst answers, or that all four scored the same
    assert "的一组（4 个回答）" in out.stdout, out.stdout[-2000:]
    assert "最好 reward" in out.stdout or "个回答的 reward 都是" in out.stdout, out.stdout[-2000:]
    assert "留出请求上贪心回答的平均 reward" in out.stdout
    weights = torch.load(tmp_path / "grpo_320.pth", weights_only=True)
    base = torch.load(SFT, weights_only=True)
    assert set(weights) == set(base)  # the policy alone: the reference is never saved
    assert any(not torch.equal(weights[k], base[k]) for k in base), "the policy did not change"
    state = torch.load(tmp_path / "grpo_320_resume.pth", weights_only=True)
    assert set(state["model"]) == {f"model.{k}" for k in base} | {"calls"}
    assert int(state["model"]["calls"]) == 3
    assert [s for s, _ in state["history"]["extra"]] == [1, 2, 3]
    summary = json.loads((tmp_path / "grpo_320_summary.json").read_text(encoding="utf-8"))
    assert 0 <= summary["held_out_reward"] <= 2.25


@pytest.mark.parametrize("flags, fragment", [
    (["--num_generations", "1"], "--num_generations"), (["--temperature", "0"], "--temperature"),
    (["--beta", "-1"], "--beta"), (["--beta", "nan"], "--beta"), (["--max_gen_len", "0"], "--max_gen_len"),
    (["--sample_interval", "-1"], "--sample_interval"), (["--val_path", "x.jsonl"], "--val_path"),
    (["--from_weight", "none"], "--from_weight none")])
def test_bad_flags_are_named(flags, fragment):
    # in-process (the CLI's exit code 2 for a ConfigError is checked below, once)
    from workbook.train import grpo
    from workbook.train.trainer import ConfigError, build_parser

    args = build_parser(grpo.TASK).parse_args(["--from_weight", SFT, *flags])
    with pytest.raises(ConfigError, match=fragment.replace("-", "\\-")):
        grpo.prepare_model(torch.nn.Linear(2, 2), args)


def test_bad_flag_and_bad_prompt_exit_2_before_anything_is_written(prompts, tmp_path):
    out = run_py(grpo_args(tmp_path / "bad", prompts, "--num_generations", "1"), mode="solutions")
    assert out.returncode == 2 and "--num_generations" in out.stderr, out.stderr[-1500:]
    bad = tmp_path / "prompts.jsonl"
    lines = prompts.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[1])
    del record["form"]
    bad.write_text(lines[0] + "\n" + json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    out = run_py(grpo_args(tmp_path / "bad", bad), mode="solutions")
    assert out.returncode == 2 and f"{bad}:2" in out.stderr, out.stderr[-1500:]
    # a pattern longer than --max_seq_len (the labels row that carries it): named before step 1
    out = run_py(grpo_args(tmp_path / "bad", prompts, "--max_seq_len", "3"), mode="solutions")
    assert out.returncode == 2 and f"{prompts}:1" in out.stderr and "--max_seq_len 3" in out.stderr, out.stderr[-1500:]
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").glob("*.pth"))


@pytest.mark.slow
def test_grpo_resumes_exactly_after_kill(prompts, tmp_path):
    """The samples of a micro-step are drawn from (seed, rank, micro-steps taken): a resumed run
    draws what the uninterrupted run drew, so losses and weights agree exactly."""
    common = ["--max_steps", "4", "--log_interval", "1", "--save_interval", "2", "--learning_rate", "1e-4",
              "--samples", "0", "--max_gen_len", "24"]
    full, _, saved_at = kill_and_resume(lambda d, *x: grpo_args(d, prompts, *common, *x), "grpo_320", tmp_path)
    assert len(full["train"]) == 4 and saved_at == 2


@pytest.mark.slow
def test_grpo_under_torchrun_with_two_ranks(prompts, tmp_path):
    out = run_py(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  *grpo_args(tmp_path, prompts, "--max_steps", "2", "--save_interval", "2", "--log_interval", "1",
                             "--samples", "0", "--max_gen_len", "24")],
                 mode="solutions", timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "2 个进程" in out.stdout and len(log_lines(out.stdout)) == 2
    assert set(torch.load(tmp_path / "grpo_320.pth", weights_only=True)) == set(torch.load(SFT, weights_only=True))
