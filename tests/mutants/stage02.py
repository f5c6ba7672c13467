"""Wrong RoPEs a learner really writes, and what the check must say about each."""
import math
from types import SimpleNamespace

import torch

from workbook import _modes

_ref = _modes.reference_module("model.rope")


def _precompute(*, expo=2, shift=0, interleave=False, yarn="ok", no_af=False, low_high="ok", inv_dim_form="ok",
                ramp_den_plus_one=False):
    """precompute_freqs_cis with one mistake.

    yarn: 'ok', 'always', 'reversed'; low_high: 'ok', 'ceil_floor', 'no_clamp', 'clamp_high_to_half';
    inv_dim_form: 'ok', 'no_two', 'precedence', 'no_2pi', 'betas_swapped'.
    """

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
                    if inv_dim_form == "no_two":
                        return dim * math.log(orig / (2 * math.pi * b)) / math.log(rope_base)
                    if inv_dim_form == "precedence":
                        return dim * math.log(orig / 2 * math.pi * b) / (2 * math.log(rope_base))
                    if inv_dim_form == "no_2pi":
                        return dim * math.log(orig / b) / (2 * math.log(rope_base))
                    return dim * math.log(orig / (2 * math.pi * b)) / (2 * math.log(rope_base))
                fast, slow = rope_scaling.get("beta_fast", 32), rope_scaling.get("beta_slow", 1)
                if inv_dim_form == "betas_swapped":
                    fast, slow = slow, fast
                if low_high == "ceil_floor":
                    low = max(math.ceil(inv_dim(fast)), 0)
                    high = min(math.floor(inv_dim(slow)), half - 1)
                elif low_high == "no_clamp":
                    low, high = math.floor(inv_dim(fast)), math.ceil(inv_dim(slow))
                elif low_high == "clamp_high_to_half":
                    low, high = max(math.floor(inv_dim(fast)), 0), min(math.ceil(inv_dim(slow)), half)
                else:
                    low = max(math.floor(inv_dim(fast)), 0)
                    high = min(math.ceil(inv_dim(slow)), half - 1)
                den = max(high - low, 0.001) + (1 if ramp_den_plus_one else 0)
                ramp = torch.clamp((torch.arange(half).float() - low) / den, 0, 1)
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


def _apply_checking_q_only(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    if q.dim() != 4 or q.shape[1] != cos.shape[0] or q.shape[-1] != cos.shape[-1] or cos.shape != sin.shape:
        raise ValueError(f"q {tuple(q.shape)} does not match cos {tuple(cos.shape)}")
    return _apply(_ref.rotate_half)(q, k, cos, sin, position_ids, unsqueeze_dim)


def _apply_with_assert(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    assert q.shape[1] == cos.shape[0] and k.shape[1] == cos.shape[0], "seq mismatch"
    return _apply(_ref.rotate_half)(q, k, cos, sin, position_ids, unsqueeze_dim)


def _apply_vague_error(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
    try:
        return _ref.apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim)
    except ValueError:
        raise ValueError("shape mismatch") from None


def _with_apply(apply):
    return SimpleNamespace(precompute_freqs_cis=_ref.precompute_freqs_cis, rotate_half=_ref.rotate_half,
                           apply_rotary_pos_emb=apply)


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
    # YaRN's low/high: rounding and clamping
    "yarn_floor_ceil_swapped": (_impl(_precompute(low_high="ceil_floor")), "取整方向反了"),
    "yarn_no_clamp": (_impl(_precompute(low_high="no_clamp")), "没有截断 (clamp) 到 [0, dim/2 − 1]"),
    "yarn_high_clamped_to_half": (_impl(_precompute(low_high="clamp_high_to_half")), "high 没有截断 (clamp) 到 dim/2 − 1"),
    # YaRN's inv_dim(b) = dim·ln(orig_max/(2πb)) / (2 ln base)
    "yarn_inv_dim_no_two": (_impl(_precompute(inv_dim_form="no_two")), "少了分母里的 2"),
    "yarn_inv_dim_precedence": (_impl(_precompute(inv_dim_form="precedence")), "运算优先级"),
    "yarn_inv_dim_no_2pi": (_impl(_precompute(inv_dim_form="no_2pi")), "少了 2π"),
    "yarn_betas_swapped": (_impl(_precompute(inv_dim_form="betas_swapped")), "beta_fast 和 beta_slow 用反了"),
    # a YaRN mistake no candidate names: the fallback quotes YaRN's formula, not plain RoPE's
    "yarn_unrecognised": (_impl(_precompute(ramp_den_plus_one=True)), "inv_dim(b) = dim·ln(orig_max/(2πb))"),
    # apply_rotary_pos_emb's shape validation
    "apply_no_shape_check": (_with_apply(_apply(_ref.rotate_half)), "广播 (broadcasting)"),
    "apply_checks_q_only": (_with_apply(_apply_checking_q_only), "k 也要检查"),
    "apply_assert_not_valueerror": (_with_apply(_apply_with_assert), "AssertionError"),
    "apply_error_without_shapes": (_with_apply(_apply_vague_error), "没有写出形状"),
}
