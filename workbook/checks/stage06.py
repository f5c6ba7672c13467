"""Check for stage 06: MiniMindBlock (pre-norm residual layer).

Builds the learner's block and the reference block with the same weights (the reference
state_dict loaded strictly), compares outputs on seeded inputs, and names the usual layout
mistakes (post-norm, a missing residual, the residual taken after the norm, one norm used twice
or swapped, parallel attention/MLP) by recomputing what each would output from the reference's
own submodules.  Also: the two norms are separate objects, and take eps from config.rms_norm_eps
(tested with a non-default eps).
"""
from __future__ import annotations

import torch

from .. import _modes
from .tools import close, diagnose, expect, expect_shape, expect_tensor, fail, max_err, seeded

HIDDEN, HEADS, KV_HEADS, VOCAB, MAX_POS = 32, 4, 2, 64, 64


def small_config(**overrides):
    """A tiny MiniMindConfig (the reference config class: plain data)."""
    cfg = dict(hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
               num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=MAX_POS,
               intermediate_size=64)
    cfg.update(overrides)
    return _modes.reference_module("config").MiniMindConfig(**cfg)


def rope(seq: int, start: int = 0):
    cos, sin = _modes.reference_module("model.rope").precompute_freqs_cis(HIDDEN // HEADS, MAX_POS)
    return cos[start:start + seq], sin[start:start + seq]


def load_same_weights(module, ref_module, what: str) -> None:
    """Strictly load ref_module's state_dict into module; a key mismatch names the keys."""
    got, want = module.state_dict(), ref_module.state_dict()
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    if missing or extra:
        msg = f"{what} 的 state_dict 键 (keys) 和 MiniMind2 不一致。"
        if missing:
            msg += f"\n  缺少：{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}"
        if extra:
            msg += f"\n  多出：{', '.join(extra[:8])}{' …' if len(extra) > 8 else ''}"
        if any("freqs" in k for k in extra):
            msg += ("\n  freqs_cos/freqs_sin 不该存进 state_dict：register_buffer(..., "
                    "persistent=False)，它们由 config 算出，MiniMind 的 checkpoint 里没有。")
        else:
            msg += "\n子模块的名字就是 checkpoint 的键名：对照文档字符串 (docstring) 里的名字。"
        fail(msg)
    for k, v in want.items():
        expect(tuple(got[k].shape) == tuple(v.shape),
               f"{what} 的参数 {k} 形状应该是 {tuple(v.shape)}，你的是 {tuple(got[k].shape)}。")
    module.load_state_dict(want, strict=True)


def randomise_norms(module, seed: int = 5) -> None:
    """RMSNorm weights start at 1; make them random so a swapped or missing norm shows."""
    with seeded(seed), torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.copy_(torch.rand_like(p) + 0.5)


def _build(impl, cfg):
    try:
        return impl.MiniMindBlock(0, cfg)
    except TypeError as e:
        fail(f"MiniMindBlock(layer_id, config) 构造失败：{e}。签名应该是 MiniMindBlock(layer_id, config)。")


POST_NORM = ("像是后归一化 (post-norm)：你把残差相加之后的和又做了 RMSNorm（h = norm(x + …)）。MiniMind 是 "
             "pre-norm：x + f(norm(x))，归一化只作用在子层的输入上，残差流本身不归一化。")


def _residual_normed(where: str) -> str:
    return (f"残差加错了对象：{where}把归一化之后的 norm(x) 加回去了（norm(x) + f(norm(x))）。"
            f"残差要加原来的、没归一化的输入：h = x + attn(input_layernorm(x))，"
            f"out = h + mlp(post_attention_layernorm(h))。先把 norm 的结果存进另一个变量，别覆盖 x。")


def _candidates(ref_block, x, pe):
    """(what a known layout mistake outputs, its diagnostic), from the reference's own submodules."""
    a, m = ref_block.self_attn, ref_block.mlp
    n1, n2 = ref_block.input_layernorm, ref_block.post_attention_layernorm

    def attn(inp):
        return a(inp, pe)[0]

    def layout(attn_in, attn_res, mlp_in, mlp_res, sum1=None, sum2=None):
        """h = attn_res(x) + attn(attn_in(x)) (then sum1); out = mlp_res(h) + mlp(mlp_in(h)) (then sum2)."""
        h = attn_res(x) + attn(attn_in(x))
        h = sum1(h) if sum1 else h
        out = mlp_res(h) + m(mlp_in(h))
        return sum2(out) if sum2 else out

    def same(t):
        return t

    def post_norm(na, nb):
        def f():
            h = na(x + attn(x))
            return nb(h + m(h))
        return f

    def no_attn_residual():
        h = attn(n1(x))
        return h + m(n2(h))

    def no_mlp_residual():
        h = x + attn(n1(x))
        return m(n2(h))

    def parallel():
        return x + attn(n1(x)) + m(n2(x))

    def no_norms():
        h = x + attn(x)
        return h + m(h)

    return [
        (post_norm(n1, n2), POST_NORM),
        (post_norm(n2, n1), POST_NORM),
        (lambda: layout(n1, same, n2, same, n1, n2), POST_NORM),  # pre-norm inputs and the sums normed too
        (lambda: layout(n1, same, n2, same, None, n2), POST_NORM),  # only the block's output normed
        (lambda: layout(n1, n1, n2, n2), _residual_normed("两个子层都")),
        (lambda: layout(n1, n1, n2, same), _residual_normed("注意力子层")),
        (lambda: layout(n1, same, n2, n2), _residual_normed("MLP 子层")),
        (no_attn_residual, "注意力子层少了残差连接 (residual)：应该是 h = x + self_attn(input_layernorm(x))[0]，"
                           "你的像是 h = self_attn(...)。"),
        (no_mlp_residual, "MLP 子层少了残差连接 (residual)：应该是 out = h + mlp(post_attention_layernorm(h))，"
                          "你的像是 out = mlp(...)。"),
        (lambda: layout(n1, same, n1, same),
         "MLP 前面用的是 input_layernorm：两个子层各有自己的 RMSNorm，MLP 前要用 post_attention_layernorm。"),
        (lambda: layout(n2, same, n2, same),
         "注意力前面用的是 post_attention_layernorm：两个子层各有自己的 RMSNorm，注意力前要用 input_layernorm。"),
        (lambda: layout(n2, same, n1, same),
         "两个 RMSNorm 用反了：注意力前要用 input_layernorm，MLP 前要用 post_attention_layernorm"
         "（名字就是位置：post_attention = 注意力之后）。"),
        (parallel, "MLP 读的是层的输入 x，而不是加上注意力之后的 h（这是并行式 parallel block）。MiniMind 是"
                   "串行的：先 h = x + attn(norm(x))，再 out = h + mlp(norm(h))。"),
        (no_norms, "子层前没有做 RMSNorm：self_attn 和 mlp 的输入应该是 input_layernorm(x) 和 "
                   "post_attention_layernorm(h)。"),
    ]


def _forward(block, x, pe, what, **kw):
    x_before = x.clone()
    res = block(x, pe, **kw)
    expect(isinstance(res, tuple) and len(res) == 2,
           f"{what} 应该返回 (out, present_key_value) 两个值，你返回的是 {type(res).__name__}。")
    out = expect_tensor(res[0], f"{what} 的 out")
    expect(torch.equal(x, x_before), f"{what} 改动了输入 hidden_states（原地操作 in-place，例如 x += ...）。"
                                     f"要写 h = x + attn_out，别写 x += attn_out。")
    expect_shape(out, x.shape, f"{what} 的 out")
    return res


def _compare(out, ref_out, cands, what, atol=1e-5):
    if close(out, ref_out, atol=atol, rtol=atol):
        return
    reason = diagnose(out, cands, atol=1e-4)
    if reason:
        fail(reason)
    fail(f"{what} 的输出和参考实现不一致：最大误差 {max_err(out, ref_out):.3g}（容差 {atol}）。"
         f"对照：h = x + self_attn(input_layernorm(x))[0]；out = h + mlp(post_attention_layernorm(h))。")


EPS = 0.5  # a non-default rms_norm_eps, large enough to change every output


def _check_eps(impl, ref, x, pe) -> None:
    """Both norms take eps from config.rms_norm_eps (a default or hard-coded eps is named)."""
    cfg = small_config(rms_norm_eps=EPS)
    with seeded(0):
        block, ref_block = _build(impl, cfg), ref.MiniMindBlock(0, cfg)
    randomise_norms(ref_block)
    load_same_weights(block, ref_block, f"MiniMindBlock(rms_norm_eps={EPS})")
    block.eval(); ref_block.eval()
    with torch.no_grad():
        out, _ = _forward(block, x, pe, f"MiniMindBlock(rms_norm_eps={EPS})")
        ref_out, _ = ref_block(x, pe)
        if close(out, ref_out, atol=1e-5, rtol=1e-5):
            return
        seen = ", ".join(f"{name}.eps = {getattr(getattr(block, name, None), 'eps', '?')}"
                         for name in ("input_layernorm", "post_attention_layernorm"))

        def with_default_eps(*names):
            def f():
                saved = {n: getattr(ref_block, n).eps for n in names}
                try:
                    for n in names:
                        getattr(ref_block, n).eps = 1e-5
                    return ref_block(x, pe)[0]
                finally:
                    for n, v in saved.items():
                        getattr(ref_block, n).eps = v
            return f

        reason = diagnose(out, [
            (with_default_eps("input_layernorm", "post_attention_layernorm"), "两个 RMSNorm 都"),
            (with_default_eps("input_layernorm"), "input_layernorm "),
            (with_default_eps("post_attention_layernorm"), "post_attention_layernorm "),
        ], atol=1e-4)
    if reason:
        fail(f"{reason}没有用 config.rms_norm_eps：config 里 rms_norm_eps = {EPS} 时，你的 {seen}，像是用了 RMSNorm "
             f"的默认值或写死的数。要写 RMSNorm(config.hidden_size, eps=config.rms_norm_eps)：MiniMind2 是 1e-5，"
             f"MiniMind-3 是 1e-6，写死了换一个 config 就对不上。")
    _compare(out, ref_out, _candidates(ref_block, x, pe), f"MiniMindBlock(rms_norm_eps={EPS})")


def check(impl, ref) -> str:
    # 1. dense block: submodule names, weights, output
    cfg = small_config()
    with seeded(0):
        block, ref_block = _build(impl, cfg), ref.MiniMindBlock(0, cfg)
    expect(getattr(block, "layer_id", None) == 0, "MiniMindBlock 要存下 self.layer_id = layer_id。")
    randomise_norms(ref_block)
    load_same_weights(block, ref_block, "MiniMindBlock")
    n1, n2 = getattr(block, "input_layernorm", None), getattr(block, "post_attention_layernorm", None)
    if n1 is not None and n1 is n2:
        fail("input_layernorm 和 post_attention_layernorm 是同一个 RMSNorm 对象 (same object)：两个名字指向一份"
             "权重，state_dict 里的两个键存的是同一个张量，加载 checkpoint 时后一个覆盖前一个。两个子层各要一个"
             "独立的 RMSNorm(config.hidden_size, eps=config.rms_norm_eps)：写两次 RMSNorm(...)，"
             "别写 a = b = RMSNorm(...)。")
    mlp = getattr(block, "mlp", None)
    expect(mlp is not None and type(mlp).__name__ == "FeedForward",
           f"use_moe=False 时 mlp 应该是 FeedForward，你的是 {type(mlp).__name__}。")
    block.eval(); ref_block.eval()
    with seeded(1):
        x = torch.randn(2, 6, HIDDEN)
    pe = rope(6)
    with torch.no_grad():
        out, present = _forward(block, x, pe, "MiniMindBlock")
        ref_out, _ = ref_block(x, pe)
        _compare(out, ref_out, _candidates(ref_block, x, pe), "MiniMindBlock")
        expect(present is None, "use_cache=False 时第二个返回值应该是 None（present_key_value）。")
    # 1b. eps comes from the config
    _check_eps(impl, ref, x, pe)

    with torch.no_grad():
        # 2. KV cache passes through: prefix with use_cache, then one new token
        _, kv = _forward(block, x[:, :5], rope(5), "MiniMindBlock(use_cache=True)", use_cache=True)
        expect(isinstance(kv, tuple) and len(kv) == 2,
               "use_cache=True 时要把 self_attn 返回的 (k, v) 原样返回。")
        expect_shape(kv[0], (2, 5, KV_HEADS, HIDDEN // HEADS), "缓存的 k")
        step, _ = _forward(block, x[:, 5:], rope(1, 5), "MiniMindBlock(带 past_key_value)",
                           past_key_value=kv, use_cache=True)
        expect(close(step, ref_out[:, 5:], atol=1e-5),
               f"带 KV cache 逐个 token 计算的结果和整段计算不一致（误差 {max_err(step, ref_out[:, 5:]):.3g}）："
               f"past_key_value、use_cache、attention_mask 要原样传给 self_attn。")

        # 3. padding mask is passed to attention
        mask = torch.ones(2, 6, dtype=torch.long)
        mask[0, :2] = 0
        out_m, _ = _forward(block, x, pe, "MiniMindBlock(attention_mask)", attention_mask=mask)
        ref_m, _ = ref_block(x, pe, attention_mask=mask)
        expect(close(out_m, ref_m, atol=1e-5),
               "传了 attention_mask 时结果不对：要把 attention_mask 传给 self_attn。")

    # 4. gradients reach every parameter and the input
    block.train()
    xg = x.clone().requires_grad_(True)
    block.zero_grad()
    block(xg, pe)[0].square().mean().backward()
    no_grad = [n for n, p in block.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    expect(not no_grad, f"这些参数没有得到梯度：{', '.join(no_grad)}。它们有没有参与 forward？")
    expect(xg.grad is not None, "梯度没有传回输入：forward 里不要 detach。")

    # 5. MoE block: mlp is an MOEFeedForward
    mcfg = small_config(use_moe=True, n_routed_experts=3, num_experts_per_tok=2)
    with seeded(2):
        mblock, ref_mblock = _build(impl, mcfg), ref.MiniMindBlock(1, mcfg)
    expect(type(getattr(mblock, "mlp", None)).__name__ == "MOEFeedForward",
           f"use_moe=True 时 mlp 应该是 MOEFeedForward，你的是 {type(getattr(mblock, 'mlp', None)).__name__}。")
    load_same_weights(mblock, ref_mblock, "MiniMindBlock(use_moe=True)")
    mblock.eval(); ref_mblock.eval()
    with torch.no_grad():
        mo, _ = _forward(mblock, x, pe, "MiniMindBlock(use_moe=True)")
        _compare(mo, ref_mblock(x, pe)[0], _candidates(ref_mblock, x, pe), "MiniMindBlock(use_moe=True)")
    return ("子模块名与 state_dict、两个独立的 RMSNorm 与 config 里的 eps、pre-norm 残差布局、KV cache 与 mask 透传、"
            "梯度、MoE 版本：全部正确。")
