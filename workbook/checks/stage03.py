"""Check for stage 03: repeat_kv and Attention (GQA, causal and padding masks, KV cache, SDPA).

The RoPE tables come from the reference `precompute_freqs_cis`, so this stage tests attention
itself (the learner's Attention still calls their own `apply_rotary_pos_emb`, which stage 02 has
already checked).  Mistakes are named by recomputing what each would output from the reference
weights (see `_attend`), or by a targeted property test (causality, cache shapes).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import _modes
from .tools import close, diagnose, expect, expect_shape, expect_tensor, fail, max_err, seeded

H, NH, NKV = 32, 4, 2
HD, N_REP = H // NH, NH // NKV
B, S = 2, 6
KEYS = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"]
TOL = 1e-5


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


def _nonfinite_reason(out: torch.Tensor) -> str | None:
    if torch.isfinite(out).all():
        return None
    rows = [i for i in range(out.shape[1]) if not torch.isfinite(out[:, i]).all()]
    if rows == [0]:
        return ("输出的第 0 个位置是 NaN：因果掩码把对角线也遮住了（diagonal=0），第一个 token 一个 key 都看不到，"
                "softmax 全是 -inf 就得到 NaN。torch.triu 要用 diagonal=1（有缓存时 start_pos + 1）。")
    if rows == list(range(out.shape[1] - 1)):
        return ("除了最后一个位置，输出都是 inf/NaN：掩码 (-inf) 加在了 softmax 之后。"
                "要先把掩码加到分数上，再 softmax(scores, dim=-1)。")
    return (f"输出里有 inf/NaN（位置 {rows}）。常见原因：-inf 掩码用错了地方（softmax 之后），或整行都被遮住了。")


def _compare(out, want, cands, what):
    out = expect_tensor(out, what)
    expect_shape(out, want.shape, what)
    if close(out, want, atol=TOL, rtol=TOL):
        return
    reason = _nonfinite_reason(out)
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
    except (ValueError, AssertionError):
        pass
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

    # 2. The manual path (flash_attn=False) against the reference.
    with torch.no_grad():
        out, kv = run(attn, x, (c, s))
        _compare(out, want, _candidates(ra, x, c, s), "手写路径 (flash_attn=False) 的输出")
    expect(kv is None, "use_cache=False 时第二个返回值应为 None。")

    # 3. The SDPA fast path (flash_attn=True): same result, ≤ 1e-5 in fp32.
    fast, _ = _pair(impl, ref, flash_attn=True)
    fast.load_state_dict(sd); fast.eval()
    with torch.no_grad():
        out_fast, _ = run(fast, x, (c, s))
        _compare(out_fast, want, _candidates(ra, x, c, s), "快速路径 (flash_attn=True, SDPA) 的输出")
        expect(max_err(out_fast, out) <= TOL,
               f"快速路径和手写路径的结果相差 {max_err(out_fast, out):.3g}（应 ≤ {TOL}）。")

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
            out_m, _ = a(x, (c, s), attention_mask=mask)
            _compare(out_m[1:], want_m[1:], _candidates(ra, x[1:], c, s, mask=mask[1:]),
                     f"{name}带 padding 掩码 (attention_mask) 的输出")
        ones = torch.ones(B, S, dtype=torch.long)
        out_1, _ = fast(x, (c, s), attention_mask=ones)
        expect(close(out_1, want, atol=TOL), "attention_mask 全是 1 时，输出应与不传 mask 时相同。")
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
            with torch.no_grad():
                out_c, kv_c = a(x[:, P:], (cos[P:S], sin[P:S]), past_key_value=rkv, use_cache=True)
        except NotImplementedError:
            raise
        except Exception as e:
            fail(f"带 KV cache 的前向出错了（{type(e).__name__}: {str(e)[:160]}）。最常见的原因：拼接缓存的维度不对——"
                 f"k、v 的形状是 (batch, seq, kv_heads, head_dim)，要在 seq 维 torch.cat([past_k, k], dim=1)。")
        _compare(out_c, want[:, P:], _candidates(ra, x[:, P:], cos[P:S], sin[P:S], past=rkv),
                 f"{name}：有 {P} 个缓存 token 时新 token 的输出")
        expect(isinstance(kv_c, tuple) and tuple(kv_c[0].shape) == (B, S, NKV, HD),
               f"拼接后的缓存 k 形状应为 {(B, S, NKV, HD)}，你的是 {tuple(kv_c[0].shape)}：在 seq 维 (dim=1) 上拼接。")

        past, outs = None, []
        with torch.no_grad():
            for t in range(S):
                o, past = a(x[:, t:t + 1], (cos[t:t + 1], sin[t:t + 1]), past_key_value=past, use_cache=True)
                outs.append(o)
        dec = torch.cat(outs, 1)
        expect(close(dec, want, atol=TOL),
               f"{name}：用 KV cache 一个一个 token 解码的输出和一次算完整序列不一致（最大误差 {max_err(dec, want):.3g}）。")

    # 7. Dropout only in training.
    for flash in (False, True):
        drop, _ = _pair(impl, ref, dropout=0.5, flash_attn=flash)
        drop.load_state_dict(sd)
        drop.eval()
        with torch.no_grad():
            expect(close(drop(x, (c, s))[0], want, atol=TOL),
                   "eval() 模式下 dropout 应该关闭：用 nn.Dropout 模块；SDPA 里 dropout_p=self.dropout if self.training else 0.0。")
            drop.train()
            with seeded(3):
                d1 = drop(x, (c, s))[0]
            with seeded(4):
                d2 = drop(x, (c, s))[0]
        expect(not close(d1, d2, atol=1e-6), "train() 模式、dropout=0.5 时两次前向应该不同：dropout 没有生效。")

    # 8. Gradients reach every weight and the input.
    attn.train()
    xg = x.clone().requires_grad_(True)
    attn.zero_grad()
    attn(xg, (c, s))[0].square().sum().backward()
    expect(xg.grad is not None and torch.isfinite(xg.grad).all(), "梯度没有传回输入 x。")
    for name, p in attn.named_parameters():
        expect(p.grad is not None and p.grad.abs().sum() > 0, f"{name} 没有得到梯度。")
    return ("repeat_kv、参数、手写路径与 SDPA（≤1e-5）、因果性、padding 掩码、KV cache（内容与逐 token 解码）、"
            "dropout、梯度：全部正确。")
