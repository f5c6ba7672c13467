"""Check for stage 03: repeat_kv and Attention (GQA, causal and padding masks, KV cache, SDPA).

The RoPE tables come from the reference `precompute_freqs_cis`, so this stage tests attention
itself (the learner's Attention still calls their own `apply_rotary_pos_emb`, which stage 02 has
already checked).  Mistakes are named by recomputing what each would output from the reference
weights (see `_attend`), or by a targeted property test (causality, cache shapes).  Which path
the learner takes is watched with a TorchFunctionMode (`_Spy`): SDPA must be called exactly when
it is allowed, and the softmax must see fp32 scores even for bf16/fp16 inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import _modes
from .tools import close, diagnose, expect, expect_shape, expect_tensor, fail, max_err, seeded

H, NH, NKV = 32, 4, 2
HD, N_REP = H // NH, NH // NKV
B, S = 2, 6
KEYS = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"]
TOL = 1e-5
LOW_PRECISION = (torch.bfloat16, torch.float16)

PAD_NEG_INF = ("padding 掩码用了 -inf：一个 query 能看到的 key 全是 padding 时（左侧 padding 的开头几个位置、"
               "整行都是 padding 的序列），softmax 的输入全是 -inf，得到 NaN；下一层里 0 × NaN 还是 NaN，"
               "NaN 会传到所有位置。padding 要用一个很大的有限负数 (large finite negative, e.g. -1e9)："
               "scores + (1 - mask) * -1e9。因果掩码可以用 -inf，因为每个 query 至少能看到它自己。")
PAD_ZERO_TIMES_INF = ("带 padding 掩码时输出全是 NaN：像是写了 (1 - mask) * float('-inf')——mask=1 的地方是 "
                      "0 × (-inf) = NaN，把真实 token 的分数也变成了 NaN。padding 要用一个很大的有限负数 "
                      "(large finite negative, e.g. -1e9)：scores + (1 - mask) * -1e9。")
SDPA_WITH_CACHE = ("有 KV cache 时不能走 SDPA 的 is_causal=True：is_causal 的掩码是左上角对齐的 (seq, past + seq) "
                   "下三角，新 token i 只能看到 key 0..i（缓存最前面的几个 token），而它应该看到位置 start_pos + i "
                   "之前的全部 key。快速路径的条件里要有 past_key_value is None；有缓存时走手写路径，因果掩码用 "
                   "torch.triu(..., diagonal=start_pos + 1)。")


class _Spy(TorchFunctionMode):
    """Records the SDPA and softmax calls made inside the block, however the learner imported them."""

    def __init__(self):
        super().__init__()
        self.sdpa: list[dict] = []
        self.softmax: list[torch.dtype] = []  # the dtype each softmax computes in

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "scaled_dot_product_attention":
            # (query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, ...)
            def arg(i, key, default):
                return args[i] if len(args) > i else kwargs.get(key, default)
            self.sdpa.append({"attn_mask": arg(3, "attn_mask", None) is not None,
                              "dropout_p": float(arg(4, "dropout_p", 0.0)),
                              "is_causal": bool(arg(5, "is_causal", False))})
        elif name == "softmax":
            x = args[0] if args else kwargs.get("input")
            asked = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), None)
            if isinstance(x, torch.Tensor):
                self.softmax.append(asked or x.dtype)
        return func(*args, **kwargs)


def _rope():
    return _modes.reference_module("model.rope")


def _config(**kw):
    cfg = _modes.reference_module("config").MiniMindConfig
    base = dict(hidden_size=H, num_attention_heads=NH, num_key_value_heads=NKV, num_hidden_layers=1,
                vocab_size=64, max_position_embeddings=64, rope_theta=1e4, flash_attn=False)
    base.update(kw)
    return cfg(**base)


# ---- what the usual mistakes would output --------------------------------------------------

def _attend(ra, x, cos, sin, past=None, mask=None, *, causal="ok", scale="hd", sm_dim=-1,
            tile=False, after=None, pad_sign=1):
    """Attention recomputed from ra's weights, with one mistake switched on."""
    b, s, _ = x.shape
    q = ra.q_proj(x).view(b, s, NH, HD)
    k = ra.k_proj(x).view(b, s, NKV, HD)
    v = ra.v_proj(x).view(b, s, NKV, HD)
    q, k = _rope().apply_rotary_pos_emb(q, k, cos, sin)
    if past is not None:
        k, v = torch.cat([past[0], k], 1), torch.cat([past[1], v], 1)

    def rep(t):
        return t.repeat(1, 1, N_REP, 1) if tile else t.repeat_interleave(N_REP, 2)

    q, k, v = q.transpose(1, 2), rep(k).transpose(1, 2), rep(v).transpose(1, 2)
    total = k.shape[2]
    start = total - s
    div = {"hd": math.sqrt(HD), "H": math.sqrt(H), "none": 1.0, "hd_lin": float(HD)}[scale]
    sc = (q @ k.transpose(-2, -1)).float() / div
    diag = {"ok": start + 1, "diag": start, "diag_finite": start, "no_offset": 1, "none": None}[causal]
    future = torch.zeros(s, total, dtype=torch.bool) if diag is None else \
        torch.triu(torch.ones(s, total, dtype=torch.bool), diag)
    neg = -1e9 if causal == "diag_finite" else float("-inf")
    cm = torch.zeros(s, total).masked_fill(future, neg)
    pad = 0.0
    if mask is not None:
        m = mask[:, None, None, :].float()
        pad = ((1.0 - m) if pad_sign > 0 else m) * -1e9
    if after == "zero":
        w = F.softmax(sc + pad, -1).masked_fill(future, 0.0)
    else:
        w = F.softmax(sc + cm + pad, sm_dim)
    out = (w @ v).transpose(1, 2).reshape(b, s, -1)
    return ra.o_proj(out)


