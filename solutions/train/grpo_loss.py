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
    if num_generations < 1:
        raise ValueError(f"num_generations must be at least 1, got {num_generations}")
    return (input_ids.repeat_interleave(num_generations, dim=0),
            attention_mask.repeat_interleave(num_generations, dim=0))


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 on the tokens a completion really produced: up to and including its first end token.

    completion_ids: (N, R) int64, the generated ids after the prompt (anything after the first
    ``eos_token_id`` is padding of the batch).  Returns (N, R) int64 of 0/1::

        mask[i, t] = 1  if t <= first index of eos in row i   (every t when row i has no eos)

    The end token itself counts: stopping is something the policy learns.
    """
    is_eos = completion_ids == eos_token_id
    n, r = completion_ids.shape
    # first eos per row; R (past the end) when the row has none, so every position counts
    first = torch.full((n,), r, dtype=torch.long, device=completion_ids.device)
    has_eos = is_eos.any(dim=1)
    first[has_eos] = is_eos.int().argmax(dim=1)[has_eos]
    positions = torch.arange(r, device=completion_ids.device).expand(n, r)
    return (positions <= first.unsqueeze(1)).long()


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
    r = completion_ids.shape[1]
    if logits.shape[1] < r + 1:
        raise ValueError(f"logits keep {logits.shape[1]} positions; a completion of {r} tokens needs "
                         f"at least {r + 1} (logits_to_keep=R + 1)")
    aligned = logits[:, -(r + 1):-1].float()  # (N, R, V): position t predicts completion token t
    return F.log_softmax(aligned, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


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
    if num_generations < 2:
        raise ValueError(f"GRPO compares the completions of one prompt: num_generations must be >= 2, "
                         f"got {num_generations}")
    if rewards.dim() != 1 or rewards.numel() % num_generations:
        raise ValueError(f"rewards must be (B*G,) with G = {num_generations}, got shape {tuple(rewards.shape)}")
    grouped = rewards.float().view(-1, num_generations)  # (B, G)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)  # unbiased, as torch's default
    advantages = ((grouped - mean) / (std + eps)).clamp(-clip, clip).view(-1)
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def k3_kl(policy_log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(π ‖ π_ref), per token, from log-probs of tokens sampled from π.

    policy_log_probs, ref_log_probs: (N, R) float.  Returns (N, R)::

        d = ref − logp;   kl = exp(d) − d − 1      (≥ 0, 0 only where the two agree)

    Unbiased for KL(π ‖ π_ref) in expectation over samples of π, and never negative (unlike −d).
    """
    d = ref_log_probs - policy_log_probs
    return torch.exp(d) - d - 1


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
    ref = ref_log_probs.detach()
    kl = k3_kl(policy_log_probs, ref)
    ratio = torch.exp(policy_log_probs - policy_log_probs.detach())  # 1 in value, ∇logp in gradient
    per_token = -(ratio * advantages.unsqueeze(1) - beta * kl)
    mask = mask.to(per_token.dtype)
    per_completion = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_completion.mean()
