"""The workbook's GRPO pieces (stage 20) against TRL's GRPOTrainer, on TRL's own batch.

TRL (1.16) has no standalone GRPO loss or advantage function: the advantages, the completion mask
and the reference log-probs are computed inline in ``GRPOTrainer._generate_and_score_completions``
(what ``_prepare_inputs`` calls during training), the loss inline in ``_compute_loss``, which runs
the model itself (``compute_loss`` is its public entry).  So the test builds a real trainer and
drives those methods, as tests/test_dpo_trl.py does for DPO:

- a tiny MiniMindForCausalLM policy and a differently seeded reference, turned into native
  ``LlamaForCausalLM`` copies (``workbook.export_llama.to_llama``); the reference is saved to a
  folder named in the policy's config, from which TRL loads its own reference model (it builds one
  whenever beta != 0);
- the configuration that matches MiniMind: ``loss_type="grpo"`` (a mean per completion, then over
  completions), ``num_iterations=1`` (old log-probs = ``logps.detach()``, so the ratio is 1 and
  epsilon clipping never acts), the same beta with TRL's k3 KL, ``temperature=1`` (TRL divides the
  logits by it before the log-softmax), ``scale_rewards="group"`` and
  ``use_bias_correction_kl=False``: TRL 1.16 defaults to True, which multiplies the k3 term by the
  ratio (DeepSeek-V3.2): the same loss value, a different KL gradient (the last test pins the
  difference down);
- two prompts, G = 4 samples each, 8 new tokens, and a fixed reward per sample; generation gets a
  ``sequence_bias`` on the end token so that some rows stop early (the mask then has work to do);
  the bias changes only which tokens are sampled, not any log-probability scored afterwards.

On that batch the reference solution reproduces TRL: ``repeat_prompts`` its prompt rows,
``completion_mask`` its mask, ``completion_log_probs`` its per-token log-probs (<= 1e-5: two
model implementations in float32), ``grpo_loss`` its loss and every weight gradient (<= 1e-6).

Advantages: TRL's ``scale_rewards="group"`` gives ``(r − mean_g) / (std_g + 1e-4)`` with the
unbiased std, which is MiniMind's first step.  MiniMind then clamps to ±10 (a no-op for G <= 101:
with the unbiased std no z-score exceeds (G − 1)/√G) and normalises over the whole batch; TRL does
neither.  So ``group_advantages(r)`` must equal TRL's advantages normalised over the batch.
"""
from __future__ import annotations

import copy

import pytest
import torch

import trl  # noqa: F401  (the dev extra: a missing trl fails here, loudly)
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from tests.helpers import ROOT
from workbook import _modes
from workbook.export_llama import to_llama

grpo = _modes.reference_module("train.grpo_loss")
MiniMindConfig = _modes.reference_module("config").MiniMindConfig
MiniMindForCausalLM = _modes.reference_module("model.causal_lm").MiniMindForCausalLM

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400, max_position_embeddings=512)
BETA = 0.1
G = 4
PROMPTS = [[{"role": "user", "content": "写一句诗。"}], [{"role": "user", "content": "写两句关于月亮的诗。"}]]
REWARDS = [1.0, 0.0, 0.5, 2.0, 0.3, 0.3, 1.2, 0.1]  # one per sample, in TRL's row order
ATOL = 1e-6


def _fixed_reward(prompts, completions, **kwargs):
    return REWARDS[:len(completions)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(trainer, TRL's scored batch, MiniMind policy, MiniMind reference)."""
    tmp = tmp_path_factory.mktemp("grpo_trl")
    torch.manual_seed(0)
    policy = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    torch.manual_seed(1)
    reference = MiniMindForCausalLM(MiniMindConfig(**TINY)).eval()
    llama, _, figures = to_llama(copy.deepcopy(policy), "float32")
    llama_ref, _, _ = to_llama(copy.deepcopy(reference), "float32")
    assert figures["logits_max_abs"] < 1e-4  # the Llama computes what the MiniMind model computes
    llama_ref.save_pretrained(tmp / "ref")
    llama.config._name_or_path = str(tmp / "ref")  # TRL loads its reference model from here
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "data" / "tokenizer")
    args = GRPOConfig(output_dir=str(tmp / "out"), beta=BETA, loss_type="grpo", num_generations=G,
                      num_iterations=1, scale_rewards="group", use_bias_correction_kl=False, temperature=1.0,
                      per_device_train_batch_size=len(PROMPTS) * G, max_completion_length=8,
                      generation_kwargs={"sequence_bias": {(tokenizer.eos_token_id,): 7.0}},
                      report_to=[], use_cpu=True, bf16=False, fp16=False, logging_strategy="no",
                      save_strategy="no", dataloader_num_workers=0)
    trainer = GRPOTrainer(model=llama, reward_funcs=_fixed_reward, args=args,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]),
                          processing_class=tokenizer)
    torch.manual_seed(3)
    # TRL's sampler hands each prompt over G times in a row
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(G)])
    return trainer, batch, policy, reference


def _sequences(batch):
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    return ids, torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)