def _candidates(ra, x, cos, sin, past=None, mask=None):
    A = lambda **kw: (lambda: _attend(ra, x, cos, sin, **{"past": past, "mask": mask, **kw}))  # noqa: E731
    return [
        (A(causal="none"),
         "没有因果掩码 (causal mask)：第 i 个 token 看到了它后面的 token。分数要加上 triu(-inf, diagonal=1)"
         "（有缓存时 diagonal = start_pos + 1），或在快速路径里用 is_causal=True。"),
        (A(causal="diag_finite"),
         "因果掩码错了一位：你把对角线也遮住了（token 看不到它自己）。torch.triu 要用 diagonal=1，不是 0。"),
        (A(causal="no_offset"),
         "有 KV cache 时新 token 的位置不对：因果掩码按新 token 从位置 0 开始算了。新 token i 在位置 "
         "start_pos + i（start_pos = 缓存长度），掩码要用 torch.triu(..., diagonal=start_pos + 1)，"
         "形状 (seq, past + seq)，缓存里的 token 全都可见。"),
        (A(scale="H"),
         "缩放因子不对：分数要除以 sqrt(head_dim)（这里 sqrt(8)），你的像是除以 sqrt(hidden_size)（sqrt(32)）。"),
        (A(scale="none"), "分数没有除以 sqrt(head_dim)：scores = q·kᵀ / sqrt(head_dim)。"),
        (A(scale="hd_lin"), "分数除以了 head_dim 而不是 sqrt(head_dim)。"),
        (A(sm_dim=-2),
         "softmax 的维度不对：要对每个 query 在所有 key 上归一化，softmax(scores, dim=-1)；你的像是 dim=-2（在 query 上）。"),
        (A(tile=True),
         "kv 头的复制方式不对：你的像是整体平铺 (tile, 头顺序 a,b,a,b)，要原地重复 (repeat in place, a,a,b,b)，"
         "和 repeat_interleave(x, n_rep, dim=2) 一样：query 头 h 读的是 kv 头 h // n_rep。"),
        (A(after="zero"),
         "掩码加在了 softmax 之后：先 softmax 再把未来位置置零，每行的权重和就不是 1 了。掩码 (-inf) 要在 softmax 之前加到分数上。"),
    ] + ([] if mask is None else [
        (A(mask=None),
         "padding 掩码 (attention_mask) 被忽略了：mask 为 0 的位置要在 softmax 前加上 -1e9。"
         "注意快速路径 (SDPA, is_causal=True) 只在 mask 为 None 或全 1 时能用，否则走手写路径。"),
        (A(pad_sign=-1),
         "padding 掩码反了：attention_mask 里 1 = 真实 token，0 = padding；要加的是 (1 - mask) * -1e9。"),
    ])


