"""The workbook's LoRA (stage 15) is Hugging Face PEFT's LoRA on the same layers, and a merged
model is a plain MiniMind that the ecosystem loads.

PEFT gets ``LoraConfig(r=rank, lora_alpha=rank, target_modules=<the square nn.Linear's names>,
lora_dropout=0.0, bias="none")``: lora_alpha = r makes PEFT's scaling alpha/r = 1, which is
MiniMind's "no scaling".  The two models start from the same tiny MiniMindForCausalLM (fp32);
the workbook's A and B (B random, so the comparison is not 0 = 0) are copied into PEFT's
``lora_A.default`` / ``lora_B.default``.  Then: the same logits and the same gradients; the same
merged weights as PEFT's merge_and_unload; the merged model loads strictly into a fresh
MiniMindForCausalLM and, saved as training saves weights, through ``python -m workbook export-hf
--llama`` into a plain LlamaForCausalLM.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.helpers import run_py
from workbook import _modes
from workbook.train.checkpoint import load_weights, save_weights, write_config

import peft  # noqa: E402  (the dev extra: a missing peft fails here, loudly)

lora = _modes.reference_module("model.lora")
MiniMindConfig = _modes.reference_module("config").MiniMindConfig
MiniMindForCausalLM = _modes.reference_module("model.causal_lm").MiniMindForCausalLM

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400, max_position_embeddings=512)
RANK = 4
ATOL = 1e-6  # fp32: the same operations in the same order


def _probe() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(3, TINY["vocab_size"], (2, 24), generator=g)


@pytest.fixture
def pair():
    """(workbook model with adapters, PEFT model, adapted module names), equal adapter weights."""
    torch.manual_seed(0)
    ours = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    base = copy.deepcopy(ours)  # before apply_lora: its patched forwards must not be shared
    trainable = lora.apply_lora(ours, rank=RANK)
    names = [n for n, m in ours.named_modules() if isinstance(getattr(m, "lora", None), nn.Module)]
    assert names == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "o_proj")]
    assert trainable == len(names) * RANK * 2 * TINY["hidden_size"]

    config = peft.LoraConfig(r=RANK, lora_alpha=RANK, target_modules=names, lora_dropout=0.0,
                             bias="none", init_lora_weights=True)
    theirs = peft.get_peft_model(base, config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in names:
            adapter = ours.get_submodule(name).lora
            adapter.A.weight.copy_(torch.randn(adapter.A.weight.shape, generator=g) * 0.05)
            adapter.B.weight.copy_(torch.randn(adapter.B.weight.shape, generator=g) * 0.05)
            theirs.get_parameter(f"base_model.model.{name}.lora_A.default.weight").copy_(adapter.A.weight)
            theirs.get_parameter(f"base_model.model.{name}.lora_B.default.weight").copy_(adapter.B.weight)
    return ours, theirs, names


def test_peft_adapts_the_same_layers_and_trains_the_same_parameters(pair):
    ours, theirs, names = pair
    peft_layers = sorted(n[len("base_model.model."):] for n, m in theirs.named_modules()
                         if hasattr(m, "lora_A") and "default" in m.lora_A)
    assert peft_layers == sorted(names)
    assert {n: m.scaling["default"] for n, m in theirs.named_modules() if hasattr(m, "scaling")} == {
        f"base_model.model.{n}": 1.0 for n in names}
    ours_trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    theirs_trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert ours_trainable == theirs_trainable == len(names) * RANK * 2 * TINY["hidden_size"]


def test_same_logits_and_gradients_as_peft(pair):
    ours, theirs, names = pair
    x = _probe()
    for m in (ours, theirs):
        m.zero_grad(set_to_none=True)
    a, b = ours(x, labels=x), theirs(input_ids=x, labels=x)
    assert (a.logits - b.logits).abs().max().item() <= ATOL
    assert abs(a.loss.item() - b.loss.item()) <= ATOL
    a.loss.backward()
    b.loss.backward()
    for name in names:
        adapter = ours.get_submodule(name).lora
        for ab in ("A", "B"):
            mine = getattr(adapter, ab).weight.grad
            peft_grad = theirs.get_parameter(f"base_model.model.{name}.lora_{ab}.default.weight").grad
            assert mine is not None and mine.abs().max() > 0
            assert (mine - peft_grad).abs().max().item() <= ATOL, f"{name}.lora.{ab}"
    # the base weights are frozen on both sides: no gradient reaches them
    assert all(p.grad is None for n, p in ours.named_parameters() if ".lora." not in n)


def test_merged_model_equals_peft_merge_and_is_a_plain_minimind(pair, tmp_path):
    ours, theirs, _ = pair
    x = _probe()
    with torch.no_grad():
        before = ours(x).logits
    lora.merge_lora(ours)
    merged_peft = theirs.merge_and_unload()
    with torch.no_grad():
        after = ours(x).logits
        assert (after - before).abs().max().item() <= 1e-5
        assert (after - merged_peft(x).logits).abs().max().item() <= ATOL
    ours_sd, peft_sd = ours.state_dict(), merged_peft.state_dict()
    assert list(ours_sd) == list(peft_sd)
    assert max((ours_sd[k] - peft_sd[k]).abs().max().item() for k in ours_sd) <= ATOL

    # strictly into a fresh, plain MiniMindForCausalLM
    fresh = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    assert list(fresh.state_dict()) == list(ours_sd)
    fresh.load_state_dict(ours_sd, strict=True)
    with torch.no_grad():
        assert (fresh(x).logits - after).abs().max().item() <= ATOL

    # saved as training saves weights (fp16, every key, its config beside it) and exported
    pth = save_weights(ours, tmp_path / "lora_merged_64.pth")
    write_config(ours.config, tmp_path / "lora_merged_64_config.json")
    out = tmp_path / "hf"
    proc = run_py(["-m", "workbook", "export-hf", str(pth), str(out), "--llama", "--dtype", "float32"],
                  mode="solutions", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lora_merged_64_config.json" in proc.stdout

    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    llama = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(llama) is LlamaForCausalLM
    stored = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    load_weights(stored, pth)  # the fp16 weights the export read
    with torch.no_grad():
        assert (llama(x).logits - stored(x).logits).abs().max().item() <= 1e-5
        # and the fp16 rounding of the merged weights barely moves the logits
        assert (llama(x).logits - after).abs().max().item() <= 1e-2
