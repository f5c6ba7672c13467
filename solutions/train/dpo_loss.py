"""DPO: per-token log-probs, one log-prob per answer, and the loss against a frozen reference (stage 16).

Direct Preference Optimization (DPO) learns from pairs of answers to one prompt: a preferred one
("chosen") and a worse one ("rejected").  It needs no reward model: the policy's log-probability
of an answer, measured against a frozen copy of the starting model (the reference), *is* the reward,
``r = beta * (log pi(answer) - log pi_ref(answer))``, and the loss asks the chosen answer's reward
to beat the rejected one's::

    loss = -logsigmoid(beta * ((log pi(c) - log pi(r)) - (log pi_ref(c) - log pi_ref(r))))

A batch is ``[chosen; rejected]`` along dim 0 (MiniMind's layout): rows ``0 .. B/2-1`` are the
chosen answers, rows ``B/2 ..`` the rejected answers of the same prompts, in the same order.
"log pi(answer)" is either the masked sum of the answer's token log-probs (the DPO paper, TRL) or
their masked mean (MiniMind): ``length_normalize`` picks one.
Lesson: notebooks/16_dpo.ipynb.  Check: ``python -m workbook check 16``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def logits_to_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The log-probability the model gives each target token.

    logits: (B, T, V), any float dtype (bf16 under autocast); labels: (B, T) int64, already
    aligned with logits: ``logits[:, t]`` predicts ``labels[:, t]`` (DPODataset did the shift).
    Returns (B, T) float32::

        out[b, t] = log_softmax(logits[b, t].float())[labels[b, t]]

    Padding positions get a value too (the label there is the pad id); the mask drops them later.
    """
    # log p over the vocabulary, in fp32 (a bf16 log-softmax is off by ~1e-2 per token, and
    # the sequence sums add those errors up); log_softmax never takes log(0): (B, T, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    # the entry of the target token: index (B, T, 1) -> (B, T, 1) -> (B, T)
    return log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def sequence_log_probs(log_probs: torch.Tensor, mask: torch.Tensor,
                       length_normalize: bool = True) -> torch.Tensor:
    """One log-probability per sequence, over the positions where mask is 1 (the answer).

    log_probs: (B, T) float (logits_to_log_probs); mask: (B, T) of 0/1 (int64 from DPODataset;
    bool or float work too).  Returns (B,) in log_probs' dtype::

        length_normalize=True  (MiniMind):      sum_t lp[t] * mask[t] / max(sum_t mask[t], 1)
        length_normalize=False (paper, TRL):    sum_t lp[t] * mask[t]   = log pi(answer | prompt)

    A row without a single answer token gives 0 in both modes (the clamp avoids 0 / 0).
    """
    mask = mask.to(log_probs.dtype)
    # log pi(answer | prompt) = the sum of the answer tokens' log-probs: (B,)
    total = (log_probs * mask).sum(dim=-1)
    if not length_normalize:
        return total
    # the mean per answer token: a long answer is not "less likely" just for being long
    return total / mask.sum(dim=-1).clamp(min=1)


def _halves(x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) rows of a [chosen; rejected] batch."""
    if x.shape[0] % 2:
        raise ValueError(f"{what}: the batch must be [chosen; rejected], an even number of rows, got {x.shape[0]}")
    half = x.shape[0] // 2
    return x[:half], x[half:]


def dpo_loss(ref_log_probs: torch.Tensor, policy_log_probs: torch.Tensor, mask: torch.Tensor,
             beta: float, length_normalize: bool = True) -> torch.Tensor:
    """The DPO loss of a [chosen; rejected] batch, a 0-d tensor.

    ref_log_probs, policy_log_probs: (B, T) per-token log-probs (logits_to_log_probs) of the
    frozen reference and of the policy on the same batch; mask: (B, T); B even, rows
    ``0 .. B/2-1`` chosen, ``B/2 ..`` rejected.  With pi = sequence_log_probs(policy, mask,
    length_normalize) and ref likewise::

        loss = mean over pairs of  -logsigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))

    Gradients flow into policy_log_probs only (the reference is computed under no_grad).
    """
    ref_c, ref_r = _halves(sequence_log_probs(ref_log_probs, mask, length_normalize), "ref_log_probs")
    pi_c, pi_r = _halves(sequence_log_probs(policy_log_probs, mask, length_normalize), "policy_log_probs")
    # how much more the policy prefers chosen over rejected than the reference does: (B/2,)
    margin = (pi_c - pi_r) - (ref_c - ref_r)
    # -log sigma(beta * margin); logsigmoid stays finite where log(sigmoid(.)) underflows to -inf
    return -F.logsigmoid(beta * margin).mean()


def implicit_rewards(ref_log_probs: torch.Tensor, policy_log_probs: torch.Tensor, mask: torch.Tensor,
                     beta: float, length_normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit reward of every answer: ``r = beta * (log pi(answer) - log pi_ref(answer))``.

    Arguments as for dpo_loss.  Returns (chosen_rewards, rejected_rewards), each (B/2,):
    ``dpo_loss == -logsigmoid(chosen_rewards - rejected_rewards).mean()``.  Not detached: call
    it under torch.no_grad() (or .detach() the result) when it is only logged.
    """
    # r = beta * log(pi / pi_ref) per sequence: (B,)
    rewards = beta * (sequence_log_probs(policy_log_probs, mask, length_normalize)
                      - sequence_log_probs(ref_log_probs, mask, length_normalize))
    return _halves(rewards, "implicit_rewards")


def make_ref_model(model: nn.Module) -> nn.Module:
    """The frozen reference for DPO: a copy of `model` as it is now, never trained.

    Returns a new module (``copy.deepcopy``: its own parameters, equal to the model's now) in
    eval mode (dropout off: the reference must give the same log-probs every time) with every
    parameter ``requires_grad=False``.  `model` itself is not touched: it stays in its mode and
    trainable.  (MiniMind builds the reference by loading the same weights a second time.)
    """
    ref = copy.deepcopy(model)  # its own tensors: the policy's updates never reach it
    ref.eval()  # dropout off: the reference log-probs of a batch are the same on every call
    ref.requires_grad_(False)  # no gradients, no optimizer state, nothing to train
    return ref
