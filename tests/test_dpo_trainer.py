"""python -m workbook.train.dpo: the policy trains against a frozen reference; exact resume; torchrun.

A tiny model is pretrained for a few steps and used as the start (its shape comes from the config
JSON beside it); the DPO runs train on the shipped held-out preference pairs."""
import gzip
import json
import math

import pytest
import torch

from tests.helpers import ROOT, kill_and_resume, pretrain_tiny, run_py

DPO_VAL = str(ROOT / "data" / "dpo_val.jsonl.gz")
COMMON = ["--max_seq_len", "160", "--batch_size", "4", "--num_workers", "0", "--dtype", "float32",
          "--no_progress", "--val_path", ""]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A 4-step pretrained tiny model: weights and the config JSON beside them."""
    return pretrain_tiny(tmp_path_factory.mktemp("start"))


def dpo_args(save_dir, start, *extra):
    return ["-m", "workbook.train.dpo", "--save_dir", str(save_dir), "--from_weight", str(start),
            "--data_path", DPO_VAL, *COMMON, *extra]


def first_loss(stdout: str) -> float:
    line = next(s for s in stdout.splitlines() if "micro-step 1/" in s)
    return float(line.split(" loss ")[1].split()[0])


def test_policy_trains_against_a_frozen_reference(start, tmp_path):
    out = run_py(dpo_args(tmp_path, start, "--max_steps", "3", "--save_interval", "3", "--log_interval", "1",
                          "--learning_rate", "1e-3", "--beta", "0.1", "--samples", "1",
                          "--val_path", DPO_VAL, "--eval_batches", "2"),
                 mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    # before any update the policy is the reference: every margin is 0, loss = -log σ(0) = ln 2
    assert abs(first_loss(out.stdout) - math.log(2)) < 1e-3, out.stdout[-2000:]
    assert "偏好数据检查通过" in out.stdout and "奖励准确率" in out.stdout
    weights = torch.load(tmp_path / "dpo_64.pth", weights_only=True)
    base = torch.load(start, weights_only=True)
    assert set(weights) == set(base)  # the policy alone, MiniMind's keys: the reference is never saved
    assert any(not torch.equal(weights[k], base[k]) for k in base), "the policy did not change"
    state = torch.load(tmp_path / "dpo_64_resume.pth", weights_only=True)
    # the resume file holds one model (the policy, under the wrapper's "model."), not two
    assert set(state["model"]) == {f"model.{k}" for k in base}
    n_opt = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
    assert n_opt == len({k for k in base if k != "lm_head.weight"})  # tied pair: one parameter
    summary = json.loads((tmp_path / "dpo_64_summary.json").read_text(encoding="utf-8"))
    assert 0 <= summary["val_reward_accuracy"] <= 1 and summary["val_pairs"] > 0


def test_summed_log_prob_option_and_bad_flags(start, tmp_path):
    out = run_py(dpo_args(tmp_path / "sum", start, "--max_steps", "1", "--save_interval", "1",
                          "--log_interval", "1", "--length_normalize", "0", "--samples", "0"), mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    assert abs(first_loss(out.stdout) - math.log(2)) < 1e-3
    for flags, fragment in ((["--beta", "nan"], "--beta"), (["--beta", "0"], "--beta"),
                            (["--from_weight", "none"], "--from_weight none")):
        out = run_py(["-m", "workbook.train.dpo", "--save_dir", str(tmp_path / "bad"), "--data_path", DPO_VAL,
                      *COMMON, "--from_weight", str(start), *flags], mode="solutions")
        assert out.returncode == 2 and fragment in out.stderr, (flags, out.stderr[-1500:])
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").glob("*.pth"))


def test_a_bad_pair_is_named_before_step_1(start, tmp_path):
    bad = tmp_path / "pairs.jsonl"
    with gzip.open(DPO_VAL, "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(3)]
    record = json.loads(lines[1])
    record["rejected"][0]["content"] += "（另一个请求）"  # the two answers no longer share a request
    bad.write_text(lines[0] + json.dumps(record, ensure_ascii=False) + "\n" + lines[2], encoding="utf-8")
    out = run_py(["-m", "workbook.train.dpo", "--save_dir", str(tmp_path / "o"), "--from_weight", str(start),
                  "--data_path", str(bad), *COMMON], mode="solutions")
    assert out.returncode == 2 and f"{bad}:2" in out.stderr and "前面的对话必须相同" in out.stderr, out.stderr[-1500:]


@pytest.mark.slow
def test_dpo_resumes_exactly_after_kill(start, tmp_path):
    common = ["--max_steps", "12", "--epochs", "1", "--accumulation_steps", "2", "--log_interval", "2",
              "--save_interval", "4", "--learning_rate", "1e-3", "--samples", "0"]
    full, _, saved_at = kill_and_resume(lambda d, *x: dpo_args(d, start, *common, *x), "dpo_64", tmp_path)
    assert len(full["train"]) >= 6 and 0 < saved_at < 24


@pytest.mark.slow
def test_dpo_under_torchrun_with_two_ranks(start, tmp_path):
    out = run_py(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  *dpo_args(tmp_path, start, "--max_steps", "2", "--accumulation_steps", "1",
                            "--save_interval", "2", "--log_interval", "1", "--samples", "0")],
                 mode="solutions", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "2 个进程" in out.stdout
    assert set(torch.load(tmp_path / "dpo_64.pth", weights_only=True)) == set(torch.load(start, weights_only=True))
