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
    # TODO(learner):
    #   What: the log-probability of each label token: a log-softmax over the vocabulary, read off
    #   at the label.  (B, T, V) and (B, T) -> (B, T) float32.
    #   Why: DPO's "log pi(answer)" is the sum (or mean) of these over the answer.
    #   Pitfall: in float32 (bf16 logits lose the small differences DPO lives on); log_softmax, not
    #   log(softmax(...)) (an underflow to 0 gives -inf); remove only the last, gathered dim (a batch
    #   of one row must keep its batch dim); no shift: labels are already the next tokens.
    raise NotImplementedError(
        "TODO(16 dpo): 在 workbook/train/dpo_loss.py 里写 logits_to_log_probs，见 notebooks/16_dpo.ipynb")


def sequence_log_probs(log_probs: torch.Tensor, mask: torch.Tensor,
                       length_normalize: bool = True) -> torch.Tensor:
    """One log-probability per sequence, over the positions where mask is 1 (the answer).

    log_probs: (B, T) float (logits_to_log_probs); mask: (B, T) of 0/1 (int64 from DPODataset;
    bool or float work too).  Returns (B,) in log_probs' dtype::

        length_normalize=True  (MiniMind):      sum_t lp[t] * mask[t] / max(sum_t mask[t], 1)
        length_normalize=False (paper, TRL):    sum_t lp[t] * mask[t]   = log pi(answer | prompt)

    A row without a single answer token gives 0 in both modes (the clamp avoids 0 / 0).
    """
    # TODO(learner):
    #   What: one number per row: the masked sum of the token log-probs, or, with length_normalize,
    #   that sum divided by the row's own number of answer tokens.
    #   Why: the sum is the paper's / TRL's log pi(answer | prompt); the mean is MiniMind's, and does
    #   not favour short answers.
    #   Pitfall: the mask comes as int64: cast it; divide by each row's own count, never T or the
    #   whole batch's; a row without answer tokens must give 0, not 0 / 0.
    raise NotImplementedError(
        "TODO(16 dpo): 在 workbook/train/dpo_loss.py 里写 sequence_log_probs，见 notebooks/16_dpo.ipynb")


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
    # TODO(learner):
    #   What: the per-sequence log-probs of policy and reference (sequence_log_probs), split into
    #   the chosen half and the rejected half, then -logsigmoid(beta * margin) averaged over pairs,
    #   margin = (pi_c - pi_r) - (ref_c - ref_r).
    #   Why: the policy is pushed to prefer the chosen answer MORE than the reference does; beta
    #   says how far it may move from the reference.
    #   Pitfall: halves, not interleaved rows (_halves, given above); beta multiplies the whole
    #   margin, inside the logsigmoid; F.logsigmoid, not log(sigmoid) (which gives -inf for a large
    #   negative margin); detach nothing: the gradient must reach policy_log_probs.
    raise NotImplementedError(
        "TODO(16 dpo): 在 workbook/train/dpo_loss.py 里写 dpo_loss，见 notebooks/16_dpo.ipynb")


def implicit_rewards(ref_log_probs: torch.Tensor, policy_log_probs: torch.Tensor, mask: torch.Tensor,
                     beta: float, length_normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit reward of every answer: ``r = beta * (log pi(answer) - log pi_ref(answer))``.

    Arguments as for dpo_loss.  Returns (chosen_rewards, rejected_rewards), each (B/2,):
    ``dpo_loss == -logsigmoid(chosen_rewards - rejected_rewards).mean()``.  Not detached: call
    it under torch.no_grad() (or .detach() the result) when it is only logged.
    """
    # TODO(learner):
    #   What: beta * (policy's minus reference's sequence log-prob) for every row, split into
    #   (chosen, rejected) halves.
    #   Pitfall: same options as dpo_loss (length_normalize passed on); not detached: the caller
    #   decides (it logs them under no_grad, and -logsigmoid(r_c - r_r).mean() is the loss).
    raise NotImplementedError(
        "TODO(16 dpo): 在 workbook/train/dpo_loss.py 里写 implicit_rewards，见 notebooks/16_dpo.ipynb")


def make_ref_model(model: nn.Module) -> nn.Module:
    """The frozen reference for DPO: a copy of `model` as it is now, never trained.

    Returns a new module (``copy.deepcopy``: its own parameters, equal to the model's now) in
    eval mode (dropout off: the reference must give the same log-probs every time) with every
    parameter ``requires_grad=False``.  `model` itself is not touched: it stays in its mode and
    trainable.  (MiniMind builds the reference by loading the same weights a second time.)
    """
    # TODO(learner):
    #   What: an independent, frozen copy of the model as it is now, in eval mode.
    #   Why: the reference must give the same log-probs on every call and never move while the
    #   policy trains.
    #   Pitfall: a shallow copy (or the model itself) shares the parameters, so the reference would
    #   follow every update; switch and freeze the copy, never the model passed in (the policy
    #   keeps training, in its own mode).
    raise NotImplementedError(
        "TODO(16 dpo): 在 workbook/train/dpo_loss.py 里写 make_ref_model，见 notebooks/16_dpo.ipynb")
