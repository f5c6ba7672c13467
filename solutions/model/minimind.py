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

from ..config import MiniMindConfig
from .attention import KVCache
from .block import MiniMindBlock
from .moe import MOEFeedForward
from .norm import RMSNorm
from .rope import precompute_freqs_cis


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
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([MiniMindBlock(l, config) for l in range(self.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        freqs_cos, freqs_sin = self.rope_tables()
        # persistent=False: not in the state_dict (recomputed from the config), still moved by .to()
        self.register_buffer("freqs_cos", freqs_cos, persistent=False)
        self.register_buffer("freqs_sin", freqs_sin, persistent=False)

    def rope_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (max_position_embeddings, head_dim), from the config."""
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
        batch_size, seq_length = input_ids.shape
        if past_key_values is not None and len(past_key_values) != len(self.layers):
            raise ValueError(f"past_key_values has {len(past_key_values)} entries, expected one "
                             f"(k, v) per layer ({len(self.layers)})")
        past_key_values = past_key_values or [None] * len(self.layers)
        # the cache holds start_pos tokens, k: (batch, start_pos, nKV, hd)
        start_pos = past_key_values[0][0].shape[1] if past_key_values[0] is not None else 0
        if start_pos + seq_length > self.freqs_cos.shape[0]:
            raise ValueError(f"positions up to {start_pos + seq_length} exceed "
                             f"max_position_embeddings ({self.freqs_cos.shape[0]})")

        hidden_states = self.dropout(self.embed_tokens(input_ids))
        # RoPE rows of positions start_pos .. start_pos + seq - 1, each (seq, hd)
        position_embeddings = (self.freqs_cos[start_pos:start_pos + seq_length],
                               self.freqs_sin[start_pos:start_pos + seq_length])

        presents = []
        for layer, past_key_value in zip(self.layers, past_key_values):
            hidden_states, present = layer(hidden_states, position_embeddings,
                                           past_key_value=past_key_value, use_cache=use_cache,
                                           attention_mask=attention_mask)
            presents.append(present)
        hidden_states = self.norm(hidden_states)

        # the MoE layers' aux losses add up; a zero scalar for a dense model
        aux_loss = hidden_states.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            if isinstance(layer.mlp, MOEFeedForward):
                aux_loss = aux_loss + layer.mlp.aux_loss
        return hidden_states, (presents if use_cache else None), aux_loss
