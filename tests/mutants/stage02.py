"""Wrong RoPEs a learner really writes, and what the check must say about each."""
import math
from types import SimpleNamespace

import torch

from workbook import _modes

_ref = _modes.reference_module("model.rope")


def _precompute(*, expo=2, shift=0, interleave=False, yarn="ok", no_af=False):
    """precompute_freqs_cis with one mistake (yarn: 'ok', 'always', 'reversed')."""

    def precompute_freqs_cis(dim, end=32768, rope_base=1e6, rope_scaling=None):
        if not isinstance(dim, int) or dim <= 0 or dim % 2 or end <= 0:
            raise ValueError("bad dim/end")
        half = dim // 2
        inv = 1.0 / (rope_base ** (expo * torch.arange(half).float() / dim))
        af = 1.0
        if rope_scaling is not None:
            orig = rope_scaling.get("original_max_position_embeddings", 2048)
            fac = rope_scaling.get("factor", 16)
            af = 1.0 if no_af else rope_scaling.get("attention_factor", 1.0)
            if end / orig > 1.0 or yarn == "always":
                def inv_dim(b):
                    return dim * math.log(orig / (2 * math.pi * b)) / (2 * math.log(rope_base))
                low = max(math.floor(inv_dim(rope_scaling.get("beta_fast", 32))), 0)
                high = min(math.ceil(inv_dim(rope_scaling.get("beta_slow", 1))), half - 1)
                ramp = torch.clamp((torch.arange(half).float() - low) / max(high - low, 0.001), 0, 1)
                if yarn == "reversed":
                    ramp = 1 - ramp
                inv = inv * ((1 - ramp) + ramp / fac)
        ang = torch.outer(torch.arange(end).float() + shift, inv)
        if interleave:
            return ang.cos().repeat_interleave(2, -1) * af, ang.sin().repeat_interleave(2, -1) * af
        return torch.cat([ang.cos()] * 2, -1) * af, torch.cat([ang.sin()] * 2, -1) * af

    return precompute_freqs_cis


def _apply(rotate_half):
    def apply_rotary_pos_emb(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return ((q * cos + rotate_half(q) * sin).to(q.dtype), (k * cos + rotate_half(k) * sin).to(k.dtype))

    return apply_rotary_pos_emb


def _impl(precompute=_ref.precompute_freqs_cis, rotate_half=_ref.rotate_half):
    return SimpleNamespace(precompute_freqs_cis=precompute, rotate_half=rotate_half, apply_rotary_pos_emb=_apply(rotate_half))


def _rot_interleaved(x):
    return torch.stack((-x[..., 1::2], x[..., 0::2]), -1).flatten(-2)


def _rot_wrong_sign(x):
    h = x.shape[-1] // 2
    return torch.cat((x[..., h:], -x[..., :h]), -1)


def _no_cast_apply(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _ref.rotate_half(q) * sin, k * cos + _ref.rotate_half(k) * sin


MUTANTS = {
    # Meta-Llama style: adjacent pairs, both in the table and in the rotation
    "interleaved_table": (_impl(_precompute(interleave=True), _rot_interleaved), "interleaved"),
    # correct table, but adjacent pairs rotated
    "interleaved_rotation": (SimpleNamespace(precompute_freqs_cis=_ref.precompute_freqs_cis,
                                             apply_rotary_pos_emb=_apply(_rot_interleaved)), "interleaved"),
    "rotate_half_sign": (_impl(rotate_half=_rot_wrong_sign), "rotate_half 的符号反了"),
    "exponent_i_over_dim": (_impl(_precompute(expo=1)), "base^(-2i/dim)"),
    "positions_from_one": (_impl(_precompute(shift=1)), "位置错了一位"),
    "yarn_always": (_impl(_precompute(yarn="always")), "YaRN 用在了不该用的时候"),
    "yarn_ramp_reversed": (_impl(_precompute(yarn="reversed")), "斜坡 (ramp) 方向反了"),
    "yarn_no_attention_factor": (_impl(_precompute(no_af=True)), "attention_factor"),
    "no_cast_back": (SimpleNamespace(precompute_freqs_cis=_ref.precompute_freqs_cis,
                                     apply_rotary_pos_emb=_no_cast_apply), "bf16"),
}
