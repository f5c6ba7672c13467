"""A trained model and a frozen partner behind the loop's ``model(input_ids, labels=...)`` call.

DPO trains a policy against a frozen reference; distillation trains a student against a frozen
teacher.  The learner's ``train_epoch`` (stage 11) knows one thing about its model: it is called
as ``model(input_ids, labels=labels)`` and returns an object with ``.loss`` and ``.aux_loss``.
:class:`Paired` keeps that contract, so the same loop, accumulation, clipping, GradScaler,
DDP and exact resume serve the two trainers unchanged:

- ``self.model`` is the trained network, a registered submodule: its parameters are the only
  ones the optimizer, the clipping, DDP and the resume file see;
- ``self.frozen`` is deliberately *not* registered (set with ``object.__setattr__``): it is not
  in ``state_dict`` (the resume file stays the size of one model), not in ``parameters()``,
  not switched to train mode by ``.train()`` (a reference or teacher with dropout must stay in
  eval), and never saved.  Each rank loads it from the same file, so DDP needs no broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import save_weights as save_model_weights


@dataclass
class PairedOutput:
    """What the loop reads: ``loss`` (the objective) and ``aux_loss`` (MoE balance, or 0)."""

    loss: torch.Tensor
    aux_loss: torch.Tensor
    parts: dict | None = None  # the objective's named parts (e.g. ce, kd), detached


class Paired(nn.Module):
    """`model` trains; `frozen` (eval, no grad, unregistered) only answers questions."""

    def __init__(self, model: nn.Module, frozen: nn.Module):
        super().__init__()
        self.model = model
        frozen.eval().requires_grad_(False)
        object.__setattr__(self, "frozen", frozen)

    def generate(self, *args, **kwargs):
        """The trained model's generate (the end-of-run samples and the grader use it)."""
        return self.model.generate(*args, **kwargs)

    @torch.no_grad()
    def frozen_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.frozen(input_ids).logits


def save_trained_weights(paired: nn.Module, path) -> None:
    """The trained model's weights only, as MiniMind saves a model (fp16, every key)."""
    save_model_weights(paired.model, path)


def frozen_from_weights(config, weights, device) -> nn.Module:
    """A MiniMindForCausalLM of `config` with `weights` loaded strictly, in eval, without grad."""
    from ..model.causal_lm import MiniMindForCausalLM
    from .checkpoint import load_weights

    model = MiniMindForCausalLM(config).to(device)
    load_weights(model, weights)
    return model.eval().requires_grad_(False)
