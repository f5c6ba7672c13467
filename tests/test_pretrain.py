"""The pretrain command: exact resume after kill -9, and clear errors for bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, kill_and_resume, run_py

# the small validation split as training data keeps each run to a few seconds
SMALL_DATA = str(ROOT / "data" / "pretrain_poetry_val.jsonl.gz")
TINY = ["--data_path", SMALL_DATA, "--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--num_key_value_heads", "2", "--max_seq_len", "64", "--batch_size", "8",
        "--num_workers", "0", "--dtype", "float32", "--samples", "0", "--no_progress"]


def pretrain_args(save_dir, *extra):
    return ["-m", "workbook.train.pretrain", "--save_dir", str(save_dir), *TINY, *extra]


def history(save_dir, name="pretrain_64"):
    return torch.load(save_dir / f"{name}_resume.pth", weights_only=True)["history"]


@pytest.mark.slow
def test_resume_after_kill_reproduces_the_loss_curve(tmp_path):
    common = ["--accumulation_steps", "2", "--max_steps", "40", "--log_interval", "2",
              "--save_interval", "8", "--val_path", ""]
    full, _, saved_at = kill_and_resume(lambda d, *x: pretrain_args(d, *common, *x), "pretrain_64", tmp_path)
    # one log at micro-step 1 (the initial loss) and one every 2 micro-steps: 80 micro-steps
    assert len(full["train"]) == 41
    assert 0 < saved_at < 80


@pytest.mark.parametrize("extra, fragment", [
    (["--data_path", "nowhere.jsonl"], "--data_path：找不到数据文件 nowhere.jsonl"),
    (["--max_seq_len", "4096", "--max_position_embeddings", "2048"], "超过了 max_position_embeddings"),
    (["--save_interval", "5", "--accumulation_steps", "2"], "必须是 --accumulation_steps"),
])
def test_bad_input_is_a_clear_error(tmp_path, extra, fragment):
    out = run_py(pretrain_args(tmp_path, *extra), mode="solutions")
    assert out.returncode == 2
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_resume_from_another_config_is_refused_and_nothing_is_overwritten(tmp_path):
    common = ["--max_steps", "2", "--accumulation_steps", "1", "--save_interval", "1",
              "--val_path", ""]
    out = run_py(pretrain_args(tmp_path, *common), mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    resume = tmp_path / "pretrain_64_resume.pth"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # hidden 64 again (same file name) but 3 layers instead of 2
    bad = pretrain_args(tmp_path, *common, "--from_resume", "1")
    bad[bad.index("--num_hidden_layers") + 1] = "3"
    out = run_py(bad, mode="solutions")
    assert out.returncode == 2
    assert "num_hidden_layers=2" in out.stderr and "num_hidden_layers=3" in out.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert resume.exists()


def test_regular_line_share_counts_five_and_seven_character_couplets():
    from workbook.train.pretrain import regular_line_share

    poems = ["《静夜思》李白\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
             "《绝句》杜甫\n两个黄鹂鸣翠柳，一行白鹭上青天。\n窗含西岭千秋雪门泊东吴万里船"]
    assert regular_line_share(poems) == 0.75  # the last line has no punctuation
    assert regular_line_share(["《题》某\n晚雨霏霏，风空绕日天。"]) == 0.0  # 4 + 5 characters


def read_wandb_records(path):
    """The protobuf records of an offline run's .wandb file (a leveldb-style log: a 7-byte file
    header, then 32 KiB blocks of records, each a 7-byte header -- crc, length, type -- and data)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = Path(path).read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start, MIDDLE/LAST add
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def offline_run(wandb_dir, run_id=None):
    runs = sorted(Path(wandb_dir).glob("offline-run-*"))
    if run_id is not None:
        runs = [r for r in runs if r.name.endswith(run_id)]
    name, keys, ids = None, set(), set()
    for run in runs:
        for record in read_wandb_records(next(run.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name = record.run.display_name
                ids.add(record.run.run_id)
            elif kind == "history":
                keys |= {item.key or item.nested_key[0] for item in record.history.item}  # media: nested
    return runs, name, keys, ids


@pytest.mark.slow
def test_wandb_logs_the_whole_story_offline_and_a_resume_keeps_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in, so offline
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    val = ["--val_path", SMALL_DATA, "--eval_interval", "2", "--eval_batches", "2", "--samples", "2"]
    common = ["--accumulation_steps", "1", "--save_interval", "2", "--log_interval", "1", "--use_wandb", *val]
    out = run_py(pretrain_args(tmp_path / "out", "--max_steps", "2", *common), mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    runs, name, keys, ids = offline_run(tmp_path / "wandb")
    assert len(runs) == 1 and len(ids) == 1
    assert name == "MiniMind-Pretrain-Epoch-1-BatchSize-8-LearningRate-0.0005"
    assert {"loss", "lm_loss", "aux_loss", "lr", "tokens_per_s", "val_loss", "loss_curve", "samples"} <= keys, keys
    media = {p.parent.name for p in runs[0].rglob("files/media/*/*")}
    assert {"images", "table"} <= media
    # a resumed run continues the same wandb run (the id is kept in the resume file)
    out = run_py(pretrain_args(tmp_path / "out", "--max_steps", "4", *common, "--from_resume", "1"), mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    runs, _, _, ids_after = offline_run(tmp_path / "wandb")
    assert len(runs) == 2 and ids_after == ids
