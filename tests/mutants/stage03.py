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
               mask_after=False, ignore_mask=False):
    """The reference Attention with one mistake switched on."""
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
            if (self.flash and s > 1 and past_key_value is None
                    and (attention_mask is None or torch.all(attention_mask == 1))):
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                                     is_causal=True)
            else:
                total = k.shape[2]
                div = math.sqrt(self.head_dim) if scale == "hd" else math.sqrt(x.shape[-1])
                sc = (q @ k.transpose(-2, -1)).float() / div
                diag = {"ok": total - s + 1, "diag": total - s, "no_offset": 1}.get(causal)
                cm = torch.zeros(s, total) if diag is None else \
                    torch.triu(torch.full((s, total), float("-inf")), diagonal=diag)
                if attention_mask is not None:
                    sc = sc + (1.0 - attention_mask[:, None, None, :].float()) * -1e9
                if mask_after:
                    w = F.softmax(sc, dim=-1) + cm
                else:
                    w = F.softmax(sc + cm, dim=sm_dim)
                out = self.attn_dropout(w.type_as(q)) @ v
            out = out.transpose(1, 2).reshape(b, s, -1)
            return self.resid_dropout(self.o_proj(out)), past_kv

    return SimpleNamespace(repeat_kv=repeat_kv, Attention=Attention)


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
}
