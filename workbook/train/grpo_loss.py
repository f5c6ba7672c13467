"""GRPO: a group of samples per prompt, rewards turned into advantages, and the policy-gradient loss (stage 20).

Group Relative Policy Optimization (GRPO, DeepSeekMath 2024) needs no value model: for every prompt
the policy samples a *group* of ``G = num_generations`` completions, a reward scores each, and a
completion's advantage is how much better it did than its own group.  The loss raises the
log-probability of every token of a better-than-average completion and lowers that of a worse one,
while a KL term (the k3 estimator) holds the policy near a frozen reference.  MiniMind's
``train_grpo.py``, one update per batch of samples::

    A_i      = (r_i − mean_group) / (std_group + 1e-4),  clamped to ±10,  then normalised over the batch
    kl_t     = exp(ref_t − logp_t) − (ref_t − logp_t) − 1                     (k3, ≥ 0)
    loss_t   = −(exp(logp_t − logp_t.detach()) · A_i − β · kl_t)
    loss     = mean over completions of (Σ_t loss_t · mask_t / Σ_t mask_t)

``exp(logp − logp.detach())`` is 1 in value; its gradient is ∇logp: the REINFORCE gradient written as
PPO's ratio at its first step.  Row layout everywhere: row ``b·G + g`` is completion ``g`` of
prompt ``b`` (a group is G adjacent rows).
Lesson: notebooks/20_grpo.ipynb.  Check: ``python -m workbook check 20``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def repeat_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, num_generations: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prompt G times, each group on adjacent rows.

    input_ids, attention_mask: (B, P), left-padded prompts.  Returns two (B·G, P) tensors with row
    ``b·G + g`` = prompt b (``repeat_interleave`` along dim 0, not ``repeat``, which would put
    prompt b at rows b, b + B, b + 2B, …).  num_generations < 1 raises ValueError.
    """
    # TODO(learner):
    #   What: each prompt (row) G times in a row: rows b·G .. b·G + G − 1 all hold prompt b, for
    #   input_ids and attention_mask alike.  (B, P) -> (B·G, P).
    #   Why: generate(num_return_sequences=G) returns the G samples of a prompt on adjacent rows;
    #   the prompts, the rewards and the advantages must use the same layout, or a completion is
    #   compared with another prompt's group.
    #   Pitfall: Tensor.repeat(G, 1) tiles the whole batch (prompt b lands on rows b, b + B, …);
    #   repeat_interleave along dim 0 repeats each row in place; num_generations < 1 is a
    #   ValueError, not an empty batch.
    raise NotImplementedError(
        "TODO(20 grpo): 在 workbook/train/grpo_loss.py 里写 repeat_prompts，见 notebooks/20_grpo.ipynb")


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 on the tokens a completion really produced: up to and including its first end token.

    completion_ids: (N, R) int64, the generated ids after the prompt (anything after the first
    ``eos_token_id`` is padding of the batch).  Returns (N, R) int64 of 0/1::

        mask[i, t] = 1  if t <= first index of eos in row i   (every t when row i has no eos)

    The end token itself counts: stopping is something the policy learns.
    """
    # TODO(learner):
    #   What: a 0/1 int64 mask, 1 from position 0 up to and including the first eos_token_id of
    #   each row, 0 after it; a row without any eos is 1 everywhere.  (N, R) -> (N, R).
    #   Why: after a row stops, generate() pads it to the batch's longest completion; those tokens
    #   were never sampled by the policy and must not enter the loss.  The eos itself was sampled:
    #   it is how the model learns to stop.
    #   Pitfall: only the FIRST eos counts (later ones are padding, the pad id may be eos too);
    #   argmax of an all-False row is 0, which would keep only position 0 of a row that never
    #   stopped: give such rows the length R; the end token is inside the mask (<=, not <).
    raise NotImplementedError(
        "TODO(20 grpo): 在 workbook/train/grpo_loss.py 里写 completion_mask，见 notebooks/20_grpo.ipynb")


def completion_log_probs(logits: torch.Tensor, completion_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities of the completion tokens.

    logits: (N, K, V), any float dtype, from a forward pass over [prompt; completion] (N rows of
    length P + R) that kept at least the last R + 1 positions (MiniMind: ``logits_to_keep=R + 1``).
    completion_ids: (N, R) int64.  The logits at position P − 1 predict the first completion token,
    so the last R + 1 positions, without the very last one (it predicts past the end), line up
    with completion_ids.  Returns (N, R) float32::

        out[i, t] = log_softmax(logits[i, K − R − 1 + t].float())[completion_ids[i, t]]

    Fewer than R + 1 kept positions (K < R + 1) raises ValueError: no alignment would be right.
    """
    # TODO(learner):
    #   What: the log-probability of each completion token: keep the logits of the positions that
    #   predict the R completion tokens, log-softmax them over the vocabulary in float32, read
    #   each off at its token.  (N, K, V) and (N, R) -> (N, R) float32.
    #   Why: these are log π(token | everything before it); the loss and the KL are built on them.
    #   Pitfall: the logits at position j predict token j + 1: the last R + 1 kept positions,
    #   minus the very last one, line up with the completion (the first R, or the last R, are one
    #   off); float32 before log_softmax (bf16 keeps ~3 digits); K < R + 1 is a ValueError.
    raise NotImplementedError(
        "TODO(20 grpo): 在 workbook/train/grpo_loss.py 里写 completion_log_probs，见 notebooks/20_grpo.ipynb")


