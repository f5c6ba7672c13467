"""MiniMindForCausalLM: the backbone plus a language-model head, loss and generate() (stage 08).

The head turns each final hidden vector into vocab_size logits: a score for every possible next
token.  Its weight matrix *is* the embedding matrix (weight tying): one (vocab, hidden) table
both reads tokens in and scores them out, which saves vocab·hidden parameters (13% of the 26M
model).  Training minimises the cross-entropy between the logits at position t and the token at
t + 1.  Subclassing Hugging Face's PreTrainedModel and GenerationMixin gives save_pretrained /
from_pretrained and generate() (greedy, sampling, beams) for free.
Lesson: notebooks/08_causal_lm.ipynb.  Check: ``python -m workbook check 08``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from workbook.config import MiniMindConfig
from workbook.model.attention import KVCache
from workbook.model.minimind import MiniMindModel


class MiniMindForCausalLM(PreTrainedModel, GenerationMixin):
    """logits = lm_head(model(input_ids)),  lm_head.weight is model.embed_tokens.weight

    Submodules: ``model`` (MiniMindModel), ``lm_head`` (hidden -> vocab, no bias, tied).
    """

    config_class = MiniMindConfig
    # transformers 5.x: {tied parameter: parameter it is tied to}.  save_pretrained stores the
    # pair once, from_pretrained re-ties it; both only if config.tie_word_embeddings is True.
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MiniMindConfig | None = None):
        # Provided: the transformers bookkeeping.  MiniMind always ties the embedding and the head;
        # transformers 5 honours _tied_weights_keys only when config.tie_word_embeddings is True.
        config = config if config is not None else MiniMindConfig()
        config.tie_word_embeddings = True
        super().__init__(config)
        # TODO(learner):
        #   1. self.model = MiniMindModel(config)
        #   2. self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        #   3. tie: self.model.embed_tokens.weight = self.lm_head.weight  (one Parameter, two names;
        #      the shared tensor keeps lm_head's init, so the first loss is ≈ ln(vocab_size))
        #   4. self.post_init()  — last: transformers' final set-up (it calls _init_weights below)
        raise NotImplementedError(
            "TODO(08 causal_lm): 在 workbook/model/causal_lm.py 里写 MiniMindForCausalLM.__init__，"
            "见 notebooks/08_causal_lm.ipynb")

    # --- Provided (already written): Hugging Face integration --------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        # MiniMind2 keeps PyTorch's default init (set when each layer was built); transformers'
        # default here would redraw everything from N(0, 0.02).  Only the RoPE buffers need work:
        # from_pretrained builds the model on the "meta" device, where they hold no values.
        if isinstance(module, MiniMindModel):
            cos, sin = module.rope_tables()
            module.freqs_cos.copy_(cos)
            module.freqs_sin.copy_(sin)

    # --- generate() with MiniMind's own cache --------------------------------------------------
    # MiniMind's KV cache is a plain list of (k, v) per layer, each (batch, len, nKV, hd).  In
    # transformers 5, generate() would create a DynamicCache (another layout) unless told not to;
    # with `_supports_default_dynamic_cache() -> False` it passes no cache to the first forward,
    # then simply feeds back whatever `outputs.past_key_values` we return, and slices input_ids
    # to the last token whenever use_cache is on.  So the list works unchanged.
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    @staticmethod
    def _reorder_cache(past_key_values: list[KVCache], beam_idx: torch.Tensor) -> list[KVCache]:
        # beam search: keep, for each beam, the cache of the beam it continues
        return [(k.index_select(0, beam_idx.to(k.device)), v.index_select(0, beam_idx.to(v.device)))
                for k, v in past_key_values]

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                past_key_values: list[KVCache] | None = None, use_cache: bool = False,
                logits_to_keep: int | torch.Tensor = 0, **kwargs) -> CausalLMOutputWithPast:
        """
        Args:
            input_ids: (batch, seq) int64 (only the new tokens when past_key_values is given).
            attention_mask: None, or (batch, past + seq), 1 = real token, 0 = padding.
            labels: None, or (batch, seq) int64, *unshifted* (labels[t] is token t itself);
                -100 = ignore.  The loss predicts labels[t + 1] from position t.
            past_key_values: None or one (k, v) per layer (also accepted as ``cache=``).
            use_cache: return the updated cache in ``past_key_values``.
            logits_to_keep: 0 = logits for every position; n > 0 = the last n only (generate
                uses 1: a (batch, seq, vocab) fp32 tensor is the biggest activation); a tensor =
                the positions to keep.
        Returns:
            CausalLMOutputWithPast: loss (0-d, or None without labels), logits (batch, kept,
            vocab), past_key_values, hidden_states (batch, seq, hidden, after the final norm);
            plus ``.aux_loss`` (0-d), the MoE load-balancing loss to add to ``loss`` in training.
        """
        # Provided (already written): transformers plumbing.
        if input_ids is None:
            raise ValueError("MiniMindForCausalLM needs input_ids (inputs_embeds is not supported)")
        if past_key_values is None:
            # the name some transformers 5 code paths use for the same argument
            past_key_values = kwargs.pop("cache", None)
        if isinstance(past_key_values, Cache):
            # generate() with a user-made, still empty DynamicCache: start fresh with our own list
            if past_key_values.get_seq_length() > 0:
                raise TypeError("MiniMind's KV cache is a list of (k, v) per layer, each "
                                "(batch, len, n_kv_heads, head_dim); a filled transformers Cache "
                                "cannot be used")
            past_key_values = None

        # (Provided above: the argument checks and cache normalisation that transformers'
        #  generate() needs.  From here on it is yours.)
        # TODO(learner):
        #   1. hidden_states, presents, aux_loss = self.model(input_ids=..., attention_mask=...,
        #                                                     past_key_values=..., use_cache=...)
        #   2. logits_to_keep: an int n keeps the last n positions (0 = all: slice(-0, None) is
        #      slice(0, None)); a tensor is an index.  logits = self.lm_head(hidden_states[:, kept, :])
        #   3. labels given (unshifted, -100 = ignore): position t predicts token t + 1, so
        #      loss = F.cross_entropy(logits[:, :-1] flattened, labels[:, 1:] flattened, ignore_index=-100)
        #      (raise ValueError if labels.shape != logits.shape[:2])
        #   4. output = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=presents,
        #                                      hidden_states=hidden_states); output.aux_loss = aux_loss
        raise NotImplementedError(
            "TODO(08 causal_lm): 在 workbook/model/causal_lm.py 里写 MiniMindForCausalLM.forward，"
            "见 notebooks/08_causal_lm.ipynb")
