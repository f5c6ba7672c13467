"""Check for stage 13: the learner's whole package pretrains end to end.

Runs a short pretraining with the pretrain command on the shipped validation split (whatever
WORKBOOK_IMPL selects), then requires: the loss fell, the weights file has MiniMind's layout
(loads strictly into the reference model) and the trained model generates text.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import torch

from .. import _modes
from .tools import expect, fail

ARGS = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--num_key_value_heads", "2", "--max_seq_len", "64", "--batch_size", "16",
        "--accumulation_steps", "1", "--learning_rate", "3e-3", "--max_steps", "40",
        "--log_interval", "5", "--save_interval", "40", "--dtype", "float32", "--num_workers", "0",
        "--samples", "1", "--no_progress", "--eval_batches", "2"]


def check(impl, ref) -> str:
    from ..train import pretrain

    root = Path(pretrain.ROOT)
    with tempfile.TemporaryDirectory() as d:
        argv = ["--save_dir", d, "--data_path", str(root / "data" / "pretrain_poetry_val.jsonl.gz"), *ARGS]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            summary = pretrain.run(argv)
        history = torch.load(Path(d) / "pretrain_64_resume.pth", weights_only=False)["history"]["train"]
        first, last = history[0][1], history[-1][1]
        expect(last < first - 0.5, f"预训练 40 步后 loss 从 {first:.3f} 只降到 {last:.3f}（应至少降 0.5）："
                                   f"训练循环或模型里还有问题。输出的最后几行：\n{out.getvalue()[-600:]}")
        weights = torch.load(Path(d) / "pretrain_64.pth")
        cfg = _modes.reference_module("config").MiniMindConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        model = _modes.reference_module("model.causal_lm").MiniMindForCausalLM(cfg)
        try:
            model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
        except RuntimeError as e:
            fail(f"保存的权重不是 MiniMind 的格式，加载到参考模型失败：{str(e)[:300]}")
        expect(all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point()),
               "保存的权重应该是 fp16（MiniMind 发布的 .pth 就是 fp16）。")
        expect(bool(summary.get("samples")) and len(summary["samples"][0]) > 5,
               f"训练后的模型没有生成出文本：{summary.get('samples')!r}")
    return f"40 步预训练：loss {first:.2f} → {last:.2f}；权重是 MiniMind 格式；能生成文本。"
