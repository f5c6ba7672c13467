"""Checkpoints without a config JSON (MiniMind2's): the shape read off the weights, the rest from flags."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import run_py
from workbook import _modes
from workbook.train.checkpoint import save_weights
from workbook.train.shapes import ShapeError, infer_config_kwargs

MiniMindConfig = _modes.reference_module("config").MiniMindConfig
MiniMindForCausalLM = _modes.reference_module("model.causal_lm").MiniMindForCausalLM
TINY = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=160, vocab_size=6400, max_position_embeddings=512)


def _state(**kw):
    torch.manual_seed(0)
    return MiniMindForCausalLM(MiniMindConfig(**{**TINY, **kw})).state_dict()


def test_the_weights_give_width_depth_vocabulary_ffn_and_kv_heads():
    got = infer_config_kwargs(_state(), num_attention_heads=4)
    assert got == {"vocab_size": 6400, "hidden_size": 64, "num_hidden_layers": 3, "use_moe": False,
                   "intermediate_size": 160, "num_attention_heads": 4, "num_key_value_heads": 2}
    # with MiniMind's default of 8 heads the same k_proj (32 rows) means 4 kv heads of 8
    assert infer_config_kwargs(_state())["num_key_value_heads"] == 4


def test_moe_weights_say_how_many_experts():
    got = infer_config_kwargs(_state(use_moe=True, n_routed_experts=3, n_shared_experts=1), num_attention_heads=4)
    assert (got["use_moe"], got["n_routed_experts"], got["n_shared_experts"], got["intermediate_size"]) == (True, 3, 1, 160)


def test_heads_that_do_not_fit_and_foreign_weights_are_named():
    with pytest.raises(ShapeError, match="num_attention_heads"):
        infer_config_kwargs(_state(), num_attention_heads=3)
    with pytest.raises(ShapeError, match="不像 MiniMind"):
        infer_config_kwargs({"transformer.wte.weight": torch.zeros(10, 4)})


def test_eval_chat_and_export_work_without_a_config_json(tmp_path):
    model = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    pth = save_weights(model, tmp_path / "minimind2.pth")  # no *_config.json beside it
    assert not list(tmp_path.glob("*_config.json"))
    out = run_py(["-m", "workbook", "eval", str(pth), "--limit", "2", "--max_new_tokens", "4", "--show", "0",
                  "--num_attention_heads", "4"], mode="solutions", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "形状取自权重" in out.stderr and "hidden 64、3 层" in out.stderr and "4 个 q 头 / 2 个 kv 头" in out.stderr
    out = run_py(["-m", "workbook", "chat", str(pth), "--num_attention_heads", "4", "--temperature", "0",
                  "--max_new_tokens", "4"], mode="solutions", input="你好\n/exit\n", timeout=600)
    assert out.returncode == 0 and "模型：" in out.stdout, out.stderr[-2000:]
    out = run_py(["-m", "workbook", "export-hf", str(pth), str(tmp_path / "hf"), "--llama", "--num_attention_heads", "4"],
                 mode="solutions", timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    config = json.loads((tmp_path / "hf" / "config.json").read_text(encoding="utf-8"))
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (64, 3, 2)
