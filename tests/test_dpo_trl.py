"""The workbook's DPO (stage 16) is TRL's DPO: the same batch, the same loss, the same gradients.

TRL (1.16) computes its sigmoid loss inline in ``DPOTrainer._compute_loss``: there is no standalone
function to call, so the test drives TRL's own code path.  A tiny MiniMindForCausalLM policy and a
second, differently seeded one as the reference (so the margins are not all 0 and the loss is not
simply log 2) are turned into native ``LlamaForCausalLM`` copies with ``workbook.export_llama.to_llama``
(MiniMind's dense model is a Llama: same weights, same logits).  A ``DPOTrainer`` is built on the two
Llamas, the shipped tokenizer and three preference pairs in TRL's conversational format; its
collator makes the batch, and ``trainer.compute_loss(model, batch)`` is TRL's loss.

The workbook's side uses the reference solution: ``DPODataset`` on the same pairs must give exactly
TRL's batch, shifted (x = ids[:-1], y = ids[1:], mask = completion_mask[1:]); then
``logits_to_log_probs`` of the MiniMind models' logits and ``dpo_loss``:

- ``length_normalize=False`` (the masked sum) equals TRL's default ``loss_type="sigmoid"``;
- ``length_normalize=True`` (MiniMind's masked mean) equals TRL's ``loss_type="sigmoid_norm"``,
  which divides each side's summed log-ratio by its number of completion tokens;

both to <= 1e-6, and the policy's weight gradients equal those TRL's loss gives the Llama.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

import trl  # noqa: F401  (the dev extra: a missing trl fails here, loudly)
from datasets import Dataset
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer

from tests.helpers import ROOT
from workbook import _modes
from workbook.export_llama import to_llama

dpo_data = _modes.reference_module("data.dpo")
dpo = _modes.reference_module("train.dpo_loss")
MiniMindConfig = _modes.reference_module("config").MiniMindConfig
MiniMindForCausalLM = _modes.reference_module("model.causal_lm").MiniMindForCausalLM

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400, max_position_embeddings=512)
BETA = 0.1
ATOL = 1e-6


def _user(c):
    return [{"role": "user", "content": c}]


def _assistant(c):
    return [{"role": "assistant", "content": c}]


# TRL's conversational preference format: a shared prompt, and each side's reply
PAIRS = [
    {"prompt": _user("写一首五言绝句，题目是《春晓》。"),
     "chosen": _assistant("春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。"),
     "rejected": _assistant("春天来了。")},
    {"prompt": _user("写两句关于月亮的诗。"),
     "chosen": _assistant("床前明月光，疑是地上霜。"),
     "rejected": _assistant("月亮很圆很亮，挂在天上，照着大地，我很喜欢它。")},
    {"prompt": [{"role": "system", "content": "你是一位诗人，回答只用诗句。"}] + _user("写一句关于秋天的诗。"),
     "chosen": _assistant("停车坐爱枫林晚，霜叶红于二月花。"),
     "rejected": _assistant("秋天叶子黄了。")},
]


@pytest.fixture(scope="module")
def models():
    """(policy, reference) MiniMind models, fp32, eval (no dropout), with different weights."""
    torch.manual_seed(0)
    policy = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    torch.manual_seed(1)
    reference = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    return policy, reference


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ROOT / "data" / "tokenizer")


def _trainer(models, tokenizer, tmp_path, loss_type: str) -> DPOTrainer:
    policy, reference = models
    llama_policy, _, figures = to_llama(copy.deepcopy(policy), "float32")
    llama_ref, _, _ = to_llama(copy.deepcopy(reference), "float32")
    assert figures["logits_max_abs"] < 1e-4  # the Llama computes what the MiniMind model computes
    args = DPOConfig(output_dir=str(tmp_path), beta=BETA, loss_type=[loss_type], per_device_train_batch_size=len(PAIRS),
                     report_to=[], use_cpu=True, bf16=False, fp16=False, logging_strategy="no",
                     save_strategy="no", dataloader_num_workers=0)
    return DPOTrainer(model=llama_policy, ref_model=llama_ref, args=args, train_dataset=Dataset.from_list(PAIRS),
                      processing_class=tokenizer)


def _batch(trainer: DPOTrainer) -> dict:
    """TRL's collated batch of every pair, in order: rows [chosen_0 .. chosen_n, rejected_0 .. rejected_n]."""
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    return trainer.data_collator([{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows])


def test_dpo_dataset_is_trls_batch_shifted(models, tokenizer, tmp_path):
    batch = _batch(_trainer(models, tokenizer, tmp_path, "sigmoid"))
    ids, completion = batch["input_ids"], batch["completion_mask"]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]},
                                       ensure_ascii=False) + "\n" for p in PAIRS), encoding="utf-8")
    # TRL pads to the longest sequence of the batch; DPODataset to max_length: make them the same
    ds = dpo_data.DPODataset(path, tokenizer, max_length=ids.shape[1])
    items = [ds[i] for i in range(len(ds))]
    ours = {k: torch.cat([torch.stack([it[f"{k}_{side}"] for it in items]) for side in ("chosen", "rejected")])
            for k in ("x", "y", "mask")}
    assert torch.equal(ours["x"], ids[:, :-1])
    assert torch.equal(ours["y"], ids[:, 1:])
    # TRL's completion (the reply and its closing <|im_end|>\n) is exactly the SFT span of DPODataset
    assert torch.equal(ours["mask"], completion[:, 1:])
    assert int(completion.sum()) > 0


@pytest.mark.parametrize("length_normalize, loss_type", [(False, "sigmoid"), (True, "sigmoid_norm")])
def test_dpo_loss_and_gradients_equal_trls(models, tokenizer, tmp_path, length_normalize, loss_type):
    trainer = _trainer(models, tokenizer, tmp_path, loss_type)
    batch = _batch(trainer)
    theirs = trainer.compute_loss(trainer.model, batch)  # TRL's code path: forward, log-probs, loss
    theirs.backward()

    policy, reference = (copy.deepcopy(m) for m in models)
    x, y, mask = batch["input_ids"][:, :-1], batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]
    with torch.no_grad():
        ref_log_probs = dpo.logits_to_log_probs(reference(x).logits, y)
    policy_log_probs = dpo.logits_to_log_probs(policy(x).logits, y)
    ours = dpo.dpo_loss(ref_log_probs, policy_log_probs, mask, BETA, length_normalize=length_normalize)
    ours.backward()

    assert abs(theirs.item() - ours.item()) <= ATOL, (theirs.item(), ours.item())
    assert abs(ours.item() - 0.6931) > 1e-2  # the reference differs from the policy: a real margin
    llama = trainer.model
    for name, p in policy.named_parameters():
        g = llama.get_parameter(name).grad
        assert g is not None, name
        torch.testing.assert_close(p.grad, g, atol=ATOL, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
