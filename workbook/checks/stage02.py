"""Check for stage 02: RoPE (precompute_freqs_cis with YaRN, rotate_half, apply_rotary_pos_emb).

Compares the learner's tables and rotations with the reference, names the usual mistakes by
recomputing what each would output, and tests the property RoPE exists for: the score between a
rotated query and key depends only on their distance.
"""
from __future__ import annotations

import math

import torch

from .tools import close, diagnose, expect, expect_dtype, expect_shape, expect_tensor, fail, max_err, seeded

DIM, END, BASE = 16, 64, 1e4
# YaRN with a small training context, so the branch triggers on a short table.
YARN = {"type": "yarn", "factor": 4, "original_max_position_embeddings": 256, "beta_fast": 32,
        "beta_slow": 1, "attention_factor": 1.25}
YARN_DIM, YARN_END = 32, 1024
# YaRN where inv_dim(beta_fast) < 0 and inv_dim(beta_slow) > dim/2 - 1: the clamps to [0, dim/2 - 1] matter.
YARN_CLAMP = {"type": "yarn", "factor": 4, "original_max_position_embeddings": 256, "beta_fast": 64,
              "beta_slow": 0.5, "attention_factor": 1.0}
CLAMP_DIM, CLAMP_END, CLAMP_BASE = 16, 512, 100.0
YARN_FORMULA = ("inv_dim(b) = dim·ln(orig_max/(2πb)) / (2 ln base)；low = max(floor(inv_dim(beta_fast)), 0)，"
                "high = min(ceil(inv_dim(beta_slow)), dim/2 − 1)；γ_i = clamp((i − low)/max(high − low, 0.001), 0, 1)；"
                "inv_freq_i *= (1 − γ_i) + γ_i/factor；最后 cos、sin 都乘 attention_factor")


# ---- what the usual mistakes would output ---------------------------------------------------

