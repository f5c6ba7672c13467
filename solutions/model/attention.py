"""Attention: causal self-attention with grouped-query heads, a padding mask and a KV cache (stage 03).

Each token asks a question (q), every earlier token offers a key (k) and a value (v); the answer
is the values averaged with weights softmax(q·k/√d).  "Causal": a token may only look back.
GQA: 8 query heads share 2 key/value heads, which shrinks the KV cache 4x for little quality.
KV cache: when generating one token at a time, the keys and values of the earlier tokens never
change, so we keep them (already rotated by RoPE) and only compute the new token's.
Lesson: notebooks/03_attention.ipynb.  Check: ``python -m workbook check 03``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MiniMindConfig
from .rope import apply_rotary_pos_emb

KVCache = tuple[torch.Tensor, torch.Tensor]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head n_rep times, in place: heads (a, b) -> (a, a, b, b).

    x: (batch, seq, n_kv_heads, head_dim) -> (batch, seq, n_kv_heads * n_rep, head_dim).
    Equal to ``torch.repeat_interleave(x, n_rep, dim=2)``: query head h reads kv head h // n_rep.
    """
    if n_rep == 1:
        return x
    bs, slen, n_kv_heads, head_dim = x.shape
    # (b, s, kv, 1, hd) -> (b, s, kv, n_rep, hd) without copying, then merge the two head axes
    return (x[:, :, :, None, :]
            .expand(bs, slen, n_kv_heads, n_rep, head_dim)
            .reshape(bs, slen, n_kv_heads * n_rep, head_dim))


