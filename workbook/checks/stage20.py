"""Check for stage 20: repeat_prompts, completion_mask, completion_log_probs, group_advantages,
k3_kl and grpo_loss (MiniMind's GRPO, one update per batch of samples).

All on small hand-made or seeded tensors (no model).  The numbers are chosen so that the known
mistakes give different results, and each is named:

1. Signatures and defaults (eps=1e-4, clip=10.0, beta=0.02).
2. repeat_prompts: three different left-padded prompts, G = 4: ``repeat`` instead of
   ``repeat_interleave`` (the batch tiled), the attention mask not repeated like the ids, the dtype,
   G = 1 is the input itself, G = 0 raises ValueError.
3. completion_mask with eos id 5 (not 2: a hard-coded id shows) on rows that stop early and are
   padded with eos, stop and go on, never stop, stop at position 0 and at the last position: the
   mask stopping before the end token, running past it (all ones), a row without eos cut to one
   token (argmax of an all-False row), ``ids != eos``, the last eos instead of the first, the dtype.
4. completion_log_probs with K = R + 3 kept positions (at K = R + 1 the first R positions are
   also right): no shift (the last R), the first R, a shift of two, probabilities, raw logits, the
   wrong softmax dim; K = R + 1 works; K < R + 1 raises ValueError; bf16 logits give float32 and the
   log-softmax in float32 (one in bf16 is named); the gradient reaches the logits.
5. group_advantages: three groups with different means, one of them spread by only ~1e-4 (eps
   matters) and one all equal (0 / 0 without eps); a group of 128 where one outlier's z-score is
   11.2 (the default clamp at ±10 is the only clamp a group of G ≤ 101 can ever reach);
   eps=0.05, clip=1.2 passed explicitly.  Named: batch mean/std instead of per group, groups taken
   strided (``view(G, B)``), no eps, population std (in the group or in the batch step), no clamp,
   the clamp after the batch step, no batch normalisation, eps/clip ignored, NaN for an all-equal
   batch (no 1e-8), float32 out, ValueError for G < 2 and for rewards not of shape (B·G,).
6. k3_kl: the sign of d, k1 (−d or d), k2 (d²/2), exp(d) − 1; never negative, 0 where the two
   agree; the gradient 1 − exp(d).
7. grpo_loss with β = 0.3, advantages whose mean is not 0 and completions of 5, 2, 4, 1, 3, 5
   tokens: +β·kl, β ignored or fixed, another KL estimator, the mean over every token of the batch,
   a sum per completion, the mask ignored, A·logp or exp(logp − ref) as the ratio, the overall sign;
   then the gradient: the ratio detached entirely (no policy gradient), the KL detached, a gradient
   into the reference; an all-zero mask row (max(Σ mask, 1)); float and int masks; the default β;
   the inputs unchanged.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from .tools import close, expect, fail, max_err, seeded

BETA = 0.3  # the check's β: 0.02 (the default, or a hard-coded one) and 0 give other numbers
EOS = 5  # the check's end token: MiniMind's is 2, a hard-coded 2 shows
ATOL, RTOL = 1e-5, 1e-4
FILE = "workbook/train/grpo_loss.py"


def _tensor(x, what: str) -> torch.Tensor:
    expect(isinstance(x, torch.Tensor), f"{what} 应该返回 torch.Tensor，你的返回了 {type(x).__name__}。")
    return x


def _unchanged(before: list[torch.Tensor], after: list[torch.Tensor], what: str) -> None:
    expect(all(torch.equal(a, b.detach()) for a, b in zip(before, after)),
           f"{what} 改动了传进来的张量（原地操作 in-place，例如 .sub_()、+=、[...] = ...）：训练脚本后面还要用它们，"
           f"写成新张量。")


def _raises_value_error(call, what: str, why: str) -> None:
    """`call()` must raise ValueError; anything else is named."""
    try:
        out = call()
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 (any other exception is the learner's, and is named)
        fail(f"{what} 应该抛出 ValueError（{why}），你的抛出了 {type(e).__name__}: {str(e)[:120]}。"
             f"先检查参数，再 raise ValueError(\"...\")，把原因写在消息里。")
    shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    fail(f"{what} 应该抛出 ValueError（{why}），你的却返回了结果（{shown}）。先检查参数，再 raise ValueError(\"...\")。")


# ---------------------------------------------------------------- 1. signatures

_SIGNATURES = (
    ("repeat_prompts", ("input_ids", "attention_mask", "num_generations"), {}),
    ("completion_mask", ("completion_ids", "eos_token_id"), {}),
    ("completion_log_probs", ("logits", "completion_ids"), {}),
    ("group_advantages", ("rewards", "num_generations"), {"eps": 1e-4, "clip": 10.0}),
    ("k3_kl", ("policy_log_probs", "ref_log_probs"), {}),
    ("grpo_loss", ("policy_log_probs", "ref_log_probs", "advantages", "mask"), {"beta": 0.02}),
)


def _check_signatures(impl) -> None:
    for name, args, defaults in _SIGNATURES:
        shown = f"{name}({', '.join(list(args) + [f'{k}={v!r}' for k, v in defaults.items()])})"
        fn = getattr(impl, name, None)
        expect(callable(fn), f"{FILE} 里要有函数 {shown}。")
        sig = inspect.signature(fn)
        try:
            sig.bind(**{a: None for a in args}, **defaults)
        except TypeError:
            fail(f"{name} 的签名应该是 {shown}，你的是 {name}{sig}。训练脚本 (workbook.train.grpo) 按这些名字调用它。")
        for key, value in defaults.items():
            got = sig.parameters[key].default
            expect(got == value, f"{name} 的参数 {key} 默认值应该是 {value!r}（MiniMind 的值），你的是 {got!r}。")


# ---------------------------------------------------------------- 2. repeat_prompts

def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three different left-padded prompts (pad id 0) and their attention mask, (3, 5) int64."""
    ids = torch.tensor([[0, 0, 11, 12, 13], [0, 21, 22, 23, 24], [31, 32, 33, 34, 35]])
    return ids, (ids != 0).long()


