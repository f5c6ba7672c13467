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
from transformers.activations import ACT2FN  # ACT2FN["silu"] is nn.SiLU(), looked up by name

from workbook.config import MiniMindConfig


class FeedForward(nn.Module):
    """SwiGLU: out = dropout(down_proj(act(gate_proj(x)) * up_proj(x)))

    Parameters (all without bias, registered in this order — it fixes the state_dict order):
    ``gate_proj`` H -> I, ``down_proj`` I -> H, ``up_proj`` H -> I  (act = config.hidden_act, SiLU).
    Shapes: x (..., hidden) -> (..., hidden).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        # TODO(learner):
        #   1. H = config.hidden_size, I = config.intermediate_size (already filled in by
        #      MiniMindConfig: do not recompute 8H/3 here; raise ValueError if it is None).
        #   2. three nn.Linear(..., bias=False), in this order: gate_proj H->I, down_proj I->H,
        #      up_proj H->I.  The names are the checkpoint's keys.
        #   3. self.dropout = nn.Dropout(config.dropout)
        #   4. self.act_fn = ACT2FN[config.hidden_act]; an unknown name -> ValueError that says so.
        raise NotImplementedError(
            "TODO(04 feedforward): 在 workbook/model/feedforward.py 里写 FeedForward.__init__，"
            "见 notebooks/04_feedforward.ipynb")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO(learner): gate = act_fn(gate_proj(x)); value = up_proj(x);
        #   return dropout(down_proj(gate * value)).  Do not modify x in place.
        raise NotImplementedError(
            "TODO(04 feedforward): 在 workbook/model/feedforward.py 里写 FeedForward.forward，"
            "见 notebooks/04_feedforward.ipynb")