def _nonfinite_reason(out: torch.Tensor, mask: torch.Tensor | None = None) -> str | None:
    if torch.isfinite(out).all():
        return None
    bad = ~torch.isfinite(out).all(-1)  # (b, s): which outputs hold inf/NaN
    if mask is not None:
        start = mask.shape[1] - out.shape[1]
        # a query at position start + i sees keys 0 .. start + i; "dead" if all of them are padding
        dead = (torch.cumsum(mask.float(), 1)[:, start:] == 0)
        if bad.all():
            return PAD_ZERO_TIMES_INF
        if dead.any() and torch.equal(bad, dead):
            return PAD_NEG_INF
    rows = [i for i in range(out.shape[1]) if bad[:, i].any()]
    if rows == [0]:
        return ("输出的第 0 个位置是 NaN：因果掩码把对角线也遮住了（diagonal=0），第一个 token 一个 key 都看不到，"
                "softmax 全是 -inf 就得到 NaN。torch.triu 要用 diagonal=1（有缓存时 start_pos + 1）。")
    if rows == list(range(out.shape[1] - 1)):
        return ("除了最后一个位置，输出都是 inf/NaN：掩码 (-inf) 加在了 softmax 之后。"
                "要先把掩码加到分数上，再 softmax(scores, dim=-1)。")
    return (f"输出里有 inf/NaN（位置 {rows}）。常见原因：-inf 掩码用错了地方（softmax 之后），或整行都被遮住了。")


def _compare(out, want, cands, what, mask=None):
    out = expect_tensor(out, what)
    expect_shape(out, want.shape, what)
    if close(out, want, atol=TOL, rtol=TOL):
        return
    reason = _nonfinite_reason(out, mask)
    if reason is None:
        with torch.no_grad():
            reason = diagnose(out, cands, atol=1e-4)
    fail(reason or f"{what} 和参考实现不一致：最大误差 {max_err(out, want):.3g}（容差 {TOL}）。"
                   f"对照 softmax(q·kᵀ/√hd + causal + padding)·v，再 o_proj。")


# ---- the check -----------------------------------------------------------------------------

def _check_repeat_kv(impl) -> None:
    with seeded(0):
        x = torch.randn(2, 3, 2, 4)
    before = x.clone()
    got = expect_tensor(impl.repeat_kv(x, 3), "repeat_kv")
    expect(torch.equal(x, before), "repeat_kv 改动了输入（in-place）。")
    expect_shape(got, (2, 3, 6, 4), "repeat_kv(x: (2, 3, 2, 4), n_rep=3)")
    if not torch.equal(got, x.repeat_interleave(3, dim=2)):
        if torch.equal(got, x.repeat(1, 1, 3, 1)):
            fail("repeat_kv 把 kv 头整体平铺 (tile) 了：头的顺序成了 (a, b, a, b, a, b)，应该原地重复 "
                 "(a, a, a, b, b, b)，等于 torch.repeat_interleave(x, n_rep, dim=2)。x.repeat(1, 1, n_rep, 1) 是平铺；"
                 "用 x[:, :, :, None, :].expand(...).reshape(...)。")
        fail("repeat_kv 的结果不对：应等于 torch.repeat_interleave(x, n_rep, dim=2)（每个 kv 头原地重复 n_rep 次）。"
             "检查 expand 之后 reshape 的维度顺序。")
    expect(torch.equal(impl.repeat_kv(x, 1), x), "repeat_kv(x, 1) 应原样返回 x。")


def _build(impl, cfg, what):
    try:
        return impl.Attention(cfg)
    except NotImplementedError:
        raise
    except Exception as e:
        fail(f"{what} 构造失败：{type(e).__name__}: {e}。签名应该是 Attention(config: MiniMindConfig)。")


