"""python -m workbook.train.lora: only the adapters train and are saved; exact resume; torchrun.

A tiny model is pretrained for a few steps and used as the starting point (the shape comes from
the config JSON beside it); the LoRA runs train on the shipped held-out acrostic conversations."""
import pytest
import torch

from tests.helpers import ROOT, kill_and_resume, pretrain_tiny, run_py

ACROSTIC_VAL = str(ROOT / "data" / "lora_acrostic_val.jsonl.gz")
COMMON = ["--max_seq_len", "128", "--batch_size", "8", "--num_workers", "0", "--dtype", "float32",
          "--no_progress", "--val_path", ""]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A 4-step pretrained tiny model: weights and the config JSON beside them."""
    return pretrain_tiny(tmp_path_factory.mktemp("start"))


def lora_args(save_dir, start, *extra):
    return ["-m", "workbook.train.lora", "--save_dir", str(save_dir), "--from_weight", str(start),
            "--data_path", ACROSTIC_VAL, "--lora_name", "lora_acrostic", *COMMON, *extra]


def test_only_the_adapters_train_and_are_saved(start, tmp_path):
    out = run_py(lora_args(tmp_path, start, "--max_steps", "3", "--save_interval", "3", "--log_interval", "1",
                           "--learning_rate", "1e-2", "--lora_rank", "4", "--epochs", "1", "--samples", "1"),
                 mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "训练其中" in out.stdout  # the log says how much of the model trains
    adapter = torch.load(tmp_path / "lora_acrostic_64.pth", weights_only=True)
    assert adapter and all(".lora." in k for k in adapter), sorted(adapter)[:5]
    # MiniMind's rule on this config (hidden 64, 4 heads, 2 kv heads): q_proj and o_proj are square
    layers = {k.rsplit(".lora.", 1)[0] for k in adapter}
    assert layers == {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "o_proj")}
    assert all(v.shape[0] == 4 or v.shape[1] == 4 for v in adapter.values())  # rank 4
    state = torch.load(tmp_path / "lora_acrostic_64_resume.pth", weights_only=True)
    base = torch.load(start, weights_only=True)
    # the base is frozen: every base weight in the resume state is the starting weight
    for k, v in base.items():
        assert torch.equal(state["model"][k].to(v.dtype), v), f"{k} changed"
    # the optimizer holds state for the adapter parameters only
    n_opt = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
    assert n_opt == len(adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if k.endswith("B.weight")), "B never trained"


def test_compile_is_refused_with_lora(start, tmp_path):
    out = run_py(lora_args(tmp_path / "o", start, "--max_steps", "1", "--save_interval", "1", "--use_compile", "1"),
                 mode="solutions")
    assert out.returncode == 2 and "torch.compile" in out.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.slow
def test_lora_resumes_exactly_after_kill(start, tmp_path):
    # 147 conversations / batch 8 = 19 micro-steps an epoch: 3 epochs, so the run crosses epoch
    # boundaries (and the flush of a partial accumulation) before and after the kill
    common = ["--max_steps", "24", "--epochs", "3", "--accumulation_steps", "2", "--log_interval", "2",
              "--save_interval", "8", "--learning_rate", "1e-2", "--samples", "0"]
    full, _, saved_at = kill_and_resume(lambda d, *x: lora_args(d, start, *common, *x), "lora_acrostic_64", tmp_path)
    assert len(full["train"]) >= 24 and 0 < saved_at < 48


@pytest.mark.slow
def test_lora_under_torchrun_with_two_ranks(start, tmp_path):
    out = run_py(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  *lora_args(tmp_path, start, "--max_steps", "3", "--epochs", "1", "--accumulation_steps", "1",
                             "--save_interval", "3", "--log_interval", "1", "--samples", "0")],
                 mode="solutions", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "2 个进程" in out.stdout
    assert all(".lora." in k for k in torch.load(tmp_path / "lora_acrostic_64.pth", weights_only=True))
