"""GPU fast-path helpers for the pretrain command (provided infrastructure, not an exercise).

They act on any implementation through MiniMind's module names (the contract of stages 05–08),
so they speed up the learner's model as well as the reference.

- ``enable_dense_moe(model)``: MOEFeedForward's training path routes tokens with boolean masks
  (``x[idx == e]``): data-dependent shapes, a host synchronisation per expert, and a graph break
  under torch.compile.  The dense form runs every expert on every token and weights the outputs
  by the (mostly zero) routing weights: E/k times the expert FLOPs, but static shapes, no
  synchronisation, and one compiled graph.  Same outputs, same gradients.
"""
from __future__ import annotations

import types

import torch
from torch import nn


def dense_moe_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """out = Σ_e w[t, e] · experts[e](x_t) + Σ_s shared_s(x_t), with w = the top-k weights scattered
    into (tokens, n_experts) (zero for the experts a token did not choose).

    x: (batch, seq, hidden) -> (batch, seq, hidden); sets self.aux_loss like the original.
    """
    topk_idx, topk_weight, aux_loss = self.gate(x)
    flat = x.reshape(-1, x.shape[-1])
    n_tok = flat.shape[0]
    # (tokens, n_experts): each token's k weights placed at its chosen experts
    weights = torch.zeros(n_tok, len(self.experts), dtype=topk_weight.dtype, device=x.device)
    weights.scatter_add_(1, topk_idx.reshape(n_tok, -1), topk_weight.reshape(n_tok, -1))
    y = torch.zeros_like(flat, dtype=torch.promote_types(flat.dtype, weights.dtype))
    for e, expert in enumerate(self.experts):
        y = y + weights[:, e:e + 1] * expert(flat)
    y = y.view(x.shape).to(x.dtype)
    for expert in getattr(self, "shared_experts", None) or []:
        y = y + expert(x)
    self.aux_loss = aux_loss
    return y


def enable_dense_moe(model: nn.Module) -> int:
    """Switch every MOEFeedForward in `model` to the dense form; returns how many were switched."""
    n = 0
    for module in model.modules():
        if type(module).__name__ == "MOEFeedForward" and hasattr(module, "experts") and hasattr(module, "gate"):
            module.forward = types.MethodType(dense_moe_forward, module)
            n += 1
    return n


def make_optimizer(model: nn.Module, lr: float, fused: bool) -> torch.optim.AdamW:
    """AdamW with PyTorch's defaults (weight decay 0.01 on every parameter, as MiniMind), over the
    parameters that train (requires_grad): a frozen base (LoRA) gets no optimizer state.

    fused=True updates all parameters in one kernel instead of a few per tensor.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, fused=True if fused else None)