def _check_structure(attn) -> None:
    keys = list(attn.state_dict())
    if sorted(keys) != sorted(KEYS):
        msg = f"state_dict 的键应该正好是 {KEYS}，你的是 {keys}。"
        if any(k.endswith(".bias") for k in keys):
            msg += "四个 nn.Linear 都要 bias=False。"
        else:
            msg += "名字是加载 checkpoint 的契约：q_proj / k_proj / v_proj / o_proj。"
        fail(msg)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    want = {"q_proj.weight": (NH * HD, H), "k_proj.weight": (NKV * HD, H),
            "v_proj.weight": (NKV * HD, H), "o_proj.weight": (H, NH * HD)}
    if shapes != want:
        hint = ""
        if shapes["k_proj.weight"][0] == NH * HD:
            hint = "k_proj/v_proj 的输出是 num_key_value_heads * head_dim（GQA：kv 头比 q 头少）。"
        fail(f"参数形状不对：应为 {want}，你的是 {shapes}。{hint}")


def _pair(impl, ref, **kw):
    cfg = _config(**kw)
    a, r = _build(impl, cfg, f"Attention({kw})"), ref.Attention(cfg)
    return a, r


def _run_reference_with(ra, x, c, s, seed, **p):
    """ra's train-mode output under `seed`, with some dropout probabilities changed for this call."""
    saved = {k: getattr(ra, k).p for k in p}
    try:
        for k, v in p.items():
            getattr(ra, k).p = v
        with seeded(seed):
            return ra(x, (c, s))[0]
    finally:
        for k, v in saved.items():
            getattr(ra, k).p = v


def _check_manual_dropout(ra, got, x, c, s) -> None:
    want = _run_reference_with(ra, x, c, s, 3)
    if close(got, want, atol=TOL, rtol=TOL):
        return
    reason = diagnose(got, [
        (lambda: _run_reference_with(ra, x, c, s, 3, attn_dropout=0.0),
         "train() 模式少了注意力权重上的 dropout (attn_dropout)：softmax 之后、乘 v 之前要 "
         "scores = self.attn_dropout(scores)（同一个随机种子下，你的输出和“只有 resid_dropout”的参考一样）。"),
        (lambda: _run_reference_with(ra, x, c, s, 3, resid_dropout=0.0),
         "train() 模式少了输出的 dropout (resid_dropout)：o_proj 之后要 self.resid_dropout(self.o_proj(output))"
         "（同一个随机种子下，你的输出和“只有 attn_dropout”的参考一样）。"),
        (lambda: _run_reference_with(ra, x, c, s, 3, attn_dropout=0.0, resid_dropout=0.0),
         "train() 模式、dropout=0.5 时你的手写路径没有任何 dropout：softmax 之后 self.attn_dropout(scores)，"
         "o_proj 之后 self.resid_dropout(...)。"),
    ], atol=1e-4)
    fail(reason or f"train() 模式、dropout=0.5、同一个随机种子下，手写路径的输出和参考实现不一致（最大误差 "
                   f"{max_err(got, want):.3g}）：要在 softmax 之后用 self.attn_dropout(scores)，在 o_proj 之后用 "
                   f"self.resid_dropout(...)，各一次、按这个顺序（同样的顺序才抽到同样的随机掩码）。")


