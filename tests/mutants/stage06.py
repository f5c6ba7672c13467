"""Wrong MiniMindBlocks a learner really writes, and what the check must say about each."""
from types import SimpleNamespace

from torch import nn

from workbook import _modes

_ref = _modes.reference_module("model.block")
_Ref = _ref.MiniMindBlock


def _block(forward=None, init=None):
    attrs = {}
    if forward is not None:
        attrs["forward"] = forward
    if init is not None:
        attrs["__init__"] = init
    return SimpleNamespace(MiniMindBlock=type("MiniMindBlock", (_Ref,), attrs))


def _post_norm(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    a, kv = self.self_attn(x, pe, past_key_value, use_cache, attention_mask)
    h = self.input_layernorm(x + a)
    return self.post_attention_layernorm(h + self.mlp(h)), kv


def _no_attn_residual(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    h, kv = self.self_attn(self.input_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    return h + self.mlp(self.post_attention_layernorm(h)), kv


def _no_mlp_residual(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    a, kv = self.self_attn(self.input_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    return self.mlp(self.post_attention_layernorm(x + a)), kv


def _same_norm(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    a, kv = self.self_attn(self.input_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    h = x + a
    return h + self.mlp(self.input_layernorm(h)), kv


def _parallel(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    a, kv = self.self_attn(self.input_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    return x + a + self.mlp(self.post_attention_layernorm(x)), kv


def _in_place(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    a, kv = self.self_attn(self.input_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    x += a
    x += self.mlp(self.post_attention_layernorm(x))
    return x, kv


def _mask_dropped(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    return _Ref.forward(self, x, pe, past_key_value, use_cache, None)


def _cache_dropped(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    out, kv = _Ref.forward(self, x, pe, None, use_cache, attention_mask)
    return out, kv


def _pre_and_post_norm(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    # pre-norm inputs, and the sums normalised as well
    a, kv = self.self_attn(self.input_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    h = self.input_layernorm(x + a)
    return self.post_attention_layernorm(h + self.mlp(self.post_attention_layernorm(h))), kv


def _residual_normed(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    # x is overwritten by its normalised value, so the residual adds norm(x)
    x = self.input_layernorm(x)
    a, kv = self.self_attn(x, pe, past_key_value, use_cache, attention_mask)
    h = self.post_attention_layernorm(x + a)
    return h + self.mlp(h), kv


def _residual_normed_attn(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    xn = self.input_layernorm(x)
    a, kv = self.self_attn(xn, pe, past_key_value, use_cache, attention_mask)
    h = xn + a
    return h + self.mlp(self.post_attention_layernorm(h)), kv


def _norms_swapped(self, x, pe, past_key_value=None, use_cache=False, attention_mask=None):
    a, kv = self.self_attn(self.post_attention_layernorm(x), pe, past_key_value, use_cache, attention_mask)
    h = x + a
    return h + self.mlp(self.input_layernorm(h)), kv


def _shared_norm_init(self, layer_id, config):
    _Ref.__init__(self, layer_id, config)
    norm = _modes.reference_module("model.norm").RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
    self.input_layernorm = self.post_attention_layernorm = norm


def _default_eps_init(self, layer_id, config):
    _Ref.__init__(self, layer_id, config)
    norm = _modes.reference_module("model.norm").RMSNorm
    self.input_layernorm = norm(config.hidden_size)
    self.post_attention_layernorm = norm(config.hidden_size)


def _renamed_init(self, layer_id, config):
    _Ref.__init__(self, layer_id, config)
    self.attn_norm = self.input_layernorm
    del self.input_layernorm
    self.input_layernorm = self.attn_norm


def _always_dense_init(self, layer_id, config):
    nn.Module.__init__(self)
    ff = _modes.reference_module("model.feedforward").FeedForward
    self.layer_id = layer_id
    self.self_attn = _modes.reference_module("model.attention").Attention(config)
    norm = _modes.reference_module("model.norm").RMSNorm
    self.input_layernorm = norm(config.hidden_size, eps=config.rms_norm_eps)
    self.post_attention_layernorm = norm(config.hidden_size, eps=config.rms_norm_eps)
    self.mlp = ff(config)


MUTANTS = {
    "post_norm": (_block(_post_norm), "post-norm"),
    "pre_and_post_norm": (_block(_pre_and_post_norm), "post-norm"),
    "residual_on_normed_input": (_block(_residual_normed), "两个子层都把归一化之后的 norm(x) 加回去了"),
    "residual_on_normed_input_attn": (_block(_residual_normed_attn), "注意力子层把归一化之后的 norm(x) 加回去了"),
    "norms_swapped": (_block(_norms_swapped), "用反了"),
    "one_norm_object_shared": (_block(init=_shared_norm_init), "同一个 RMSNorm 对象"),
    "eps_not_from_config": (_block(init=_default_eps_init), "两个 RMSNorm 都没有用 config.rms_norm_eps"),
    "no_attn_residual": (_block(_no_attn_residual), "注意力子层少了残差连接"),
    "no_mlp_residual": (_block(_no_mlp_residual), "MLP 子层少了残差连接"),
    "same_norm_twice": (_block(_same_norm), "post_attention_layernorm"),
    "parallel_block": (_block(_parallel), "并行式"),
    "in_place_residual": (_block(_in_place), "in-place"),
    "mask_not_passed": (_block(_mask_dropped), "attention_mask"),
    "cache_not_passed": (_block(_cache_dropped), "KV cache"),
    "norm_renamed": (_block(init=_renamed_init), "attn_norm"),
    "moe_ignored": (_block(init=_always_dense_init), "MOEFeedForward"),
}
