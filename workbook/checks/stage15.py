"""Check for stage 15: LoRA, apply_lora, save_lora, load_lora, merge_lora.

All on tiny reference MiniMindForCausalLMs (hidden 32, 2 layers; the model class is the
reference's, so only the learner's LoRA code is judged):

1. LoRA alone: A (rank, in) and B (out, rank) without bias, ``rank`` kept, no other parameter;
   A ~ N(0, 0.02), B = 0 (A = 0 too is named by the gradients it kills); forward = B(A(x)), a
   scale factor (PEFT's lora_alpha / r) named by its value.
2. apply_lora picks every square nn.Linear and nothing else, on three configs: the default one
   (q_proj and o_proj), one where k/v and the FFN are square too (so a choice by name shows),
   and a MoE one.  Wrong picks are named (every Linear, lm_head, a non-square layer, q_proj only,
   a choice by name); the rank argument reaches the LoRA, its default is 8.
3. Every adapted layer computes original(x) + lora(x) with its *own* weights (a late-binding
   closure, a dropped term, a scale are named); the whole model's logits equal the reference's
   with the same adapters; before training the model is unchanged; every parameter but the
   LoRA ones is frozen and the returned count is theirs; at step 0 only B gets a gradient.
4. The adapters follow the weight's dtype (a bf16 model) and device (a model on "meta", which
   stands in for a GPU).
5. save_lora writes only the LoRA tensors under MiniMind's keys, without the DDP / compile
   prefixes (fake wrappers: a DistributedDataParallel instance built without a process group,
   and a module holding the model as ``_orig_mod`` like torch.compile's OptimizedModule).
   A bf16 model's adapters are saved in bf16 (a file in another dtype is named as such).
6. load_lora: the reference's file loads back (plain, prefixed, into a wrapped model, into a
   bf16 model); a missing or unexpected key is a ValueError naming it; a file saved at another
   rank is a ValueError naming the key or the shapes (a RuntimeError leaking from copy_, and a
   rank-1 file that copy_ silently broadcasts into a rank-4 model, are named); a file that
   carries code must not run it (weights_only=True).
7. merge_lora: W = W0 + B·A (twice, transposed, not at all are named), the adapters gone and
   the plain forward back (else B·A counts twice), the logits unchanged, the state_dict exactly
   MiniMind's keys and loadable strictly into a fresh model; a bf16 model stays bf16.
"""
from __future__ import annotations

import inspect
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from .. import _modes
from .stage06 import HIDDEN, VOCAB, small_config
from .tools import close, expect, fail, max_err, seeded

RANK = 4  # the rank the check asks for (not the default 8: a rank that is not passed on shows)
A_STD = 0.02
# A's std must lie within this factor of 0.02 (the class test draws 2048 values: ~1.6 % error;
# the four adapters of the tiny model 512 values: ~3 %)
A_STD_FACTOR = 1.2
CONFIGS = {  # label -> small_config overrides
    "默认的小配置 (hidden 32, kv 头 2, intermediate 64)": {},
    "k_proj/v_proj 和 FFN 也是方阵的配置 (kv 头 = 注意力头 = 4, intermediate = hidden = 32)":
        {"num_key_value_heads": 4, "intermediate_size": 32},
    "MoE 配置 (use_moe, 4 个专家 + 1 个共享专家, intermediate 48)": {"use_moe": True, "intermediate_size": 48},
}
DEFAULT = next(iter(CONFIGS))

_SPRUNG: list[bool] = []  # set when a file's pickled code ran (weights_only=False)


# ---------------------------------------------------------------- helpers

def _model(overrides: dict | None = None, seed: int = 0):
    """A fresh tiny reference MiniMindForCausalLM, eval mode."""
    cls = _modes.reference_module("model.causal_lm").MiniMindForCausalLM
    with seeded(seed):
        model = cls(small_config(**(overrides or {})))
    return model.eval()


def _ids(seed: int = 1) -> torch.Tensor:
    with seeded(seed):
        return torch.randint(3, VOCAB, (2, 12))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(_ids()).logits.float()


