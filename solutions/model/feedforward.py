"""FeedForward: the SwiGLU MLP applied to every token on its own (stage 04).

After attention has mixed information *between* tokens, the MLP transforms each token vector
*alone*: widen from H to I, apply a non-linearity, narrow back to H.  SwiGLU uses two widening
projections: one goes through SiLU and acts as a soft gate on the other.  With I ≈ 8H/3 it costs
the same parameters as a classic 4H GELU MLP and trains better.
Lesson: notebooks/04_feedforward.ipynb.  Check: ``python -m workbook check 04``.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..config import MiniMindConfig


class FeedForward(nn.Module):
    """SwiGLU: out = dropout(down_proj(act(gate_proj(x)) * up_proj(x)))

    Parameters (all without bias, registered in this order — it fixes the state_dict order):
    ``gate_proj`` H -> I, ``down_proj`` I -> H, ``up_proj`` H -> I  (act = config.hidden_act, SiLU).
    Shapes: x (..., hidden) -> (..., hidden).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        if config.intermediate_size is None:
            raise ValueError("config.intermediate_size is None: build the config with "
                             "MiniMindConfig(...), which fills in the SwiGLU width")
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        if config.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {config.hidden_act!r} is not a known activation "
                             f"(transformers.activations.ACT2FN); MiniMind uses 'silu'")
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gate ⊙ value: silu(x W_gate) * (x W_up), both (..., I); then back to (..., H)
        return self.dropout(self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x)))
