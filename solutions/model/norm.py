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
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        # x * 1/sqrt(mean(x²) + eps), over the hidden dimension only
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Square and average in fp32: in fp16, x² overflows above |x| ≈ 256 (max 65504).
        # Cast back to x's dtype, then scale (the weight may be fp32 under autocast).
        return self.weight * self._norm(x.float()).type_as(x)