def _which_prompt(rows: torch.Tensor, prompts: torch.Tensor) -> list:
    """For each row, the index of the prompt it equals (None when it equals none)."""
    return [next((b for b in range(len(prompts)) if torch.equal(row, prompts[b])), None) for row in rows]


def _call_repeat(impl, ids, mask, g):
    what = f"repeat_prompts(input_ids {tuple(ids.shape)}, attention_mask, num_generations={g})"
    before = [ids.clone(), mask.clone()]
    out = impl.repeat_prompts(ids, mask, g)
    expect(isinstance(out, (tuple, list)) and len(out) == 2,
           f"{what} 应该返回两个张量 (input_ids, attention_mask)，你返回的是 {type(out).__name__}"
           + (f"（{len(out)} 个）" if isinstance(out, (tuple, list)) else "") + "。")
    _unchanged(before, [ids, mask], what)
    return [_tensor(x, what) for x in out], what


def _check_repeat(impl, ref) -> None:
    ids, mask = _prompts()
    G = 4
    (got_ids, got_mask), what = _call_repeat(impl, ids, mask, G)
    want_ids, want_mask = ref.repeat_prompts(ids, mask, G)
    for got, want, name in ((got_ids, want_ids, "input_ids"), (got_mask, want_mask, "attention_mask")):
        expect(tuple(got.shape) == tuple(want.shape),
               f"{what} 返回的 {name} 形状应该是 {tuple(want.shape)}（B·G 行），你的是 {tuple(got.shape)}。"
               + ("看起来你在第 1 维（序列维）上重复了：要沿第 0 维 (dim=0) 重复行。" if got.dim() == 2
                  and got.shape[1] == ids.shape[1] * G else ""))
        expect(got.dtype == want.dtype, f"{what} 返回的 {name} 是 {got.dtype}，应该和输入一样是 {want.dtype}。")
    if not torch.equal(got_ids, want_ids):
        if torch.equal(got_ids, ids.repeat(G, 1)):
            fail(f"{what}：你用了 repeat（把整个 batch 平铺 G 次），第 b 个 prompt 落在第 b、b + B、b + 2B… 行。"
                 f"GRPO 的一组是相邻的 G 行（generate(num_return_sequences=G) 就是这样排的）：用 "
                 f"input_ids.repeat_interleave(G, dim=0)，第 b·G … b·G + G − 1 行都是第 b 个 prompt。")
        fail(f"{what}：第 i 行应该是第 i // G 个 prompt，即 {_which_prompt(want_ids, ids)}；"
             f"你的各行是 {_which_prompt(got_ids, ids)}（None：哪个 prompt 都不是）。")
    if not torch.equal(got_mask, want_mask):
        if torch.equal(got_mask, mask.repeat(G, 1)):
            fail(f"{what}：input_ids 对了，attention_mask 却是用 repeat 平铺的：两者要一行对一行，"
                 f"attention_mask 也用 repeat_interleave(G, dim=0)。")
        fail(f"{what}：input_ids 对了，attention_mask 不对：第 i 行应该是第 i // G 个 prompt 的 mask，"
             f"你的各行是 {_which_prompt(got_mask, mask)}。")
    (one_ids, one_mask), what1 = _call_repeat(impl, ids, mask, 1)
    expect(torch.equal(one_ids, ids) and torch.equal(one_mask, mask),
           f"{what1} 应该原样返回每个 prompt 一次（G = 1），你的形状是 {tuple(one_ids.shape)}。")
    _raises_value_error(lambda: impl.repeat_prompts(ids, mask, 0), "repeat_prompts(..., num_generations=0)",
                        "每个 prompt 至少采样 1 次；返回一个空 batch 只会让后面的错误更难找")


# ---------------------------------------------------------------- 3. completion_mask

def _completions() -> tuple[torch.Tensor, list[str]]:
    """Six completions of 7 tokens, eos id 5; what each row is about."""
    ids = torch.tensor([
        [7, 8, 5, 5, 5, 5, 5],  # stops at 2, padded with eos (pad id = eos id)
        [9, 5, 3, 4, 5, 6, 0],  # stops at 1; tokens (another eos among them) after it
        [3, 4, 6, 7, 8, 9, 3],  # never stops: every position counts
        [5, 0, 0, 0, 0, 0, 0],  # stops at once
        [2, 6, 7, 8, 9, 3, 5],  # stops at the last position; MiniMind's eos id 2 at the start
        [4, 2, 2, 6, 5, 1, 1],  # the id 2 early, the eos 5 at 4
    ])
    return ids, ["停在第 2 位、后面用结束符补齐", "停在第 1 位、后面还有 token（也有结束符）", "一直没有结束符",
                 "第 0 位就是结束符", "最后一位才是结束符", "前面有 id 2、第 4 位是结束符"]


def _prefix_mask(ids: torch.Tensor, stop: torch.Tensor, inclusive: bool = True) -> torch.Tensor:
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    return (pos <= stop.unsqueeze(1)).long() if inclusive else (pos < stop.unsqueeze(1)).long()


def _first_eos(ids: torch.Tensor, eos: int, none: str = "length") -> torch.Tensor:
    is_eos = ids == eos
    first = is_eos.int().argmax(dim=1)
    if none == "length":
        first = torch.where(is_eos.any(dim=1), first, torch.full_like(first, ids.shape[1]))
    return first


def _last_eos(ids: torch.Tensor, eos: int) -> torch.Tensor:
    r = ids.shape[1]
    is_eos = (ids == eos).int()
    last = r - 1 - is_eos.flip(1).argmax(dim=1)
    return torch.where(is_eos.bool().any(dim=1), last, torch.full_like(last, r))


