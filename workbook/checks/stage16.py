"""Check for stage 16: logits_to_log_probs, sequence_log_probs, dpo_loss, implicit_rewards,
make_ref_model and DPODataset.

1. logits_to_log_probs against log_softmax + gather on seeded logits: the shape (B, T) (a second
   shift, and a bare .squeeze() on a batch of one row, are named), the values (probabilities, the wrong dim, raw logits, the sign, argmax are
   named), float32 out of bf16 logits (a bf16 log-softmax is named), a probability that
   underflows (log(softmax) gives -inf), the gradient, the inputs left alone.
2. sequence_log_probs with both values of length_normalize and the default: masked mean and
   masked sum; the option reversed or ignored, the mask ignored, a division by T, a second shift,
   a row without answer tokens (0 / 0 = nan without the clamp) are named; int64, bool and float
   masks; the gradient.
3. dpo_loss on a [chosen; rejected] batch, both options: the value (halves swapped, interleaved
   pairs, beta in the wrong place, the reference ignored or added, sigmoid for logsigmoid, a sum
   over pairs, the option ignored, the missing minus are named), log 2 when the policy equals the
   reference, the gradient into the policy, and a batch with a large negative margin where
   log(sigmoid(x)) underflows to -inf.
   A loss that comes back detached is named before the check's own backward() would crash.
4. implicit_rewards: beta * (log pi - log pi_ref) per answer, chosen half first, not detached
   (the gradient into the policy's log-probs equals the reference's).
5. make_ref_model on a tiny reference MiniMindForCausalLM with dropout 0.5 in train mode: a new
   module with its own parameters (the policy itself and a shallow copy are named), the policy
   untouched (still training, still trainable), equal weights, frozen, in eval (two calls give
   the same log-probs), unchanged when the policy is updated.
6. DPODataset on .jsonl and .jsonl.gz files, against the reference: the six keys, int64, shape
   (max_length - 1,); chosen/rejected swapped, x/y not shifted, the mask unshifted, the prompt
   or the padding in the mask are named (a wrong token or span falls back on stage 14's
   diagnosis); bad lines raise ValueError naming file:line.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import _modes
from . import stage14
from .stage06 import VOCAB, small_config
from .tools import close, diagnose, expect, fail, max_err, seeded

BETA = 0.3  # not MiniMind's 0.1: a beta in the wrong place must change the numbers visibly
SIDES = ("chosen", "rejected")
KEYS = tuple(f"{k}_{s}" for s in SIDES for k in ("x", "y", "mask"))


def _gather(lp_all: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return lp_all.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _tensor(x, what: str) -> torch.Tensor:
    expect(isinstance(x, torch.Tensor), f"{what} 应该返回 torch.Tensor，你的返回了 {type(x).__name__}。")
    return x


# ---------------------------------------------------------------- 1. logits_to_log_probs

def _log_probs(impl, logits, labels, what: str) -> torch.Tensor:
    before = (logits.detach().clone(), labels.clone())
    got = _tensor(impl.logits_to_log_probs(logits, labels), what)
    expect(torch.equal(logits.detach(), before[0]) and torch.equal(labels, before[1]),
           f"{what} 改动了传进来的 logits 或 labels（原地操作 in-place）：它们还要给别的计算用，不要修改。")
    if tuple(got.shape) != tuple(labels.shape) and 1 in labels.shape and got.shape == labels.squeeze().shape:
        fail(f"{what}：labels 的形状是 {tuple(labels.shape)}，你的结果是 {tuple(got.shape)}：大小为 1 的那一维也被去掉了。"
             f"gather 之后要用 .squeeze(-1)，只去掉最后那一维；不带参数的 .squeeze() 会把所有大小为 1 的维都去掉，"
             f"batch 只有一行（或序列只有一个位置）时形状就错了，后面的 mask 相乘会悄悄广播成别的形状。")
    return got


def _check_log_probs(impl, ref) -> None:
    B, T, V = 3, 6, 17
    with seeded(0):
        logits = torch.randn(B, T, V) * 3
        labels = torch.randint(0, V, (B, T))
    what = f"logits_to_log_probs(logits {(B, T, V)}, labels {(B, T)})"
    got = _log_probs(impl, logits, labels, what)
    want = ref.logits_to_log_probs(logits, labels)
    if tuple(got.shape) != (B, T):
        if tuple(got.shape) == (B, T - 1):
            fail(f"{what} 的形状是 {tuple(got.shape)}，应为 {(B, T)}：你又错位了一次 (shifted twice)。"
                 f"DPODataset 已经错好位了（y = ids[1:]），logits[:, t] 预测的就是 labels[:, t]，这里直接 gather。")
        if tuple(got.shape) == (B, T, 1):
            fail(f"{what} 的形状是 {tuple(got.shape)}：gather 之后少了 .squeeze(-1)。gather 取出的每一项还带着大小为 1 的"
                 f"最后一维：.gather(-1, labels.unsqueeze(-1)).squeeze(-1)，得到 {(B, T)}。留着它，后面和 mask (B, T) 相乘会"
                 f"广播成 (B, T, T)，值全错却不报错。")
        if got.dim() == 3:
            fail(f"{what} 的形状是 {tuple(got.shape)}：你返回了整个词表的 log 概率。要用 gather 取出 labels 那个 token 的一项："
                 f".gather(-1, labels.unsqueeze(-1)).squeeze(-1)，得到 {(B, T)}。")
        fail(f"{what} 的形状应为 {(B, T)}（每个位置一个数），你的是 {tuple(got.shape)}。")
    expect(got.dtype == torch.float32, f"{what} 应该返回 float32，你的是 {got.dtype}。")
    if not close(got, want, atol=1e-5, rtol=1e-5):
        lsm = F.log_softmax(logits, dim=-1)
        message = diagnose(got, [
            (lambda: _gather(torch.softmax(logits, -1), labels),
             "你返回的是概率 p，不是对数概率 log p：用 F.log_softmax，不是 softmax。"),
            (lambda: _gather(F.log_softmax(logits, dim=1), labels),
             "log_softmax 的维度不对：你在序列维 (dim=1) 上做了归一化。概率分布在词表上：dim=-1。"),
            (lambda: _gather(logits, labels),
             "你 gather 的是 logits 本身：logits 还不是 log 概率，要先在词表维上 F.log_softmax(logits, dim=-1)。"),
            (lambda: -want, "符号反了：要的是对数概率 log p（≤ 0），你的是 -log p（交叉熵，≥ 0）。"),
            (lambda: lsm.max(dim=-1).values,
             "你取的是每个位置最大的 log 概率 (argmax 的那一项)：要取 labels 指定的那个 token，.gather(-1, labels.unsqueeze(-1))。"),
        ], atol=1e-5)
        fail(f"{what}：{message or '和 log_softmax(logits, -1) 在 labels 处的值不一样'}"
             f"（最大差 {max_err(got, want):.3g}）。")

    # a probability that underflows: softmax gives exactly 0, log(0) = -inf
    big = torch.zeros(1, 3, 5)
    big[0, :, 0] = 200.0  # token 0 takes everything: e^-200 is 0 in float32
    big_labels = torch.tensor([[1, 4, 0]])
    got = _log_probs(impl, big, big_labels, "logits_to_log_probs")
    want = ref.logits_to_log_probs(big, big_labels)
    if not torch.isfinite(got).all():
        fail(f"logits 相差 200 时（一个 token 的 logit 是 200，其余是 0），你的对数概率是 {got.tolist()}，应为 "
             f"{[[round(v, 3) for v in row] for row in want.tolist()]}：出现了 -inf。torch.log(torch.softmax(x)) 会下溢 "
             f"(underflow)：e^-200 在 float32 里就是 0，log(0) = -inf，一个 -inf 就让整个 loss 变成 inf/nan。"
             f"用 F.log_softmax：它算 x - logsumexp(x)，从不取 log(0)。")
    expect(close(got, want, atol=1e-4, rtol=1e-5),
           f"logits 相差很大时（200），你的对数概率 {got.tolist()} 应为 {want.tolist()}。")

    # bf16 logits (autocast): the log-softmax still in float32
    low = (logits * 4).to(torch.bfloat16)
    got = _log_probs(impl, low, labels, "logits_to_log_probs(bfloat16 的 logits, labels)")
    expect(got.dtype == torch.float32,
           f"bfloat16 的 logits（混合精度 autocast 下模型输出的就是它）进来，logits_to_log_probs 要返回 float32，你的是 {got.dtype}："
           f"先 logits.float() 再 log_softmax。")
    want = ref.logits_to_log_probs(low, labels)
    if not close(got, want, atol=1e-5, rtol=1e-5):
        in_bf16 = _gather(F.log_softmax(low, dim=-1), labels).float()
        if close(got, in_bf16, atol=1e-6, rtol=1e-6):
            fail(f"bfloat16 的 logits：你的 log_softmax 是在 bfloat16 里算的，最后才转 float32（和先转再算最大差 "
                 f"{max_err(got, want):.3g}）。bf16 只有 8 位有效数字，每个 token 差 1e-2 左右，一段回答几百个 token 加起来，"
                 f"chosen 和 rejected 的差就被噪声淹没了。先 logits.float()，再 F.log_softmax。")
        fail(f"bfloat16 的 logits：你的结果和 F.log_softmax(logits.float(), -1) 在 labels 处的值最大差 {max_err(got, want):.3g}。")

    # the gradient flows back into the logits (the policy is trained through it)
    weights = torch.linspace(-1.0, 1.0, B * T).reshape(B, T)
    mine = logits.clone().requires_grad_(True)
    got = _log_probs(impl, mine, labels, "logits_to_log_probs")
    if not got.requires_grad:
        fail("logits_to_log_probs 的输出没有梯度 (requires_grad=False)：policy 的对数概率要反向传播回模型。"
             "不要在里面用 torch.no_grad() 或 .detach()（不要梯度的是参考模型：在调用它的地方用 torch.no_grad()）。")
    (got * weights).sum().backward()
    theirs = logits.clone().requires_grad_(True)
    (ref.logits_to_log_probs(theirs, labels) * weights).sum().backward()
    expect(mine.grad is not None and close(mine.grad, theirs.grad, atol=1e-5, rtol=1e-5),
           "logits_to_log_probs 对 logits 的梯度不对：数值相等而梯度不同，像是中间 detach 了一部分。")


# ---------------------------------------------------------------- 2. sequence_log_probs

# answer spans of four rows of length 9 (one row has two spans: a two-turn conversation)
MASK_ROWS = [
    [0, 0, 1, 1, 1, 0, 0, 0, 0],
    [0, 1, 1, 1, 1, 1, 1, 1, 0],
    [0, 0, 0, 0, 0, 0, 0, 1, 0],
    [0, 0, 1, 1, 0, 0, 1, 1, 1],
]


def _seq_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    with seeded(seed):
        lp = -torch.rand(len(MASK_ROWS), len(MASK_ROWS[0])) * 4
    return lp, torch.tensor(MASK_ROWS, dtype=torch.long)


def _seq(impl, lp, mask, what: str, *option) -> torch.Tensor:
    before = (lp.detach().clone(), mask.clone())
    got = _tensor(impl.sequence_log_probs(lp, mask, *option), what)
    expect(torch.equal(lp.detach(), before[0]) and torch.equal(mask, before[1]),
           f"{what} 改动了传进来的 log_probs 或 mask（原地操作 in-place）：不要修改输入。")
    expect(tuple(got.shape) == (lp.shape[0],),
           f"{what} 应该每个序列返回一个数，形状 {(lp.shape[0],)}，你的是 {tuple(got.shape)}："
           f"在最后一维（序列）上求和：.sum(dim=-1)。")
    return got


def _masked(lp, mask, normalize: bool) -> torch.Tensor:
    m = mask.to(lp.dtype)
    total = (lp * m).sum(-1)
    return total / m.sum(-1).clamp(min=1) if normalize else total


def _seq_mistakes(lp, mask, normalize: bool) -> list:
    T = lp.shape[-1]
    m = mask.to(lp.dtype)
    mode = "平均" if normalize else "求和"
    return [
        (lambda: lp.mean(-1) if normalize else lp.sum(-1),
         f"mask 没有用上：你对整行所有位置{mode}了，提问 (prompt)、格式标记和 padding 的对数概率都算了进去。"
         f"只算 mask = 1 的位置（回答）：(log_probs * mask).sum(-1)。"),
        (lambda: (lp * m).sum(-1) / T,
         f"平均时除以的是序列长度 T = {T}：要除以这一行回答 token 的个数 mask.sum(-1)（再 clamp(min=1)）。"
         f"除以 T 等于还是求和，只差一个常数，长回答照样吃亏。"),
        (lambda: (lp * m).sum(-1) / m.sum(),
         f"平均时除以的是整个 batch 的回答 token 总数 mask.sum() = {int(m.sum())}：每一行要除以它自己的回答长度 "
         f"mask.sum(dim=-1)（再 clamp(min=1)），不然一行的值取决于同一个 batch 里别的回答有多长。"),
        (lambda: _masked(lp[:, 1:], mask[:, :-1], normalize),
         "mask 又错了一位 (shifted twice)：DPODataset 里 mask 已经和 y、和 log_probs 对齐了，这里直接相乘。"),
        (lambda: _masked(lp[:, :-1], mask[:, 1:], normalize),
         "mask 又错了一位 (shifted twice)：DPODataset 里 mask 已经和 y、和 log_probs 对齐了，这里直接相乘。"),
        (lambda: _masked(lp, 1 - mask, normalize),
         "mask 反了：要算的是 mask = 1 的位置（回答），你算的是 mask = 0 的位置（提问和 padding）。"),
    ]


def _probe_sequence(impl, normalize: bool) -> str | None:
    """Locate a wrong sequence_log_probs: with one answer token at position t, the right value
    is log_probs[0, t] in both modes; which position does the learner's value come from?"""
    T = 9
    lp = -(torch.arange(1, T + 1, dtype=torch.float32) * 0.37).reshape(1, T)  # a distinct value per position
    for t in (3, 6):
        mask = torch.zeros(1, T, dtype=torch.long)
        mask[0, t] = 1
        got = impl.sequence_log_probs(lp, mask, normalize)
        if not isinstance(got, torch.Tensor) or got.numel() != 1 or close(got.reshape(()), lp[0, t], atol=1e-6):
            continue
        value = got.reshape(()).item()
        head = (f"mask 只有位置 {t} 是 1 时（一个回答 token），length_normalize={normalize} 的结果应该就是 "
                f"log_probs[0, {t}] = {lp[0, t].item():.4f}，你的是 {value:.4f}")
        for k in range(T):
            if k != t and abs(value - lp[0, k].item()) < 1e-6:
                return (f"{head} = log_probs[0, {k}]：mask 和 log_probs 错开了 {abs(k - t)} 位。DPODataset 已经把 mask 和 y"
                        f"（也就是 log_probs）对齐了，这里逐位相乘就行，不要再移动其中一个。")
        return f"{head}。"
    return None


