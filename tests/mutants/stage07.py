"""Wrong MiniMindModels a learner really writes, and what the check must say about each."""
from types import SimpleNamespace

import torch

from workbook import _modes

_Ref = _modes.reference_module("model.minimind").MiniMindModel
_MoE = _modes.reference_module("model.moe").MOEFeedForward


def _model(**attrs):
    return SimpleNamespace(MiniMindModel=type("MiniMindModel", (_Ref,), attrs))


def _persistent_init(self, config):
    _Ref.__init__(self, config)
    cos, sin = self.rope_tables()
    self.register_buffer("freqs_cos", cos)  # persistent by default
    self.register_buffer("freqs_sin", sin)


def _forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False,
             *, final_norm=True, start_zero=False, aux="sum", dropout=True, **kwargs):
    past = past_key_values or [None] * len(self.layers)
    start = 0 if (start_zero or past[0] is None) else past[0][0].shape[1]
    s = input_ids.shape[1]
    h = self.embed_tokens(input_ids)
    h = self.dropout(h) if dropout else h
    pe = (self.freqs_cos[start:start + s], self.freqs_sin[start:start + s])
    presents = []
    for layer, kv in zip(self.layers, past):
        h, p = layer(h, pe, past_key_value=kv, use_cache=use_cache, attention_mask=attention_mask)
        presents.append(p)
    if final_norm:
        h = self.norm(h)
    losses = [l.mlp.aux_loss for l in self.layers if isinstance(l.mlp, _MoE)]
    if not losses:
        total = h.new_zeros(())
    elif aux == "last":
        total = losses[-1]
    elif aux == "mean":
        total = sum(losses) / len(losses)
    else:
        total = sum(losses)
    return h, (presents if use_cache else None), total


def _variant(**opts):
    return lambda self, *a, **kw: _forward(self, *a, **kw, **opts)


def _int_aux(self, *a, **kw):
    h, p, aux = _forward(self, *a, **kw)
    return h, p, 0 if not any(isinstance(l.mlp, _MoE) for l in self.layers) else aux


def _scaled(self, input_ids, *a, **kw):
    h, p, aux = _forward(self, input_ids, *a, **kw)
    return h * self.config.hidden_size ** 0.5, p, aux


MUTANTS = {
    "persistent_rope_buffers": (_model(__init__=_persistent_init), "persistent=False"),
    "no_final_norm": (_model(forward=_variant(final_norm=False)), "final norm"),
    "start_pos_always_zero": (_model(forward=_variant(start_zero=True)), "start_pos"),
    "aux_last_layer_only": (_model(forward=_variant(aux="last")), "最后一层"),
    "aux_mean_over_layers": (_model(forward=_variant(aux="mean")), "平均"),
    "dropout_not_applied": (_model(forward=_variant(dropout=False)), "self.dropout"),
    "aux_python_int": (_model(forward=_int_aux), "0-d"),
    "embedding_scaled": (_model(forward=_scaled), "√hidden"),
}
