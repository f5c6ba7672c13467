"""RMSNorm: scale each token vector to unit root-mean-square, then by a learned gain (stage 01).

LayerNorm subtracts the mean and divides by the standard deviation; RMSNorm skips the mean and
the bias: cheaper, and just as good in practice.  MiniMind normalises *before* every attention
and feed-forward (pre-norm) and once more before the output head.
Lesson: notebooks/01_rmsnorm.ipynb.  Check: ``python -m workbook check 01``.
"""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x², last dim) + eps)

    Args:
        dim: size of the last dimension (hidden_size).
        eps: added under the square root so an all-zero vector does not divide by zero.
    Shapes: x (..., dim) -> (..., dim), same dtype as x.
    Parameters: ``weight`` (dim,), initialised to ones.  No bias.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        # TODO(learner): keep eps; create the parameter `weight` (ones, shape (dim,)).
        #   The name matters: MiniMind checkpoints store it as "...norm.weight".
        raise NotImplementedError(
            "TODO(01 rmsnorm): 在 workbook/model/norm.py 里写 RMSNorm.__init__，"
            "见 notebooks/01_rmsnorm.ipynb")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO(learner):
        #   1. upcast: x.float()  (why: see the notebook's fp16 experiment)
        #   2. divide by sqrt(mean of the squares over the last dim + eps)  (torch.rsqrt helps)
        #   3. cast back with .type_as(x), then multiply by self.weight
        raise NotImplementedError(
            "TODO(01 rmsnorm): 在 workbook/model/norm.py 里写 RMSNorm.forward，"
            "见 notebooks/01_rmsnorm.ipynb")