def _check_sequence(impl, ref) -> None:
    lp, mask = _seq_inputs()
    call = "sequence_log_probs(log_probs, mask, length_normalize={})"
    got = {n: _seq(impl, lp, mask, call.format(n), n) for n in (True, False)}
    want = {n: ref.sequence_log_probs(lp, mask, n) for n in (True, False)}
    ok = {n: close(got[n], want[n], atol=1e-5, rtol=1e-5) for n in (True, False)}
    if not all(ok.values()):
        if close(got[True], want[False]) and close(got[False], want[True]):
            fail("length_normalize 的含义反了：True 时要的是平均（MiniMind：长度归一化，除以回答 token 数），"
                 "False 时是求和（DPO 论文和 TRL：log π(回答 | 提问)）。你的 True 求和、False 平均。")
        if close(got[True], want[False]) and close(got[False], want[False]):
            fail("length_normalize 没起作用：True 和 False 你都返回了求和。True（MiniMind 的默认）要除以回答的 token 数："
                 "sum(lp * mask) / mask.sum(-1).clamp(min=1)。")
        if close(got[True], want[True]) and close(got[False], want[True]):
            fail("length_normalize 没起作用：True 和 False 你都返回了平均。False（DPO 论文和 TRL）是求和："
                 "sum(lp * mask)，不除。")
        for n in (True, False):
            if ok[n]:
                continue
            message = diagnose(got[n], _seq_mistakes(lp, mask, n), atol=1e-5) or _probe_sequence(impl, n)
            rule = "sum(lp * mask) / mask.sum(-1).clamp(min=1)" if n else "sum(lp * mask)"
            fail(f"{call.format(n)}：{message or '应该是 ' + rule}（应为 {want[n].tolist()}，你的是 {got[n].tolist()}）。")
    default = _seq(impl, lp, mask, "sequence_log_probs(log_probs, mask)")
    expect(close(default, want[True]),
           "sequence_log_probs 不给 length_normalize 时，默认要是 True（MiniMind 的长度归一化平均），你的默认像是求和。")

    # a row without a single answer token (a prompt longer than max_length): 0, not 0 / 0
    empty = mask.clone()
    empty[2] = 0
    for n in (True, False):
        got_e = _seq(impl, lp, empty, call.format(n), n)
        if not torch.isfinite(got_e).all():
            fail(f"有一行没有一个回答 token（mask 全是 0，例如提问比 max_length 还长，回答整个被截掉）时，{call.format(n)} "
                 f"给出了 {got_e.tolist()}：0 / 0 = nan，一个 nan 就毁了整个 batch 的 loss。"
                 f"分母要 clamp：mask.sum(-1).clamp(min=1)，这样这一行是 0。")
        expect(close(got_e, ref.sequence_log_probs(lp, empty, n)),
               f"mask 全是 0 的那一行应该得 0，你的 {call.format(n)} 是 {got_e.tolist()}。")

    # the mask arrives as int64 (DPODataset); bool and float masks mean the same
    for kind in (torch.bool, torch.float32):
        for n in (True, False):
            got_k = _seq(impl, lp, mask.to(kind), call.format(n), n)
            expect(close(got_k, want[n]), f"mask 是 {kind} 时 {call.format(n)} 的结果不一样（最大差 "
                                           f"{max_err(got_k, want[n]):.3g}）：先 mask.to(log_probs.dtype) 再相乘。")

    # the gradient of each row's value
    for n in (True, False):
        mine = lp.clone().requires_grad_(True)
        out = _seq(impl, mine, mask, call.format(n), n)
        expect(out.requires_grad, f"{call.format(n)} 的输出没有梯度：不要 detach，policy 要通过它反向传播。")
        out.sum().backward()
        theirs = lp.clone().requires_grad_(True)
        ref.sequence_log_probs(theirs, mask, n).sum().backward()
        expect(close(mine.grad, theirs.grad, atol=1e-6, rtol=1e-5),
               f"{call.format(n)} 对 log_probs 的梯度不对（最大差 {max_err(mine.grad, theirs.grad):.3g}）。")


