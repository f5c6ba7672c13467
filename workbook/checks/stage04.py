"""Check for stage 04: FeedForward (SwiGLU).

Builds the learner's FeedForward with the reference's weights (strict state_dict load), compares
outputs on seeded inputs, and names the usual mistakes by recomputing what each would output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _modes
from .tools import close, diagnose, expect, expect_shape, expect_tensor, fail, max_err, seeded

KEYS = ["gate_proj.weight", "down_proj.weight", "up_proj.weight"]
H, I = 48, 80  # I given explicitly (not 8H/3 rounded): a hard-coded width shows


def _config(**kw):
    cfg = _modes.reference_module("config").MiniMindConfig
    base = dict(hidden_size=H, intermediate_size=I, num_attention_heads=4, num_key_value_heads=2,
                num_hidden_layers=1, vocab_size=64)
    base.update(kw)
    return cfg(**base)


def _build(impl, cfg, what="FeedForward(config)"):
    try:
        return impl.FeedForward(cfg)
    except NotImplementedError:
        raise
    except Exception as e:
        fail(f"{what} 构造失败：{type(e).__name__}: {e}。签名应该是 FeedForward(config: MiniMindConfig)。")


def _check_structure(ff, h: int, i: int) -> None:
    keys = list(ff.state_dict())
    if sorted(keys) != sorted(KEYS):
        extra = sorted(set(keys) - set(KEYS))
        missing = sorted(set(KEYS) - set(keys))
        msg = f"state_dict 的键应该正好是 {KEYS}，你的是 {keys}。"
        if any(k.endswith(".bias") for k in extra):
            msg += "三个 nn.Linear 都要 bias=False（MiniMind 的前馈网络没有偏置）。"
        elif missing:
            msg += (f"缺少 {missing}：名字是加载 checkpoint 的契约，要叫 gate_proj / down_proj / up_proj "
                    f"（Hugging Face Llama 的命名）。")
        fail(msg)
    expect(keys == KEYS, f"参数的注册顺序应是 gate_proj、down_proj、up_proj（state_dict 顺序 {KEYS}），"
                         f"你的是 {keys}。在 __init__ 里按这个顺序创建三个 nn.Linear。")
    shapes = {k: tuple(v.shape) for k, v in ff.state_dict().items()}
    want = {"gate_proj.weight": (i, h), "down_proj.weight": (h, i), "up_proj.weight": (i, h)}
    if shapes != want:
        width = shapes["gate_proj.weight"][0]
        why = ""
        if width == 4 * h:
            why = "你用了普通 MLP 的 4 倍宽。"
        elif width == int(8 * h / 3) or width == 64 * -(-int(8 * h / 3) // 64):
            why = "你自己按 8H/3 算了宽度。"
        fail(f"中间层宽度 (intermediate_size) 不对：gate_proj.weight 应为 {want['gate_proj.weight']}，"
             f"你的是 {shapes['gate_proj.weight']}（全部形状：{shapes}）。{why}"
             f"要直接用 config.intermediate_size（这里是 {i}）：宽度规则在 MiniMindConfig 里算好并写回了，"
             f"用户也可以显式指定别的宽度。")


def _candidates(ff_ref, x):
    g, u, d = ff_ref.gate_proj, ff_ref.up_proj, ff_ref.down_proj
    return [
        (lambda: d(F.gelu(g(x)) * u(x)),
         "激活函数用成了 GELU：SwiGLU 的门用 SiLU（x·sigmoid(x)），即 ACT2FN[config.hidden_act]，hidden_act='silu'。"),
        (lambda: d(F.gelu(g(x), approximate="tanh") * u(x)),
         "激活函数用成了 GELU (tanh 近似)：SwiGLU 的门用 SiLU，即 ACT2FN[config.hidden_act]。"),
        (lambda: d(F.relu(g(x)) * u(x)),
         "激活函数用成了 ReLU：SwiGLU 的门用 SiLU（x·sigmoid(x)），即 ACT2FN[config.hidden_act]。"),
        (lambda: d(torch.sigmoid(g(x)) * u(x)),
         "激活函数用成了 sigmoid（这是原始的 GLU）：SwiGLU 用 SiLU = x·sigmoid(x)。"),
        (lambda: d(g(x) * F.silu(u(x))),
         "SiLU 作用在了 up_proj 上：应该是 act(gate_proj(x)) * up_proj(x)——gate_proj 那一路过激活，当作门。"),
        (lambda: d(F.silu(g(x)) * F.silu(u(x))),
         "两路都过了 SiLU：只有 gate_proj(x) 过激活，up_proj(x) 保持线性，再逐元素相乘。"),
        (lambda: d(F.silu(g(x))),
         "缺少和 up_proj(x) 的逐元素乘积：SwiGLU 是 down_proj(act(gate_proj(x)) * up_proj(x))，"
         "你的输出像是 down_proj(act(gate_proj(x)))，up_proj 没用上。"),
        (lambda: d(F.silu(u(x))),
         "缺少门 (gate)：你的输出像是 down_proj(act(up_proj(x)))。应该是 act(gate_proj(x)) * up_proj(x)。"),
        (lambda: d(g(x) * u(x)),
         "没有激活函数：gate_proj(x) 要先过 SiLU 再和 up_proj(x) 相乘。"),
        (lambda: d(F.silu(g(x)) + u(x)),
         "门和值是相加的：SwiGLU 是逐元素相乘 act(gate_proj(x)) * up_proj(x)。"),
        (lambda: F.silu(d(g(x) * u(x))),
         "激活的位置不对：SiLU 应该作用在 gate_proj(x) 上，不是在 down_proj 之后。"),
    ]


def _forward(ff, x, what):
    before = x.clone()
    out = expect_tensor(ff(x), what)
    expect(torch.equal(x, before), f"{what} 改动了输入 x（原地操作 in-place）：forward 不能修改输入，残差连接还要用它。")
    expect_shape(out, x.shape, what)
    return out


def check(impl, ref) -> str:
    cfg = _config()
    ff = _build(impl, cfg)
    _check_structure(ff, H, I)
    ref_ff = ref.FeedForward(cfg)
    with seeded(0):
        for p in ref_ff.parameters():  # larger than the default init, so the activations differ
            torch.nn.init.normal_(p, std=0.3)
    try:
        ff.load_state_dict(ref_ff.state_dict(), strict=True)
    except RuntimeError as e:
        fail(f"加载参考实现的 state_dict 失败：{e}")
    ff.eval(); ref_ff.eval()

    # 1. Outputs (fp32), named mistakes.
    with seeded(1):
        x = torch.randn(2, 5, H)
    out = _forward(ff, x, "FeedForward")
    with torch.no_grad():
        want = ref_ff(x)
    if not close(out, want, atol=1e-5, rtol=1e-5):
        with torch.no_grad():
            reason = diagnose(out, _candidates(ref_ff, x), atol=1e-4)
        fail(reason or f"FeedForward 的输出和参考实现不一致：最大误差 {max_err(out, want):.3g}（容差 1e-5）。"
                       f"对照 out = down_proj(silu(gate_proj(x)) * up_proj(x)) 检查。")
    # any leading shape: (..., H)
    out2 = _forward(ff, x[0], "FeedForward（二维输入 (seq, hidden)）")
    expect(close(out2, want[0], atol=1e-5), "二维输入 (seq, hidden) 的输出不对：nn.Linear 作用在最后一维，"
                                            "不要假设输入一定是三维。")

    # 2. hidden_act is read from the config.
    cfg_gelu = _config(hidden_act="gelu")
    ff_g, ref_g = _build(impl, cfg_gelu, "FeedForward(config, hidden_act='gelu')"), ref.FeedForward(cfg_gelu)
    ff_g.load_state_dict(ref_ff.state_dict()); ref_g.load_state_dict(ref_ff.state_dict())
    with torch.no_grad():
        expect(close(ff_g(x), ref_g(x), atol=1e-5),
               "config.hidden_act='gelu' 时你的输出和参考实现不一致（像是仍在用 SiLU）：激活函数要按名字查 ACT2FN[config.hidden_act]，不要写死 F.silu。")

    # 3. The default width rule comes from the config (intermediate_size=None -> 64·ceil(8H/3 / 64)).
    cfg_def = _config(hidden_size=64, intermediate_size=None)
    ff_d = _build(impl, cfg_def, "FeedForward(默认宽度的 config)")
    _check_structure(ff_d, 64, cfg_def.intermediate_size)

    # 4. Bad arguments: an unknown activation name fails at construction, with a clear error.
    bad = _config()
    bad.hidden_act = "swishy"
    try:
        impl.FeedForward(bad)
    except NotImplementedError:
        raise
    except ValueError as e:
        expect("swishy" in str(e), f"hidden_act 未知时的报错要说出是哪个名字（'swishy'），你的报错是：{e}")
    except KeyError as e:
        fail(f"config.hidden_act='swishy'（不存在的激活函数）时应该抛 ValueError，你抛的是 KeyError: {e}——"
             f"这是 ACT2FN[config.hidden_act] 查字典失败的原始错误，看不出是配置写错了。"
             f"先判断 config.hidden_act in ACT2FN，不在就 raise ValueError（写出这个名字，并说明 MiniMind 用 'silu'）。")
    except Exception as e:  # noqa: BLE001
        fail(f"config.hidden_act='swishy'（不存在的激活函数）时应该抛 ValueError，你抛的是 {type(e).__name__}: {e}")
    else:
        fail("config.hidden_act='swishy'（不存在的激活函数）时 FeedForward 应该在构造时就报 ValueError，"
             "而不是默默用别的激活或到 forward 时才出错。")

    # 5. Dropout: active in train(), off in eval().
    cfg_do = _config(dropout=0.5)
    ff_do = _build(impl, cfg_do, "FeedForward(config, dropout=0.5)")
    ff_do.load_state_dict(ref_ff.state_dict())
    ff_do.eval()
    with torch.no_grad():
        expect(close(ff_do(x), want, atol=1e-5),
               "eval() 模式下 dropout 应该关闭，输出应与 dropout=0 时相同：用 nn.Dropout(config.dropout)，"
               "不要用 F.dropout(..., training=True)。")
        ff_do.train()
        with seeded(5):
            a = ff_do(x)
        n_zero = int((a == 0).sum())
    expect(n_zero > 0, "train() 模式、dropout=0.5 时输出里应有被置零的元素：forward 最后要过 self.dropout。")

    # 6. Gradients reach every weight and the input.
    ff.train()
    xg = x.clone().requires_grad_(True)
    ff.zero_grad()
    ff(xg).square().sum().backward()
    expect(xg.grad is not None and torch.isfinite(xg.grad).all(), "梯度没有传回输入 x：不要 detach 或 torch.no_grad()。")
    for name, p in ff.named_parameters():
        expect(p.grad is not None and p.grad.abs().sum() > 0, f"{name} 没有得到梯度：它在 forward 里用上了吗？")
    return "参数名与形状、SwiGLU 输出、hidden_act、宽度规则、报错、dropout、梯度：全部正确。"
