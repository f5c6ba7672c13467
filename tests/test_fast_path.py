"""The GPU fast path computes the same thing as the eager path (checked on the CPU).

fast = --use_compile 1 --fused_adamw 1 --moe_dense 1 on the packed data; eager = none of them.
Same seed, same data, float32: the logged losses agree to 1e-4 (measured: ~1e-6; compiled
kernels sum in another order).  The dense MoE form is also compared module by module.
"""
import pytest
import torch

from tests.helpers import ROOT, run_py
from workbook import _modes

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--num_key_value_heads", "2", "--use_moe", "1"]


def test_dense_moe_equals_the_routed_training_path():
    from workbook.train.fast import dense_moe_forward

    cfg = _modes.reference_module("config").MiniMindConfig(hidden_size=32, num_attention_heads=4,
                                                           num_key_value_heads=2, use_moe=True)
    moe = _modes.reference_module("model.moe").MOEFeedForward(cfg).train()
    x = torch.randn(3, 7, 32, requires_grad=True)
    y = moe(x)
    (y.square().sum() + moe.aux_loss).backward()
    grads = {n: p.grad.clone() for n, p in moe.named_parameters()}
    gx = x.grad.clone()
    moe.zero_grad(); x.grad = None
    y2 = dense_moe_forward(moe, x)
    (y2.square().sum() + moe.aux_loss).backward()
    assert torch.allclose(y, y2, atol=1e-5)
    assert torch.allclose(gx, x.grad, atol=1e-5)
    for n, p in moe.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-5), n


@pytest.mark.slow
def test_fast_path_gives_the_same_losses(tmp_path):
    data = tmp_path / "val.bin"
    out = run_py(["-m", "workbook.data.pack", str(ROOT / "data" / "pretrain_poetry_val.jsonl.gz"), str(data),
                  "--tokenizer", str(ROOT / "data" / "tokenizer")])
    assert out.returncode == 0, out.stderr[-2000:]
    common = ["-m", "workbook.train.pretrain", "--data_path", str(data), *TINY, "--max_seq_len", "64",
              "--batch_size", "8", "--accumulation_steps", "2", "--max_steps", "4", "--log_interval", "1",
              "--save_interval", "8", "--dtype", "float32", "--num_workers", "0", "--samples", "0",
              "--val_path", "", "--no_progress", "--seed", "3"]
    histories = {}
    for name, extra in (("eager", []), ("fast", ["--use_compile", "1", "--fused_adamw", "1", "--moe_dense", "1"])):
        save = tmp_path / name
        out = run_py([*common, "--save_dir", str(save), *extra], mode="solutions", timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        histories[name] = torch.load(save / "pretrain_64_moe_resume.pth", weights_only=True)["history"]["train"]
    eager, fast = histories["eager"], histories["fast"]
    assert len(eager) == len(fast) == 8
    for (s, a), (_, b) in zip(eager, fast):
        assert abs(a - b) < 1e-4, f"step {s}: eager {a} vs fast {b}"