def _bounds(dim, base, scaling, *, bounds="ok", inv="ok"):
    """YaRN's (low, high) with one mistake (bounds: 'ok', 'round_swapped', 'no_round', 'no_clamp',
    'no_low_clamp', 'no_high_clamp'; inv: 'ok', 'no_two', 'precedence', 'no_2pi', 'betas_swapped')."""
    orig = scaling["original_max_position_embeddings"]

    def inv_dim(b):
        ratio = {"precedence": orig / 2 * math.pi * b, "no_2pi": orig / b}.get(inv, orig / (2 * math.pi * b))
        return dim * math.log(ratio) / ((1 if inv == "no_two" else 2) * math.log(base))

    fast, slow = scaling["beta_fast"], scaling["beta_slow"]
    if inv == "betas_swapped":
        fast, slow = slow, fast
    lo_round, hi_round = {"round_swapped": (math.ceil, math.floor),
                          "no_round": (float, float)}.get(bounds, (math.floor, math.ceil))
    low, high = lo_round(inv_dim(fast)), hi_round(inv_dim(slow))
    if bounds not in ("no_clamp", "no_low_clamp"):
        low = max(low, 0)
    if bounds not in ("no_clamp", "no_high_clamp"):
        high = min(high, dim // 2 - 1)
    return low, high


def _tables(dim, end, base, *, expo=2, pos_shift=0, interleave=False, scaling=None, yarn=None,
            swap=False, factor_mult=False, bounds="ok", inv="ok"):
    """The reference formula with one mistake switched on (yarn: 'always', 'reversed', 'no_af', None)."""
    half = dim // 2
    i = torch.arange(half).float()
    inv_freq = 1.0 / (base ** (expo * i / dim))
    af = 1.0
    if scaling is not None:
        orig, fac = scaling["original_max_position_embeddings"], scaling["factor"]
        af = 1.0 if yarn == "no_af" else scaling["attention_factor"]
        if end / orig > 1.0 or yarn == "always":
            low, high = _bounds(dim, base, scaling, bounds=bounds, inv=inv)
            ramp = torch.clamp((i - low) / max(high - low, 0.001), 0, 1)
            if yarn == "reversed":
                ramp = 1 - ramp
            scale = (1 - ramp) + (ramp * fac if factor_mult else ramp / fac)
            inv_freq = inv_freq * scale
    ang = torch.outer(torch.arange(end).float() + pos_shift, inv_freq)
    if interleave:
        c, s = ang.cos().repeat_interleave(2, -1), ang.sin().repeat_interleave(2, -1)
    else:
        c, s = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    if swap:
        c, s = s, c
    return c * af, s * af


def _table_candidates(dim, end, base, scaling=None):
    T = lambda **kw: (lambda: torch.cat(_tables(dim, end, base, scaling=scaling, **kw), -1))  # noqa: E731
    c = [
        (T(interleave=True),
         "RoPE 的布局不对：你的 cos/sin 像是相邻两维一组 (interleaved, repeat_interleave)，"
         "MiniMind 用前后两半 (half-split / rotate_half)：cos = cat([cos(angle), cos(angle)], -1)，整块复制两遍。"),
        (T(expo=1),
         "频率的指数不对：inv_freq_i 应为 base^(-2i/dim)（i = 0..dim/2-1，即 torch.arange(0, dim, 2)/dim），"
         "你的像是 base^(-i/dim)，频率衰减得太慢。"),
        (T(pos_shift=1),
         "位置错了一位：第一行应是位置 0（cos=1, sin=0），你的像是从位置 1 开始。用 torch.arange(end)。"),
        (T(pos_shift=-1), "位置错了一位：第一行应是位置 0，你的像是从 -1 开始。用 torch.arange(end)。"),
        (T(swap=True), "cos 和 sin 弄反了：返回值顺序是 (cos, sin)。"),
    ]
    if scaling is not None:
        c += [
            (lambda: torch.cat(_tables(dim, end, base), -1),
             "传了 rope_scaling（YaRN）但频率没有变：end / original_max_position_embeddings > 1 时要按 "
             "γ 斜坡 (ramp) 缩放 inv_freq，还要乘 attention_factor。"),
            (T(yarn="no_af"),
             "YaRN 缺少 attention_factor：cos 和 sin 最后都要乘 rope_scaling['attention_factor']"
             "（只要给了 rope_scaling 就乘，不论 end 多长）。"),
            (T(yarn="reversed"),
             "YaRN 的斜坡 (ramp) 方向反了：γ_i = clamp((i - low)/(high - low), 0, 1)，"
             "i 小（转得快的维度）保持不变，i 大（转得慢的维度）除以 factor。"),
            (T(factor_mult=True), "YaRN 里乘了 factor：应该是 inv_freq *= (1 - γ) + γ / factor（除以 factor，频率变慢）。"),
            (T(yarn="always"),
             "YaRN 用在了不该用的时候：只有 end / original_max_position_embeddings > 1（表比训练长度长）才缩放频率；"
             "否则 RoPE 保持原样（attention_factor 照乘）。"),
        ]
        want = _bounds(dim, base, scaling)

        def seen(**kw):
            low, high = _bounds(dim, base, scaling, **kw)
            return (f"（这里 dim={dim}、base={base:g}、orig_max={scaling['original_max_position_embeddings']}、"
                    f"beta_fast={scaling['beta_fast']}、beta_slow={scaling['beta_slow']}：应为 low={want[0]}, "
                    f"high={want[1]}，你的像是 low={low:.3g}, high={high:.3g}）")

        c += [
            (T(bounds="round_swapped"),
             "YaRN 的 low/high 取整方向反了：low = max(floor(inv_dim(beta_fast)), 0) 向下取整 (floor)，"
             "high = min(ceil(inv_dim(beta_slow)), dim/2 − 1) 向上取整 (ceil)；你的像是 low 用了 ceil、high 用了 floor，"
             "斜坡 (ramp) 变窄了" + seen(bounds="round_swapped") + "。"),
            (T(bounds="no_round"),
             "YaRN 的 low/high 没有取整：它们是维度下标，low = max(math.floor(inv_dim(beta_fast)), 0)，"
             "high = min(math.ceil(inv_dim(beta_slow)), dim/2 − 1)；你的像是直接用了 inv_dim 的小数值"
             + seen(bounds="no_round") + "。"),
            (T(bounds="no_clamp"),
             "YaRN 的 low/high 没有截断 (clamp) 到 [0, dim/2 − 1]：inv_dim(beta_fast) 可能是负数、inv_dim(beta_slow) "
             "可能超过 dim/2 − 1，所以 low = max(floor(…), 0)，high = min(ceil(…), dim/2 − 1)" + seen(bounds="no_clamp") + "。"),
            (T(bounds="no_low_clamp"),
             "YaRN 的 low 没有截断 (clamp) 到 0：low = max(floor(inv_dim(beta_fast)), 0)，floor 出来的负数要截成 0"
             + seen(bounds="no_low_clamp") + "。"),
            (T(bounds="no_high_clamp"),
             f"YaRN 的 high 没有截断 (clamp) 到 dim/2 − 1 = {dim // 2 - 1}：high = min(ceil(inv_dim(beta_slow)), dim/2 − 1)"
             f"（截到 dim/2 也不对：最大的维度下标是 dim/2 − 1）" + seen(bounds="no_high_clamp") + "。"),
            (T(inv="no_two"),
             "YaRN 的 inv_dim 少了分母里的 2：inv_dim(b) = dim·ln(orig_max/(2πb)) / (2 ln base)，你的像是除以 ln base，"
             "算出的维度下标大了一倍" + seen(inv="no_two") + "。"),
            (T(inv="precedence"),
             "YaRN 的 inv_dim 里 orig_max/(2πb) 的运算优先级错了：orig_max / 2 * math.pi * b 等于 orig_max·π·b/2，"
             "要写 orig_max / (2 * math.pi * b)" + seen(inv="precedence") + "。"),
            (T(inv="no_2pi"),
             "YaRN 的 inv_dim 少了 2π：inv_dim(b) = dim·ln(orig_max/(2πb)) / (2 ln base)——转 b 圈的波长是 2πb 个 token，"
             "你的像是 ln(orig_max / b)" + seen(inv="no_2pi") + "。"),
            (T(inv="betas_swapped"),
             "YaRN 的 beta_fast 和 beta_slow 用反了：low 由 beta_fast 算（转得快的维度，低下标），high 由 beta_slow 算；"
             "你的像是 low = floor(inv_dim(beta_slow))、high = ceil(inv_dim(beta_fast))" + seen(inv="betas_swapped") + "。"),
        ]
    return c


def _yarn_mismatch(cos, sin, rc, rs, dim, end, base, scaling) -> str:
    """The fallback for a YaRN table no known mistake explains: the formula, and where it differs."""
    orig = scaling["original_max_position_embeddings"]
    if end / orig <= 1.0:
        return (f"YaRN（end={end} ≤ original_max_position_embeddings={orig}）的表和参考实现不一致："
                f"最大误差 {max_err(torch.cat([cos, sin], -1), torch.cat([rc, rs], -1)):.3g}。"
                f"表不比训练长度长时频率不变（和普通 RoPE 一样），cos、sin 只乘 attention_factor。")
    msg = (f"YaRN 的表和参考实现不一致：最大误差 {max_err(torch.cat([cos, sin], -1), torch.cat([rc, rs], -1)):.3g}"
           f"（dim={dim}、end={end}、base={base:g}、rope_scaling={scaling}）。对照 YaRN 的公式：{YARN_FORMULA}。")
    try:  # read the learner's attention_factor (row 0) and frequencies (row 1) back from the table
        half = dim // 2
        af, ref_af = float(cos[0, 0]), float(rc[0, 0])
        if not math.isclose(af, ref_af, rel_tol=1e-4):
            return msg + f"你的第 0 行 cos = {af:.4g}，应为 attention_factor = {ref_af:.4g}。"
        plain = 1.0 / (base ** (torch.arange(half).float() * 2 / dim))
        mine = torch.atan2(sin[1, :half].double(), cos[1, :half].double()).float() / plain
        want = torch.atan2(rs[1, :half].double(), rc[1, :half].double()).float() / plain
        bad = [i for i in range(half) if abs(float(mine[i]) - float(want[i])) > 1e-3]
        if bad:
            fmt = lambda v: "[" + ", ".join(f"{x:.3g}" for x in v.tolist()) + "]"  # noqa: E731
            msg += (f"从你的表第 1 行读出的缩放系数 (1 − γ_i) + γ_i/factor 在维度 i = {bad} 不对："
                    f"应为 {fmt(want)}，你的是 {fmt(mine)}。")
    except Exception:  # noqa: BLE001 - the analysis is a bonus; the formula above is the message
        pass
    return msg


def _rotate_candidates(q, cos, sin):
    """What apply_rotary_pos_emb would give q with each rotation mistake."""
    c, s = cos[:, None, :], sin[:, None, :]
    h = q.shape[-1] // 2
    x1, x2 = q[..., :h], q[..., h:]
    ev, od = q[..., 0::2], q[..., 1::2]
    inter = torch.stack((-od, ev), -1).flatten(-2)
    return [
        (lambda: q * c + torch.cat((x2, -x1), -1) * s,
         "rotate_half 的符号反了：应该是 cat((-x2, x1), -1)，你的像是 cat((x2, -x1), -1)——旋转方向反了。"),
        (lambda: q * c + torch.cat((x2, x1), -1) * s,
         "rotate_half 少了负号：应该是 cat((-x2, x1), -1)，你的像是 cat((x2, x1), -1)，这不是旋转。"),
        (lambda: q * c + inter * s,
         "RoPE 旋转方式不对：你的实现像是相邻两维一组 (interleaved)，MiniMind 用前后两半 (rotate_half)："
         "x1 = x[..., :d/2], x2 = x[..., d/2:]。"),
        (lambda: q * c - torch.cat((-x2, x1), -1) * s, "sin 那一项的符号反了：q' = q·cos + rotate_half(q)·sin。"),
        (lambda: q * s + torch.cat((-x2, x1), -1) * c, "cos 和 sin 用反了：q' = q·cos + rotate_half(q)·sin。"),
        (lambda: q * c, "只乘了 cos，漏了 rotate_half(q)·sin 这一项。"),
    ]


# ---- the check -----------------------------------------------------------------------------

def _call_tables(impl, what, *args, **kw):
    out = impl.precompute_freqs_cis(*args, **kw)
    expect(isinstance(out, tuple) and len(out) == 2, f"{what} 应该返回 (cos, sin) 两个张量，你返回的是 {type(out).__name__}。")
    cos, sin = (expect_tensor(t, what) for t in out)
    return cos, sin


def _compare_tables(impl, ref, what, dim, end, base, scaling=None):
    kw = {} if scaling is None else {"rope_scaling": dict(scaling)}
    cos, sin = _call_tables(impl, what, dim, end, base, **kw)
    rc, rs = ref.precompute_freqs_cis(dim, end, base, **kw)
    if cos.shape == (end, dim // 2):
        fail(f"{what} 的 cos 形状是 {tuple(cos.shape)}，应为 {(end, dim)}：每个角度要用两次——"
             f"cos = cat([cos(angle), cos(angle)], -1)，因为一对维度 (i, i + dim/2) 共用一个角度。")
    expect_shape(cos, (end, dim), f"{what} 的 cos")
    expect_shape(sin, (end, dim), f"{what} 的 sin")
    expect_dtype(cos, torch.float32, f"{what} 的 cos")
    got, want = torch.cat([cos, sin], -1), torch.cat([rc, rs], -1)
    if not close(got, want, atol=1e-5, rtol=1e-4):
        reason = diagnose(got, _table_candidates(dim, end, base, scaling), atol=1e-4)
        if reason is None and scaling is not None:
            reason = _yarn_mismatch(cos, sin, rc, rs, dim, end, base, scaling)
        fail(reason or f"{what} 和参考实现不一致：最大误差 {max_err(got, want):.3g}。"
                       f"对照 inv_freq_i = base^(-2i/dim)，angle = outer(arange(end), inv_freq)，"
                       f"cos = cat([cos(angle)]*2, -1) 检查。")


def _check_rotate_half(impl) -> None:
    rh = getattr(impl, "rotate_half", None)
    if rh is None:
        return  # optional helper: apply_rotary_pos_emb is what counts
    x = torch.arange(8.0).view(1, 8)
    got = rh(x)
    want = torch.tensor([[-4.0, -5, -6, -7, 0, 1, 2, 3]])
    if not torch.equal(got, want):
        known = {
            (4.0, 5, 6, 7, 0, -1, -2, -3): "rotate_half 的符号反了：应该是 cat((-x2, x1), -1)，你的像是 cat((x2, -x1), -1)——旋转方向反了。",
            (4.0, 5, 6, 7, 0, 1, 2, 3): "rotate_half 少了负号：应该是 cat((-x2, x1), -1)，你的像是 cat((x2, x1), -1)，这不是旋转。",
            (-1.0, 0, -3, 2, -5, 4, -7, 6): "rotate_half 用了相邻两维一组 (interleaved)：MiniMind 用前后两半，"
                                            "x1 = x[..., :d/2], x2 = x[..., d/2:]，返回 cat((-x2, x1), -1)。",
        }
        msg = known.get(tuple(float(v) + 0.0 for v in got.flatten().tolist()))
        if msg:
            fail(msg)
        fail(f"rotate_half([0..7]) 应为 {want.tolist()[0]}，你的是 {got.tolist()[0]}。"
             f"前后两半 x1 = x[..., :d/2], x2 = x[..., d/2:]，返回 cat((-x2, x1), -1)。")


def _apply(impl, q, k, cos, sin, what):
    qb, kb = q.clone(), k.clone()
    out = impl.apply_rotary_pos_emb(q, k, cos, sin)
    expect(isinstance(out, tuple) and len(out) == 2, f"{what} 应该返回 (q', k')。")
    expect(torch.equal(q, qb) and torch.equal(k, kb),
           f"{what} 改动了输入 q 或 k（原地操作 in-place，例如 q.mul_ 或 q[..., :h] = ...）。要返回新的张量。")
    return out


def _shape_text(t) -> str:
    return ", ".join(str(n) for n in t.shape)


def _check_apply_validation(impl, q, k, cos, sin) -> None:
    """Shapes that do not fit must raise ValueError naming them (some would silently broadcast)."""
    hd = q.shape[-1]
    cases = [  # (q, k, cos, sin, what is wrong)
        (q, k, cos[:1], sin[:1], f"cos/sin 只有 1 行，q、k 却有 {q.shape[1]} 个位置（seq 对不上）"),
        (q, k, torch.cat([cos, cos[:2]]), torch.cat([sin, sin[:2]]),
         f"cos/sin 有 {cos.shape[0] + 2} 行，q、k 只有 {q.shape[1]} 个位置（seq 对不上）"),
        (q, k, cos[:, :hd // 2], sin[:, :hd // 2], f"cos/sin 的最后一维是 {hd // 2}，q、k 的 head_dim 是 {hd}"),
        (q, k, cos, sin[:1], f"cos 是 {tuple(cos.shape)}，sin 却是 {(1, hd)}（cos 和 sin 的形状要相同）"),
        (q[:1, :, 0], k, cos, sin, "q 是三维 (batch, seq, head_dim)，少了 heads 这一维：q 要是 (batch, seq, heads, head_dim)"),
        (q, k[:, :1], cos, sin, f"k 的 seq 是 1，q 和 cos/sin 是 {q.shape[1]}（k 也要检查，不只是 q）"),
        (q, k[..., :hd // 2], cos, sin, f"k 的 head_dim 是 {hd // 2}，cos/sin 是 {hd}（k 也要检查，不只是 q）"),
    ]
    for qq, kk, cc, ss, why in cases:
        shapes = (f"q {tuple(qq.shape)}、k {tuple(kk.shape)}、cos {tuple(cc.shape)}、sin {tuple(ss.shape)}")
        try:
            out = impl.apply_rotary_pos_emb(qq, kk, cc, ss)
        except ValueError as e:
            if not any(_shape_text(x) in str(e) for x in (qq, kk, cc, ss)):
                fail(f"apply_rotary_pos_emb（{shapes}）抛了 ValueError，但信息里没有写出形状（你的信息：{e}）。"
                     f"好的报错要写出对不上的形状，例如 f\"q must be (batch, seq, heads, head_dim) matching cos "
                     f"{{tuple(cos.shape)}}, got {{tuple(q.shape)}}\"。")
            continue
        except NotImplementedError:
            raise
        except Exception as e:  # noqa: BLE001
            fail(f"apply_rotary_pos_emb（{shapes}）：{why}。应该在开头检查形状并抛 ValueError（写出形状），"
                 f"你的抛的是 {type(e).__name__}: {str(e)[:160]}。广播时的 RuntimeError 出在算到一半的地方，看不出是谁传错了；"
                 f"assert 在 python -O 下会被跳过——参数不合法就 raise ValueError。")
        else:
            got = ", ".join(str(tuple(o.shape)) for o in out) if isinstance(out, tuple) else type(out).__name__
            fail(f"apply_rotary_pos_emb（{shapes}）：{why}。应该抛 ValueError 并写出形状，你的代码却没有报错——"
                 f"广播 (broadcasting) 悄悄算出了 {got}，错误会被带到注意力里。"
                 f"先检查：cos、sin 都是 (seq, head_dim)；q、k 都是四维，shape[1] == seq，shape[-1] == head_dim。")


def check(impl, ref) -> str:
    # 1. The tables: plain RoPE, two bases.
    for base in (BASE, 1e6):
        _compare_tables(impl, ref, f"precompute_freqs_cis({DIM}, {END}, rope_base={base:g})", DIM, END, base)
    # default arguments: end=32768, base=1e6
    cos, sin = _call_tables(impl, "precompute_freqs_cis(8)", 8)
    rc, rs = ref.precompute_freqs_cis(8)
    expect(cos.shape == rc.shape and close(cos, rc, atol=1e-4) and close(sin, rs, atol=1e-4),
           f"precompute_freqs_cis(8) 用默认参数时不对（形状 {tuple(cos.shape)}，应为 {tuple(rc.shape)}）："
           f"默认 end=32768、rope_base=1e6。")

    # 2. YaRN: triggers when end > original_max; attention_factor always applies with rope_scaling.
    _compare_tables(impl, ref, f"precompute_freqs_cis(YaRN, end={YARN_END} > 256)", YARN_DIM, YARN_END, BASE, YARN)
    _compare_tables(impl, ref, "precompute_freqs_cis(YaRN, end=128 ≤ 256)", YARN_DIM, 128, BASE, YARN)
    _compare_tables(impl, ref, f"precompute_freqs_cis(YaRN, beta_fast=64, beta_slow=0.5, end={CLAMP_END})",
                    CLAMP_DIM, CLAMP_END, CLAMP_BASE, YARN_CLAMP)

    # 3. Bad arguments.
    for args, why in (((15, 8), "dim=15 是奇数"), ((0, 8), "dim=0"), ((16, 0), "end=0")):
        try:
            impl.precompute_freqs_cis(*args)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as e:
            fail(f"precompute_freqs_cis{args}（{why}）应该抛 ValueError 并说明原因，你的抛出了 {type(e).__name__}: {e}")
        fail(f"precompute_freqs_cis{args}（{why}）应该抛 ValueError：RoPE 把维度两两配对，dim 必须是正偶数，end 必须是正整数。")

    # 4. rotate_half and apply_rotary_pos_emb against the reference.
    _check_rotate_half(impl)
    rcos, rsin = ref.precompute_freqs_cis(DIM, END, BASE)
    with seeded(0):
        q = torch.randn(2, 6, 4, DIM)
        k = torch.randn(2, 6, 2, DIM)
    c, s = rcos[3:9], rsin[3:9]  # positions 3..8, as in decoding after a prefix
    q2, k2 = _apply(impl, q, k, c, s, "apply_rotary_pos_emb")
    rq, rk = ref.apply_rotary_pos_emb(q, k, c, s)
    expect_shape(q2, q.shape, "q'")
    expect_shape(k2, k.shape, "k'（k 的头数可以和 q 不同：GQA）")
    for got, want, x, name in ((q2, rq, q, "q'"), (k2, rk, k, "k'")):
        if not close(got, want, atol=1e-5):
            reason = diagnose(got, _rotate_candidates(x, c, s), atol=1e-4)
            fail(reason or f"apply_rotary_pos_emb 的 {name} 和参考实现不一致：最大误差 {max_err(got, want):.3g}。"
                           f"公式 q' = q·cos + rotate_half(q)·sin，cos/sin 在第 1 维 unsqueeze 以广播到所有头。")

    # 5. dtype: bf16 q, k with fp32 tables come back as bf16.
    qh, kh = q.bfloat16(), k.bfloat16()
    qh2, kh2 = _apply(impl, qh, kh, c, s, "apply_rotary_pos_emb(bf16)")
    expect(qh2.dtype == torch.bfloat16 and kh2.dtype == torch.bfloat16,
           f"q、k 是 bf16、cos/sin 是 fp32 时，输出应转回 bf16（你的是 {qh2.dtype}, {kh2.dtype}）："
           f"返回 q_embed.to(q.dtype)，否则后面 q、k 和 v 的 dtype 对不上。")

    # 6. The point of RoPE: q_m · k_n depends only on m - n (and rotation keeps the length).
    cos, sin = impl.precompute_freqs_cis(DIM, END, BASE)
    with seeded(1):
        qv = torch.randn(1, 1, 1, DIM).expand(1, END, 1, DIM).contiguous()
        kv = torch.randn(1, 1, 1, DIM).expand(1, END, 1, DIM).contiguous()
    rq, rk = impl.apply_rotary_pos_emb(qv, kv, cos, sin)
    rq, rk = rq[0, :, 0], rk[0, :, 0]
    expect(close(rq.norm(dim=-1), qv[0, :, 0].norm(dim=-1), atol=1e-4),
           "旋转后向量的长度变了：RoPE 只旋转、不缩放（cos² + sin² = 1）。检查 rotate_half 和公式。")
    pairs = [(5, 2), (10, 7), (40, 37)]
    scores = [float(rq[m] @ rk[n]) for m, n in pairs]
    expect(max(scores) - min(scores) < 1e-3,
           f"同样相距 3 的 (m, n) = {pairs} 的分数 q_m·k_n 应该相等，你的是 {[round(x, 4) for x in scores]}："
           f"RoPE 的分数只取决于相对位置 m - n。")

    # 7. Gradients flow back to q and k.
    qg, kg = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    a, b = impl.apply_rotary_pos_emb(qg, kg, c, s)
    (a.square().sum() + b.square().sum()).backward()
    expect(qg.grad is not None and kg.grad is not None, "梯度没有传回 q、k：不要 detach 或 torch.no_grad()。")

    # 8. Shapes that do not fit raise ValueError (the stub's contract), before any broadcasting.
    _check_apply_validation(impl, q, k, c, s)
    return ("cos/sin 表（含 YaRN 的 low/high 取整与截断）、参数校验、rotate_half、apply_rotary_pos_emb"
            "（含形状校验）、dtype、相对位置性质、梯度：全部正确。")
