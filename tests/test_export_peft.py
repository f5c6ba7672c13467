"""``export-hf --lora``: a workbook LoRA adapter as a PEFT folder on the exported Llama.

A tiny MiniMind saved as training saves it, a LoRA adapter on it (B random, so the comparison is not
0 = 0) saved by ``save_lora``; ``export-hf --llama --dtype float32 --lora`` writes the base and
``OUT/adapter``.  PEFT on the Llama export gives the workbook's logits, and PEFT's
``merge_and_unload`` the weights of the workbook's ``merge_lora``.
"""
from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import run_py
from workbook import _modes
from workbook.train.checkpoint import load_weights, save_weights, write_config

import peft  # noqa: E402

lora = _modes.reference_module("model.lora")
MiniMindConfig = _modes.reference_module("config").MiniMindConfig
MiniMindForCausalLM = _modes.reference_module("model.causal_lm").MiniMindForCausalLM
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400, max_position_embeddings=512)
RANK = 4


def _ours(pth, adapter=None):
    model = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    load_weights(model, pth)
    if adapter is not None:
        lora.apply_lora(model, rank=RANK)
        lora.load_lora(model, adapter)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peft")
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    pth = save_weights(model, tmp / "full_sft_64.pth")
    write_config(model.config, tmp / "full_sft_64_config.json")
    model = _ours(pth)
    lora.apply_lora(model, rank=RANK)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "lora", None), torch.nn.Module):
                m.lora.B.weight.copy_(torch.randn(m.lora.B.weight.shape, generator=g) * 0.05)
    adapter = tmp / "lora_identity_64.pth"
    lora.save_lora(model, adapter)
    out = tmp / "hf"
    proc = run_py(["-m", "workbook", "export-hf", str(pth), str(out), "--llama", "--dtype", "float32",
                   "--lora", str(adapter)], mode="solutions", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PeftModel.from_pretrained" in proc.stdout
    return pth, adapter, out


def _probe():
    return torch.randint(3, TINY["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(7))


def test_the_adapter_config_is_the_workbooks_lora(exported):
    _, _, out = exported
    config = json.loads((out / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == RANK
    assert config["target_modules"] == ["o_proj", "q_proj"] and config["lora_dropout"] == 0.0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_peft_on_the_llama_export_gives_the_workbooks_logits_and_merge(exported):
    pth, adapter, out = exported
    from transformers import AutoModelForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    theirs = peft.PeftModel.from_pretrained(llama, out / "adapter").eval()
    ours = _ours(pth, adapter)
    x = _probe()
    with torch.no_grad():
        assert (theirs(x).logits - ours(x).logits).abs().max().item() <= 1e-6
    merged = theirs.merge_and_unload()
    lora.merge_lora(ours)
    sd = ours.state_dict()
    worst = max((merged.state_dict()[k] - sd[k]).abs().max().item() for k in merged.state_dict() if k in sd)
    assert worst <= 1e-5


def test_a_file_that_is_not_an_adapter_is_refused_before_anything_is_written(exported, tmp_path):
    pth, _, _ = exported
    out = tmp_path / "hf"
    proc = run_py(["-m", "workbook", "export-hf", str(pth), str(out), "--llama", "--lora", str(pth)],
                  mode="solutions", timeout=300)
    assert proc.returncode == 2 and "不是 LoRA 的键" in proc.stderr and not out.exists()
    proc = run_py(["-m", "workbook", "export-hf", str(pth), str(out), "--lora", str(tmp_path / "missing.pth")],
                  mode="solutions", timeout=300)
    assert proc.returncode == 2 and "文件不存在" in proc.stderr and not out.exists()


def test_the_folder_carries_a_model_card_whose_snippet_runs_and_a_complete_generation_config(exported):
    import re

    _, _, out = exported
    generation = json.loads((out / "generation_config.json").read_text(encoding="utf-8"))
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 0)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "no default system line" in card and "## PEFT" in card and "llama.cpp" not in card
    code = re.search(r"## transformers\n\n```python\n(.*?)```", card, re.S).group(1)
    namespace = {}
    exec(code.replace("PATH/TO/THIS/FOLDER", str(out)).replace("max_new_tokens=128", "max_new_tokens=4"), namespace)
    assert namespace["out"].shape[1] >= namespace["inputs"]["input_ids"].shape[1] + 1