def _check_low_precision(impl, ref, sd, x, c, s, mask) -> None:
    """bf16 / fp16 weights and inputs on the manual path: the scores are softmaxed in fp32."""
    for dtype, m in ((torch.bfloat16, None), (torch.float16, mask)):
        cfg = _config()
        a, r = _build(impl, cfg, "Attention(config)"), ref.Attention(cfg)
        a.load_state_dict(sd); r.load_state_dict(sd)
        a, r = a.to(dtype).eval(), r.to(dtype).eval()
        xl = x.to(dtype)
        kw = {} if m is None else {"attention_mask": m}
        where = f"{dtype}（{'带 padding 掩码' if m is not None else '不带掩码'}）".replace("torch.", "")
        try:
            with torch.no_grad(), _Spy() as spy:
                out, _ = a(xl, (c, s), **kw)
        except NotImplementedError:
            raise
        except RuntimeError as e:
            text = str(e)
            if "overflow" in text:
                fail(f"输入是 {where}时出错：{text[:160]}。-1e9 超出了 fp16 的范围（最大约 65504）：先把分数转成 fp32 "
                     f"——scores = (q @ k.transpose(-2, -1)).float() / sqrt(head_dim)——再加掩码、softmax，最后 .type_as(q)。")
            if "dtype" in text or "scalar type" in text:
                fail(f"输入是 {where}时出错：{text[:160]}。softmax 在 fp32 里算完要 .type_as(q) 转回 q 的 dtype，"
                     f"否则 fp32 的权重没法和 {dtype} 的 v 相乘。".replace("torch.", ""))
            raise
        low = [d for d in spy.softmax if d in LOW_PRECISION]
        if low:
            fail(f"softmax 要在 fp32 里算：输入是 {where}时，你的 softmax 收到的分数 (scores) 是 {low[0]}。"
                 f"先 scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(head_dim)，再加掩码、softmax，"
                 f"最后 .type_as(q)：低精度下分数的舍入误差会被 exp 放大，fp16 里 -1e9 还会溢出成 -inf。"
                 .replace("torch.", ""))
        expect(out.dtype == dtype,
               f"输入是 {where}时输出应该还是 {dtype}，你的是 {out.dtype}：softmax 之后 .type_as(q)。"
               .replace("torch.", ""))
        with torch.no_grad():
            want = r(xl, (c, s), **kw)[0]
        expect(torch.isfinite(out).all(), f"输入是 {where}时输出里有 inf/NaN：分数先 .float() 再加掩码和 softmax。"
               .replace("torch.", ""))
        if m is not None:  # compare where a query sees a real key (see step 5)
            alive = torch.cumsum(m.float(), 1)[:, m.shape[1] - out.shape[1]:] > 0
            out, want = out[alive], want[alive]
        # loose: bf16 rounding differs with the order of operations; a real mistake is far larger
        scale = want.float().abs().max().item()
        expect(max_err(out, want) <= 0.03 * scale,
               f"输入是 {where}时你的输出和参考实现相差 {max_err(out, want):.3g}（输出的量级 {scale:.3g}）："
               f"分数要在 fp32 里算 softmax，再 .type_as(q) 转回。".replace("torch.", ""))