def _linears(model) -> dict[str, tuple[int, int]]:
    """{name: weight shape (out, in)} of every nn.Linear."""
    return {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _adapters(model) -> dict[str, nn.Module]:
    """{module name: its LoRA} for every module that carries one as ``.lora``."""
    return {n: m.lora for n, m in model.named_modules() if isinstance(getattr(m, "lora", None), nn.Module)}


def _lora_weights(lora, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    A, B = getattr(lora, "A", None), getattr(lora, "B", None)
    expect(isinstance(A, nn.Linear) and isinstance(B, nn.Linear),
           f"{name}.lora 要有两个 nn.Linear 子模块 A 和 B（名字就是保存的键 …lora.A.weight / …lora.B.weight），"
           f"你的是 A={type(A).__name__}, B={type(B).__name__}。")
    return A.weight, B.weight


def _apply(impl, model, rank: int | None = RANK):
    try:
        inspect.signature(impl.apply_lora).bind(model, rank=8)
    except TypeError:
        fail(f"apply_lora 的签名应该是 apply_lora(model, rank=8)，你的是 apply_lora{inspect.signature(impl.apply_lora)}。")
    return impl.apply_lora(model) if rank is None else impl.apply_lora(model, rank=rank)


def _randomise(adapters: dict[str, nn.Module], seed: int) -> None:
    """Give every adapter random A and B (B = 0 would hide most mistakes)."""
    with seeded(seed), torch.no_grad():
        for name, lora in adapters.items():
            A, B = _lora_weights(lora, name)
            A.normal_(0.0, 0.2)
            B.normal_(0.0, 0.2)


def _copy_adapters(src: dict[str, nn.Module], dst: dict[str, nn.Module]) -> None:
    with torch.no_grad():
        for name, lora in dst.items():
            A, B = _lora_weights(src[name], name)
            lora.A.weight.copy_(A)
            lora.B.weight.copy_(B)


def _scale(got: torch.Tensor, base: torch.Tensor, delta: torch.Tensor) -> float | None:
    """k if got == base + k·delta (k != 1), else None."""
    d = delta.detach().double().flatten()
    if d.norm() < 1e-8:
        return None
    k = torch.dot((got - base).detach().double().flatten(), d).item() / torch.dot(d, d).item()
    if abs(k - 1) > 1e-3 and close(got, base + k * delta, atol=1e-5, rtol=1e-4):
        return k
    return None


def _scale_message(k: float) -> str:
    return (f"LoRA 的输出多乘了一个系数 ≈ {k:.4g}（像 PEFT 的 lora_alpha / r）：MiniMind 的 LoRA 没有缩放 (scaling)，"
            f"forward 就是 B(A(x))。想要缩放的效果，调学习率或 B 的大小即可。")


# ---------------------------------------------------------------- 1. LoRA alone

def _check_lora_class(impl) -> None:
    inp, out, rank = 256, 192, 8
    with seeded(0):
        try:
            lora = impl.LoRA(inp, out, rank)
        except TypeError as e:
            fail(f"LoRA(in_features, out_features, rank) 构造失败：{e}。")
    expect(isinstance(lora, nn.Module), f"LoRA 应该是 nn.Module 的子类，你的是 {type(lora).__name__}。")
    expect(getattr(lora, "rank", None) == rank, f"LoRA({inp}, {out}, rank={rank}) 要把秩存在 self.rank 里"
                                                f"（你的 self.rank 是 {getattr(lora, 'rank', '没有')}）。")
    A, B = _lora_weights(lora, "LoRA")
    expect(tuple(A.shape) == (rank, inp),
           f"A 把输入从 in_features 压到 rank：nn.Linear({inp}, {rank}) 的 weight 形状是 ({rank}, {inp})，"
           f"你的 LoRA({inp}, {out}, {rank}).A.weight 是 {tuple(A.shape)}。")
    expect(tuple(B.shape) == (out, rank),
           f"B 把 rank 放大回 out_features：nn.Linear({rank}, {out}) 的 weight 形状是 ({out}, {rank})，"
           f"你的 LoRA({inp}, {out}, {rank}).B.weight 是 {tuple(B.shape)}。")
    expect(lora.A.bias is None and lora.B.bias is None, "A 和 B 都不要偏置：nn.Linear(..., bias=False)。")
    names = sorted(n for n, _ in lora.named_parameters())
    expect(names == ["A.weight", "B.weight"],
           f"LoRA 只有两个参数 A.weight 和 B.weight，你的有 {names}：不要加 alpha、缩放之类的参数"
           f"（它们会变成可训练参数，也会多出保存的键）。")

    # initialisation
    if B.detach().abs().max() > 0:
        fail(f"B 要初始化为零 (zeros)：你的 B.weight 的标准差是 {B.detach().std():.3g}。B ≠ 0 时 B·A ≠ 0，"
             f"apply_lora 一挂上、还没训练，模型的输出就变了（学好的权重被随机噪声扰乱）。"
             f"nn.init.zeros_(self.B.weight)；只有 A 是随机的。")
    if A.detach().abs().max() == 0:
        with seeded(2):
            x, g = torch.randn(4, inp), torch.randn(4, out)
        lora.zero_grad()
        (lora(x) * g).sum().backward()
        ga = 0.0 if A.grad is None else A.grad.abs().max().item()
        gb = 0.0 if B.grad is None else B.grad.abs().max().item()
        fail(f"A 和 B 都初始化成了零：B·A = 0 没错，可梯度也没了。在一个随机输入上反向传播，A 的梯度最大是 {ga:.3g}，"
             f"B 的梯度最大是 {gb:.3g}。B 的梯度 = (∂L/∂y)·(A x)ᵀ，A x = 0 所以它是 0；A 的梯度 = Bᵀ·(∂L/∂y)·xᵀ，"
             f"B = 0 所以它也是 0——两个永远是 0，LoRA 一步都学不动。A 要随机：nn.init.normal_(self.A.weight, "
             f"mean=0.0, std=0.02)，只有 B 从零开始。")
    std, mean = A.detach().double().std().item(), A.detach().double().mean().item()
    default_std = 1 / math.sqrt(3 * inp)  # nn.Linear's kaiming_uniform(a=√5): U(±1/√in)
    if abs(std - default_std) / default_std < 0.1:
        fail(f"A 用的是 nn.Linear 的默认初始化（均匀分布 U(±1/√in)，这里标准差 ≈ {default_std:.3f}，你的 {std:.3f}）："
             f"MiniMind 把 A 重新初始化成 N(0, 0.02)：nn.init.normal_(self.A.weight, mean=0.0, std=0.02)。")
    if not (A_STD / A_STD_FACTOR <= std <= A_STD * A_STD_FACTOR) or abs(mean) > 0.2 * A_STD:
        fail(f"A 的初始化应该是 N(0, 0.02)（均值 0、标准差 0.02），你的均值 {mean:.3g}、标准差 {std:.3g}："
             f"nn.init.normal_(self.A.weight, mean=0.0, std=0.02)。")

    # forward = B(A(x))
    with seeded(3), torch.no_grad():
        A.normal_(0.0, 0.2)
        B.normal_(0.0, 0.2)
        x = torch.randn(3, 5, inp)
        x0 = x.clone()
        try:
            got = lora(x)
        except RuntimeError as e:
            fail(f"LoRA({inp}, {out}, {rank}) 在形状 (3, 5, {inp}) 的输入上报错：{str(e)[:100]}。forward 要先 A 再 B："
                 f"self.B(self.A(x))，A 把 in_features={inp} 压到 rank={rank}，B 再放大到 out_features={out}；"
                 f"写成 self.A(self.B(x)) 时 B 收到的是 {inp} 维的 x，形状对不上。")
    expect(isinstance(got, torch.Tensor) and tuple(got.shape) == (3, 5, out),
           f"LoRA({inp}, {out}, {rank}) 在形状 (3, 5, {inp}) 的输入上应该输出 (3, 5, {out})，"
           f"你的是 {tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}。")
    expect(torch.equal(x, x0), "LoRA.forward 改动了输入 x（原地操作 in-place）：不要修改 x。")
    want = x @ A.detach().T @ B.detach().T
    if not close(got, want, atol=1e-4, rtol=1e-4):
        k = _scale(got, torch.zeros_like(want), want)
        if k is not None:
            fail(_scale_message(k))
        fail(f"LoRA.forward 应该是 B(A(x))（先 A：in → rank，再 B：rank → out），最大差 {max_err(got, want):.3g}。")


# ---------------------------------------------------------------- 2. which layers

def _diagnose_layers(got: set[str], want: set[str], linears: dict, label: str) -> None:
    extra, missing = got - want, want - got
    rule = ("MiniMind 的规则只看形状：weight 是方阵 (square, out == in) 的 nn.Linear 才挂 LoRA"
            "（MiniMind2-Small 里就是每层的 q_proj 和 o_proj）。")
    if not got:
        fail(f"{label}：apply_lora 之后没有一个模块有 `.lora`。要把 LoRA 挂成被适配的 nn.Linear 的属性 "
             f"module.lora = LoRA(...)（属性名就是 lora：保存的键 …q_proj.lora.A.weight 和训练脚本都靠它）。")
    if got == set(linears) and want != got:
        fail(f"{label}：你给每个 nn.Linear 都挂了 LoRA（{len(got)} 个，包括 k_proj/v_proj、FFN 和 lm_head）。{rule}"
             f"这里应该是 {len(want)} 个：{', '.join(sorted(want))}。")
    if "lm_head" in extra:
        fail(f"{label}：lm_head 也挂了 LoRA。它的 weight 是 (vocab, hidden) = {linears['lm_head']}，不是方阵。{rule}"
             f"（lm_head 和 embed_tokens 共享一个矩阵，给它加适配器、合并时还会连带改掉词嵌入。）")
    if extra:
        name = sorted(extra)[0]
        fail(f"{label}：{name} 的 weight 是 {linears[name]}，不是方阵，不该挂 LoRA（多挂了 {len(extra)} 个）。{rule}"
             f"PEFT 的 target_modules 那样按名字选（例如 [\"q_proj\", \"v_proj\"]）是另一种规则，不是 MiniMind 的。")
    if got and all(n.endswith("q_proj") for n in got):
        fail(f"{label}：只挂在了 q_proj 上，漏了 {', '.join(sorted(missing))}。{rule}")
    if got == {n for n in want if n.endswith(("q_proj", "o_proj"))}:
        fail(f"{label}：你像是按名字 (by name) 只选了 q_proj 和 o_proj。这个配置里 k_proj/v_proj（kv 头数等于注意力头数）"
             f"和 FFN 的三个投影（intermediate_size 等于 hidden_size）也是方阵，例如 {sorted(missing)[0]} "
             f"{linears[sorted(missing)[0]]}，也要挂。{rule}按形状判断：module.weight.shape[0] == module.weight.shape[1]。")
    name = sorted(missing)[0]
    fail(f"{label}：{name}（weight {linears[name]}，是方阵）没有挂上 LoRA（漏了 {len(missing)} 个）。{rule}")


def _check_layers(impl, label: str, overrides: dict) -> None:
    model = _model(overrides)
    linears = _linears(model)
    want = {n for n, (o, i) in linears.items() if o == i}
    _apply(impl, model)
    replaced = [n for n in linears if not isinstance(model.get_submodule(n), nn.Linear)]
    if replaced:
        fail(f"{label}：{replaced[0]} 不再是 nn.Linear，而是 {type(model.get_submodule(replaced[0])).__name__}。"
             f"不要替换模块：在原来的 nn.Linear 上挂 module.lora 并改它的 forward，state_dict 里原来的键名才不变，"
             f"合并 (merge) 之后才是原样的 MiniMindForCausalLM。")
    got = set(_adapters(model))
    if got != want:
        _diagnose_layers(got, want, linears, label)
    for name, lora in _adapters(model).items():
        out, inp = linears[name]
        A, B = _lora_weights(lora, name)
        if tuple(A.shape) != (RANK, inp) or tuple(B.shape) != (out, RANK):
            if tuple(A.shape) == (8, inp):
                fail(f"apply_lora(model, rank={RANK}) 挂上的 LoRA 的秩是 8：rank 参数没有传给 LoRA(in, out, rank)。")
            fail(f"{label}：{name} 的 weight 是 {(out, inp)}，apply_lora(model, rank={RANK}) 给它的 LoRA 应该有 "
                 f"A.weight ({RANK}, {inp}) 和 B.weight ({out}, {RANK})，你的是 {tuple(A.shape)} 和 {tuple(B.shape)}。")


def _check_default_rank(impl) -> None:
    model = _model()
    _apply(impl, model, rank=None)
    ranks = {tuple(_lora_weights(lora, n)[0].shape)[0] for n, lora in _adapters(model).items()}
    expect(ranks == {8}, f"apply_lora(model) 不给 rank 时，秩 (rank) 默认是 8（MiniMind 的默认值），你的是 {sorted(ranks)}。")


# ---------------------------------------------------------------- 3. forward, freezing, gradients

def _check_layer_forward(impl, ref) -> None:
    """Every adapted layer computes W x + B A x with its own W, A and B."""
    model = _model()
    _apply(impl, model)
    adapters = _adapters(model)
    _randomise(adapters, seed=4)
    names = list(adapters)
    weights = {n: (model.get_submodule(n).weight.detach(), *[w.detach() for w in _lora_weights(adapters[n], n)])
               for n in names}
    with seeded(5):
        x = torch.randn(2, 5, HIDDEN)

    def y(n_w, n_lora):
        W, _, _ = weights[n_w]
        _, A, B = weights[n_lora]
        return x @ W.T, x @ A.T @ B.T

    last = names[-1]
    with torch.no_grad():
        for name in names:
            try:
                got = model.get_submodule(name)(x)
            except RecursionError:
                fail(f"{name}(x) 无限递归 (RecursionError)：新的 forward 里调用的 module.forward 已经是它自己了。"
                     f"函数运行时才去找 module.forward，那时它已经被换成了新函数。替换之前先把原来的绑定方法存下来，"
                     f"并绑进新函数：def forward_with_lora(x, original=module.forward, adapter=lora): "
                     f"return original(x) + adapter(x)。")
            base, delta = y(name, name)
            if close(got, base + delta, atol=1e-5, rtol=1e-5):
                continue
            if close(got, base, atol=1e-5, rtol=1e-5):
                fail(f"{name} 的输出里没有 LoRA：它只算了原来的 W x。apply_lora 要让被适配的层算 original(x) + lora(x)："
                     f"module.forward = forward_with_lora（在这个模块的实例上替换 forward）。")
            if close(got, delta, atol=1e-5, rtol=1e-5):
                fail(f"{name} 的输出只有 lora(x)：忘了加上原来的输出 original(x)。被适配的层算 W x + B A x。")
            last_base, last_delta = y(last, last)
            for cand, what in ((last_base + last_delta, f"原来的 forward 和 LoRA 都是最后一层 {last} 的"),
                               (last_base + delta, f"原来的 forward 是最后一层 {last} 的"),
                               (base + last_delta, f"LoRA 是最后一层 {last} 的")):
                if close(got, cand, atol=1e-5, rtol=1e-5):
                    fail(f"{name} 算的不是自己的输出：{what}。Python 的闭包 (closure) 是晚绑定 (late binding) 的："
                         f"循环里定义的 forward_with_lora 在被调用时才去找 original_forward 和 lora，找到的是循环最后一次"
                         f"的值，于是每一层都在用最后一个被适配的层。像 MiniMind 那样用默认参数把这一层的东西当场绑住："
                         f"def forward_with_lora(x, original=module.forward, adapter=lora): return original(x) + adapter(x)。")
            k = _scale(got, base, delta)
            if k is not None:
                fail(_scale_message(k))
            fail(f"{name} 的输出应该是 W x + B(A(x))，最大差 {max_err(got, base + delta):.3g}。")

    # the whole model, with the same adapters, against the reference
    ref_model = _model()
    ref.apply_lora(ref_model, rank=RANK)
    _copy_adapters(adapters, _adapters(ref_model))
    got, want = _logits(model), _logits(ref_model)
    expect(close(got, want, atol=1e-5, rtol=1e-5),
           f"每一层单独看都对，可整个模型（同样的 A、B）的 logits 和参考实现不一样，最大差 {max_err(got, want):.3g}。"
           f"apply_lora 是不是还改了别的东西（别的模块的 forward、权重）？")


def _check_freezing_and_start(impl) -> None:
    model = _model()
    base_names = [n for n, _ in model.named_parameters()]
    base_total = sum(p.numel() for p in model.parameters())
    before = _logits(model)
    n = _apply(impl, model)
    adapters = _adapters(model)
    lora_ids = {id(p) for lora in adapters.values() for p in lora.parameters()}
    lora_total = sum(p.numel() for lora in adapters.values() for p in lora.parameters())
    named = list(model.named_parameters())
    trainable_base = [k for k, p in named if p.requires_grad and id(p) not in lora_ids]
    frozen_lora = [k for k, p in named if not p.requires_grad and id(p) in lora_ids]
    if trainable_base:
        if len(trainable_base) == len(base_names):
            fail("apply_lora 之后原模型的参数全都还是可训练的 (requires_grad=True)：没有冻结 (freeze)。"
                 "LoRA 的意思就是原模型不动、只训练适配器。MiniMind 把冻结写在训练脚本里"
                 "（名字里没有 lora 的参数 requires_grad = False）；这本工作簿把它放进 apply_lora，"
                 "“只有 LoRA 在训练”也就成了检查的一部分：for p in 不是 LoRA 的参数: p.requires_grad = False。")
        fail(f"apply_lora 之后还有 {len(trainable_base)} 个原模型的参数是可训练的，例如 {trainable_base[0]}："
             f"除了 LoRA 的参数，全部 requires_grad = False。")
    if frozen_lora:
        fail(f"LoRA 自己的参数也被冻结了（例如 {frozen_lora[0]} 的 requires_grad 是 False）：那就没有东西可训练了。"
             f"只冻结原模型的参数，LoRA 的 A 和 B 保持 requires_grad = True。")
    if n is None or isinstance(n, bool) or not isinstance(n, int):
        fail(f"apply_lora 要返回可训练参数的个数 (int)，你的返回了 {n!r}。")
    if n != lora_total:
        if n in (base_total, base_total + lora_total):
            fail(f"apply_lora 返回了 {n:,}：这是全部参数的个数。要返回的是可训练的参数（也就是 LoRA 的）个数 "
                 f"{lora_total:,}：sum(p.numel() for p in model.parameters() if p.requires_grad)。")
        a_total = sum(lora.A.weight.numel() for lora in adapters.values())
        if n == len(adapters):
            fail(f"apply_lora 返回了 {n}：这是挂上 LoRA 的层数。要返回的是可训练参数的个数 {lora_total:,}"
                 f"（每层 rank·(in + out)）：sum(p.numel() for p in model.parameters() if p.requires_grad)。")
        if n in (a_total, lora_total - a_total):
            which = "A" if n == a_total else "B"
            fail(f"apply_lora 返回了 {n:,}：只数了 {which} 的参数。每个 LoRA 有 A (rank, in) 和 B (out, rank) 两个矩阵，"
                 f"一共 {lora_total:,} 个：sum(p.numel() for p in model.parameters() if p.requires_grad)。")
        fail(f"apply_lora 返回了 {n!r}，可训练的参数（LoRA 的 A 和 B）一共 {lora_total:,} 个 "
             f"= {len(adapters)} 层 × rank {RANK} × (in + out)。")

    # before training the model is the base model: B = 0
    nonzero_b = [k for k, lora in adapters.items() if _lora_weights(lora, k)[1].detach().abs().max() > 0]
    after = _logits(model)
    if nonzero_b or not close(after, before, atol=1e-6, rtol=1e-6):
        why = (f"{nonzero_b[0]}.lora.B 不是零：B 要从零开始，" if nonzero_b else "")
        fail(f"apply_lora 之后、训练之前，模型的输出就变了（logits 最大差 {max_err(after, before):.3g}）。"
             f"{why}B = 0 时 B·A·x = 0，挂上适配器的模型一开始必须和原模型一模一样。")
    a = torch.cat([_lora_weights(lora, k)[0].detach().flatten() for k, lora in adapters.items()]).double()
    if not A_STD / A_STD_FACTOR <= a.std().item() <= A_STD * A_STD_FACTOR:
        fail(f"apply_lora 挂上的 LoRA 的 A 标准差是 {a.std().item():.3g}，应为 N(0, 0.02) 的 0.02"
             f"（全是零时梯度永远到不了 A 和 B）。")

    # step 0: only B gets a gradient (A's is B^T (dL/dy) x^T = 0 while B = 0)
    model.zero_grad(set_to_none=True)
    ids = _ids(6)
    loss = model(ids, labels=ids).loss
    if not loss.requires_grad:
        fail("apply_lora 之后模型的 loss 不带梯度 (requires_grad=False)：原模型冻结了，LoRA 的参数也要梯度，"
             "可 loss 和它们断开了——像是 LoRA 的输出在 forward 里被 .detach() 了，或者算在 torch.no_grad() 里。"
             "训练脚本的 loss.backward() 会直接报错。forward_with_lora 直接返回 original(x) + adapter(x)。")
    loss.backward()
    got_base = [k for k, p in named if id(p) not in lora_ids and p.grad is not None and p.grad.abs().max() > 0]
    expect(not got_base, f"原模型的参数 {got_base[:1]} 收到了梯度：它们应该被冻结。")
    no_grad_b = [k for k, lora in adapters.items()
                 if lora.B.weight.grad is None or lora.B.weight.grad.abs().max() == 0]
    if no_grad_b:
        fail(f"第 0 步反向传播后 {no_grad_b[0]}.lora.B 没有梯度：B 的梯度 = (∂L/∂y)·(A x)ᵀ，只要 A 是随机的、"
             f"forward 真的加上了 lora(x)，它就不是零。检查 A 的初始化和 forward（别在 lora(x) 上 detach 或 no_grad）。")


# ---------------------------------------------------------------- 4. dtype and device

def _check_dtype_device(impl) -> None:
    model = _model().to(torch.bfloat16)
    _apply(impl, model)
    for name, lora in _adapters(model).items():
        bad = [p.dtype for p in lora.parameters() if p.dtype != torch.bfloat16]
        if bad:
            fail(f"bfloat16 的模型上，{name}.lora 的参数是 {bad[0]}：LoRA 要建在和被适配层的 weight 一样的 dtype 上"
                 f"（LoRA(...).to(device=w.device, dtype=w.dtype)）。否则 bf16 的输入进 fp32 的 A 会报 dtype 不匹配，"
                 f"或者整层被悄悄地提升成 fp32。")
    with torch.no_grad():
        out = model(_ids()).logits
    expect(out.dtype == torch.bfloat16, f"bfloat16 的模型挂上 LoRA 后 logits 应该还是 bfloat16，你的是 {out.dtype}。")

    model = _model().to("meta")
    _apply(impl, model)
    for name, lora in _adapters(model).items():
        bad = [p.device for p in lora.parameters() if p.device.type != "meta"]
        if bad:
            fail(f"{name} 的 weight 在 meta 设备上（检查用它代替 GPU：只有形状，没有数据），它的 LoRA 却建在了 "
                 f"{bad[0]} 上：LoRA 要放到被适配层的 weight 所在的设备 (device) 上，"
                 f"LoRA(...).to(device=w.device, dtype=w.dtype)。不然在 GPU 上训练时第一步就报设备不一致。")


# ---------------------------------------------------------------- 5. save_lora

def _fake_ddp(model):
    """A DistributedDataParallel instance around `model` without a process group: names get
    the "module." prefix, isinstance(…, DistributedDataParallel) holds."""
    from torch.nn.parallel import DistributedDataParallel

    wrapper = DistributedDataParallel.__new__(DistributedDataParallel)
    nn.Module.__init__(wrapper)
    wrapper.module = model
    return wrapper


class _Compiled(nn.Module):
    """Holds the model as ``_orig_mod``, as torch.compile's OptimizedModule does."""

    def __init__(self, model):
        super().__init__()
        self._orig_mod = model

    def forward(self, *args, **kwargs):
        return self._orig_mod(*args, **kwargs)


def _read(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        fail(f"{what}：save_lora 写的文件用 torch.load(path, weights_only=True) 读不出来（{type(e).__name__}: "
             f"{str(e)[:120]}）。要 torch.save 一个 {{键: 张量}} 的 dict，不要存模块对象或别的 Python 对象。")
    expect(isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()),
           f"{what}：save_lora 要存一个 {{键: 张量}} 的 dict，你存的是 {type(state).__name__}。")
    return state


def _compare_saved(got: dict, want: dict, base_keys: set[str], what: str) -> None:
    whole = sorted(base_keys & set(got))
    if whole:
        fail(f"{what}：save_lora 把整个模型都存进去了：文件里有 {len(got)} 个张量，其中 {whole[0]} 等 {len(whole)} 个是"
             f"原模型的参数。适配器文件只存 LoRA 的张量（这里 {len(want)} 个）：几十 KB，而不是整个模型；"
             f"加载时先有原模型，再 apply_lora，再 load_lora。")
    if set(got) != set(want):
        prefixed = sorted(k for k in got if k.startswith(("module.", "_orig_mod.")))
        if prefixed:
            which = "DDP 的 `module.`" if prefixed[0].startswith("module.") else "torch.compile 的 `_orig_mod.`"
            fail(f"{what}：键名带着 {which} 前缀：{prefixed[0]}。包装器 (wrapper) 给模块名加的前缀要去掉"
                 f"（clean_name(name)），单卡、多卡、编译过的模型存下的文件才一样，load_lora 也才认得。")
        sample_want, sample_got = sorted(want)[0], sorted(got)[0] if got else "（空）"
        fail(f"{what}：键名 (keys) 和 MiniMind 的不一样。应为 {{模块名}}.lora.A.weight / {{模块名}}.lora.B.weight，"
             f"例如 {sample_want}；你的是 {sample_got}（共 {len(got)} 个，应为 {len(want)} 个）。"
             f"键名就是 MiniMind 的适配器文件的格式，别的工具按它读。")
    for k, v in want.items():
        g = got[k]
        if g.dtype != v.dtype:
            fail(f"{what}：存下的 {k} 是 {g.dtype}，模型里的这个参数是 {v.dtype}：save_lora 要原样存参数自己的 dtype"
                 f"（value.detach().cpu()，不要 .float()、.half() 或 .to(某个 dtype)）。存成更低的精度会丢掉训练的结果"
                 f"（fp16 只有 10 位尾数），存成 fp32 则让 bf16 模型的适配器白白大一倍；load_lora 会 copy_ 回模型的 dtype，"
                 f"所以文件只需要原样记下模型里的值。")
        if tuple(g.shape) != tuple(v.shape) or not torch.equal(g.float(), v.float()):
            fail(f"{what}：存下的 {k} 和模型里的值不一样（形状 {tuple(g.shape)}，应为 {tuple(v.shape)}）。")


def _check_save(impl, ref, tmp: Path):
    model = _model()
    _apply(impl, model)
    adapters = _adapters(model)
    _randomise(adapters, seed=7)
    base_keys = {k for k in _model().state_dict()}
    ref.save_lora(model, tmp / "want.pth")
    want = torch.load(tmp / "want.pth", weights_only=True)
    impl.save_lora(model, tmp / "got.pth")
    _compare_saved(_read(tmp / "got.pth", "save_lora(model)"), want, base_keys, "save_lora(model)")
    impl.save_lora(_fake_ddp(model), tmp / "ddp.pth")
    _compare_saved(_read(tmp / "ddp.pth", "DDP 包装的模型"), want, base_keys, "save_lora(DDP 包装的模型)")
    impl.save_lora(_Compiled(model), tmp / "compiled.pth")
    _compare_saved(_read(tmp / "compiled.pth", "torch.compile 包装的模型"), want, base_keys,
                   "save_lora(torch.compile 包装的模型)")

    # a bfloat16 model: the file keeps bf16 (the weight's dtype)
    low = _model().to(torch.bfloat16)
    _apply(impl, low)
    _randomise(_adapters(low), seed=9)
    ref.save_lora(low, tmp / "want_bf16.pth")
    impl.save_lora(low, tmp / "got_bf16.pth")
    _compare_saved(_read(tmp / "got_bf16.pth", "bfloat16 的模型"), torch.load(tmp / "want_bf16.pth", weights_only=True),
                   base_keys, "save_lora(bfloat16 的模型)")
    return model, want


# ---------------------------------------------------------------- 6. load_lora

def _sprung(shape):
    """Called by the unpickler when a file's code runs (weights_only=False)."""
    _SPRUNG.append(True)
    return torch.zeros(shape)


class _Trap:
    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return _sprung, (self.shape,)


def _prepared(impl, dtype=None):
    model = _model()
    if dtype is not None:
        model = model.to(dtype)
    _apply(impl, model)
    return model


def _load(impl, model, path: Path, what: str, hint: str = "") -> None:
    try:
        impl.load_lora(model, path)
    except ValueError as e:
        fail(f"{what}：load_lora 拒绝了一个正确的文件。{hint}你的报错：{str(e)[:300]}")
    except RuntimeError as e:
        if "Missing key(s) in state_dict" in str(e):
            fail(f"{what}：load_lora 报错 Missing key(s) in state_dict：像是用了 model.load_state_dict(state)。适配器文件里只有 "
                 f"LoRA 的张量，load_state_dict 默认 strict=True，要整个模型的键都在（strict=False 又会悄悄放过缺的适配器）。"
                 f"自己比对：模型上的每个适配器键都在文件里、文件里的每个键都是模型上的适配器，再逐个 p.copy_(state[key])。")
        raise


def _expect_loaded(model, want: dict, what: str) -> None:
    adapters = _adapters(model)
    for k, v in want.items():
        name, _, key = k.partition(".lora.")
        p = adapters[name].get_parameter(key)
        if not torch.equal(p.detach().float(), v.float().to(p.dtype).float()):
            fail(f"{what}：load_lora 之后 {k} 不等于文件里的值（最大差 {max_err(p, v):.3g}）。"
                 f"要把文件里的张量拷进模型上的参数：with torch.no_grad(): p.copy_(state[key])。")


def _expect_value_error(impl, model, path: Path, key: str, what: str, why: str) -> None:
    try:
        impl.load_lora(model, path)
    except ValueError as e:
        expect(key in str(e), f"{what}：抛了 ValueError，但报错里没有写出是哪个键 ({key})。你的报错：{str(e)[:200]}")
        return
    except Exception as e:
        fail(f"{what}：应该抛 ValueError 并写出键名 {key}，你的抛出了 {type(e).__name__}: {str(e)[:160]}")
    fail(f"{what}，load_lora 没有报错。{why}要 raise ValueError，写出键名 {key}。")


def _at_rank(want: dict, rank: int, seed: int) -> dict:
    """A file like `want` saved at another rank: A (rank, in), B (out, rank), random values."""
    out = {}
    with seeded(seed):
        for k, v in want.items():
            shape = (rank, v.shape[1]) if k.endswith("lora.A.weight") else (v.shape[0], rank)
            out[k] = torch.randn(shape) * 0.1
    return out


def _check_other_rank(impl, want: dict, tmp: Path) -> None:
    """A file saved at another rank must be refused with a ValueError naming the shapes."""
    key = sorted(k for k in want if k.endswith("lora.A.weight"))[0]
    for file_rank, model_rank in ((RANK, 2), (1, RANK)):
        path = tmp / f"rank{file_rank}.pth"
        torch.save(_at_rank(want, file_rank, seed=10 + file_rank), path)
        model = _model()
        _apply(impl, model, rank=model_rank)
        what = (f"把秩 (rank) {file_rank} 的适配器文件加载进 apply_lora(model, rank={model_rank}) 的模型"
                f"（键名都对得上，形状不同：文件里 {key} 是 {(file_rank, HIDDEN)}，模型上是 {(model_rank, HIDDEN)}）")
        try:
            impl.load_lora(model, path)
        except ValueError as e:
            msg = str(e)
            named = any(k in msg for k in want) or (str(file_rank) in msg and str(model_rank) in msg)
            expect(named, f"{what}：抛了 ValueError，但报错里既没有键名也没有两边的形状 (shape)，看的人不知道错在哪里。"
                          f"你的报错：{msg[:200]}")
            continue
        except Exception as e:  # noqa: BLE001 - inspected here
            fail(f"{what}：应该抛 ValueError 并写出对不上的键和两边的形状，你的抛出了 {type(e).__name__}: {str(e)[:160]}。"
                 f"这是 copy_ 在形状对不上时自己报的错，没有说是哪个文件、哪个键、秩是多少。copy_ 之前先比较每个键的形状"
                 f"（state[key].shape != p.shape），对不上就 raise ValueError，写出键名和两边的形状"
                 f"（文档字符串：names … the mismatched shapes）。")
        why = (f"copy_ 会广播 (broadcast)：秩 1 的 A (1, {HIDDEN}) 被复制成 {model_rank} 行一模一样的 A，B ({HIDDEN}, 1) "
               f"也被复制成 {model_rank} 列，加载出来的是一个和文件完全不同的适配器" if file_rank == 1 else
               "模型上的适配器根本没有被加载（还是初始值：B = 0），训练的成果整个丢了")
        fail(f"{what}：形状不同却没有报错。{why}，而且没有任何提示。copy_ 之前先比较形状（state[key].shape != p.shape），"
             f"对不上就 raise ValueError，写出键名和两边的形状。")


def _check_load(impl, source, want: dict, tmp: Path) -> None:
    want_logits = _logits(source)
    model = _prepared(impl)
    _load(impl, model, tmp / "want.pth", "load_lora(model, save_lora 写的文件)")
    _expect_loaded(model, want, "load_lora(model, save_lora 写的文件)")
    got = _logits(model)
    expect(close(got, want_logits, atol=1e-5, rtol=1e-5),
           f"load_lora 之后模型的输出和存档时不一样（logits 最大差 {max_err(got, want_logits):.3g}）。")

    for prefix in ("module.", "_orig_mod."):
        torch.save({prefix + k: v for k, v in want.items()}, tmp / "prefixed.pth")
        model = _prepared(impl)
        what = f"文件的键带 `{prefix}` 前缀（包装过的模型、没去前缀的代码存下的）"
        _load(impl, model, tmp / "prefixed.pth", what,
              "比较之前先用 clean_name 去掉文件键名上的包装前缀 (wrapper prefix)：{clean_name(k): v for k, v in state.items()}。")
        _expect_loaded(model, want, what)
    model = _prepared(impl)
    what = "load_lora(DDP 包装的模型, 文件)"
    _load(impl, _fake_ddp(model), tmp / "want.pth", what,
          "模型被 DDP 包装时模块名是 module.model.layers…：模型这一侧的名字也要用 clean_name 去掉前缀。")
    _expect_loaded(model, want, what)

    model = _prepared(impl, torch.bfloat16)
    _load(impl, model, tmp / "want.pth", "load_lora(bfloat16 的模型, float32 的文件)")
    bad = [(k, p.dtype) for k, p in model.named_parameters() if ".lora." in k and p.dtype != torch.bfloat16]
    expect(not bad, f"load_lora 之后 bfloat16 模型上的 {bad[0][0] if bad else ''} 变成了 {bad[0][1] if bad else ''}："
                    f"不要用文件里的张量替换参数，要 copy_ 进原来的参数（dtype 和 device 都保持模型的）。")

    keys = sorted(want)
    missing = keys[-1]
    torch.save({k: v for k, v in want.items() if k != missing}, tmp / "missing.pth")
    _expect_value_error(impl, _prepared(impl), tmp / "missing.pth", missing, f"文件里缺了 {missing}",
                        "那一层的 LoRA 就悄悄地留在初始值（B = 0，等于没加载），训练的成果丢了一块却没人知道。"
                        "模型上的每个适配器都必须在文件里找到：")
    extra = "model.layers.0.mlp.up_proj.lora.A.weight"
    torch.save({**want, extra: torch.zeros(RANK, HIDDEN)}, tmp / "unexpected.pth")
    _expect_value_error(impl, _prepared(impl), tmp / "unexpected.pth", extra,
                        f"文件里多了 {extra}（模型上没有这个适配器：选层的规则或模型不一样？）",
                        "文件里的每个键都必须对得上模型上的一个适配器，否则加载的根本不是为这个模型训练的 LoRA：")

    _check_other_rank(impl, want, tmp)

    _SPRUNG.clear()
    trap = dict(want)
    trap[keys[0]] = _Trap(tuple(want[keys[0]].shape))
    torch.save(trap, tmp / "trap.pth")
    try:
        impl.load_lora(_prepared(impl), tmp / "trap.pth")
    except Exception:
        pass  # torch.load(weights_only=True) refuses the file: right
    expect(not _SPRUNG, "load_lora 读文件时执行了文件里藏的代码：pickle 可以让 torch.load 调用任意函数。"
                        "适配器文件常常是从网上下载的，要写 torch.load(path, map_location=\"cpu\", weights_only=True)，"
                        "只读张量，不执行代码（不要写 weights_only=False）。")


# ---------------------------------------------------------------- 7. merge_lora

def _check_merge(impl) -> None:
    model = _model()
    _apply(impl, model)
    adapters = _adapters(model)
    _randomise(adapters, seed=8)
    names = list(adapters)
    saved = {n: (model.get_submodule(n).weight.detach().clone(),
                 *[w.detach().clone() for w in _lora_weights(adapters[n], n)]) for n in names}
    before = _logits(model)
    with seeded(5):
        x = torch.randn(2, 5, HIDDEN)
    impl.merge_lora(model)

    for name in names:
        W0, A, B = saved[name]
        W = model.get_submodule(name).weight.detach()
        delta = B @ A
        if close(W, W0 + delta, atol=1e-6, rtol=1e-6):
            continue
        if close(W, W0, atol=0, rtol=0):
            fail(f"merge_lora 之后 {name}.weight 没有变：要把适配器并进权重，W ← W + B·A"
                 f"（B (out, r) @ A (r, in) 正好是 (out, in)）。")
        if close(W, W0 + 2 * delta, atol=1e-6, rtol=1e-6):
            fail(f"merge_lora 把 B·A 加了两次：{name}.weight = W + 2·B·A。每个适配器只加一次"
                 f"（是不是同一个模块被处理了两遍？）。")
        if close(W, W0 + delta.T, atol=1e-6, rtol=1e-6):
            fail(f"{name}：合并时 B·A 被转置 (transpose) 了：W 是 (out, in)，要加的是 B.weight @ A.weight"
                 f"（(out, r) @ (r, in)）。方阵的形状对得上，所以不会报错，只是结果错了。")
        k = _scale(W, W0, delta)
        if k is not None:
            fail(f"{name}：合并时 B·A 乘了系数 ≈ {k:.4g}：MiniMind 没有缩放，W ← W + B·A。")
        fail(f"merge_lora 之后 {name}.weight 应该是 W + B·A，最大差 {max_err(W, W0 + delta):.3g}。")

    left = [n for n in names if isinstance(getattr(model.get_submodule(n), "lora", None), nn.Module)]
    if left:
        fail(f"merge_lora 之后 {left[0]} 还挂着 lora：B·A 已经并进了 W，适配器还在 forward 里再加一遍 lora(x)，"
             f"等于加了两次；state_dict 里也多出 {left[0]}.lora.A.weight 这些键，严格加载不进 MiniMindForCausalLM。"
             f"合并后要 del module.lora，并恢复 nn.Linear 自己的 forward。")
    with torch.no_grad():
        for name in names:
            module = model.get_submodule(name)
            W0, A, B = saved[name]
            got, plain = module(x), x @ module.weight.detach().T
            if close(got, plain, atol=1e-5, rtol=1e-5):
                continue
            if close(got, plain + x @ A.T @ B.T, atol=1e-5, rtol=1e-5):
                fail(f"merge_lora 之后 {name} 的 forward 没有恢复：你删了 module.lora，但那个 original(x) + lora(x) 的 "
                     f"forward 还在（它用默认参数或闭包拿着 LoRA），B·A 于是被算了两次。"
                     f"删掉实例上的 forward：vars(module).pop(\"forward\", None)，nn.Linear 自己的 forward 就回来了。")
            fail(f"merge_lora 之后 {name} 不是一个普通的 nn.Linear：它的输出应该是 W x（W 已合并），"
                 f"最大差 {max_err(got, plain):.3g}。")
    for name in names:
        w = model.get_submodule(name).weight
        if w.requires_grad:
            fail(f"merge_lora 之后 {name}.weight 的 requires_grad 变成了 True（apply_lora 冻结了它）：你像是换上了一个新的 "
                 f"nn.Parameter（module.weight = nn.Parameter(W + B·A)，新参数默认要梯度）。要原地加："
                 f"with torch.no_grad(): module.weight += delta——还是原来那个参数，requires_grad、优化器里的引用都不变。")
    after = _logits(model)
    expect(close(after, before, atol=1e-5, rtol=1e-5),
           f"合并前后模型的输出应该一样（合并只是把 W x + B A x 写成 (W + B A) x），logits 最大差 {max_err(after, before):.3g}。")
    fresh = _model(seed=3)
    keys, want_keys = list(model.state_dict()), list(fresh.state_dict())
    if set(keys) != set(want_keys):
        extra = sorted(set(keys) - set(want_keys))
        fail(f"merge_lora 之后 state_dict 的键和 MiniMindForCausalLM 的不一样"
             f"{'：多出 ' + ', '.join(extra[:3]) if extra else ''}。合并后的模型要是原样的 MiniMind：删掉 module.lora。")
    fresh.load_state_dict(model.state_dict(), strict=True)
    got = _logits(fresh)
    expect(close(got, before, atol=1e-5, rtol=1e-5),
           f"把合并后的 state_dict 严格加载进一个新的 MiniMindForCausalLM，输出和合并前不一样（最大差 {max_err(got, before):.3g}）。")

    # a bf16 model stays bf16
    model = _model().to(torch.bfloat16)
    _apply(impl, model)
    adapters = _adapters(model)
    _randomise(adapters, seed=8)
    saved = {n: (model.get_submodule(n).weight.detach().double(),
                 *[w.detach().double() for w in _lora_weights(adapters[n], n)]) for n in adapters}
    impl.merge_lora(model)
    for name, (W0, A, B) in saved.items():
        W = model.get_submodule(name).weight
        expect(W.dtype == torch.bfloat16,
               f"merge_lora 把 bfloat16 模型的 {name}.weight 变成了 {W.dtype}：在 weight 自己的 dtype 里合并"
               f"（delta.to(module.weight.dtype)），合并后的模型和原来的一样大、一样的 dtype。")
        expect(close(W, W0 + B @ A, atol=0.02, rtol=0.02),
               f"bfloat16 模型上 merge_lora 之后 {name}.weight 不是 W + B·A（最大差 {max_err(W, W0 + B @ A):.3g}）。")


def check(impl, ref) -> str:
    _check_lora_class(impl)
    for label, overrides in CONFIGS.items():
        _check_layers(impl, label, overrides)
    _check_default_rank(impl)
    _check_layer_forward(impl, ref)
    _check_freezing_and_start(impl)
    _check_dtype_device(impl)
    with tempfile.TemporaryDirectory(prefix="workbook15_") as tmp:
        tmp = Path(tmp)
        source, want = _check_save(impl, ref, tmp)
        _check_load(impl, source, want, tmp)
    _check_merge(impl)
    return ("LoRA 的形状和初始化（A ~ N(0, 0.02)，B = 0）、B(A(x)) 不缩放；只挂在方阵的 nn.Linear 上，"
            "每层用自己的权重，训练前模型不变，只有 LoRA 可训练，第 0 步只有 B 有梯度；dtype/device 跟着 weight；"
            "save_lora 只存 MiniMind 键名的适配器、去掉包装前缀；load_lora 严格、weights_only；"
            "merge_lora 之后是原样的 MiniMindForCausalLM：全部正确。")