def group_advantages(rewards: torch.Tensor, num_generations: int, eps: float = 1e-4,
                     clip: float = 10.0) -> torch.Tensor:
    """Group-relative advantages, as MiniMind computes them.

    rewards: (N,) float, N = B·G, groups on adjacent rows.  Returns (N,) float32::

        A = (r − mean_g) / (std_g + eps)        mean and unbiased std over each group of G
        A = clamp(A, −clip, clip)
        A = (A − mean(A)) / (std(A) + 1e-8)     over the whole batch

    A group whose completions all scored the same gives 0 before the batch step: nothing to learn
    from it.  Needs G ≥ 2 (one sample has no spread to compare with) and rewards of shape (B·G,):
    ValueError otherwise.
    """
    # TODO(learner):
    #   What: view the rewards as (B, G); subtract each group's mean, divide by its unbiased std
    #   plus eps, clamp to ±clip, flatten, then normalise over the whole batch with its own mean
    #   and unbiased std (+ 1e-8).  (N,) -> (N,) float32.
    #   Why: the group is the baseline (no value model): a completion is good if it beat its
    #   siblings on the same prompt; eps keeps a group whose rewards are all equal from 0 / 0.
    #   Pitfall: per group, not over the batch (a hard prompt's group would be all negative);
    #   torch's .std() is already unbiased (unbiased=False / correction=0 is not MiniMind's);
    #   G < 2 or rewards not of shape (B·G,) is a ValueError; float32 out.
    raise NotImplementedError(
        "TODO(20 grpo): 在 workbook/train/grpo_loss.py 里写 group_advantages，见 notebooks/20_grpo.ipynb")


def k3_kl(policy_log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(π ‖ π_ref), per token, from log-probs of tokens sampled from π.

    policy_log_probs, ref_log_probs: (N, R) float.  Returns (N, R)::

        d = ref − logp;   kl = exp(d) − d − 1      (≥ 0, 0 only where the two agree)

    Unbiased for KL(π ‖ π_ref) in expectation over samples of π, and never negative (unlike −d).
    """
    # TODO(learner):
    #   What: d = ref − logp per token, then exp(d) − d − 1.  Same shape out.
    #   Why: −d alone (k1) is an unbiased but noisy estimate of KL(π ‖ π_ref), negative on every
    #   token the reference likes more than the policy (d > 0); adding exp(d) − 1, whose mean
    #   under π is 0, keeps it unbiased and makes every term ≥ 0 (e^x ≥ 1 + x).
    #   Pitfall: the sign of d (ref minus policy, not the other way); not d² / 2 (that is k2).
    raise NotImplementedError(
        "TODO(20 grpo): 在 workbook/train/grpo_loss.py 里写 k3_kl，见 notebooks/20_grpo.ipynb")


def grpo_loss(policy_log_probs: torch.Tensor, ref_log_probs: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, beta: float = 0.02) -> torch.Tensor:
    """MiniMind's GRPO loss (one update per batch of samples).

    policy_log_probs: (N, R) float with gradient; ref_log_probs: (N, R) float, the frozen
    reference (no gradient flows into it); advantages: (N,); mask: (N, R) of 0/1 (completion_mask).
    Returns a 0-d tensor::

        per_token = −(exp(logp − logp.detach()) · A − β · k3_kl(logp, ref))
        loss      = mean_i ( Σ_t per_token[i, t] · mask[i, t] / max(Σ_t mask[i, t], 1) )

    Each completion weighs the same, however long: a mean over each completion's tokens first,
    then over completions (not one mean over every token of the batch).
    """
    # TODO(learner):
    #   What: the per-token loss −(ratio · A − β · kl) with ratio = exp(logp − logp.detach()) and
    #   kl = k3_kl(logp, ref.detach()), A broadcast over each row's tokens; then the mean of each
    #   completion's masked tokens, then the mean over completions.  Returns a 0-d tensor.
    #   Why: the ratio is 1 in value but its gradient is ∇logp, so minimising −ratio · A raises
    #   logp where A > 0 and lowers it where A < 0 (REINFORCE); + β · kl in the loss pulls the
    #   policy back toward the reference.
    #   Pitfall: no gradient into the reference (detach it); do not detach the ratio as a whole
    #   (only the logp inside it); the sign of β · kl; each completion weighs the same (a mean per
    #   row, then over rows, not one mean over every masked token); divide by the row's mask
    #   count, at least 1.
    raise NotImplementedError(
        "TODO(20 grpo): 在 workbook/train/grpo_loss.py 里写 grpo_loss，见 notebooks/20_grpo.ipynb")