def _mask_mistakes(ids: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    first = _first_eos(ids, EOS)
    return [
        (_prefix_mask(ids, first, inclusive=False),
         "mask 停在了结束符之前：结束符本身也要算（t <= 第一个结束符的位置，不是 <）。模型要学会“停”，"
         "采样出结束符的那一步也要进 loss；少了它，奖励里的“停下来 (stop)”就没有一个 token 去学。"),
        (torch.ones_like(ids),
         "mask 全是 1：结束符之后的位置也算进去了。generate() 让先停下的那一行用 pad 补齐到最长的那一行，"
         "这些 token 不是策略采样出来的，不能进 loss：只数到第一个结束符（含）为止。"),
        (_prefix_mask(ids, _first_eos(ids, EOS, none="argmax")),
         "没有结束符的那一行只剩第 0 位是 1：一整行 False 的 argmax 是 0。没停下来的回答（到了 max_gen_len）每一个 token "
         "都是采样出来的，整行都要是 1：先用 is_eos.any(dim=1) 找出这些行，把它们的“结束位置”设成 R（或 R − 1）。"),
        ((ids != EOS).long(),
         "你的 mask 是 ids != eos：结束符本身被排除了，结束符后面不是结束符的 token 却被算了进去。"
         "要的是一个前缀：从第 0 位到第一个结束符（含），之后全是 0。"),
        (_prefix_mask(ids, _last_eos(ids, EOS)),
         "你数到了**最后**一个结束符：要停在**第一个**。结束符之后的是补齐的 padding（pad id 常常就是结束符），"
         "或者是这一行停下之后的垃圾。"),
        (_prefix_mask(ids, _first_eos(ids, 2)),
         "eos_token_id 参数没有用上：你的 mask 停在 id 2（MiniMind 的 <|im_end|>）上，而这里传进来的是 "
         f"eos_token_id={EOS}。用参数，不要写死。"),
    ]


def _check_mask(impl, ref) -> None:
    ids, about = _completions()
    what = f"completion_mask(completion_ids {tuple(ids.shape)}, eos_token_id={EOS})"
    before = ids.clone()
    got = _tensor(impl.completion_mask(ids, EOS), what)
    _unchanged([before], [ids], what)
    want = ref.completion_mask(ids, EOS)
    expect(tuple(got.shape) == tuple(want.shape), f"{what} 的形状应该是 {tuple(want.shape)}，你的是 {tuple(got.shape)}。")
    if got.dtype != torch.int64:
        if torch.equal(got.long(), want):
            fail(f"{what} 的值对了，dtype 应该是 torch.int64（0/1 的整数），你的是 {got.dtype}："
                 f"结尾加 .long()。" + ("bool 的 mask 和 float 相乘没问题，可 1 − mask 这类写法在 bool 上会报错。"
                                        if got.dtype == torch.bool else ""))
        fail(f"{what} 应该返回 0/1 的 torch.int64，你的是 {got.dtype}。")
    if torch.equal(got, want):
        none = torch.full((2, 4), 7)
        got_none = _tensor(impl.completion_mask(none, EOS), "completion_mask")
        expect(torch.equal(got_none.long(), torch.ones(2, 4, dtype=torch.long)),
               f"一个 batch 里没有一行有结束符时（completion_ids 全是 7，eos_token_id={EOS}），mask 应该全是 1，"
               f"你的是 {got_none.tolist()}。")
        return
    for value, message in _mask_mistakes(ids):
        if torch.equal(got, value):
            fail(f"{what}：{message}")
    bad = next(i for i in range(len(ids)) if not torch.equal(got[i], want[i]))
    fail(f"{what}：第 {bad} 行（{about[bad]}）是 {ids[bad].tolist()}，mask 应该是 {want[bad].tolist()}，"
         f"你的是 {got[bad].tolist()}。规则：第 0 位到第一个结束符（含）为 1，之后为 0；没有结束符时全是 1。")


# ---------------------------------------------------------------- 4. completion_log_probs

def _pick(lp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return lp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _call_log_probs(impl, logits, ids) -> tuple[torch.Tensor, str]:
    what = f"completion_log_probs(logits {tuple(logits.shape)}, completion_ids {tuple(ids.shape)})"
    before = [logits.detach().clone(), ids.clone()]
    got = _tensor(impl.completion_log_probs(logits, ids), what)
    _unchanged(before, [logits, ids], what)
    return got, what


def _check_log_probs(impl, ref) -> None:
    N, R, V = 3, 4, 11
    K = R + 3  # more positions kept than needed: the first R are then NOT the right ones
    with seeded(20):
        logits = 3 * torch.randn(N, K, V)
        ids = torch.randint(0, V, (N, R))
    got, what = _call_log_probs(impl, logits, ids)
    want = ref.completion_log_probs(logits, ids)
    expect(tuple(got.shape) == (N, R), f"{what} 的形状应该是 {(N, R)}（每个 completion token 一个数），你的是 "
                                       f"{tuple(got.shape)}。" + ("你返回了整个词表的 log 概率：用 gather 取出 completion_ids "
                                                                  "那个 token 的一项。" if got.dim() == 3 else ""))
    expect(got.dtype == torch.float32, f"{what} 应该返回 float32，你的是 {got.dtype}。")
    if not close(got, want, atol=ATOL, rtol=RTOL):
        lsm = F.log_softmax(logits, dim=-1)
        candidates = [
            (_pick(lsm[:, -R:], ids),
             f"差了一位 (off by one)：你用了最后 R 个位置的 logits（logits[:, -R:]）。位置 j 的 logits 预测的是第 j + 1 个 token，"
             f"最后一个位置预测的是 completion 之后的 token：要的是最后 R + 1 个位置去掉最后一个，logits[:, -(R + 1):-1]。"),
            (_pick(lsm[:, :R], ids),
             f"你用了最前面 R 个位置的 logits（logits[:, :R]）：只有正好保留了 R + 1 个位置（logits_to_keep = R + 1）时它才碰巧对。"
             f"这里保留了 K = {K} 个：从末尾数，logits[:, -(R + 1):-1]。"),
            (_pick(lsm[:, -(R + 2):-2], ids),
             "错开了两位：你用的是 logits[:, -(R + 2):-2]。位置 j 的 logits 预测第 j + 1 个 token：logits[:, -(R + 1):-1]。"),
            (_pick(F.softmax(logits[:, -(R + 1):-1], -1), ids),
             "你返回的是概率 p，不是对数概率 log p：用 F.log_softmax，不是 softmax。"),
            (_pick(logits[:, -(R + 1):-1], ids),
             "你 gather 的是 logits 本身：要先在词表维上 F.log_softmax(..., dim=-1)。"),
            (_pick(F.log_softmax(logits[:, -(R + 1):-1], dim=1), ids),
             "log_softmax 的维度不对：你在序列维 (dim=1) 上做了归一化。概率分布在词表上：dim=-1。"),
        ]
        message = next((m for value, m in candidates if close(got, value, atol=ATOL, rtol=RTOL)), None)
        fail(f"{what}：{message or '和 log_softmax(logits[:, -(R + 1):-1].float(), -1) 在 completion_ids 处的值不一样'}"
             f"（最大差 {max_err(got, want):.3g}）。")

    # MiniMind keeps exactly R + 1 positions (logits_to_keep = R + 1)
    exact = logits[:, -(R + 1):]
    got, what = _call_log_probs(impl, exact, ids)
    expect(close(got, ref.completion_log_probs(exact, ids), atol=ATOL, rtol=RTOL),
           f"{what}：正好保留 R + 1 个位置时（MiniMind 的 logits_to_keep = R + 1）结果不对，最大差 "
           f"{max_err(got, ref.completion_log_probs(exact, ids)):.3g}：从末尾数，logits[:, -(R + 1):-1]。")
    _raises_value_error(lambda: impl.completion_log_probs(logits[:, -R:], ids),
                        f"completion_log_probs(logits 只保留了 R = {R} 个位置, completion_ids (N, {R}))",
                        "R 个 completion token 要 R + 1 个位置的 logits，少了就没有一种对齐是对的；"
                        "静悄悄地错一位的 log 概率会让整个训练学错东西")

    # bf16 logits (autocast): the log-softmax in float32
    low = (4 * logits).bfloat16()
    got, what = _call_log_probs(impl, low, ids)
    expect(got.dtype == torch.float32,
           f"bfloat16 的 logits（autocast 下模型的输出就是它）进来，completion_log_probs 要返回 float32，你的是 {got.dtype}："
           f"先 .float() 再 log_softmax。")
    want = ref.completion_log_probs(low, ids)
    if not close(got, want, atol=1e-6, rtol=1e-6):
        in_bf16 = _pick(F.log_softmax(low[:, -(R + 1):-1], dim=-1), ids).float()
        if close(got, in_bf16, atol=1e-6, rtol=1e-6):
            fail(f"bfloat16 的 logits：你的 log_softmax 是在 bfloat16 里算的，最后才转 float32（和先转再算最大差 "
                 f"{max_err(got, want):.3g}）。bf16 只有 8 位二进制有效数字：每个 token 差 1e-2 左右，"
                 f"比 GRPO 一步要改的对数概率还大。先 .float()，再 log_softmax。")
        fail(f"bfloat16 的 logits：你的结果和 log_softmax(logits.float(), -1) 的最大差是 {max_err(got, want):.3g}。")

    # the gradient reaches the policy's logits
    x = logits.clone().requires_grad_(True)
    got, what = _call_log_probs(impl, x, ids)
    expect(got.requires_grad, f"{what} 的结果不带梯度：策略的 log 概率要留在计算图里（不要 .detach()、torch.no_grad() 或 .item()），"
                              f"GRPO 的梯度正是从这里流回模型的。")
    with seeded(21):
        weights = torch.randn(N, R)
    (got * weights).sum().backward()
    x_ref = logits.clone().requires_grad_(True)
    (ref.completion_log_probs(x_ref, ids) * weights).sum().backward()
    expect(x.grad is not None and close(x.grad, x_ref.grad, atol=1e-6, rtol=1e-4),
           f"{what} 对 logits 的梯度和参考实现不一样"
           + (f"（最大差 {max_err(x.grad, x_ref.grad):.3g}）" if x.grad is not None else "（没有梯度）") + "。")


# ---------------------------------------------------------------- 5. group_advantages

def _advantages(rewards: torch.Tensor, G: int, eps: float = 1e-4, clip: float = 10.0, grouping: str = "group",
                std: str = "unbiased", use_eps: bool = True, clamp: str = "before", batch: str = "unbiased"
                ) -> torch.Tensor:
    """group_advantages computed one (possibly wrong) way; the check's candidates."""
    r = rewards.double()
    unbiased = std == "unbiased"
    if grouping == "group":
        grouped = r.view(-1, G)
        a = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True, unbiased=unbiased)
                                                          + (eps if use_eps else 0.0))
        a = a.reshape(-1)
    elif grouping == "strided":  # rows b, b + B, … taken as one group (the layout of .repeat)
        grouped = r.view(G, -1)
        a = (grouped - grouped.mean(0, keepdim=True)) / (grouped.std(0, keepdim=True, unbiased=unbiased)
                                                          + (eps if use_eps else 0.0))
        a = a.reshape(-1)
    else:  # the whole batch as one group
        a = (r - r.mean()) / (r.std(unbiased=unbiased) + (eps if use_eps else 0.0))
    if clamp == "before":
        a = a.clamp(-clip, clip)
    if batch != "none":
        a = (a - a.mean()) / (a.std(unbiased=batch == "unbiased") + 1e-8)
    if clamp == "after":
        a = a.clamp(-clip, clip)
    return a.float()


