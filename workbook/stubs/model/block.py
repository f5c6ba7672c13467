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

from workbook.config import MiniMindConfig
from workbook.model.attention import Attention, KVCache
from workbook.model.feedforward import FeedForward
from workbook.model.moe import MOEFeedForward
from workbook.model.norm import RMSNorm


class MiniMindBlock(nn.Module):
    """h = x + self_attn(input_layernorm(x));  out = h + mlp(post_attention_layernorm(h))

    Submodules: ``self_attn`` (Attention), ``input_layernorm`` and ``post_attention_layernorm``
    (RMSNorm(hidden, rms_norm_eps)), ``mlp`` (FeedForward, or MOEFeedForward if use_moe).
    """

    def __init__(self, layer_id: int, config: MiniMindConfig):
        super().__init__()
        self.layer_id = layer_id
        # TODO(learner): create the four submodules. Their *names* are the state_dict keys of
        #   MiniMind2 checkpoints (model.layers.0.self_attn.q_proj.weight, ...):
        #   1. self.self_attn = Attention(config)
        #   2. self.input_layernorm and self.post_attention_layernorm: two separate RMSNorm
        #      (hidden_size, eps=config.rms_norm_eps) — two norms, two sets of weights
        #   3. self.mlp: MOEFeedForward(config) if config.use_moe, else FeedForward(config)
        raise NotImplementedError(
            "TODO(06 block): 在 workbook/model/block.py 里写 MiniMindBlock.__init__，"
            "见 notebooks/06_block.ipynb")

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
        # TODO(learner): pre-norm, two residual sub-layers:
        #   1. attn_out, present = self.self_attn(input_layernorm(x), position_embeddings,
        #                                         past_key_value, use_cache, attention_mask)
        #   2. h = x + attn_out                       (add to the *un-normalised* x)
        #   3. out = h + self.mlp(post_attention_layernorm(h))
        #   4. return out, present
        #   Do not normalise the sum itself (that is post-norm), and do not change x in place.
        raise NotImplementedError(
            "TODO(06 block): 在 workbook/model/block.py 里写 MiniMindBlock.forward，"
            "见 notebooks/06_block.ipynb")
