"""Wrong MiniMindForCausalLMs a learner really writes, and what the check must say about each."""
from types import SimpleNamespace

import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from workbook import _modes

_Ref = _modes.reference_module("model.causal_lm").MiniMindForCausalLM
_Backbone = _modes.reference_module("model.minimind").MiniMindModel


def _model(**attrs):
    return SimpleNamespace(MiniMindForCausalLM=type("MiniMindForCausalLM", (_Ref,), attrs))


def _untied_init(self, config=None):
    _Ref.__init__(self, config)
    self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


def _reversed_tie_init(self, config=None):
    config.tie_word_embeddings = True
    PreTrainedModel.__init__(self, config)
    self.model = _Backbone(config)
    self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    # the tie written the wrong way round: the shared matrix keeps nn.Embedding's N(0, 1)
    self.lm_head.weight = self.model.embed_tokens.weight
    self.post_init()


def _zero_head_init(self, config=None):
    # "zero-init the output layer", a trick from other code bases; tied, it zeros the embedding too
    _Ref.__init__(self, config)
    nn.init.zeros_(self.lm_head.weight)


def _embedding_redrawn(self, module):
    # an _init_weights that "initialises the embedding the usual way": N(0, 1), on the shared matrix
    _Ref._init_weights(self, module)
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight)


def _forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None,
             use_cache=False, logits_to_keep=0, *, loss_fn=None, keep=True, pass_cache=True,
             aux=True, **kwargs):
    h, presents, aux_loss = self.model(input_ids, attention_mask=attention_mask,
                                       past_key_values=past_key_values if pass_cache else None,
                                       use_cache=use_cache if pass_cache else False)
    if keep:
        sl = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        h_kept = h[:, sl, :]
    else:
        h_kept = h
    logits = self.lm_head(h_kept)
    loss = None
    if labels is not None:
        loss = loss_fn(logits, labels)
    out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=presents, hidden_states=h)
    if aux:
        out.aux_loss = aux_loss
    return out


def _v(**opts):
    return lambda self, *a, **kw: _forward(self, *a, **kw, **opts)


def _ce(lg, lb, **kw):
    return F.cross_entropy(lg.reshape(-1, lg.size(-1)), lb.reshape(-1), **kw)


_shifted = lambda lg, lb: _ce(lg[:, :-1], lb[:, 1:], ignore_index=-100)

MUTANTS = {
    "untied_head": (_model(__init__=_untied_init), "weight tying"),
    "unshifted_loss": (_model(forward=_v(loss_fn=lambda lg, lb: _ce(lg, lb, ignore_index=-100))), "没有移位"),
    "shift_reversed": (_model(forward=_v(loss_fn=lambda lg, lb: _ce(lg[:, 1:], lb[:, :-1], ignore_index=-100))),
                       "移反了方向"),
    "ignore_index_pad_id": (_model(forward=_v(loss_fn=lambda lg, lb: _ce(lg[:, :-1], lb[:, 1:], ignore_index=0))),
                            "ignore_index 用成了"),
    "ignored_positions_trained": (_model(forward=_v(loss_fn=lambda lg, lb: _ce(lg[:, :-1], lb[:, 1:].clamp(min=0)))),
                                  "ignore_index"),
    "loss_over_all_positions": (_model(forward=_v(loss_fn=lambda lg, lb: _ce(lg[:, :-1], lb[:, 1:], ignore_index=-100,
                                                                             reduction="sum") / lb[:, 1:].numel())),
                                "分母"),
    "logits_to_keep_ignored": (_model(forward=_v(loss_fn=_shifted, keep=False)), "logits_to_keep=1 被忽略"),
    "no_aux_loss": (_model(forward=_v(loss_fn=_shifted, aux=False)), "aux_loss"),
    # initialisation (the fresh model, before any reference weight is loaded)
    "reversed_tie": (_model(__init__=_reversed_tie_init), "绑反了方向"),
    "head_zero_init": (_model(__init__=_zero_head_init), "全是 0"),
    "init_weights_skipped": (_model(_init_weights=lambda self, module: None), "RoPE 缓冲区 freqs_cos"),
    "init_weights_embedding_n01": (_model(_init_weights=_embedding_redrawn), "是你的 _init_weights 重新初始化了它"),
    "init_weights_hf_default": (_model(_init_weights=PreTrainedModel._init_weights), "N(0, 0.02)"),
    "cache_not_passed": (_model(forward=_v(loss_fn=_shifted, pass_cache=False)), "use_cache=True"),
}