def _advantage_mistakes(rewards: torch.Tensor, G: int, eps: float, clip: float) -> list[tuple[torch.Tensor, str]]:
    def adv(**kw):
        return _advantages(rewards, G, eps, clip, **kw)
    return [
        (adv(grouping="batch"),
         "优势没有按组算：你用的是整个 batch 的均值和标准差。GRPO 的基线是**同一个 prompt 的那一组**：每个回答只和它的 G − 1 个兄弟比。"
         "按 batch 算时，一个难题（整组得分都低）的每个回答都成了“坏”的，一个容易题的每个回答都成了“好”的，"
         "学到的是题目难不难，不是回答好不好。rewards.view(-1, G)，在 dim=1 上求 mean 和 std。"),
        (adv(grouping="strided"),
         "分组的方向错了：你把第 b、b + B、b + 2B… 行当成了一组（rewards.view(G, -1) 再沿 dim=0 求，或者 .repeat 的布局）。"
         "一组是相邻的 G 行：rewards.view(-1, G)，沿 dim=1 求均值和标准差。"),
        (adv(std="population"),
         "组内的标准差用成了总体标准差 (population std，除以 G，unbiased=False / correction=0)：MiniMind 用 torch 默认的"
         "无偏标准差 (unbiased，除以 G − 1)。直接 .std(dim=1) 就是。"),
        (adv(batch="population"),
         "最后一步 batch 归一化的标准差用成了总体标准差 (unbiased=False)：MiniMind 用 torch 默认的无偏标准差 advantages.std()。"),
        (adv(batch="none"),
         "少了最后一步：组内标准化、clamp 之后，还要在整个 batch 上再归一化一次 (A − mean(A)) / (std(A) + 1e-8)。"),
        (_advantages(rewards, G, eps, 10.0),
         f"参数 clip 没有用上：这里传进来的是 clip={clip:g}，你的结果是 clip = 10（或者根本没有 clamp）时的值。用参数，不要写死。"),
        (adv(clamp="none"),
         f"没有 clamp：组内标准化之后要裁到 ±clip（这里 clip = {clip:g}）：(A).clamp(-clip, clip)，再做 batch 归一化。"),
        (adv(clamp="after"),
         "clamp 放错了地方：要在组内标准化之后、batch 归一化**之前** clamp；你是在最后才 clamp 的。"),
        (adv(clamp="none", batch="none"),
         "只做了组内标准化：还要 clamp 到 ±clip，再在整个 batch 上归一化 (A − mean(A)) / (std(A) + 1e-8)。"),
        (_advantages(rewards, G, 1e-4, clip),
         f"参数 eps 没有用上：这里传进来的是 eps={eps:g}，你的结果是 eps = 1e-4 时的值。用参数，不要写死。"),
        (adv(use_eps=False),
         "组内标准差后面少了 eps：(r − mean) / (std + eps)。一组奖励几乎一样时 std 很小，没有 eps，一点点差别就被放大成 ±1.5 的优势"
         "（全一样时是 0 / 0 = NaN）。"),
    ]