class Attention(nn.Module):
    """Multi-head causal self-attention with GQA, RoPE and a KV cache.

    out = o_proj(softmax(q·kᵀ/√hd + causal + padding) · v)

    Parameters: ``q_proj`` H -> nH·hd, ``k_proj``/``v_proj`` H -> nKV·hd, ``o_proj`` nH·hd -> H,
    all without bias (hd = H / nH).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.n_local_heads = config.num_attention_heads
        self.n_local_kv_heads = config.num_key_value_heads
        if self.n_local_heads % self.n_local_kv_heads:
            raise ValueError(f"num_attention_heads ({self.n_local_heads}) must be divisible by "
                             f"num_key_value_heads ({self.n_local_kv_heads})")
        # n_rep query heads share one kv head
        self.n_rep = self.n_local_heads // self.n_local_kv_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, self.n_local_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.n_local_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.n_local_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_local_heads * self.head_dim, config.hidden_size, bias=False)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        # PyTorch's fused kernel (FlashAttention / memory-efficient) where it is allowed
        self.flash = hasattr(F, "scaled_dot_product_attention") and config.flash_attn

    def forward(self, x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                past_key_value: KVCache | None = None, use_cache: bool = False,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache | None]:
        """
        Args:
            x: (batch, seq, hidden).
            position_embeddings: (cos, sin), each (seq, head_dim): the RoPE rows of *these*
                tokens' positions (start_pos .. start_pos + seq - 1).
            past_key_value: None, or (k, v) from earlier steps, each (batch, past, nKV, hd).
            use_cache: return the updated (k, v).
            attention_mask: None, or (batch, past + seq), 1 = real token, 0 = padding.
        Returns:
            out (batch, seq, hidden), and (k, v) each (batch, past + seq, nKV, hd) — rotated by
            RoPE, not yet repeated for GQA — if use_cache, else None.
        """
        bsz, seq_len, _ = x.shape
        # (b, s, H) -> (b, s, heads, hd)
        xq = self.q_proj(x).view(bsz, seq_len, self.n_local_heads, self.head_dim)
        xk = self.k_proj(x).view(bsz, seq_len, self.n_local_kv_heads, self.head_dim)
        xv = self.v_proj(x).view(bsz, seq_len, self.n_local_kv_heads, self.head_dim)

        cos, sin = position_embeddings
        xq, xk = apply_rotary_pos_emb(xq, xk, cos, sin)

        # KV cache: the past keys are already rotated, so append the new ones along seq (dim 1)
        if past_key_value is not None:
            xk = torch.cat([past_key_value[0], xk], dim=1)
            xv = torch.cat([past_key_value[1], xv], dim=1)
        # store before repeat_kv: the cache keeps nKV heads, n_rep times smaller
        past_kv = (xk, xv) if use_cache else None
        if attention_mask is not None and tuple(attention_mask.shape) != (bsz, xk.shape[1]):
            raise ValueError(f"attention_mask must be (batch, past + seq) = {(bsz, xk.shape[1])}, "
                             f"got {tuple(attention_mask.shape)}; it covers the cached tokens too")

        # is_causal=True masks the square (s, s) case only: no cache, no padding, more than one token
        use_fast = (self.flash and seq_len > 1 and past_key_value is None
                    and (attention_mask is None or torch.all(attention_mask == 1)))
        if use_fast:
            # (b, s, heads, hd) -> (b, heads, s, hd), the layout SDPA expects; kv heads repeated
            output = F.scaled_dot_product_attention(
                xq.transpose(1, 2), repeat_kv(xk, self.n_rep).transpose(1, 2),
                repeat_kv(xv, self.n_rep).transpose(1, 2), attn_mask=None,
                dropout_p=self.dropout if self.training else 0.0, is_causal=True)
            # (b, heads, s, hd) -> (b, s, heads·hd)
            output = output.transpose(1, 2).reshape(bsz, seq_len, -1)
        else:
            output = self._manual(xq, xk, xv, attention_mask)

        output = self.resid_dropout(self.o_proj(output))
        return output, past_kv

    def _manual(self, xq: torch.Tensor, xk: torch.Tensor, xv: torch.Tensor,
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q·kᵀ/√hd + causal + padding)·v written out: xq (b, s, heads, hd), xk/xv
        (b, total, nKV, hd) -> (b, s, heads·hd).

        GQA group by group, without repeat_kv: kv head i serves query heads i·n_rep … i·n_rep +
        n_rep - 1, so those queries are stacked as the rows of one product with k[:, :, i], a
        strided view of the cache.  The same numbers as repeating k and v n_rep times, without
        copying them: when decoding, k and v are the whole cache, and copying it at every step
        and layer cost ~5x this attention (bench/generate_speed.py).  The probabilities keep the
        (b, heads, s, total) layout, so attn_dropout sees and draws what MiniMind's does.
        """
        bsz, seq_len, _, hd = xq.shape
        g, r = self.n_local_kv_heads, self.n_rep
        total_len = xk.shape[1]
        start_pos = total_len - seq_len
        # head h = i·n_rep + j reads kv head i: (b, s, g, r, hd) -> (b, g, r·s, hd)
        q = xq.view(bsz, seq_len, g, r, hd).permute(0, 2, 3, 1, 4).reshape(bsz, g, r * seq_len, hd)
        # one additive mask, (s, total) or (b, 1, 1, s, total).  Causal: query i sits at position
        # start_pos + i and must not see keys after it — triu(-inf, 1) on the last seq_len key
        # columns, nothing on the cached ones (a single new token sees every key: no mask at all)
        mask = None
        if seq_len > 1:
            causal = torch.full((seq_len, total_len), float("-inf"), device=xq.device)
            mask = torch.triu(causal, diagonal=start_pos + 1)
        if attention_mask is not None:
            # padding: (b, total) -> (b, 1, 1, 1, total); 0 -> -1e9 (finite: no NaN if a row is all pad)
            pad = (1.0 - attention_mask[:, None, None, None, :].float()) * -1e9
            mask = pad if mask is None else mask + pad
        # scores = q·kᵀ / √hd : (b, g, r, s, total); group i's (b, r·s, hd) @ (b, hd, total).
        # In fp32 from here: exp() of fp16/bf16 scores loses too much precision, and -1e9 would
        # overflow fp16 to -inf.  In place: the product is a fresh tensor, and matmul's backward
        # does not need it
        scores = torch.stack([q[:, i] @ xk[:, :, i].transpose(1, 2) for i in range(g)], dim=1)
        scores = scores.float().div_(math.sqrt(hd)).view(bsz, g, r, seq_len, total_len)
        if mask is not None:
            scores = scores.add_(mask)
        # the weights as MiniMind's attn_dropout sees them, (b, heads, s, total): the same memory
        probs = F.softmax(scores, dim=-1).type_as(xq).view(bsz, g * r, seq_len, total_len)
        probs = self.attn_dropout(probs).view(bsz, g, r * seq_len, total_len)
        output = torch.stack([probs[:, i] @ xv[:, :, i] for i in range(g)], dim=1)  # (b, g, r·s, hd)
        # (b, g, r, s, hd) -> (b, s, g, r, hd) -> (b, s, heads·hd)
        return output.view(bsz, g, r, seq_len, hd).permute(0, 3, 1, 2, 4).reshape(bsz, seq_len, -1)
