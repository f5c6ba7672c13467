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
    if not isinstance(dim, int) or dim <= 0 or dim % 2:
        raise ValueError(f"precompute_freqs_cis: dim (head_dim) must be a positive even integer, "
                         f"got {dim!r}; RoPE rotates pairs of dimensions (i, i + dim/2)")
    if not isinstance(end, int) or end <= 0:
        raise ValueError(f"precompute_freqs_cis: end must be a positive integer, got {end!r}")

    half = dim // 2
    # inv_freq_i = base^(-2i/dim): from 1 (i = 0, one radian per token) down to ~1/base
    inv_freq = 1.0 / (rope_base ** (torch.arange(0, dim, 2)[:half].float() / dim))
    attention_factor = 1.0
    if rope_scaling is not None:
        orig_max = rope_scaling.get("original_max_position_embeddings", 2048)
        factor = rope_scaling.get("factor", 16)
        beta_fast = rope_scaling.get("beta_fast", 32.0)
        beta_slow = rope_scaling.get("beta_slow", 1.0)
        attention_factor = rope_scaling.get("attention_factor", 1.0)
        # YaRN only when the table is longer than the training context; otherwise RoPE is exact.
        if end / orig_max > 1.0:
            # The dimension index whose wavelength fits b full turns into orig_max tokens:
            # inv_dim(b) = dim * ln(orig_max / (2π b)) / (2 ln base)
            def inv_dim(b: float) -> float:
                return dim * math.log(orig_max / (2 * math.pi * b)) / (2 * math.log(rope_base))

            # below `low`: many turns seen in training, keep; above `high`: less than one, stretch
            low = max(math.floor(inv_dim(beta_fast)), 0)
            high = min(math.ceil(inv_dim(beta_slow)), half - 1)
            # γ_i = clamp((i - low) / (high - low), 0, 1), a linear ramp between the two
            ramp = torch.clamp((torch.arange(half).float() - low) / max(high - low, 0.001), 0, 1)
            # inv_freq_i *= (1 - γ_i) + γ_i / factor
            inv_freq = inv_freq * ((1 - ramp) + ramp / factor)

    # angle[p, i] = p * inv_freq_i : (end, dim/2)
    angles = torch.outer(torch.arange(end).float(), inv_freq)
    # both halves of a pair share an angle: (end, dim)
    cos = torch.cat([torch.cos(angles), torch.cos(angles)], dim=-1) * attention_factor
    sin = torch.cat([torch.sin(angles), torch.sin(angles)], dim=-1) * attention_factor
    return cos, sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1), with x1 = x[..., :d/2], x2 = x[..., d/2:].  Shapes: (..., d) -> (..., d).

    This is the 90° turn of every pair (x1_i, x2_i); RoPE is x·cos + rotate_half(x)·sin.
    """
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


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
    if cos.shape != sin.shape or cos.dim() != 2:
        raise ValueError(f"apply_rotary_pos_emb: cos and sin must both be (seq, head_dim), "
                         f"got cos {tuple(cos.shape)} and sin {tuple(sin.shape)}")
    for name, t in (("q", q), ("k", k)):
        if t.dim() != 4 or t.shape[1] != cos.shape[0] or t.shape[-1] != cos.shape[-1]:
            raise ValueError(f"apply_rotary_pos_emb: {name} must be (batch, seq, heads, head_dim) "
                             f"matching cos/sin {tuple(cos.shape)}, got {tuple(t.shape)}; "
                             f"did you slice the table at the right positions?")
    # (seq, hd) -> (seq, 1, hd): the same angle for every head
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = q * cos + rotate_half(q) * sin
    k_embed = k * cos + rotate_half(k) * sin
    # The tables may be fp32 while q, k are bf16 (from_pretrained(dtype=bf16) keeps fp32 buffers):
    # the product is fp32, so cast back, or q, k would no longer match v's dtype.
    return q_embed.to(q.dtype), k_embed.to(k.dtype)
