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

from workbook.config import MiniMindConfig
from workbook.model.rope import apply_rotary_pos_emb  # yours from stage 02

KVCache = tuple[torch.Tensor, torch.Tensor]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head n_rep times, in place: heads (a, b) -> (a, a, b, b).

    x: (batch, seq, n_kv_heads, head_dim) -> (batch, seq, n_kv_heads * n_rep, head_dim).
    Equal to ``torch.repeat_interleave(x, n_rep, dim=2)``: query head h reads kv head h // n_rep.
    """
    # TODO(learner):
    #   1. n_rep == 1: return x unchanged.
    #   2. otherwise add an axis after the kv heads, x[:, :, :, None, :], expand it to n_rep,
    #      and reshape to (batch, seq, n_kv_heads * n_rep, head_dim).
    #      Not x.repeat(1, 1, n_rep, 1): that tiles (a, b, a, b) instead of (a, a, b, b).
    raise NotImplementedError(
        "TODO(03 attention): 在 workbook/model/attention.py 里写 repeat_kv，见 notebooks/03_attention.ipynb")


class Attention(nn.Module):
    """Multi-head causal self-attention with GQA, RoPE and a KV cache.

    out = o_proj(softmax(q·kᵀ/√hd + causal + padding) · v)

    Parameters: ``q_proj`` H -> nH·hd, ``k_proj``/``v_proj`` H -> nKV·hd, ``o_proj`` nH·hd -> H,
    all without bias (hd = H / nH).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        # TODO(learner):
        #   1. n_local_heads = config.num_attention_heads, n_local_kv_heads = config.num_key_value_heads;
        #      raise ValueError if the heads are not divisible by the kv heads.
        #   2. n_rep = heads // kv_heads; head_dim = hidden_size // num_attention_heads.
        #   3. q_proj H -> heads*hd, k_proj and v_proj H -> kv_heads*hd, o_proj heads*hd -> H,
        #      all nn.Linear(..., bias=False)  (the names are the checkpoint's keys).
        #   4. attn_dropout and resid_dropout = nn.Dropout(config.dropout); keep self.dropout = config.dropout.
        #   5. self.flash = hasattr(F, "scaled_dot_product_attention") and config.flash_attn
        raise NotImplementedError(
            "TODO(03 attention): 在 workbook/model/attention.py 里写 Attention.__init__，"
            "见 notebooks/03_attention.ipynb")

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
        # TODO(learner):
        #   1. project and view as (b, s, heads, hd) for q and (b, s, kv_heads, hd) for k, v.
        #   2. RoPE: q, k = apply_rotary_pos_emb(q, k, cos, sin).
        #   3. KV cache: if past_key_value, cat the past k, v in front along the seq dim (dim=1);
        #      past_kv = (k, v) if use_cache else None — rotated, NOT yet repeated.
        #      attention_mask, if given, must be (b, past + seq): else raise ValueError.
        #   4. transpose to (b, heads, total, hd); k, v go through repeat_kv(., n_rep) first.
        #   5. fast path when self.flash and seq_len > 1 and no past and (mask is None or all ones):
        #      F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
        #      is_causal=True).
        #   6. otherwise: scores = (q @ kᵀ).float() / sqrt(head_dim)  (b, heads, s, total), fp32
        #      even for bf16/fp16 inputs; add triu(-inf) with diagonal = start_pos + 1
        #      (start_pos = total - s); add (1 - mask[:, None, None, :]) * -1e9 for padding
        #      (finite: -inf would turn an all-padding row into NaN); softmax over the keys (dim=-1)
        #      BEFORE anything else touches the weights; .type_as(q); attn_dropout; @ v.
        #   7. back to (b, s, heads*hd), o_proj, resid_dropout; return (out, past_kv).
        raise NotImplementedError(
            "TODO(03 attention): 在 workbook/model/attention.py 里写 Attention.forward，"
            "见 notebooks/03_attention.ipynb")