def _compare(want: torch.Tensor, got: torch.Tensor, shown: int = 4) -> str:
    """The whole vectors when short; otherwise the positions that differ most."""
    def fmt(x: float) -> str:
        return f"{round(x, 4) + 0.0:g}"
    if want.numel() <= 12:
        return f"应为 [{', '.join(fmt(v) for v in want.tolist())}]，你的是 [{', '.join(fmt(v) for v in got.tolist())}]。"
    diff = (want - got).abs()
    bad = int(diff.gt(ATOL + RTOL * want.abs()).sum())
    worst = diff.argsort(descending=True)[:min(shown, bad)].tolist()
    parts = [f"第 {i} 个应为 {fmt(want[i].item())}、你的是 {fmt(got[i].item())}" for i in sorted(worst)]
    return "差得最多的：" + "；".join(parts) + f"（共 {bad} 个不同）。"


def _call_advantages(impl, rewards, G, **kw) -> tuple[torch.Tensor, str]:
    extra = "".join(f", {k}={v:g}" for k, v in kw.items())
    what = f"group_advantages(rewards ({rewards.numel()},), num_generations={G}{extra})"
    before = rewards.clone()
    got = _tensor(impl.group_advantages(rewards, G, **kw), what)
    _unchanged([before], [rewards], what)
    expect(tuple(got.shape) == tuple(rewards.shape),
           f"{what} 的形状应该是 {tuple(rewards.shape)}（每个回答一个优势），你的是 {tuple(got.shape)}。"
           + ("你返回的是 (B, G)：最后要 .view(-1) 摊平，和 rewards 一行对一行。" if got.dim() == 2 else ""))
    return got, what


def _check_advantage_value(impl, ref, rewards, G, **kw) -> None:
    got, what = _call_advantages(impl, rewards, G, **kw)
    want = ref.group_advantages(rewards, G, **kw)
    if close(got.float(), want, atol=ATOL, rtol=RTOL):
        return
    if torch.isnan(got).any():
        groups = rewards.view(-1, G)
        flat = [b for b in range(len(groups)) if bool((groups[b] == groups[b][0]).all())]
        fail(f"{what} 得到了 NaN。"
             + (f"第 {flat} 组的奖励全都一样：std = 0，没有 eps 就是 0 / 0。分母要写成 std + eps，这一组的优势就是 0——"
                f"没有可学的，本来就该是 0。" if flat else "分母里少了 eps？"))
    eps, clip = kw.get("eps", 1e-4), kw.get("clip", 10.0)
    message = next((m for value, m in _advantage_mistakes(rewards, G, eps, clip)
                    if close(got.float(), value, atol=ATOL, rtol=RTOL)), None)
    fail(f"{what}：{message or '和 MiniMind 的做法不一样'}\n{_compare(want, got.float())}")


