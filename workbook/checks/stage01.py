"""Check for stage 01: RMSNorm.

Compares the learner's RMSNorm with the reference on seeded inputs, and names the usual
mistakes by recomputing what each of them would output (see tools.diagnose).
"""
from __future__ import annotations

import copy

import torch

from .tools import close, diagnose, expect, expect_shape, expect_tensor, fail, max_err, seeded

DIM = 16


def _build(impl, dim: int = DIM, eps: float = 1e-5):
    try:
        return impl.RMSNorm(dim, eps=eps)
    except TypeError as e:
        fail(f"RMSNorm(dim, eps=...) 构造失败：{e}。签名应该是 RMSNorm(dim: int, eps: float = 1e-5)。")


def _check_parameters(norm, dim: int) -> None:
    params = dict(norm.named_parameters())
    if "weight" not in params:
        others = ", ".join(params) or "没有任何参数"
        if "gamma" in params or "scale" in params or "g" in params:
            fail(f"可学习的缩放参数要叫 weight（你的叫 {others}）。名字是契约：MiniMind 的 "
                 f"checkpoint 里存的是 'model.norm.weight'，换了名字就加载不了。")
        fail(f"缺少可学习的缩放参数 weight (nn.Parameter, 形状 ({dim},))：你的模块里是 {others}。"
             f"没有 weight，RMSNorm 就不能学习每一维的尺度。")
    extra = sorted(set(params) - {"weight"})
    if extra:
        fail(f"RMSNorm 只有一个参数 weight，你多了 {', '.join(extra)}。"
             f"RMSNorm 没有偏置 (bias)——这是它和 LayerNorm 的区别之一。")
    w = params["weight"]
    expect_shape(w, (dim,), "weight")
    expect(torch.equal(w.detach(), torch.ones(dim)),
           "weight 的初始值应该全是 1（torch.ones(dim)）：刚初始化的 RMSNorm 只做归一化、不缩放。")
    expect(list(norm.state_dict()) == ["weight"],
           f"state_dict 的键应该只有 ['weight']，你的是 {list(norm.state_dict())}。")


def _candidates(x: torch.Tensor, w: torch.Tensor, eps: float, default_eps: float = 1e-5):
    """(what a known mistake would output, its diagnostic) for input x and weight w."""
    xf = x.float()

    def rms(t, dim=-1):
        return torch.rsqrt(t.pow(2).mean(dim, keepdim=True) + eps)

    return [
        (lambda: (xf * rms(xf)).type_as(x),
         "输出和没乘 weight 的结果一样：forward 最后要乘上 self.weight。"),
        (lambda: w * ((xf - xf.mean(-1, keepdim=True))
                      * torch.rsqrt(xf.var(-1, unbiased=False, keepdim=True) + eps)).type_as(x),
         "你减去了均值 (mean subtraction)，这是 LayerNorm 的做法。RMSNorm 不减均值：直接除以 "
         "sqrt(mean(x²) + eps)。"),
        (lambda: w * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).type_as(x),
         "eps 加在了根号外面：应该是 1/sqrt(mean(x²) + eps)，不是 1/(sqrt(mean(x²)) + eps)。"
         "x 很小时两者差别很大。"),
        (lambda: w * (xf * torch.rsqrt(xf.abs().mean(-1, keepdim=True) + eps)).type_as(x),
         "分母用了 mean(|x|)：应该是平方的均值 mean(x²)，再开方。"),
        (lambda: w * (xf * torch.rsqrt(xf.mean(-1, keepdim=True) + eps)).type_as(x),
         "分母用了 mean(x)：应该是平方的均值 mean(x²)（root mean square）。"),
        (lambda: w * (xf * torch.rsqrt(xf.pow(2).mean(-2, keepdim=True) + eps)).type_as(x),
         "归一化的维度不对：你在倒数第二维（序列维 seq）上求均值，应该在最后一维 (hidden, dim=-1)。"),
        (lambda: w * (xf * torch.rsqrt(xf.pow(2).mean(0, keepdim=True) + eps)).type_as(x),
         "归一化的维度不对：你在第 0 维（batch）上求均值，应该在最后一维 (hidden, dim=-1)。"),
        (lambda: w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True))).type_as(x),
         "没有加 eps：分母应该是 sqrt(mean(x²) + eps)。"),
        (lambda: w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + default_eps)).type_as(x),
         "没有使用构造函数传入的 eps（像是写死了默认值）：要用 self.eps。"),
        (lambda: w * (xf * xf.pow(2).mean(-1, keepdim=True).sqrt()).type_as(x),
         "乘以了 RMS 而不是除以它：应该是 x * rsqrt(mean(x²) + eps)。"),
    ]


def _forward(norm, x: torch.Tensor, what: str) -> torch.Tensor:
    x_before = x.clone()
    out = expect_tensor(norm(x), what)
    expect(torch.equal(x, x_before),
           f"{what} 改动了输入 x（原地操作 in-place，例如 x.pow_ 或 x /= ...）。"
           f"forward 不能修改输入：残差连接还要用原来的 x。")
    expect_shape(out, x.shape, what)
    return out


