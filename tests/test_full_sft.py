"""python -m workbook.train.full_sft: MiniMind's SFT trainer on the shared run harness.

A tiny model is pretrained for a few steps first; SFT starts from its weights (the shape comes
from the config JSON beside them) and trains on the shipped held-out chat data."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, kill_and_resume, run_py

CHAT_VAL = str(ROOT / "data" / "sft_poetry_val.jsonl.gz")
TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--num_key_value_heads", "2"]
COMMON = ["--max_seq_len", "128", "--batch_size", "8", "--num_workers", "0", "--dtype", "float32",
          "--no_progress", "--val_path", ""]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 4-step pretrained tiny model: weights and the config JSON beside them."""
    save = tmp_path_factory.mktemp("base")
    out = run_py(["-m", "workbook.train.pretrain", "--save_dir", str(save), *TINY, *COMMON, "--samples", "0",
                  "--data_path", str(ROOT / "data" / "pretrain_poetry_val.jsonl.gz"), "--max_steps", "4",
                  "--accumulation_steps", "1", "--save_interval", "4"], mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (save / "pretrain_64_config.json").is_file()
    return save / "pretrain_64.pth"


def sft_args(save_dir, base, *extra):
    # no shape flags: they come from pretrain_64_config.json beside --from_weight
    return ["-m", "workbook.train.full_sft", "--save_dir", str(save_dir), "--from_weight", str(base),
            "--data_path", CHAT_VAL, *COMMON, *extra]


def test_sft_starts_from_the_base_and_writes_its_own_weights(base, tmp_path):
    out = run_py(sft_args(tmp_path, base, "--max_steps", "3", "--save_interval", "3", "--log_interval", "1",
                          "--learning_rate", "1e-3", "--samples", "2"), mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "对话检查通过" in out.stdout or "conversations" in out.stdout.lower()
    assert "0.51M 参数" in out.stdout  # the base's shape, read from its config JSON
    summary = json.loads((tmp_path / "full_sft_64_summary.json").read_text(encoding="utf-8"))
    assert len(summary["samples"]) == 2 and summary["samples"][0].startswith("问：")
    weights = torch.load(tmp_path / "full_sft_64.pth", weights_only=True)
    start = torch.load(base, weights_only=True)
    assert set(weights) == set(start)
    assert any(not torch.equal(weights[k], start[k]) for k in weights), "SFT did not change the weights"
    # the first logged loss is the base model's loss on the replies: near ln 6400 for this tiny base
    first = torch.load(tmp_path / "full_sft_64_resume.pth", weights_only=True)["history"]["train"][0][1]
    assert 6.0 < first < 10.0


@pytest.mark.slow
def test_sft_resumes_exactly_after_kill(base, tmp_path):
    common = ["--max_steps", "24", "--accumulation_steps", "2", "--log_interval", "2", "--save_interval", "8",
              "--learning_rate", "1e-3", "--samples", "0"]
    full, _, saved_at = kill_and_resume(lambda d, *x: sft_args(d, base, *common, *x), "full_sft_64", tmp_path)
    assert len(full["train"]) >= 24 and 0 < saved_at < 48


def test_a_bad_conversation_stops_sft_before_step_one(base, tmp_path):
    data = tmp_path / "chat.jsonl"
    good = {"conversations": [{"role": "user", "content": "写一句诗"}, {"role": "assistant", "content": "春风又绿江南岸。"}]}
    bad = {"conversations": [{"role": "user", "content": "写一句诗"}, {"role": "user", "content": "再写"}]}
    data.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [good, good, bad, good]) + "\n",
                    encoding="utf-8")
    save = tmp_path / "out"
    out = run_py(sft_args(save, base, "--data_path", str(data), "--max_steps", "1", "--save_interval", "1"),
                 mode="solutions")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"{data}:3:" in out.stderr and "Traceback" not in out.stderr
    assert not save.exists() or not any(save.iterdir())


@pytest.mark.slow
def test_sft_under_torchrun_with_two_ranks(base, tmp_path):
    out = run_py(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  *sft_args(tmp_path, base, "--max_steps", "3", "--accumulation_steps", "1", "--save_interval", "3",
                            "--log_interval", "1", "--samples", "0", "--learning_rate", "1e-3")],
                 mode="solutions", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "2 个进程" in out.stdout and "有效 batch 16" in out.stdout
    state = torch.load(tmp_path / "full_sft_64_resume.pth", weights_only=True)
    assert state["world_size"] == 2
