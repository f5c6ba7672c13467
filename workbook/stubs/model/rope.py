"""RoPE: rotary position embedding, with YaRN for longer contexts (stage 02).

Attention scores are dot products, and a dot product by itself knows nothing about word order.
RoPE writes the position into q and k by *rotating* them: dimension pairs (i, i + d/2) turn by the
angle ``pos * inv_freq_i``.  Because rotations compose, ``q_m · k_n`` then depends only on the
distance ``m - n``.  Low i turns fast (fine, local order), high i turns slowly (coarse, far
order).  YaRN stretches the slow dimensions by ``factor`` so a model trained on 2048 tokens can
read 16x more at inference.  The table is computed once; attention only looks rows up.
Lesson: notebooks/02_rope.ipynb.  Check: ``python -m workbook check 02``.
"""
from __future__ import annotations

import math

import torch


def precompute_freqs_cis(dim: int, end: int = 32768, rope_base: float = 1e6,
                         rope_scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos and sin tables of RoPE, one row per position.

    inv_freq_i = base^(-2i/dim),  angle[p, i] = p * inv_freq_i,  i = 0 .. dim/2 - 1
    cos = [cos(angle), cos(angle)]   (half-split layout: pair i is (i, i + dim/2), as HF Llama)

    Args:
        dim: head_dim, must be even.
        end: number of positions (max_position_embeddings).
        rope_base: the base (config.rope_theta).
        rope_scaling: None, or a YaRN dict with ``original_max_position_embeddings``, ``factor``,
            ``beta_fast``, ``beta_slow``, ``attention_factor``.  The frequencies are only
            rescaled when ``end`` exceeds ``original_max_position_embeddings``.
    Returns:
        (cos, sin), each (end, dim), float32.
    """
    # TODO(learner):
    #   1. dim must be a positive even int and end a positive int: otherwise raise ValueError
    #      (say which argument and why: RoPE rotates pairs (i, i + dim/2)).
    #   2. inv_freq_i = 1 / rope_base^(2i/dim) for i = 0 .. dim/2 - 1  (torch.arange(0, dim, 2) / dim).
    #   3. attention_factor = 1.0.  If rope_scaling is given: read its keys (defaults: orig_max 2048,
    #      factor 16, beta_fast 32, beta_slow 1, attention_factor 1.0), and ONLY IF end / orig_max > 1:
    #        inv_dim(b) = dim * ln(orig_max / (2π b)) / (2 ln rope_base)
    #        low = max(floor(inv_dim(beta_fast)), 0); high = min(ceil(inv_dim(beta_slow)), dim/2 - 1)
    #        γ_i = clamp((i - low) / max(high - low, 0.001), 0, 1)
    #        inv_freq_i *= (1 - γ_i) + γ_i / factor
    #   4. angles = outer(positions 0 .. end-1, inv_freq): (end, dim/2)
    #   5. cos = cat([cos(angles), cos(angles)], -1) * attention_factor, same for sin: (end, dim).
    #      Half-split layout: copy the whole block twice, do NOT interleave (repeat_interleave).
    raise NotImplementedError(
        "TODO(02 rope): 在 workbook/model/rope.py 里写 precompute_freqs_cis，见 notebooks/02_rope.ipynb")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1), with x1 = x[..., :d/2], x2 = x[..., d/2:].  Shapes: (..., d) -> (..., d).

    This is the 90° turn of every pair (x1_i, x2_i); RoPE is x·cos + rotate_half(x)·sin.
    """
    # TODO(learner): split the last dim into halves x1 = x[..., :d/2], x2 = x[..., d/2:];
    #   return cat((-x2, x1), dim=-1).  (Mind the sign: it is -x2 first.)
    raise NotImplementedError(
        "TODO(02 rope): 在 workbook/model/rope.py 里写 rotate_half，见 notebooks/02_rope.ipynb")


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         position_ids: torch.Tensor | None = None,
                         unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by their positions' angles.

    q' = q·cos + rotate_half(q)·sin,  k' = k·cos + rotate_half(k)·sin

    Args:
        q: (batch, seq, n_heads, head_dim).
        k: (batch, seq, n_kv_heads, head_dim).
        cos, sin: (seq, head_dim), the rows of `precompute_freqs_cis` for these positions.
        position_ids: unused; kept so the signature matches Hugging Face's.
        unsqueeze_dim: where cos/sin get a size-1 axis to broadcast over heads (1 for the
            (seq, heads) layout above).
    Returns:
        (q', k'), same shapes and dtypes as q and k.
    """
    # TODO(learner):
    #   1. check the shapes: cos, sin both (seq, head_dim); q, k 4-D with q.shape[1] == seq and
    #      q.shape[-1] == head_dim (same for k); otherwise raise ValueError naming the shapes.
    #   2. cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim): (seq, 1, hd)
    #   3. q' = q * cos + rotate_half(q) * sin, same for k  (no in-place ops on q, k)
    #   4. return them cast back to q.dtype and k.dtype (the tables are fp32).
    raise NotImplementedError(
        "TODO(02 rope): 在 workbook/model/rope.py 里写 apply_rotary_pos_emb，见 notebooks/02_rope.ipynb")