def _check_advantages(impl, ref) -> None:
    # A. three groups of four with different means: an ordinary one, one spread by ~1e-4 (eps
    #    matters there), one all equal (0 / 0 without eps)
    spread = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0, 1e-4, 3e-4, 1.5e-4, 3.0, 3.0, 3.0, 3.0])
    got, what = _call_advantages(impl, spread, 4)
    expect(got.dtype == torch.float32, f"{what} 应该返回 float32，你的是 {got.dtype}。")
    _check_advantage_value(impl, ref, spread, 4)
    # D. a group of 128 with one outlier: z = 11.2, the default clamp at ±10 bites (it never can
    #    for G <= 101: |z| <= (G - 1) / sqrt(G) with the unbiased std)
    big = torch.zeros(2, 128)
    big[0, 0] = 1.0  # one success among 127 failures
    big[1, 1:] = 1.0  # one failure among 127 successes
    big[1, 5] = 0.5
    _check_advantage_value(impl, ref, big.view(-1), 128)
    # B. eps and clip passed on
    rewards = torch.tensor([0.0, 1.0, 0.2, 0.3, 2.0, 2.1, 2.05, 1.2, -1.0, 0.0, 0.5, -0.4])
    _check_advantage_value(impl, ref, rewards, 4, eps=0.05, clip=1.2)
    # C. every reward the same: nothing to learn, zeros (not 0 / 0 in the batch step)
    same = torch.full((8,), 0.75)
    got, what = _call_advantages(impl, same, 4)
    if not torch.isfinite(got).all():
        fail(f"{what}：所有奖励都一样时（整个 batch 都是 0.75）你的优势是 {got.tolist()}。组内那一步有 eps，得到全 0；"
             f"最后 batch 归一化时 std(A) 也是 0：分母要写成 std(A) + 1e-8，否则是 0 / 0 = NaN，一步就毁掉整个模型。")
    expect(bool((got == 0).all()), f"{what}：所有奖励都一样时优势应该全是 0（没有可学的），你的是 {got.tolist()}。")
    # float64 rewards: float32 out
    got, what = _call_advantages(impl, spread.double(), 4)
    expect(got.dtype == torch.float32, f"{what}：float64 的 rewards 进来也要返回 float32，你的是 {got.dtype}：先 rewards.float()。")
    # bad input
    _raises_value_error(lambda: impl.group_advantages(torch.tensor([1.0, 2.0, 3.0]), 1),
                        "group_advantages(rewards, num_generations=1)",
                        "GRPO 在一组里比较，一个样本没有可比的；torch 的无偏 std 对一个数是 NaN")
    _raises_value_error(lambda: impl.group_advantages(torch.arange(7.0), 4),
                        "group_advantages(rewards (7,), num_generations=4)",
                        "7 个奖励分不成每组 4 个")
    _raises_value_error(lambda: impl.group_advantages(torch.arange(8.0).view(2, 4), 4),
                        "group_advantages(rewards (2, 4), num_generations=4)",
                        "rewards 要是一维的 (B·G,)，和 completion 一行对一行")


# ---------------------------------------------------------------- 6. k3_kl

