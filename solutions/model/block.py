"""MiniMindBlock: one Transformer layer, attention then MLP, each with pre-norm and a residual (stage 06).

Pre-norm: normalise the *input* of each sub-layer and add its output back onto the untouched
residual stream, ``x + f(norm(x))``.  The stream itself is never normalised inside the stack, so
gradients reach the first layers through a clean identity path; that is why deep pre-norm models
train without warm-up tricks.  The MLP is a dense FeedForward or, with ``use_moe``, an MoE.
Lesson: notebooks/06_block.ipynb.  Check: ``python -m workbook check 06``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import MiniMindConfig
from .attention import Attention, KVCache
from .feedforward import FeedForward
from .moe import MOEFeedForward
from .norm import RMSNorm


class MiniMindBlock(nn.Module):
    """h = x + self_attn(input_layernorm(x));  out = h + mlp(post_attention_layernorm(h))

    Submodules: ``self_attn`` (Attention), ``input_layernorm`` and ``post_attention_layernorm``
    (RMSNorm(hidden, rms_norm_eps)), ``mlp`` (FeedForward, or MOEFeedForward if use_moe).
    """

    def __init__(self, layer_id: int, config: MiniMindConfig):
        super().__init__()
        self.layer_id = layer_id
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MOEFeedForward(config) if config.use_moe else FeedForward(config)

    def forward(self, hidden_states: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor],
                past_key_value: KVCache | None = None, use_cache: bool = False,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache | None]:
        """
        Args:
            hidden_states: (batch, seq, hidden).
            position_embeddings, past_key_value, use_cache, attention_mask: passed to Attention.
        Returns:
            out (batch, seq, hidden), and this layer's (k, v) cache (None unless use_cache).
        """
        residual = hidden_states
        # attention sub-layer: h = x + attn(norm(x))
        attn_out, present_key_value = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings,
            past_key_value, use_cache, attention_mask)
        hidden_states = residual + attn_out
        # MLP sub-layer: out = h + mlp(norm(h))
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, present_key_value
