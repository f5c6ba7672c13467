"""MiniMindModel: token embedding, a stack of blocks, a final norm (stage 07).

The backbone turns token ids into one contextual vector per token.  It owns the RoPE tables
(computed once, as buffers that follow ``.to(device)`` but are not saved: they are a pure
function of the config) and hands each layer the rows of the current positions.  With a KV
cache, the new tokens' positions start where the cache ends.
Lesson: notebooks/07_model.ipynb.  Check: ``python -m workbook check 07``.
"""
from __future__ import annotations

import torch
from torch import nn

from workbook.config import MiniMindConfig
from workbook.model.attention import KVCache
from workbook.model.block import MiniMindBlock
from workbook.model.moe import MOEFeedForward
from workbook.model.norm import RMSNorm
from workbook.model.rope import precompute_freqs_cis


class MiniMindModel(nn.Module):
    """hidden = norm(layers(dropout(embed_tokens(input_ids))))

    Submodules: ``embed_tokens`` (vocab -> hidden), ``dropout``, ``layers`` (num_hidden_layers
    MiniMindBlock), ``norm`` (RMSNorm).  Buffers ``freqs_cos``/``freqs_sin`` (max_position_embeddings,
    head_dim), non-persistent.
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.config = config
        self.vocab_size, self.num_hidden_layers = config.vocab_size, config.num_hidden_layers
        # TODO(learner): the submodules, in this order (the names are the checkpoint keys):
        #   1. self.embed_tokens = nn.Embedding(vocab_size, hidden_size)
        #   2. self.dropout = nn.Dropout(config.dropout)
        #   3. self.layers = nn.ModuleList of num_hidden_layers MiniMindBlock(layer_id, config)
        #   4. self.norm = RMSNorm(hidden_size, eps=config.rms_norm_eps)   (the final norm)
        #   5. freqs_cos, freqs_sin = self.rope_tables(); register both as buffers with
        #      persistent=False: they follow .to(device) but stay out of the state_dict
        raise NotImplementedError(
            "TODO(07 model): 在 workbook/model/minimind.py 里写 MiniMindModel.__init__，"
            "见 notebooks/07_model.ipynb")

    def rope_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (max_position_embeddings, head_dim), from the config.

        Provided (already written): stage 08 also calls it to refill the buffers after
        from_pretrained.
        """
        config = self.config
        return precompute_freqs_cis(dim=config.hidden_size // config.num_attention_heads,
                                    end=config.max_position_embeddings,
                                    rope_base=config.rope_theta, rope_scaling=config.rope_scaling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                past_key_values: list[KVCache] | None = None, use_cache: bool = False,
                **kwargs) -> tuple[torch.Tensor, list[KVCache] | None, torch.Tensor]:
        """
        Args:
            input_ids: (batch, seq) int64, the *new* tokens only when a cache is given.
            attention_mask: None, or (batch, past + seq), 1 = real token, 0 = padding.
            past_key_values: None, or one (k, v) per layer, each (batch, past, nKV, head_dim).
            use_cache: return the updated cache.
        Returns:
            hidden_states (batch, seq, hidden); presents (one (k, v) per layer, or None unless
            use_cache); aux_loss, the sum of the MoE layers' load-balancing losses (0-d; 0 if dense).
        """
        # TODO(learner):
        #   1. past_key_values = past_key_values or [None] * len(self.layers)
        #   2. start_pos = past_key_values[0][0].shape[1] if a cache is given, else 0
        #      (k is (batch, past, nKV, hd): the new tokens sit at positions start_pos, start_pos+1, ...)
        #   3. h = self.dropout(self.embed_tokens(input_ids))
        #   4. position_embeddings = (freqs_cos[start_pos:start_pos+seq], freqs_sin[...same...])
        #   5. run every layer with its own past (k, v); collect the presents
        #   6. h = self.norm(h)  — the final norm
        #   7. aux_loss = sum of layer.mlp.aux_loss over the MOEFeedForward layers, starting from a
        #      0-d float32 zero (so a dense model returns 0, not the int 0)
        #   8. return h, (presents if use_cache else None), aux_loss
        raise NotImplementedError(
            "TODO(07 model): 在 workbook/model/minimind.py 里写 MiniMindModel.forward，"
            "见 notebooks/07_model.ipynb")