def _log_prob_pair(seed: int, n: int = 4, r: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy, ref) log-probs (n, r): negative, differing by up to ~±2, equal at [0, 0]."""
    with seeded(seed):
        policy = -(2 * torch.rand(n, r) + 0.05)
        ref = policy + 0.8 * torch.randn(n, r)
    ref[0, 0] = policy[0, 0]
    return policy, ref


def _kl_mistakes(logp: torch.Tensor, ref: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    d = ref - logp
    return [
        (torch.exp(-d) + d - 1,
         "d 的符号反了：k3 里 d = ref − logp（参考减策略），kl = exp(d) − d − 1。你算的是 d = logp − ref 的那个，"
         "它估计的是另一个方向的 KL(π_ref ‖ π)，而 token 是从 π 采样的，这个估计是有偏的。"),
        (-d, "你用的是 k1 = logp − ref：它的期望也是 KL(π ‖ π_ref)，但每个 token 的值有正有负、方差大。"
             "k3 加上 exp(d) − 1（它在 π 下的期望是 0）：kl = exp(d) − d − 1，d = ref − logp，每一项都 ≥ 0。"),
        (d, "你返回的是 ref − logp：这是 k1 的相反数，期望是 −KL，越罚越远。k3：d = ref − logp，kl = exp(d) − d − 1。"),
        (d ** 2 / 2, "你用的是 k2 = d² / 2：它也 ≥ 0，但是有偏的（只在两个分布很接近时才近似 KL）。MiniMind 用 k3："
                     "kl = exp(d) − d − 1，d = ref − logp。"),
        (torch.exp(d) - 1, "少了 − d：k3 是 exp(d) − d − 1。只有 exp(d) − 1 时，值有正有负，在 π 下的期望是 0，什么也没罚。"),
    ]


def _check_kl(impl, ref) -> None:
    logp, ref_lp = _log_prob_pair(23)
    what = f"k3_kl(policy_log_probs {tuple(logp.shape)}, ref_log_probs {tuple(ref_lp.shape)})"
    before = [logp.clone(), ref_lp.clone()]
    got = _tensor(impl.k3_kl(logp, ref_lp), what)
    _unchanged(before, [logp, ref_lp], what)
    want = ref.k3_kl(logp, ref_lp)
    expect(tuple(got.shape) == tuple(want.shape),
           f"{what} 的形状应该是 {tuple(want.shape)}（每个 token 一个值，不求和也不求平均），你的是 {tuple(got.shape)}。")
    if not close(got, want, atol=ATOL, rtol=RTOL):
        message = next((m for value, m in _kl_mistakes(logp, ref_lp) if close(got, value, atol=ATOL, rtol=RTOL)), None)
        if message is None and (got < -1e-6).any():
            message = "出现了负数：k3 = exp(d) − d − 1 永远 ≥ 0（因为 e^x ≥ 1 + x）。d = ref − logp。"
        fail(f"{what}：{message or 'k3 应该是 exp(d) − d − 1，d = ref − logp'}（最大差 {max_err(got, want):.3g}）。")
    expect(abs(got[0, 0].item()) < 1e-7, f"{what}：策略和参考的 log 概率相等的位置，KL 应该是 0，你的是 {got[0, 0].item():.3g}。")
    x = logp.clone().requires_grad_(True)
    got = _tensor(impl.k3_kl(x, ref_lp), what)
    expect(got.requires_grad, f"{what} 的结果不带梯度：KL 项要把策略往参考拉，它对 policy_log_probs 要有梯度（不要 .detach()）。")
    got.sum().backward()
    # d/dlogp [exp(ref − logp) − (ref − logp) − 1] = 1 − exp(ref − logp)
    expect(x.grad is not None and close(x.grad, 1 - torch.exp(ref_lp - logp), atol=1e-6, rtol=1e-4),
           f"{what} 对 policy_log_probs 的梯度应该是 1 − exp(ref − logp)。")


# ---------------------------------------------------------------- 7. grpo_loss

LENGTHS = (5, 2, 4, 1, 3, 5)  # tokens of each of the check's six completions (R = 5)
ADVANTAGES = (1.5, -0.4, -0.9, 0.2, 1.1, -0.7)  # mean 0.133: not 0, so every reduction differs


def _loss_inputs(seed: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    logp, ref_lp = _log_prob_pair(seed, n=len(LENGTHS), r=max(LENGTHS))
    mask = (torch.arange(max(LENGTHS)) < torch.tensor(LENGTHS).unsqueeze(1)).long()
    return logp, ref_lp, torch.tensor(ADVANTAGES), mask


def _loss_variant(logp, ref_lp, adv, mask, beta, kl="k3", beta_sign=-1.0, ratio="one", reduce="completion",
                  sign=1.0) -> torch.Tensor:
    """grpo_loss computed one (possibly wrong) way; the check's candidates (values only)."""
    d = ref_lp - logp
    per_kl = {"k3": torch.exp(d) - d - 1, "k3_flipped": torch.exp(-d) + d - 1, "k1": -d, "minus_k1": d,
              "k2": d ** 2 / 2}[kl]
    r = {"one": torch.ones_like(logp), "logp": logp, "ref": torch.exp(logp - ref_lp)}[ratio]
    per_token = -sign * (r * adv.unsqueeze(1) + beta_sign * beta * per_kl)
    m = mask.double()
    per_token = per_token.double()
    if reduce == "completion":
        return ((per_token * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    if reduce == "tokens":
        return (per_token * m).sum() / m.sum()
    if reduce == "sum":
        return (per_token * m).sum(1).mean()
    if reduce == "no_mask":
        return per_token.mean()
    return (per_token * m).sum() / per_token.numel()  # "masked_over_all"


def _loss_mistakes(logp, ref_lp, adv, mask, beta) -> list[tuple[torch.Tensor, str]]:
    def v(**kw):
        return _loss_variant(logp, ref_lp, adv, mask, kw.pop("b", beta), **kw)
    return [
        (v(beta_sign=1.0), "β·kl 的符号反了：per_token = −(ratio·A − β·kl)，也就是 loss 里是 **+β·kl**（KL 是惩罚，要把它加到 loss 上，"
                           "最小化 loss 才会把策略拉回参考）。你写成了 −(ratio·A + β·kl)：KL 成了奖励，策略会越跑越远。"),
        (v(b=0.0), "KL 项没有算进去（像是 β = 0，或者漏了 − β·kl）：per_token = −(ratio·A − β·kl)。"),
        (v(b=0.02), f"参数 beta 没有用上：这里传进来的是 beta={beta:g}，你的结果是 β = 0.02（MiniMind 的默认值）时的值。"),
        (v(kl="k3_flipped"), "loss 里的 KL 的 d 符号反了：d = ref − logp，kl = exp(d) − d − 1（可以直接调用你的 k3_kl）。"),
        (v(kl="k1"), "loss 里的 KL 用的是 k1 = logp − ref，不是 k3：kl = exp(d) − d − 1，d = ref − logp（可以直接调用你的 k3_kl）。"),
        (v(kl="minus_k1"), "loss 里的 KL 用的是 ref − logp，不是 k3：kl = exp(d) − d − 1，d = ref − logp（可以直接调用你的 k3_kl）。"),
        (v(kl="k2"), "loss 里的 KL 用的是 k2 = d² / 2，不是 k3：kl = exp(d) − d − 1（可以直接调用你的 k3_kl）。"),
        (v(reduce="tokens"),
         "你对整个 batch 的所有有效 token 取了一次平均 (Σ loss·mask / Σ mask)：MiniMind 先在**每个 completion 内部**取平均，"
         "再对 completion 取平均——每个回答权重一样，不管长短。按 token 平均时，长回答的每个 token 都算一票，"
         "奖励就悄悄偏向了长的（或短的）回答。(per_token * mask).sum(1) / mask.sum(1)，再 .mean()。"),
        (v(reduce="sum"), "每个 completion 内部是求和，不是平均：要除以这一行的 token 数 mask.sum(1)（至少 1），"
                          "否则长的回答梯度大，短的小。"),
        (v(reduce="no_mask"), "mask 没有用上：结束符之后的 padding 也算进了 loss。(per_token * mask).sum(1) / mask.sum(1)。"),
        (v(reduce="masked_over_all"), "乘了 mask，却除以了所有位置的个数 (N·R)：要按行除以这一行的有效 token 数 mask.sum(1)，"
                                      "再对行取平均。"),
        (v(ratio="logp"), "你用 A·logp 代替了 exp(logp − logp.detach())·A：梯度一样（都是 A·∇logp），loss 的**值**却不一样，"
                          "日志里的数字没法和 MiniMind 对比。ratio = torch.exp(logp − logp.detach())，它的值恒为 1。"),
        (v(ratio="ref"), "比值 (ratio) 用成了 exp(logp − ref)：策略对**参考模型**的比值。GRPO 的比值是对**采样时的策略**的，"
                         "每批样本只更新一次时就是它自己：exp(logp − logp.detach())，值为 1、梯度为 ∇logp。参考模型只出现在 KL 里。"),
        (v(sign=-1.0), "整个 loss 的符号反了：per_token = −(ratio·A − β·kl)。最小化它，才会提高优势为正的回答的概率。"),
    ]


def _call_loss(impl, logp, ref_lp, adv, mask, **kw) -> tuple[torch.Tensor, str]:
    extra = "".join(f", {k}={v:g}" for k, v in kw.items())
    what = f"grpo_loss(policy_log_probs {tuple(logp.shape)}, ref_log_probs, advantages ({adv.numel()},), mask{extra})"
    before = [logp.detach().clone(), ref_lp.detach().clone(), adv.clone(), mask.clone()]
    got = _tensor(impl.grpo_loss(logp, ref_lp, adv, mask, **kw), what)
    _unchanged(before, [logp, ref_lp, adv, mask], what)
    expect(got.dim() == 0, f"{what} 应该返回 0 维的标量 (scalar)，你的形状是 {tuple(got.shape)}："
                           f"先在每个 completion 里平均，再对 completion 取 .mean()。")
    return got, what


def _check_loss_value(impl, ref) -> None:
    logp, ref_lp, adv, mask = _loss_inputs()
    got, what = _call_loss(impl, logp, ref_lp, adv, mask, beta=BETA)
    want = ref.grpo_loss(logp, ref_lp, adv, mask, beta=BETA)
    if close(got, want, atol=ATOL, rtol=RTOL):
        return
    if not torch.isfinite(got):
        fail(f"{what} 得到了 {got.item()}（应为 {want.item():.6g}）。")
    message = next((m for value, m in _loss_mistakes(logp, ref_lp, adv, mask, BETA)
                    if close(got, value, atol=ATOL, rtol=RTOL)), None)
    fail(f"{what}：{message or '和 MiniMind 的 GRPO loss 不一样'}（应为 {want.item():.6g}，你的是 {got.item():.6g}）。")


def _check_loss_grad(impl, ref) -> None:
    logp, ref_lp, adv, mask = _loss_inputs(seed=25)
    x = logp.clone().requires_grad_(True)
    y = ref_lp.clone().requires_grad_(True)  # to see whether a gradient reaches the reference
    got, what = _call_loss(impl, x, y, adv, mask, beta=BETA)
    expect(got.requires_grad, f"{what} 不带梯度：policy_log_probs 要留在计算图里。ratio = exp(logp − logp.detach()) 只 detach "
                              f"**里面减去的那个** logp，不是整个 ratio，也不要 .item() 或 torch.no_grad()。")
    got.backward()
    if y.grad is not None and y.grad.abs().max().item() > 0:
        fail(f"{what}：梯度流进了参考模型的 log 概率 (ref_log_probs)。参考模型是冻结的：在 loss 里先 ref_log_probs.detach()"
             f"（训练脚本也在 torch.no_grad() 里算它）。否则 KL 会同时把参考往策略拉，“别离参考太远”就不成立了。")
    x_ref = logp.clone().requires_grad_(True)
    ref.grpo_loss(x_ref, ref_lp, adv, mask, beta=BETA).backward()
    want = x_ref.grad
    if x.grad is None:
        fail(f"{what}：policy_log_probs 没有收到梯度。")
    if close(x.grad, want, atol=1e-7, rtol=1e-4):
        return
    n = mask.sum(1, keepdim=True).clamp(min=1).double() * len(LENGTHS)
    d = (ref_lp - logp).double()
    only_kl = (BETA * (1 - torch.exp(d)) * mask / n).float()
    only_adv = (-adv.double().unsqueeze(1) * mask / n).float()
    if close(x.grad, only_kl, atol=1e-7, rtol=1e-4):
        fail(f"{what}：loss 的值对了，可是优势那一项没有梯度：整个 ratio 被 detach 了（或者用 torch.ones_like 代替了它）。"
             f"ratio = torch.exp(logp − logp.detach())：值是 1，梯度是 ∇logp——只 detach 减去的那个 logp。"
             f"否则 loss 里只剩 KL 在起作用，奖励一点也学不到。")
    if close(x.grad, only_adv, atol=1e-7, rtol=1e-4):
        fail(f"{what}：loss 的值对了，可是 KL 那一项没有梯度：KL 里的 logp 被 detach 了。k3_kl(logp, ref.detach())：只冻结参考，"
             f"策略那一侧要有梯度，否则 β 拉不住策略。")
    fail(f"{what}：loss 的值对了，对 policy_log_probs 的梯度却不对（最大差 {max_err(x.grad, want):.3g}）。每个 token 的梯度应该是 "
         f"mask·(−A + β·(1 − exp(ref − logp))) / (这一行的 token 数 × completion 数)。")


def _check_loss_edges(impl, ref) -> None:
    logp, ref_lp, adv, mask = _loss_inputs(seed=26)
    got, what = _call_loss(impl, logp, ref_lp, adv, mask.float(), beta=BETA)
    want = ref.grpo_loss(logp, ref_lp, adv, mask, beta=BETA)
    expect(close(got, want, atol=ATOL, rtol=RTOL),
           f"{what}：float 的 mask（0.0/1.0）应该和 int64 的 mask 结果一样（{want.item():.6g}），你的是 {got.item():.6g}。")
    got, what = _call_loss(impl, logp, ref_lp, adv, mask)
    want = ref.grpo_loss(logp, ref_lp, adv, mask)
    expect(close(got, want, atol=ATOL, rtol=RTOL),
           f"{what}：不给 beta 时应该用默认的 0.02，结果是 {want.item():.6g}，你的是 {got.item():.6g}。")
    empty = mask.clone()
    empty[3] = 0  # a completion without a single counted token
    got, what = _call_loss(impl, logp, ref_lp, adv, empty, beta=BETA)
    want = ref.grpo_loss(logp, ref_lp, adv, empty, beta=BETA)
    if not torch.isfinite(got):
        fail(f"{what}：有一行的 mask 全是 0 时你的 loss 是 {got.item()}：这一行是 0 / 0。分母写成 mask.sum(1).clamp(min=1)，"
             f"这一行就贡献 0。")
    expect(close(got, want, atol=ATOL, rtol=RTOL),
           f"{what}：有一行的 mask 全是 0 时，这一行贡献 0，但仍然算在 completion 的个数里（对所有行取 .mean()）："
           f"应为 {want.item():.6g}，你的是 {got.item():.6g}。")


def check(impl, ref) -> str:
    _check_signatures(impl)
    _check_repeat(impl, ref)
    _check_mask(impl, ref)
    _check_log_probs(impl, ref)
    _check_advantages(impl, ref)
    _check_kl(impl, ref)
    _check_loss_value(impl, ref)
    _check_loss_grad(impl, ref)
    _check_loss_edges(impl, ref)
    return ("repeat_interleave 分组、mask 数到第一个结束符（含）、错开一位的 float32 对数概率、"
            "组内无偏标准化 + eps + clamp + batch 归一化、k3 KL、每个回答先平均再平均的 GRPO loss"
            "（参考不收梯度、ratio 的梯度是 ∇logp）：全部正确。")