# ---------------------------------------------------------------- 3. dpo_loss

PAIR_MASKS = [  # rows 0-2 chosen, 3-5 rejected of the same prompts: answers of different lengths
    [0, 0, 1, 1, 1, 1, 1, 0],
    [0, 1, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 1, 1, 1, 1, 1],
    [0, 0, 1, 1, 0, 0, 0, 0],
    [0, 1, 1, 1, 1, 1, 1, 1],
    [0, 0, 0, 1, 1, 0, 0, 0],
]


def _pair_inputs(seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with seeded(seed):
        policy = -torch.rand(len(PAIR_MASKS), len(PAIR_MASKS[0])) * 3
        ref = (policy - torch.rand_like(policy) * 1.5).clamp(max=0)
    return ref, policy, torch.tensor(PAIR_MASKS, dtype=torch.long)


def _loss(impl, ref_lp, pol_lp, mask, beta, what: str, *option) -> torch.Tensor:
    before = (ref_lp.detach().clone(), pol_lp.detach().clone(), mask.clone())
    got = _tensor(impl.dpo_loss(ref_lp, pol_lp, mask, beta, *option), what)
    expect(torch.equal(ref_lp.detach(), before[0]) and torch.equal(pol_lp.detach(), before[1])
           and torch.equal(mask, before[2]), f"{what} 改动了传进来的张量（原地操作 in-place）：不要修改输入。")
    expect(got.dim() == 0, f"{what} 应该返回一个标量 (0 维张量)，你的形状是 {tuple(got.shape)}："
                           f"最后对所有的对 (pairs) 取平均 .mean()。")
    return got


def _loss_mistakes(ref_lp, pol_lp, mask, beta, normalize: bool) -> list:
    h = mask.shape[0] // 2

    def seq(lp, n=normalize, m=mask):
        return _masked(lp, m, n)

    def parts(n=normalize):
        r, p = seq(ref_lp, n), seq(pol_lp, n)
        return r[:h], r[h:], p[:h], p[h:]

    rc, rr, pc, pr = parts()
    margin = (pc - pr) - (rc - rr)
    ls = F.logsigmoid
    other = "False（求和）" if normalize else "True（平均）"
    # the pairs read as (row 0, row 1), (row 2, row 3), ...: chosen rows at even indices
    r_i, p_i = seq(ref_lp), seq(pol_lp)
    inter = (p_i[0::2] - p_i[1::2]) - (r_i[0::2] - r_i[1::2])
    return [
        (lambda: -ls(-beta * margin).mean(),
         "符号反了：像是 chosen 和 rejected 两半取反了。batch 是 [chosen; rejected]：前一半（第 0 到 B/2-1 行）是 chosen，"
         "后一半是 rejected，margin = (π_c - π_r) - (ref_c - ref_r)。（也可能是 ref_log_probs 和 policy_log_probs 的"
         "参数顺序弄反了：第一个参数是参考模型的。）这样训练会让模型更偏好差的回答。"),
        (lambda: -ls(beta * inter).mean(),
         "chosen 和 rejected 是按两半分的，不是交错的：batch 是 torch.cat([chosen, rejected])，前 B/2 行是 chosen、"
         "后 B/2 行是 rejected（第 i 行和第 i + B/2 行是一对）；你把第 0、1 行当成了一对。"),
        (lambda: -ls(beta * (pc - pr) - (rc - rr)).mean(),
         "β 放错了地方：它只乘了 policy 这一项。β 要乘整个 margin：β · ((π_c - π_r) - (ref_c - ref_r))。"),
        (lambda: -beta * ls(margin).mean(),
         "β 放错了地方：你把 β 乘在了 logsigmoid 外面，-β·logsigmoid(margin)。β 在里面：-logsigmoid(β · margin)。"
         "在外面它只缩放 loss，不再控制偏离参考模型的程度。"),
        (lambda: -ls(margin / beta).mean(),
         "β 放错了地方：你用 margin 除以了 β。要乘：-logsigmoid(β · margin)（β 越小越保守，MiniMind 默认 0.1）。"),
        (lambda: -ls(margin).mean(),
         f"没有乘 β：loss = -logsigmoid(β · margin)，这里 β = {beta}。β 控制模型可以离参考模型多远（KL 的强度）。"),
        (lambda: -ls(beta * (pc - pr)).mean(),
         "参考模型 (reference) 没有用上：margin 要减去参考模型自己的偏好 (ref_c - ref_r)。DPO 的奖励是相对参考模型的 "
         "log(π / π_ref)，没有它就没有把模型拴在原地的那根绳子 (KL leash)。"),
        (lambda: -ls(beta * ((pc - pr) + (rc - rr))).mean(),
         "参考模型那一项的符号反了：margin = (π_c - π_r) - (ref_c - ref_r)，是减去参考模型的偏好，不是加上。"),
        (lambda: -torch.sigmoid(beta * margin).mean(),
         "你用的是 sigmoid 而不是 logsigmoid：loss = -logsigmoid(β · margin) = -log σ(β · margin)。"),
        (lambda: (1 - torch.sigmoid(beta * margin)).mean(),
         "你用的是 1 - sigmoid 而不是 -logsigmoid：loss = -log σ(β · margin)。"),
        (lambda: ls(beta * margin).mean(),
         "少了负号：logsigmoid ≤ 0，loss 是 -logsigmoid(β · margin)，最小化它才是让 margin 变大。"),
        (lambda: -ls(beta * margin).sum(),
         "对所有的对求了和 (sum)：要取平均 .mean()，否则 loss 和梯度随 batch size 变大。"),
        (lambda: -ls(beta * margin).mean() * 2,
         "除以的个数不对：取平均的是 B/2 个对 (pairs)，不是 B 行。"),
        (lambda: -ls(beta * margin).sum() / mask.shape[0],
         "除以的个数不对：取平均的是 B/2 个对 (pairs)，不是 B 行。"),
        (lambda: (lambda a, b, c, d: -ls(beta * ((c - d) - (a - b))).mean())(*parts(not normalize)),
         f"length_normalize 没有用上：你的结果是 length_normalize={other} 时的值。"
         f"把 length_normalize 原样传给 sequence_log_probs。"),
        (lambda: (lambda r, p: -ls(beta * ((p[:h] - p[h:]) - (r[:h] - r[h:]))).mean())(
            ref_lp.mean(-1) if normalize else ref_lp.sum(-1), pol_lp.mean(-1) if normalize else pol_lp.sum(-1)),
         "mask 没有用上：序列的对数概率把提问 (prompt) 和 padding 的 token 也算进去了。只算 mask = 1 的回答 token。"),
    ]


def _backward(out: torch.Tensor, what: str) -> None:
    """out.backward(), after making sure there is a graph to go back through."""
    if not out.requires_grad:
        fail(f"{what} 的值对了，但它不带梯度 (requires_grad=False)：policy_log_probs 需要梯度，loss 却和它断开了"
             f"（像是在里面 .detach()、.item() 后重新建了张量，或者放进了 torch.no_grad()）。训练时 loss.backward() "
             f"会直接报错，或者模型一步也不更新。不要梯度的是参考模型：在调用 ref_model 的地方用 torch.no_grad()，"
             f"dpo_loss 里面什么都不要 detach。")
    out.backward()


def _check_loss(impl, ref) -> None:
    ref_lp, pol_lp, mask = _pair_inputs()
    call = "dpo_loss(ref_log_probs, policy_log_probs, mask, beta={}, length_normalize={})"
    got = {n: _loss(impl, ref_lp, pol_lp, mask, BETA, call.format(BETA, n), n) for n in (True, False)}
    want = {n: ref.dpo_loss(ref_lp, pol_lp, mask, BETA, n) for n in (True, False)}
    for n in (True, False):
        if close(got[n], want[n], atol=1e-6, rtol=1e-5):
            continue
        if not torch.isfinite(got[n]):
            fail(f"{call.format(BETA, n)} 是 {got[n].item()}，应为 {want[n].item():.6f}（这些输入都很普通）。")
        message = diagnose(got[n], _loss_mistakes(ref_lp, pol_lp, mask, BETA, n), atol=1e-6)
        fail(f"{call.format(BETA, n)}：{message or 'loss = -logsigmoid(β · ((π_c - π_r) - (ref_c - ref_r))).mean()'}"
             f"（应为 {want[n].item():.6f}，你的是 {got[n].item():.6f}）。")
    default = _loss(impl, ref_lp, pol_lp, mask, BETA, "dpo_loss(ref_log_probs, policy_log_probs, mask, beta)")
    expect(close(default, want[True], atol=1e-6, rtol=1e-5),
           "dpo_loss 不给 length_normalize 时默认要是 True（MiniMind 的平均），你的默认像是求和。")

    # before any training the policy is the reference: every margin is 0, the loss is log 2
    for n in (True, False):
        same = _loss(impl, pol_lp, pol_lp, mask, 0.1, call.format(0.1, n), n)
        expect(abs(same.item() - math.log(2)) < 1e-6,
               f"policy 和参考模型一样时（训练开始的那一刻），每个 margin 都是 0，loss 应该正好是 -log σ(0) = log 2 ≈ 0.693147，"
               f"你的 {call.format(0.1, n)} 是 {same.item():.6f}。")

    # a large negative margin: log(sigmoid(x)) underflows to log(0) = -inf
    T = 4
    hard_mask = torch.ones(2, T, dtype=torch.long)
    for n, per_token in ((True, -2000.0), (False, -500.0)):
        pol = torch.zeros(2, T)
        pol[0] = per_token  # the policy has all but ruled out the chosen answer
        ref_hard = torch.zeros(2, T)
        want_h = ref.dpo_loss(ref_hard, pol, hard_mask, 0.1, n)
        got_h = _loss(impl, ref_hard, pol, hard_mask, 0.1, call.format(0.1, n), n)
        if not torch.isfinite(got_h):
            fail(f"margin 很大的负数时（β · margin = {-want_h.item():.0f}：模型把 chosen 的回答几乎排除了），你的 loss 是 "
                 f"{got_h.item()}，应为 {want_h.item():.1f}。torch.log(torch.sigmoid(x)) 下溢 (underflow)：σ(-200) ≈ 1e-87，"
                 f"在 float32 里就是 0，log(0) = -inf，梯度也没了——恰恰是最需要纠正的那一对。用 F.logsigmoid(x)："
                 f"它直接算 log σ(x) = -softplus(-x)，永远有限。")
        expect(close(got_h, want_h, atol=1e-3, rtol=1e-5),
               f"margin 是很大的负数时，{call.format(0.1, n)} 应为 {want_h.item():.3f}，你的是 {got_h.item():.3f}。")
        mine = pol.clone().requires_grad_(True)
        _backward(_loss(impl, ref_hard, mine, hard_mask, 0.1, call.format(0.1, n), n), call.format(0.1, n))
        grad = mine.grad
        expect(grad is not None and torch.isfinite(grad).all() and grad[0].abs().sum() > 0,
               f"margin 是很大的负数时，loss 对 policy 对数概率的梯度应该有限且不为 0（σ(β · margin) ≈ 0 时梯度最大），"
               f"你的是 {None if grad is None else grad.tolist()}：用 F.logsigmoid。")

    # the gradient reaches the policy's log-probs, and equals the reference's
    for n in (True, False):
        mine = pol_lp.clone().requires_grad_(True)
        _backward(_loss(impl, ref_lp, mine, mask, BETA, call.format(BETA, n), n), call.format(BETA, n))
        theirs = pol_lp.clone().requires_grad_(True)
        ref.dpo_loss(ref_lp, theirs, mask, BETA, n).backward()
        expect(mine.grad is not None and close(mine.grad, theirs.grad, atol=1e-6, rtol=1e-5),
               f"{call.format(BETA, n)} 的值对了，但对 policy_log_probs 的梯度不对（最大差 "
               f"{max_err(mine.grad, theirs.grad) if mine.grad is not None else '没有梯度'}）：中间有 detach 吗？")


# ---------------------------------------------------------------- 4. implicit_rewards

def _check_rewards(impl, ref) -> None:
    ref_lp, pol_lp, mask = _pair_inputs(seed=3)
    h = mask.shape[0] // 2
    for n in (True, False):
        what = f"implicit_rewards(ref_log_probs, policy_log_probs, mask, beta={BETA}, length_normalize={n})"
        got = impl.implicit_rewards(ref_lp, pol_lp, mask, BETA, n)
        expect(isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got),
               f"{what} 应该返回 (chosen_rewards, rejected_rewards) 两个张量，你的返回了 {type(got).__name__}。")
        for name, t in zip(SIDES, got):
            if tuple(t.shape) == (2 * h,):
                fail(f"{what} 的 {name} 奖励形状是 {tuple(t.shape)}：这是整个 batch（{2 * h} 行）的奖励，没有分成两半。"
                     f"batch 是 [chosen; rejected]：前 B/2 行是 chosen 的奖励，后 B/2 行是 rejected 的，"
                     f"用 _halves(rewards, \"implicit_rewards\") 分开，各是 {(h,)}。")
            expect(tuple(t.shape) == (h,), f"{what} 的 {name} 奖励形状应为 {(h,)}（每对一个），你的是 {tuple(t.shape)}。")
        want = ref.implicit_rewards(ref_lp, pol_lp, mask, BETA, n)
        if all(close(g, w, atol=1e-6, rtol=1e-5) for g, w in zip(got, want)):
            continue
        g = torch.cat(list(got))
        r, p = _masked(ref_lp, mask, n), _masked(pol_lp, mask, n)
        message = diagnose(g, [
            (lambda: torch.cat([want[1], want[0]]), "chosen 和 rejected 反了：前一半（前 B/2 行）是 chosen。"),
            (lambda: p - r, "没有乘 β：r = β · (log π - log π_ref)。"),
            (lambda: BETA * p, "参考模型没有减：r = β · (log π(回答) - log π_ref(回答))，是相对参考模型的。"),
            (lambda: BETA * (r - p), "符号反了：r = β · (log π - log π_ref)，policy 减参考模型。"),
            (lambda: BETA * (_masked(pol_lp, mask, not n) - _masked(ref_lp, mask, not n)),
             "length_normalize 没有传给 sequence_log_probs。"),
        ], atol=1e-6)
        fail(f"{what}：{message or 'r = β · (sequence_log_probs(policy) - sequence_log_probs(ref))，前一半是 chosen'}"
             f"（应为 {[w.tolist() for w in want]}，你的是 {[t.tolist() for t in got]}）。")
    # not detached: the caller decides (the docstring's contract); the gradient is beta * d(log pi)
    mine = pol_lp.clone().requires_grad_(True)
    got = impl.implicit_rewards(ref_lp, mine, mask, BETA)
    what = f"implicit_rewards(ref_log_probs, policy_log_probs（requires_grad=True）, mask, beta={BETA})"
    if not all(t.requires_grad for t in got):
        fail(f"{what} 返回的奖励不带梯度：你在里面 detach 了（或用了 torch.no_grad()）。文档字符串说 Not detached："
             f"要不要梯度由调用的人决定——只拿来记日志时，调用方自己写 with torch.no_grad() 或 .detach()；"
             f"而 -logsigmoid(r_c - r_r).mean() 正是 DPO 的 loss，用奖励来算 loss 的人需要梯度能流回 policy。")
    weights = torch.arange(1.0, 2 * h + 1)
    ((got[0] * weights[:h]).sum() + (got[1] * weights[h:]).sum()).backward()
    theirs = pol_lp.clone().requires_grad_(True)
    want = ref.implicit_rewards(ref_lp, theirs, mask, BETA)
    ((want[0] * weights[:h]).sum() + (want[1] * weights[h:]).sum()).backward()
    expect(mine.grad is not None and close(mine.grad, theirs.grad, atol=1e-6, rtol=1e-5),
           f"{what}：值对了，但对 policy_log_probs 的梯度不对"
           f"（最大差 {max_err(mine.grad, theirs.grad) if mine.grad is not None else '没有梯度'}）：中间有一部分被 detach 了吗？")

    # the loss is the logistic loss of the reward difference
    c, r = impl.implicit_rewards(ref_lp, pol_lp, mask, BETA)
    loss = ref.dpo_loss(ref_lp, pol_lp, mask, BETA)
    expect(close(-F.logsigmoid(c - r).mean(), loss, atol=1e-6),
           "implicit_rewards 的默认 length_normalize 要和 dpo_loss 一样是 True：-logsigmoid(r_c - r_r).mean() 应该等于 dpo_loss。")


