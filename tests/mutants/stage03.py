"""Wrong attentions a learner really writes, and what the check must say about each."""
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from workbook import _modes

_ref = _modes.reference_module("model.attention")


def _tile(x, n_rep):
    return x.repeat(1, 1, n_rep, 1)


def _attention(*, causal="ok", scale="hd", sm_dim=-1, repeat=None, cat_dim=1, cache_repeated=False,
               mask_after=False, ignore_mask=False, fast_when="ok", softmax_in="fp32", cast_back=True,
               attn_drop=True, resid_drop=True, sdpa_dropout=True, pad="ok"):
    """The reference Attention with one mistake switched on.

    fast_when: 'ok', 'ignore_flash', 'never', 'with_cache' (no past check), 'mask_none_only';
    softmax_in: 'fp32' or 'input' (scores kept in q's dtype, masks via masked_fill);
    pad: 'ok' (-1e9), 'neg_inf' (masked_fill -inf), 'zero_times_inf' ((1 - mask) * -inf).
    """
    repeat_kv = repeat or _ref.repeat_kv

    class Attention(_ref.Attention):
        def forward(self, x, position_embeddings, past_key_value=None, use_cache=False, attention_mask=None):
            b, s, _ = x.shape
            q = self.q_proj(x).view(b, s, self.n_local_heads, self.head_dim)
            k = self.k_proj(x).view(b, s, self.n_local_kv_heads, self.head_dim)
            v = self.v_proj(x).view(b, s, self.n_local_kv_heads, self.head_dim)
            q, k = _ref.apply_rotary_pos_emb(q, k, *position_embeddings)
            if cache_repeated:
                k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
            if past_key_value is not None:
                k = torch.cat([past_key_value[0], k], dim=cat_dim)
                v = torch.cat([past_key_value[1], v], dim=cat_dim)
            past_kv = (k, v) if use_cache else None
            if attention_mask is not None and tuple(attention_mask.shape) != (b, k.shape[1]):
                raise ValueError("attention_mask must be (batch, past + seq)")
            if not cache_repeated:
                k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if ignore_mask:
                attention_mask = None
            no_pad = attention_mask is None or bool(torch.all(attention_mask == 1))
            use_fast = {
                "ok": self.flash and s > 1 and past_key_value is None and no_pad,
                "ignore_flash": s > 1 and past_key_value is None and no_pad,
                "never": False,
                "with_cache": self.flash and s > 1 and no_pad,
                "mask_none_only": self.flash and s > 1 and past_key_value is None and attention_mask is None,
            }[fast_when]
            if use_fast:
                p = self.dropout if self.training and sdpa_dropout else 0.0
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            else:
                total = k.shape[2]
                div = math.sqrt(self.head_dim) if scale == "hd" else math.sqrt(x.shape[-1])
                sc = q @ k.transpose(-2, -1)
                sc = (sc.float() if softmax_in == "fp32" else sc) / div
                diag = {"ok": total - s + 1, "diag": total - s, "no_offset": 1}.get(causal)
                if softmax_in == "fp32":
                    cm = torch.zeros(s, total) if diag is None else \
                        torch.triu(torch.full((s, total), float("-inf")), diagonal=diag)
                else:  # a boolean mask keeps the scores in q's dtype
                    cm = None
                    if diag is not None:
                        sc = sc.masked_fill(torch.triu(torch.ones(s, total, dtype=torch.bool), diag), float("-inf"))
                if attention_mask is not None:
                    keep = attention_mask[:, None, None, :]
                    if pad == "neg_inf":
                        sc = sc.masked_fill(keep == 0, float("-inf"))
                    elif pad == "zero_times_inf":
                        sc = sc + (1.0 - keep.float()) * float("-inf")
                    elif softmax_in == "fp32":
                        sc = sc + (1.0 - keep.float()) * -1e9
                    else:
                        sc = sc.masked_fill(keep == 0, -1e9)
                if cm is None:
                    w = F.softmax(sc, dim=sm_dim)
                elif mask_after:
                    w = F.softmax(sc, dim=-1) + cm
                else:
                    w = F.softmax(sc + cm, dim=sm_dim)
                if cast_back:
                    w = w.type_as(q)
                if attn_drop:
                    w = self.attn_dropout(w)
                out = w @ v
            out = self.o_proj(out.transpose(1, 2).reshape(b, s, -1))
            return (self.resid_dropout(out) if resid_drop else out), past_kv

    return SimpleNamespace(repeat_kv=repeat_kv, Attention=Attention)


class _AssertKvHeads(_ref.Attention):
    def __init__(self, config):
        assert config.num_attention_heads % config.num_key_value_heads == 0
        super().__init__(config)


MUTANTS = {
    "no_causal_mask": (_attention(causal="none"), "没有因果掩码"),
    "diagonal_masked": (_attention(causal="diag"), "diagonal=1"),
    "scaled_by_hidden": (_attention(scale="H"), "sqrt(hidden_size)"),
    "softmax_wrong_axis": (_attention(sm_dim=-2), "softmax 的维度不对"),
    "kv_tiled": (_attention(repeat=_tile), "平铺 (tile)"),
    "cache_wrong_dim": (_attention(cat_dim=2), "dim=1"),
    "cache_repeated_heads": (_attention(cache_repeated=True), "repeat_kv 之后的头"),
    "new_token_positions": (_attention(causal="no_offset"), "新 token 的位置不对"),
    "mask_after_softmax": (_attention(mask_after=True), "softmax 之后"),
    "padding_ignored": (_attention(ignore_mask=True), "padding 掩码 (attention_mask) 被忽略了"),
    # the SDPA fast path: taken exactly when allowed
    "never_sdpa": (_attention(fast_when="never"), "没有调用它"),
    "flash_flag_ignored": (_attention(fast_when="ignore_flash"), "flash_attn=False 时应该走手写路径"),
    "sdpa_with_cache": (_attention(fast_when="with_cache"), "有 KV cache 时不能走 SDPA 的 is_causal=True"),
    "sdpa_only_without_mask": (_attention(fast_when="mask_none_only"), "全是 1（没有 padding）时也应该走快速路径"),
    # precision: softmax in fp32, then back to q's dtype
    "softmax_in_bf16": (_attention(softmax_in="input"), "softmax 要在 fp32 里算"),
    "no_type_as": (_attention(cast_back=False), ".type_as(q)"),
    # dropout in train mode
    "no_attn_dropout": (_attention(attn_drop=False), "attn_dropout"),
    "no_resid_dropout": (_attention(resid_drop=False), "resid_dropout"),
    "sdpa_without_dropout": (_attention(sdpa_dropout=False), "dropout_p=self.dropout"),
    # the padding mask must be a large finite negative
    "padding_neg_inf": (_attention(pad="neg_inf"), "很大的有限负数 (large finite negative, e.g. -1e9)"),
    "padding_zero_times_inf": (_attention(pad="zero_times_inf"), "0 × (-inf) = NaN"),
    "kv_heads_assert": (SimpleNamespace(repeat_kv=_ref.repeat_kv, Attention=_AssertKvHeads), "你抛的是 AssertionError"),
}