def _compare(out, ref_out, cands, what: str, atol: float) -> None:
    if close(out, ref_out, atol=atol, rtol=atol):
        return
    if torch.isnan(out).any():
        if torch.isnan(cands[4][0]()).any():
            fail("输出里有 NaN：你对负数开了方——分母用了 mean(x) 吗？应该是平方的均值 mean(x²)。")
        fail(f"{what} 的输出里有 NaN。常见原因：对负数开方，或除以了 0（忘了 eps）。")
    reason = diagnose(out, cands, atol=atol)
    if reason:
        fail(reason)
    fail(f"{what} 的输出和参考实现不一致：最大误差 {max_err(out, ref_out):.3g}（容差 {atol}）。"
         f"对照公式 y = weight * x / sqrt(mean(x², dim=-1) + eps) 检查。")


def check(impl, ref) -> str:
    norm = _build(impl)
    _check_parameters(norm, DIM)
    ref_norm = ref.RMSNorm(DIM)

    # Random weights, so a missing or misplaced `* weight` shows.
    with seeded(1):
        w = torch.rand(DIM) + 0.5
    with torch.no_grad():
        norm.weight.copy_(w)
        ref_norm.weight.copy_(w)

    # 1. fp32, three input scales: O(1), tiny (eps dominates), positive-only (mean(x) is defined).
    with seeded(0):
        inputs = {
            "普通输入": torch.randn(2, 5, DIM),
            "很小的输入（|x|≈1e-3，eps 起作用）": torch.randn(2, 5, DIM) * 1e-3,
            "全正的输入": torch.rand(2, 5, DIM) + 0.1,
        }
    for label, x in inputs.items():
        out = _forward(norm, x, f"RMSNorm({label})")
        _compare(out, ref_norm(x), _candidates(x, w, norm_eps(norm)), f"RMSNorm（{label}）", 1e-5)

    # 2. The eps argument is honoured.
    custom = _build(impl, DIM, eps=0.1)
    ref_custom = ref.RMSNorm(DIM, eps=0.1)
    with seeded(2):
        x = torch.randn(3, DIM) * 0.3
    out = _forward(custom, x, "RMSNorm(dim, eps=0.1)")
    _compare(out, ref_custom(x), _candidates(x, torch.ones(DIM), 0.1), "RMSNorm(eps=0.1)", 1e-5)

    # 3. Half precision (a model cast with .half() / .bfloat16()): dtype kept, no overflow.
    for dtype in (torch.float16, torch.bfloat16):
        half, ref_half = copy.deepcopy(norm).to(dtype), copy.deepcopy(ref_norm).to(dtype)
        with seeded(3):
            x = (torch.randn(2, 4, DIM) * 3).to(dtype)
        out = _forward(half, x, f"RMSNorm({dtype})")
        if out.dtype != dtype:
            fail(f"模块和输入都是 {dtype} 时输出也应是 {dtype}（你的是 {out.dtype}）。"
                 f"在 fp32 里算完归一化后要 .type_as(x) 转回输入的 dtype，再乘 weight。")
        if max_err(out, ref_half(x)) > 2e-2:
            fail(f"{dtype} 下的输出和参考实现不一致（最大误差 {max_err(out, ref_half(x)):.3g}）。"
                 f"顺序应是：x.float() → 归一化 → .type_as(x) → 乘 weight。")
    half, ref_half = copy.deepcopy(norm).half(), copy.deepcopy(ref_norm).half()
    with seeded(4):
        big = (torch.randn(2, 4, DIM) * 400).half()  # x² ≈ 160000 > fp16 max 65504
    out = _forward(half, big, "RMSNorm(fp16 大数值输入)")
    if not torch.isfinite(out).all() or max_err(out, ref_half(big)) > 2e-2:
        fail("fp16 输入的数值较大（|x|≈400）时结果错了：x² 超过了 fp16 的最大值 65504，变成 inf。"
             "先用 x.float() 把输入升到 fp32 再平方求均值，算完再 .type_as(x) 转回来。")

    # 4. Gradients reach both the input and the weight.
    x = torch.randn(2, 3, DIM, requires_grad=True)
    norm.zero_grad()
    norm(x).square().sum().backward()
    expect(x.grad is not None and torch.isfinite(x.grad).all(),
           "梯度没有传回输入 x：不要在 forward 里用 .detach() 或 torch.no_grad()。")
    expect(norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0,
           "weight 没有得到梯度：输出要乘上 self.weight（而且不能 detach）。")
    return "参数、fp32 输出、eps、fp16/bf16 dtype 与溢出、梯度：全部正确。"


def norm_eps(norm) -> float:
    """The eps the learner stored, if any (diagnostics only); the default otherwise."""
    eps = getattr(norm, "eps", None)
    return eps if isinstance(eps, float) else 1e-5