def check(impl, ref) -> str:
    rope = _rope()
    cos, sin = rope.precompute_freqs_cis(HD, 32, 1e4)
    _check_repeat_kv(impl)

    # 1. Structure and weights.
    attn, ra = _pair(impl, ref)
    _check_structure(attn)
    with seeded(0):
        for p in ra.parameters():  # larger than the default init: peaky attention, mistakes show
            torch.nn.init.normal_(p, std=0.4)
    sd = ra.state_dict()
    try:
        attn.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        fail(f"加载参考实现的 state_dict 失败：{e}")
    attn.eval(); ra.eval()

    bad = _config()
    bad.num_key_value_heads = 3
    try:
        impl.Attention(bad)
    except ValueError:
        pass
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001
        fail(f"num_attention_heads=4、num_key_value_heads=3（不能整除）时 Attention 应该在构造时抛 ValueError，"
             f"你抛的是 {type(e).__name__}: {e}。用 raise ValueError(...) 写出两个头数（assert 在 python -O 下会被跳过）。")
    else:
        fail("num_attention_heads=4、num_key_value_heads=3（不能整除）时 Attention 应该在构造时抛 ValueError："
             "GQA 里每个 kv 头要服务整数个 q 头。")

    with seeded(1):
        x = torch.randn(B, S, H)
    c, s = cos[:S], sin[:S]
    with torch.no_grad():
        want, _ = ra(x, (c, s))

    def run(a, *args, **kw):
        before = x.clone()
        out = a(*args, **kw)
        expect(isinstance(out, tuple) and len(out) == 2, "Attention.forward 应返回 (output, past_kv) 两个值。")
        expect(torch.equal(x, before), "Attention.forward 改动了输入 x（in-place）。")
        return out

    # 2. The manual path (flash_attn=False) against the reference; it must not call SDPA.
    with torch.no_grad(), _Spy() as spy:
        out, kv = run(attn, x, (c, s))
    _compare(out, want, _candidates(ra, x, c, s), "手写路径 (flash_attn=False) 的输出")
    expect(kv is None, "use_cache=False 时第二个返回值应为 None。")
    expect(not spy.sdpa,
           "flash_attn=False 时应该走手写路径，你的代码还是调用了 F.scaled_dot_product_attention (SDPA)："
           "self.flash = hasattr(F, 'scaled_dot_product_attention') and config.flash_attn，快速路径的条件里要有 self.flash。")

    # 3. The SDPA fast path (flash_attn=True): same result, ≤ 1e-5 in fp32, and SDPA really called.
    fast, _ = _pair(impl, ref, flash_attn=True)
    fast.load_state_dict(sd); fast.eval()
    with torch.no_grad(), _Spy() as spy:
        out_fast, _ = run(fast, x, (c, s))
    _compare(out_fast, want, _candidates(ra, x, c, s), "快速路径 (flash_attn=True, SDPA) 的输出")
    expect(max_err(out_fast, out) <= TOL,
           f"快速路径和手写路径的结果相差 {max_err(out_fast, out):.3g}（应 ≤ {TOL}）。")
    expect(bool(spy.sdpa),
           "flash_attn=True、seq_len > 1、没有 KV cache、没有 padding 时应该走快速路径 F.scaled_dot_product_attention "
           "(SDPA)，你的代码没有调用它（结果对，但走的是手写路径，训练时慢、费显存）。条件：self.flash and seq_len > 1 "
           "and past_key_value is None and (attention_mask is None or torch.all(attention_mask == 1))。")

    # 4. Causality: changing token j never changes an output before j (both paths).
    j = 3
    x2 = x.clone()
    x2[:, j:] += torch.randn(B, S - j, H)
    for a, name in ((attn, "手写路径"), (fast, "快速路径")):
        with torch.no_grad():
            o1, _ = a(x, (c, s))
            o2, _ = a(x2, (c, s))
        expect(close(o1[:, :j], o2[:, :j], atol=TOL),
               f"{name}不满足因果性 (causality)：改了第 {j} 个及以后的 token，前面位置的输出也变了"
               f"（最大变化 {max_err(o1[:, :j], o2[:, :j]):.3g}）。检查因果掩码。")

    # 5. Padding mask (left padding in row 1), on both configs: the fast path must step aside.
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, :2] = 0
    with torch.no_grad():
        want_m, _ = ra(x, (c, s), attention_mask=mask)
        for a, name in ((attn, "手写路径"), (fast, "快速路径配置")):
            with _Spy() as spy:
                out_m, _ = a(x, (c, s), attention_mask=mask)
            if any(call["is_causal"] and not call["attn_mask"] for call in spy.sdpa):
                fail("有 padding（attention_mask 里有 0）时不能走 SDPA 的 is_causal=True 快速路径：is_causal 只遮住未来，"
                     "不知道哪些 key 是 padding——padding 掩码 (attention_mask) 被忽略了。mask 不是全 1 时走手写路径，"
                     "加上 (1 - mask) * -1e9。")
            # inf/NaN anywhere is a mistake; the values are compared where a query sees a real key
            # (positions 0, 1 of row 1 see only padding: their outputs are meaningless)
            reason = _nonfinite_reason(expect_tensor(out_m, "Attention.forward")[1:], mask[1:])
            if reason:
                fail(reason)
            cands = [(lambda f=f: f()[:, 2:], msg) for f, msg in _candidates(ra, x[1:], c, s, mask=mask[1:])]
            _compare(out_m[1:, 2:], want_m[1:, 2:], cands, f"{name}带 padding 掩码 (attention_mask) 的输出")
        ones = torch.ones(B, S, dtype=torch.long)
        with _Spy() as spy:
            out_1, _ = fast(x, (c, s), attention_mask=ones)
        expect(close(out_1, want, atol=TOL), "attention_mask 全是 1 时，输出应与不传 mask 时相同。")
        expect(bool(spy.sdpa),
               "attention_mask 全是 1（没有 padding）时也应该走快速路径 SDPA：条件是 "
               "(attention_mask is None or torch.all(attention_mask == 1))，不只是 attention_mask is None。")
        # a sequence that is all padding (row 0): its outputs are meaningless but must stay finite
        empty = torch.ones(B, S, dtype=torch.long)
        empty[0] = 0
        want_e, _ = ra(x, (c, s), attention_mask=empty)
        for a, name in ((attn, "手写路径"), (fast, "快速路径配置")):
            out_e, _ = a(x, (c, s), attention_mask=empty)
            if not torch.isfinite(out_e).all():
                fail(_nonfinite_reason(out_e, empty) or PAD_NEG_INF)
            _compare(out_e[1:], want_e[1:], _candidates(ra, x[1:], c, s, mask=empty[1:]),
                     f"{name}（另一行全是 padding 时）的输出", mask=empty[1:])
        try:
            fast(x, (c, s), attention_mask=torch.ones(B, S + 1))
        except ValueError:
            pass
        except Exception as e:
            fail(f"attention_mask 形状不对（(b, seq + 1)）时应抛 ValueError 并写明应有的形状 (b, past + seq)，"
                 f"你的抛出了 {type(e).__name__}: {e}")
        else:
            fail("attention_mask 形状不对（(b, seq + 1)）时应抛 ValueError：它必须是 (batch, past + seq)。")

    # 6. KV cache: what it holds, one chunk after a prefix, and token-by-token decoding.
    P = 4
    with torch.no_grad():
        _, rkv = ra(x[:, :P], (cos[:P], sin[:P]), use_cache=True)
        _, kv = run(attn, x[:, :P], (cos[:P], sin[:P]), use_cache=True)
    expect(isinstance(kv, tuple) and len(kv) == 2, "use_cache=True 时第二个返回值应是 (k, v) 二元组。")
    k0 = expect_tensor(kv[0], "缓存的 k")
    shape = (B, P, NKV, HD)
    if tuple(k0.shape) != shape:
        if tuple(k0.shape) == (B, P, NH, HD):
            fail(f"KV cache 存的是 repeat_kv 之后的头：形状 {tuple(k0.shape)}，应为 {shape}（num_key_value_heads 个头）。"
                 f"先把 past_kv = (k, v) 存下来，再 repeat_kv——GQA 的意义就是让缓存小 n_rep 倍。")
        if tuple(k0.shape) in ((B, NKV, P, HD), (B, NH, P, HD)):
            fail(f"KV cache 的布局不对：形状 {tuple(k0.shape)}，应为 (batch, seq, kv_heads, head_dim) = {shape}。"
                 f"在 transpose 之前存缓存。")
        fail(f"KV cache 里 k 的形状应为 (batch, seq, kv_heads, head_dim) = {shape}，你的是 {tuple(k0.shape)}。")
    if not close(k0, rkv[0], atol=TOL):
        raw = ra.k_proj(x[:, :P]).view(B, P, NKV, HD)
        if close(k0, raw, atol=TOL):
            fail("KV cache 里存的是旋转前的 k：要存 apply_rotary_pos_emb 之后的 k（RoPE 只对每个 token 做一次）。")
        fail(f"KV cache 里的 k 和参考实现不一致（最大误差 {max_err(k0, rkv[0]):.3g}）：应是 RoPE 之后、repeat_kv 之前的 k。")
    expect(close(kv[1], rkv[1], atol=TOL), "KV cache 里的 v 不对：应是 v_proj(x) 的 (batch, seq, kv_heads, head_dim) 视图。")

    for a, name in ((attn, "手写路径"), (fast, "快速路径配置")):
        try:
            with torch.no_grad(), _Spy() as spy:
                out_c, kv_c = a(x[:, P:], (cos[P:S], sin[P:S]), past_key_value=rkv, use_cache=True)
        except NotImplementedError:
            raise
        except Exception as e:
            fail(f"带 KV cache 的前向出错了（{type(e).__name__}: {str(e)[:160]}）。最常见的原因：拼接缓存的维度不对——"
                 f"k、v 的形状是 (batch, seq, kv_heads, head_dim)，要在 seq 维 torch.cat([past_k, k], dim=1)。")
        expect(not any(call["is_causal"] for call in spy.sdpa), SDPA_WITH_CACHE)
        _compare(out_c, want[:, P:], _candidates(ra, x[:, P:], cos[P:S], sin[P:S], past=rkv),
                 f"{name}：有 {P} 个缓存 token 时新 token 的输出")
        expect(isinstance(kv_c, tuple) and tuple(kv_c[0].shape) == (B, S, NKV, HD),
               f"拼接后的缓存 k 形状应为 {(B, S, NKV, HD)}，你的是 {tuple(kv_c[0].shape)}：在 seq 维 (dim=1) 上拼接。")

        past, outs = None, []
        for t in range(S):
            with torch.no_grad(), _Spy() as spy:
                o, past = a(x[:, t:t + 1], (cos[t:t + 1], sin[t:t + 1]), past_key_value=past, use_cache=True)
            # one new token with a cache: is_causal=True would let it see key 0 only
            expect(t == 0 or not any(call["is_causal"] for call in spy.sdpa), SDPA_WITH_CACHE)
            outs.append(o)
        dec = torch.cat(outs, 1)
        expect(close(dec, want, atol=TOL),
               f"{name}：用 KV cache 一个一个 token 解码的输出和一次算完整序列不一致（最大误差 {max_err(dec, want):.3g}）。")

    # 7. Dropout only in training: the same masks as the reference under the same seed (manual
    #    path: attn_dropout on the weights, resid_dropout after o_proj), dropout_p passed to SDPA.
    for flash in (False, True):
        drop, rdrop = _pair(impl, ref, dropout=0.5, flash_attn=flash)
        drop.load_state_dict(sd); rdrop.load_state_dict(sd)
        drop.eval()
        with torch.no_grad():
            expect(close(drop(x, (c, s))[0], want, atol=TOL),
                   "eval() 模式下 dropout 应该关闭：用 nn.Dropout 模块；SDPA 里 dropout_p=self.dropout if self.training else 0.0。")
            drop.train(); rdrop.train()
            with seeded(3), _Spy() as spy:
                d1 = drop(x, (c, s))[0]
            with seeded(4):
                d2 = drop(x, (c, s))[0]
            if flash:
                ps = [call["dropout_p"] for call in spy.sdpa]
                expect(ps == [0.5],
                       f"快速路径在 train() 模式要把 dropout_p=self.dropout（这里 0.5）传给 SDPA，你的调用是 dropout_p={ps}："
                       f"F.scaled_dot_product_attention(..., dropout_p=self.dropout if self.training else 0.0, "
                       f"is_causal=True)。")
            else:
                _check_manual_dropout(ra=rdrop, got=d1, x=x, c=c, s=s)
        expect(not close(d1, d2, atol=1e-6), "train() 模式、dropout=0.5 时两次前向应该不同：dropout 没有生效。")

    # 8. Low precision (bf16 without a mask, fp16 with padding): the softmax still runs in fp32.
    _check_low_precision(impl, ref, sd, x, c, s, mask)

    # 9. Gradients reach every weight and the input.
    attn.train()
    xg = x.clone().requires_grad_(True)
    attn.zero_grad()
    attn(xg, (c, s))[0].square().sum().backward()
    expect(xg.grad is not None and torch.isfinite(xg.grad).all(), "梯度没有传回输入 x。")
    for name, p in attn.named_parameters():
        expect(p.grad is not None and p.grad.abs().sum() > 0, f"{name} 没有得到梯度。")
    return ("repeat_kv、参数、手写路径与 SDPA（≤1e-5，确实调用了 SDPA；有缓存或 padding 时不走）、因果性、"
            "padding 掩码（含整行 padding）、KV cache（内容与逐 token 解码）、dropout（与参考同掩码）、"
            "fp32 softmax（bf16/fp16）、梯度：全部正确。")