# ---------------------------------------------------------------- 5. make_ref_model

def _tiny(dropout: float, seed: int = 0):
    cls = _modes.reference_module("model.causal_lm").MiniMindForCausalLM
    with seeded(seed):
        return cls(small_config(dropout=dropout))


def _ref_log_probs(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return _modes.reference_module("train.dpo_loss").logits_to_log_probs(model(x).logits, y)


def _check_ref_model(impl) -> None:
    policy = _tiny(dropout=0.5)
    policy.train()  # the policy trains with dropout: the reference must not
    with seeded(4):
        ids = torch.randint(3, VOCAB, (2, 13))
    x, y = ids[:, :-1], ids[:, 1:]
    saved = {k: v.clone() for k, v in policy.state_dict().items()}
    ref_model = impl.make_ref_model(policy)
    expect(isinstance(ref_model, nn.Module), f"make_ref_model 应该返回一个模型 (nn.Module)，你的返回了 {type(ref_model).__name__}。")
    if ref_model is policy:
        fail("make_ref_model 返回的就是 policy 本身：参考模型和被训练的模型是同一个对象，policy 一更新，参考模型跟着变，"
             "margin 永远是 0，DPO 什么也学不到（这里还把 policy 切成了 eval/冻结）。要返回一个副本：copy.deepcopy(model)。")
    mine = {id(p) for p in policy.parameters()}
    shared = [n for n, p in ref_model.named_parameters() if id(p) in mine]
    if shared:
        fail(f"参考模型和 policy 共用参数（例如 {shared[0]}）：这是浅拷贝 (shallow copy)，copy.copy 只复制了外壳，"
             f"参数还是同一份。policy 每走一步，参考模型也跟着走，它就不再是“训练开始时的模型”了。要 copy.deepcopy(model)。")
    if not policy.training or any(m.training is False for m in policy.modules()):
        fail("make_ref_model 把 policy（传进来的 model）切到了 eval 模式：要切的是副本。先 ref = copy.deepcopy(model)，"
             "再 ref.eval()；model 本身不动（它要接着训练）。")
    frozen = [n for n, p in policy.named_parameters() if not p.requires_grad]
    if frozen:
        fail(f"make_ref_model 把 policy（传进来的 model）冻结了（例如 {frozen[0]} 的 requires_grad=False）：policy 就不再"
             f"训练了。冻结的是副本：ref.requires_grad_(False)。")
    expect(all(torch.equal(v, saved[k]) for k, v in policy.state_dict().items()),
           "make_ref_model 改动了 policy 的权重：只复制，不要修改传进来的模型。")
    theirs = ref_model.state_dict()
    expect(set(theirs) == set(saved) and all(torch.equal(theirs[k], v) for k, v in saved.items()),
           "参考模型的权重应该和此刻的 policy 一模一样（它就是训练开始时的模型）：copy.deepcopy(model)。")
    trainable = [n for n, p in ref_model.named_parameters() if p.requires_grad]
    if trainable:
        fail(f"参考模型没有冻结：{trainable[0]} 等 {len(trainable)} 个参数还是 requires_grad=True。"
             f"参考模型只提供 log π_ref，从不训练：ref.requires_grad_(False)。否则它的前向会建计算图、白占内存，"
             f"一不小心把它的参数交给优化器，参考模型就动了。")
    first, second = _ref_log_probs(ref_model, x, y), _ref_log_probs(ref_model, x, y)
    if ref_model.training or not torch.equal(first, second):
        fail(f"参考模型没有切到 eval 模式：dropout 还开着（这个检查用的模型 dropout = 0.5），同一个 batch 两次得到的 "
             f"参考对数概率不一样（最大差 {max_err(first, second):.3g}）。参考模型要给出确定的 log π_ref：ref.eval()。")
    policy.eval()
    want = _ref_log_probs(policy, x, y)
    policy.train()
    expect(close(first, want, atol=1e-5, rtol=1e-5),
           f"参考模型的对数概率应该和 eval 模式下的 policy 一样（最大差 {max_err(first, want):.3g}）。")
    with torch.no_grad():  # one "optimizer step" of the policy
        for p in policy.parameters():
            p.add_(0.05)
    after = _ref_log_probs(ref_model, x, y)
    expect(torch.equal(after, first), "policy 更新以后，参考模型的输出也变了：它和 policy 还共享着什么。要 copy.deepcopy(model)。")


# ---------------------------------------------------------------- 6. DPODataset

SYSTEM = "你是一位诗人，回答只用诗句。"
LONG = ("春江潮水连海平，海上明月共潮生。滟滟随波千万里，何处春江无月明！"
        "江流宛转绕芳甸，月照花林皆似霰。空里流霜不觉飞，汀上白沙看不见。")
_u, _a, _s = stage14._u, stage14._a, stage14._s
# (what the pair tests, chosen messages, rejected messages)
PAIRS: list[tuple[str, list[dict], list[dict]]] = [
    ("单轮：chosen 守格式，rejected 不守",
     [_u("写一首五言绝句，题目是《春晓》。"), _a("春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。")],
     [_u("写一首五言绝句，题目是《春晓》。"), _a("春天来了，花开了，鸟也叫了。")]),
    ("带系统提示 (system)",
     [_s(SYSTEM), _u("写两句关于月亮的诗。"), _a("床前明月光，疑是地上霜。")],
     [_s(SYSTEM), _u("写两句关于月亮的诗。"), _a("月亮很圆。")]),
    ("两轮对话，只有最后的回答不同",
     [_u("《静夜思》是谁写的？"), _a("李白。"), _u("再背两句。"), _a("举头望明月，低头思故乡。")],
     [_u("《静夜思》是谁写的？"), _a("李白。"), _u("再背两句。"), _a("不记得了。")]),
    ("chosen 很长，被 max_length 截断",
     [_u("背一段《春江花月夜》。"), _a(LONG)],
     [_u("背一段《春江花月夜》。"), _a("忘了。")]),
    ("chosen 的回答里有 <|endoftext|> 字样（和 pad 同一个 id 0）",
     [_u("把结束记号原样写一遍。"), _a("好：<|endoftext|>。")],
     [_u("把结束记号原样写一遍。"), _a("不写。")]),
]
MULTI, CUT = 2, 3


def _line(chosen: list[dict], rejected: list[dict]) -> str:
    return json.dumps({"chosen": chosen, "rejected": rejected}, ensure_ascii=False)


def _build(impl, path: Path, tok, max_length: int):
    try:
        return impl.DPODataset(path, tok, max_length=max_length)
    except TypeError as e:
        fail(f"DPODataset(file_path, tokenizer, max_length=...) 构造失败：{e}。"
             f"签名应该是 DPODataset(file_path, tokenizer, max_length=1024)。")


def _get(ds, i: int, ml: int, what: str) -> dict[str, list[int]]:
    item = ds[i]
    if not isinstance(item, dict):
        n = len(item) if isinstance(item, (tuple, list)) else type(item).__name__
        fail(f"{what}：ds[i] 应该返回一个 dict（MiniMind 的训练脚本按键取：batch['x_chosen']…），你的返回了 {n}。")
    missing, extra = [k for k in KEYS if k not in item], sorted(set(item) - set(KEYS))
    expect(not missing and not extra, f"{what}：ds[i] 的键应该正好是 {list(KEYS)}，"
                                      f"{'少了 ' + str(missing) if missing else ''}{'，' if missing and extra else ''}"
                                      f"{'多了 ' + str(extra) if extra else ''}。")
    out = {}
    for k in KEYS:
        t = item[k]
        expect(isinstance(t, torch.Tensor), f"{what}：{k} 应该是 torch.Tensor，你的是 {type(t).__name__}。")
        expect(t.dtype == torch.long, f"{what}：{k} 的 dtype 应该是 torch.long (int64)，你的是 {t.dtype}"
                                      f"{'：mask 也用 long（0/1），和 MiniMind 一样' if k.startswith('mask') else ''}。")
        if tuple(t.shape) != (ml - 1,):
            if tuple(t.shape) == (ml,):
                fail(f"{what}：{k} 长 {ml}，应为 max_length - 1 = {ml - 1}：错位以后 x = ids[:-1]、y = ids[1:]、"
                     f"mask = mask[1:]，各少一个。")
            if k.startswith("mask") and t.dim() == 1 and t.shape[0] > ml - 1:
                fail(f"{what}：{k} 长 {t.shape[0]}，比 max_length - 1 = {ml - 1} 还长，而 x 和 y 的长度是对的：像是在没有"
                     f"截断的 ids 上找的 span。被截断的回答的 span 一直伸到 max_length 之后，mask[begin:end] = [1] * (end - begin) "
                     f"就把列表撑长了。先把 ids 截到 max_length，再在截断后的 ids 上找 span（assistant_spans(ids[:max_length], …)），"
                     f"被截断的回答就正好算到截断处。")
            if tuple(t.shape) == (ml - 2,):
                fail(f"{what}：{k} 长 {ml - 2}，应为 max_length - 1 = {ml - 1}：错位做了两次（_encode 里一次，"
                     f"__getitem__ 里又一次）。_encode 返回没有错位的 ids 和 mask（都是 max_length 长），只在 __getitem__ 里错一次位。")
            fail(f"{what}：{k} 的形状应为 {(ml - 1,)}，你的是 {tuple(t.shape)}。")
        out[k] = t.tolist()
    return out


def _diagnose_mask(got: list[int], want: list[int], ids: list[int], n: int, messages: list[dict],
                   tok, what: str) -> None:
    """Name the mistake of a shifted mask: got/want[t] says whether the target ids[t + 1] counts.

    ids: the reference's full (padded) ids of this side, n of them real.
    """
    full = [0] + want  # the unshifted mask (position 0 is <|im_start|>, never an answer)
    if set(got) - {0, 1}:
        bad = sorted(set(got) - {0, 1})
        hint = "：像是 SFT 的 labels（-100 和 token id）。DPO 的 mask 只有 0 和 1：在回答里是 1，其余是 0" \
            if -100 in bad else ""
        fail(f"{what}：mask 里只能有 0 和 1，你的有 {bad[:3]}{hint}。")
    if got == full[:-1]:
        fail(f"{what}：mask 没有错位 (unshifted)：你的 mask 和 x 对齐了（mask = mask[:-1]），要和 y 对齐："
             f"mask = mask[1:]。mask[t] 说的是“目标 y[t] = ids[t + 1] 是不是回答里的 token”；没错位的话，每段回答"
             f"第一个 token 的对数概率被漏掉，而结尾 `<|im_end|>\\n` 之后的下一个 token 被算了进去。")
    y = ids[1:]
    if got == [int(t != tok.pad_token_id) for t in y] and got != want:
        fail(f"{what}：你的 mask 是“不是 pad 就算”（像预训练的 loss_mask = y != pad）：提问 (prompt)、系统提示和格式标记"
             f"也算进了 mask。DPO 比较的是两个回答的概率：mask 只在助手回答上是 1，和 SFT 的 labels 一样。")
    tags = stage14._tags(tok, messages)[:n]
    extra = [t for t in range(len(got)) if got[t] and not want[t]]
    missing = [t for t in range(len(got)) if want[t] and not got[t]]

    def at(t: int) -> str:
        return f"mask[{t}]（目标 y[{t}] = {stage14._piece(tok, ids[t + 1])}）"

    prompt = [t for t in extra if t + 1 < n and tags[t + 1].role in ("user", "system") and tags[t + 1].part == "content"]
    if prompt:
        t = prompt[0]
        fail(f"{what}：提问 (prompt) 的 token 也在 mask 里：{at(t)} 属于第 {tags[t + 1].msg + 1} 条消息 "
             f"（role={tags[t + 1].role}）。提问在 chosen 和 rejected 里一样，DPO 比较的是回答的对数概率：mask 只在 "
             f"助手回答（和它结尾的 `<|im_end|>\\n`）上是 1，和 SFT 的 labels 一样。")
    pads = [t for t in extra if t + 1 >= n]
    if pads:
        fail(f"{what}：padding 的位置 mask 是 1（例如 mask[{pads[0]}]，目标是补上去的 pad，真实 token 只有 {n} 个）："
             f"pad 没有被 mask 掉 (pad not masked)。mask 先全设 0，只在回答的 span 里设 1，补齐时 mask 也补 0。")
    heads = [t for t in extra if t + 1 < n and tags[t + 1].part == "header"]
    if heads:
        fail(f"{what}：`<|im_start|>{tags[heads[0] + 1].role}\\n` 这个标记也在 mask 里（{at(heads[0])}）："
             f"它由提示给出，不是模型的回答。span 从标记之后的第一个 token 开始（和 SFT 一样）。")
    if extra:
        fail(f"{what}：{at(extra[0])} 不是回答里的 token，mask 应该是 0。")
    # what should count but does not: stage 14's diagnosis of the same positions (shifted back)
    ref_sft = _modes.reference_module("data.sft")
    spans = ref_sft.assistant_spans(ids[:n], stage14._START_IDS, stage14._END_IDS)
    stage14._diagnose_labelled({t + 1 for t in range(len(got)) if got[t]}, {t + 1 for t in range(len(want)) if want[t]},
                               ids, n, stage14._tags(tok, messages), spans, stage14._END_IDS, tok,
                               f"{what}（mask[t] = 1 就是 SFT 里目标 ids[t + 1] 的 label 不是 -100）")
    fail(f"{what}：mask 和参考实现不一样，例如 {at((extra or missing)[0])}。")


def _diagnose_side(got: dict, want: dict, side: str, full: list[int], messages: list[dict], ml: int,
                   tok, what: str) -> None:
    gx, gy, gm = got[f"x_{side}"], got[f"y_{side}"], got[f"mask_{side}"]
    wx, wy, wm = want[f"x_{side}"], want[f"y_{side}"], want[f"mask_{side}"]
    what = f"{what} 的 {side}"
    ids = wx + wy[-1:]  # the reference's full padded ids of this side
    if gx != wx or gy != wy:
        if gx == wy and gy == wx:
            fail(f"{what}：x 和 y 反了：x = ids[:-1]（模型读的），y = ids[1:]（要预测的下一个 token）。")
        if gy == gx:
            fail(f"{what}：y 和 x 一样，没有错位：y = ids[1:]。位置 t 读 x[t]，要给的是下一个 token y[t] = ids[t + 1] 的概率。")
        for name, seq in (("x", gx), ("y", gy)):
            if -100 in seq:
                j = seq.index(-100)
                fail(f"{what}：{name} 里有 -100（从位置 {j} 起）：那是 SFT 里 labels 的写法。DPO 的 x 和 y 都是 token id："
                     f"y 要拿去 gather 对数概率，-100 当下标会出错；padding 处补 pad_id（{tok.pad_token_id}），"
                     f"算不算由 mask 决定（padding 的 mask 是 0）。")
        if gx[1:] != gy[:-1]:
            diff = [t for t in range(len(gy) - 1) if gx[t + 1] != gy[t]]
            fail(f"{what}：x 和 y 应该来自同一串 ids：x = ids[:-1]，y = ids[1:]，所以 x[t + 1] == y[t]；你的从位置 {diff[0]} "
                 f"起不是（x[{diff[0] + 1}] = {gx[diff[0] + 1]}，y[{diff[0]}] = {gy[diff[0]]}，一共 {len(diff)} 处）。"
                 f"两者都从同一个补齐后的 ids 切出来，只差一位。")
        stage14._diagnose_input(gx + gy[-1:], ids, full, ml, tok, f"{what}（把 x 和 y 拼回 ids）")
    if gm != wm:
        _diagnose_mask(gm, wm, ids, min(len(full), ml), messages, tok, what)


def _check_dataset(impl, ref, tmp: Path, tok_impl, tok) -> None:
    ids_of = [[stage14._ids(tok, stage14._template(tok, side, False)) for side in (c, r)] for _, c, r in PAIRS]
    ml = max(len(i) for k, pair in enumerate(ids_of) if k != CUT for i in pair) + 3
    assert len(ids_of[CUT][0]) > ml > len(ids_of[CUT][1]), "the long answer must be cut, its rejected one not"
    # the two-turn pair cut inside its last reply: a reply cut by max_length counts up to the cut
    spans = _modes.reference_module("data.sft").assistant_spans(ids_of[MULTI][0], stage14._START_IDS, stage14._END_IDS)
    cut_ml = spans[-1][0] + 4
    lines = [_line(c, r) for _, c, r in PAIRS]
    lines = lines[:1] + [""] + lines[1:]  # a blank line: skipped
    cases = [(k, ml) for k in range(len(PAIRS))] + [(MULTI, cut_ml)]
    for name in ("pairs.jsonl", "pairs.jsonl.gz"):
        path = stage14._write(tmp / name, lines)
        built: dict[int, tuple] = {}
        for k, length in cases:
            what = f"{name} ds[{k}]（{PAIRS[k][0]}，max_length={length}）"
            if length not in built:
                ds, ref_ds = _build(impl, path, tok_impl, length), ref.DPODataset(path, tok, max_length=length)
                expect(len(ds) == len(ref_ds), f"{name}：len(ds) 应该是 {len(ref_ds)}（每个非空行一对），你的是 {len(ds)}。")
                built[length] = (ds, ref_ds)
            ds, ref_ds = built[length]
            got = _get(ds, k, length, what)
            want = {key: t.tolist() for key, t in ref_ds[k].items()}
            if got == want:
                continue
            swapped = {f"{a}_{s}": got[f"{a}_{o}"] for a in ("x", "y", "mask") for s, o in zip(SIDES, SIDES[::-1])}
            if swapped == want:
                fail(f"{what}：chosen 和 rejected 反了：x_chosen/y_chosen/mask_chosen 里是 rejected 那段对话。"
                     f"训练脚本把 batch 拼成 [chosen; rejected]，前一半当好回答：反了就是在教模型更偏好差的回答。")
            for side, messages in zip(SIDES, PAIRS[k][1:]):
                if any(got[f"{a}_{side}"] != want[f"{a}_{side}"] for a in ("x", "y", "mask")):
                    _diagnose_side(got, want, side, ids_of[k][SIDES.index(side)], messages, length, tok, what)
        ds = built[ml][0]
        batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
        expect(isinstance(batch, dict) and tuple(batch["x_chosen"].shape) == (len(ds), ml - 1),
               f"{name}：DataLoader 拼出的 batch['x_chosen'] 形状应为 {(len(ds), ml - 1)}。")


def _error_of(impl, path: Path, tok) -> BaseException | None:
    try:
        ds = impl.DPODataset(path, tok, max_length=64)
        for i in range(len(ds)):
            ds[i]
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - any error is inspected below
        return e
    return None


def _numbers(message: str, path: Path) -> set[int]:
    rest = message.replace(str(path), " ").replace(path.name, " ")
    return {int(m) for m in re.findall(r"(?<![\d.])\d+(?![\d.])", rest)}


def _check_bad_lines(impl, tmp: Path, tok) -> None:
    ok = [_line(c, r) for _, c, r in PAIRS[:3]]
    chosen, rejected = PAIRS[0][1], PAIRS[0][2]
    bad = [
        ("bad_json.jsonl", [ok[0], "", ok[1], '{"chosen": [{"role": "user", "content": 春}]', ok[2]], 4, "不是合法 JSON"),
        ("bad_json.jsonl.gz", [ok[0], ok[1], "", "", '{"chosen": [', ok[2]], 5, "不是合法 JSON"),
        ("no_rejected.jsonl", [ok[0], "", json.dumps({"chosen": chosen}, ensure_ascii=False), ok[1]], 3,
         '没有 "rejected"'),
        ("sft_line.jsonl", [ok[0], json.dumps({"conversations": chosen}, ensure_ascii=False)], 2,
         '是 SFT 格式的 {"conversations": …}'),
        ("bad_role.jsonl", [ok[0], "", ok[1], _line(chosen, [{"role": "bot", "content": "好"}] + rejected[1:])], 4,
         '的 rejected 里有一条消息的 role 是 "bot"'),
        ("rejected_without_reply.jsonl", [ok[0], ok[1], _line(chosen, rejected[:1])], 3,
         "的 rejected 只有提问，没有助手 (assistant) 的回答"),
    ]
    for name, lines, lineno, what in bad:
        path = stage14._write(tmp / name, lines)
        what = f"{name} 第 {lineno} 行{what}"
        err = _error_of(impl, path, tok)
        if err is None:
            fail(f"{what}：没有报错。坏行不能悄悄放过：要抛 ValueError，写明文件和行号，例如 ValueError(f\"{{path}}:{{lineno}}: ...\")。")
        msg = str(err)
        if not isinstance(err, ValueError):
            fail(f"{what}：抛出的是 {type(err).__name__}: {msg[:80]}。要抛 ValueError 并写明文件和行号 (file:line)。")
        expect(path.name in msg, f"{what}：报错里没有文件名 {path.name}。你的报错是：{msg[:120]}")
        expect(lineno in _numbers(msg, path), f"{what}：报错里没有行号 {lineno}（从 1 开始，空行也算）。你的报错是：{msg[:120]}")


def check(impl, ref) -> str:
    _check_log_probs(impl, ref)
    _check_sequence(impl, ref)
    _check_loss(impl, ref)
    _check_rewards(impl, ref)
    _check_ref_model(impl)
    tok_impl, tok_ref = stage14._tokenizer("impl"), stage14._tokenizer("ref")
    stage14._START_IDS[:] = stage14._ids(tok_ref, stage14.START)
    stage14._END_IDS[:] = stage14._ids(tok_ref, stage14.END)
    with tempfile.TemporaryDirectory(prefix="workbook16_") as tmp:
        tmp = Path(tmp)
        _check_dataset(impl, ref, tmp, tok_impl, tok_ref)
        _check_bad_lines(impl, tmp, tok_impl)
    return ("log_softmax + gather 得到逐 token 对数概率（float32，不下溢）；序列对数概率的平均（MiniMind）和求和（论文/TRL）"
            "都只算回答；dpo_loss 的两半、β 和 logsigmoid 都对，大负 margin 下也有限；参考模型是冻结、eval 的深拷贝；"
            "DPODataset 的六个张量、错位和 mask：全部正确。")