def test_repeat_prompts_and_completion_mask_are_trls(run):
    trainer, batch, _, _ = run
    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    assert (prompt_mask == 0).any()  # left padding: the two prompts differ in length
    ids, mask = grpo.repeat_prompts(prompt_ids[::G], prompt_mask[::G], G)
    assert torch.equal(ids, prompt_ids) and torch.equal(mask, prompt_mask)
    completion_ids, theirs = batch["completion_ids"], batch["completion_mask"]
    stopped = (completion_ids == trainer.processing_class.eos_token_id).any(dim=1)
    assert stopped.any() and not stopped.all()  # rows that stop early and rows that run to the end
    assert torch.equal(grpo.completion_mask(completion_ids, trainer.processing_class.eos_token_id), theirs.long())


def test_completion_log_probs_are_trls(run):
    trainer, batch, policy, reference = run
    ids, attention = _sequences(batch)
    completion_ids = batch["completion_ids"]
    r = completion_ids.shape[1]
    counted = batch["completion_mask"].bool()
    with torch.no_grad():
        theirs, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, r)
        ours = grpo.completion_log_probs(policy(ids, attention_mask=attention, logits_to_keep=r + 1).logits,
                                         completion_ids)
        ours_ref = grpo.completion_log_probs(reference(ids, attention_mask=attention, logits_to_keep=r + 1).logits,
                                             completion_ids)
    torch.testing.assert_close(ours[counted], theirs[counted], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_ref[counted], batch["ref_per_token_logps"][counted], atol=1e-5, rtol=0)
    assert (ours - ours_ref)[counted].abs().max() > 0.1  # the reference really differs: the KL is not 0


def _loss_and_grads(trainer, batch, policy, policy_loss):
    """(TRL's loss, our loss, max |grad difference| over the weights, largest gradient)."""
    for p in trainer.model.parameters():
        p.grad = None
    theirs = trainer.compute_loss(trainer.model, batch)  # TRL's path: forward, log-probs, KL, loss
    theirs.backward()
    model = copy.deepcopy(policy)
    ids, attention = _sequences(batch)
    r = batch["completion_ids"].shape[1]
    logp = grpo.completion_log_probs(model(ids, attention_mask=attention, logits_to_keep=r + 1).logits,
                                     batch["completion_ids"])
    ours = policy_loss(logp, batch["ref_per_token_logps"], batch["advantages"], batch["completion_mask"])
    ours.backward()
    diff = max((p.grad - trainer.model.get_parameter(n).grad).abs().max().item() for n, p in model.named_parameters())
    largest = max(p.grad.abs().max().item() for p in model.parameters())
    return theirs.item(), ours.item(), diff, largest


def test_grpo_loss_and_gradients_equal_trls(run):
    trainer, batch, policy, _ = run
    theirs, ours, diff, largest = _loss_and_grads(
        trainer, batch, policy, lambda lp, ref, a, m: grpo.grpo_loss(lp, ref, a, m, beta=BETA))
    assert abs(theirs - ours) <= ATOL, (theirs, ours)
    assert diff <= ATOL and largest > 1e-2, (diff, largest)
    # TRL's advantages sum to 0 in every group, so the advantage term adds 0 to the value: the number
    # compared is the KL term's, and the advantage term is compared through the gradient
    assert batch["advantages"].view(-1, G).sum(1).abs().max() < 1e-5 and abs(ours) > 1e-3


def test_trls_default_bias_corrected_kl_changes_only_the_gradient(run):
    """TRL's default multiplies the k3 term by the ratio exp(logp − old): 1 in value, so the loss is
    the same number, but the gradient gains β · kl · ∇logp per token."""
    trainer, batch, policy, _ = run

    def corrected(lp, ref, a, m):
        ratio = torch.exp(lp - lp.detach())
        extra = grpo.k3_kl(lp, ref).detach() * (ratio - 1)  # 0 in value, kl · ∇logp in gradient
        m = m.float()
        return grpo.grpo_loss(lp, ref, a, m, beta=BETA) + BETA * ((extra * m).sum(1) / m.sum(1).clamp(min=1)).mean()

    trainer.args.use_bias_correction_kl = True
    try:
        theirs, ours, diff, _ = _loss_and_grads(trainer, batch, policy, corrected)
        _, plain, plain_diff, _ = _loss_and_grads(
            trainer, batch, policy, lambda lp, ref, a, m: grpo.grpo_loss(lp, ref, a, m, beta=BETA))
    finally:
        trainer.args.use_bias_correction_kl = False
    assert abs(theirs - ours) <= ATOL and abs(theirs - plain) <= ATOL
    assert diff <= ATOL, diff
    assert plain_diff > 1e-4, plain_diff  # MiniMind's gradient is not TRL's default one


def test_group_advantages_are_trls_group_advantages_normalised_over_the_batch(run):
    _, batch, _, _ = run
    theirs = batch["advantages"]
    rewards = torch.tensor(REWARDS)
    grouped = rewards.view(-1, G)
    assert torch.allclose(theirs, ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4))
                          .view(-1), atol=1e-6)  # TRL's group step is MiniMind's first step
    ours = grpo.group_advantages(rewards, G)
    torch.testing.assert_close(ours, (theirs - theirs.mean()) / (theirs.std() + 1e-8), atol=ATOL, rtol=0)
    assert not torch.allclose(ours, theirs, atol=1e-3)  # without the batch step they differ
