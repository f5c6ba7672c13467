"""Check for stage 17: distillation_loss and distill_objective.

All on small seeded float32 logits (no model needed), at temperatures T = 3 and 2.5 and α = 0.3
(at T = 1 or α = 0.5 several mistakes give the right number, and at T = 2 the factor 2·T equals T²):

1. Signatures and defaults: distillation_loss(student, teacher, temperature=1.0,
   reduction="batchmean"), distill_objective(student, teacher, labels, alpha=0.5,
   temperature=1.5).
2. distillation_loss on (N, V) rows equals T² · kl_div(log_softmax(s/T), softmax(t/T),
   "batchmean"); a wrong value is named by recomputing each known mistake: the two arguments of
   kl_div swapped, probabilities where the log-probabilities belong (or log-probabilities as the
   target), T² missing or only T, the temperature on one side only or not used at all,
   reduction "mean" or "sum", softmax over the rows instead of the vocabulary, 2·T for T².  The
   `reduction` argument is passed on; the default temperature is 1.
3. Gradients: none reaches the teacher's logits; the student's is T·(softmax(s/T) − softmax(t/T))/N.
   The inputs are not modified.
4. distill_objective on (batch, seq, V) logits with prompt and padding positions and a teacher
   with a larger vocabulary: ce, kd and loss equal the reference; the shift forgotten or
   reversed, prompt/padding positions counted, the mean taken over the wrong count, the
   teacher's vocabulary not cut or cut wrong, the temperature not passed on or used in the CE,
   α the wrong way round or not used, the three values returned in another order, positions
   whose label is the token id 0 left out are named.  A wrong ce or kd that matches none of these
   is located by probing: one label at a time, which student (and teacher) row the learner's
   value comes from.  No gradient reaches the teacher.
5. A batch with no counted position gives three zeros (not NaN) that still back-propagate;
   bf16 logits give float32 results.
"""
from __future__ import annotations

import inspect
import itertools
import warnings

import torch
import torch.nn.functional as F

from .tools import close, expect, fail, max_err, seeded

TEMP = 3.0  # the check's temperature: 1, T, 2·T and T² all differ (at T = 2, 2·T == T²)
TEMP2 = 2.5  # a second one: a temperature written into the code shows
ALPHA = 0.3  # the check's α: α and 1 − α differ
N_ROWS, VOCAB = 6, 10  # distillation_loss: (N, V) rows
BATCH, SEQ, V_TEACHER = 3, 8, 13  # distill_objective: (batch, seq, V) logits, a larger teacher vocab
ATOL, RTOL = 1e-5, 1e-4


# ---------------------------------------------------------------- inputs

def _rows(seed: int, n: int = N_ROWS, vocab: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits (n, vocab), float32, spread enough that T matters."""
    with seeded(seed):
        return 2.5 * torch.randn(n, vocab), 2.5 * torch.randn(n, vocab)


def _batch(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """student (B, S, V), teacher (B, S, V_t) and labels (B, S) with prompt and padding positions."""
    with seeded(seed):
        student = 2.5 * torch.randn(BATCH, SEQ, VOCAB)
        teacher = 2.5 * torch.randn(BATCH, SEQ, V_TEACHER)
        teacher[..., VOCAB:] += 4.0  # tokens only the teacher knows, and likes: a missing cut shows
        labels = torch.randint(0, VOCAB, (BATCH, SEQ))
    labels[0, :4] = -100  # a prompt of 4 tokens, one padding position at the end
    labels[0, 7:] = -100
    labels[2, :3] = -100  # a prompt of 3 tokens, two padding positions
    labels[2, 6:] = -100
    # the token id 0 (<|endoftext|>, also the pad id) at counted positions: not left to chance
    labels[1, 3] = 0
    labels[2, 4] = 0
    return student, teacher, labels  # row 1: every position labelled, the first one too


# ---------------------------------------------------------------- 1. signatures

def _check_signatures(impl) -> None:
    for name, args, defaults in (
            ("distillation_loss", "(student_logits, teacher_logits, temperature=1.0, reduction=\"batchmean\")",
             {"temperature": 1.0, "reduction": "batchmean"}),
            ("distill_objective", "(student_logits, teacher_logits, labels, alpha=0.5, temperature=1.5)",
             {"alpha": 0.5, "temperature": 1.5})):
        fn = getattr(impl, name, None)
        expect(callable(fn), f"workbook/train/distill_loss.py 里要有函数 {name}{args}。")
        sig = inspect.signature(fn)
        positional = ["student_logits", "teacher_logits"] + (["labels"] if name == "distill_objective" else [])
        try:
            sig.bind(*positional, **defaults)
        except TypeError:
            fail(f"{name} 的签名应该是 {name}{args}，你的是 {name}{sig}。训练脚本按这些名字调用它。")
        for key, value in defaults.items():
            got = sig.parameters[key].default
            expect(got == value, f"{name} 的参数 {key} 默认值应该是 {value!r}（MiniMind 的默认值），你的是 {got!r}。"
                                 + ("distillation_loss 自己的温度默认是 1.0；1.5 是训练脚本（distill_objective）的默认值。"
                                    if name == "distillation_loss" and key == "temperature" else ""))


# ---------------------------------------------------------------- 2. distillation_loss: the value

_IN_PLACE = ("distillation_loss 改动了输入的 logits（原地操作 in-place，例如 student_logits /= T 或 .div_(T)）："
             "写成 student_logits / T，得到一个新张量。训练脚本后面还要用这些 logits。")


def _scalar(x, what: str) -> torch.Tensor:
    expect(isinstance(x, torch.Tensor), f"{what} 应该返回一个 torch.Tensor（0 维标量），你返回的是 {type(x).__name__}。")
    if x.dim() != 0:
        fail(f"{what} 应该返回 0 维的标量 (scalar)，你的形状是 {tuple(x.shape)}："
             f"reduction=\"batchmean\" 时 F.kl_div 已经把词表求和、对行取平均；不要用 reduction=\"none\"，"
             f"也不要只在词表维上求和。")
    return x


def _kl(inp: torch.Tensor, target: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    with warnings.catch_warnings():  # "mean" warns that it divides by N·V: that mistake is the point
        warnings.simplefilter("ignore", UserWarning)
        return F.kl_div(inp, target, reduction=reduction)


def _loss_mistakes(s: torch.Tensor, t: torch.Tensor, T: float) -> list[tuple[torch.Tensor, str]]:
    """(what a known mistake returns, its diagnostic) for distillation_loss(s, t, temperature=T)."""
    ls, lt = F.log_softmax(s / T, -1), F.log_softmax(t / T, -1)
    ps, pt = ls.exp(), lt.exp()
    right = "F.kl_div(F.log_softmax(student / T, dim=-1), F.softmax(teacher / T, dim=-1), reduction=\"batchmean\")"
    cores = [
        (_kl(lt, ps), "kl_div 的两个参数顺序反了：你算的是 KL(学生 ‖ 老师)。F.kl_div(input, target) 算的是 "
                      "KL(target ‖ input)，input 是**学生**的对数概率，target 是**老师**的概率："
                      f"{right}。KL 不对称：反过来的 KL(学生 ‖ 老师) 只惩罚学生把概率放到老师认为不可能的 token 上 (mode seeking)，"
                      "却不要求学生覆盖老师认为可能的那些——蒸馏要学的恰恰是后者。"),
        (_kl(ps, pt), "kl_div 的第一个参数要是学生的**对数概率** (log-probabilities)：用 F.log_softmax，不是 F.softmax。"
                      f"F.kl_div 把 input 当作 log q，直接算 p·(log p − input)：{right}。"),
        (_kl(ls, lt), "kl_div 的第二个参数要是老师的**概率**，不是对数概率：用 F.softmax(teacher / T)，不是 F.log_softmax"
                      "（除非另加 log_target=True）。target 是负数的对数概率时，p·log p 里的 log 会取到负数，结果毫无意义。"),
        (_kl(F.log_softmax(s / T, 0), F.softmax(t / T, 0)),
         "softmax 的维度不对：要在词表 (vocab) 那一维上归一化，dim=-1。你的像是 dim=0（在行之间，也就是在不同位置之间）归一化了。"),
        (_kl(F.log_softmax(s / T, -1), F.softmax(t, -1)),
         "温度只用在了学生一侧：老师的 softmax 也要除以同一个 T，F.softmax(teacher_logits / T, dim=-1)。"
         "两边用同一个 T，比较的才是两个同样“软化”过的分布。"),
        (_kl(F.log_softmax(s, -1), F.softmax(t / T, -1)),
         "温度只用在了老师一侧：学生的 log_softmax 也要除以同一个 T，F.log_softmax(student_logits / T, dim=-1)。"
         "否则学生被要求在 T = 1 时就长成老师在 T 时那么“软”的样子。"),
        (_kl(F.log_softmax(s, -1), F.softmax(t, -1)),
         f"温度 (temperature) 没有用上：你算的是 T = 1 时的 KL。两边的 logits 都要除以 temperature（这里 T = {T:g}）。"),
        (_kl(F.log_softmax(s * T, -1), F.softmax(t * T, -1)),
         f"logits 乘以了温度：软化是除以 T，s / T 和 t / T（这里 T = {T:g}）。乘以 T 反而让分布更尖，暗知识全被压没了。"),
        (-(pt * ls).sum(-1).mean(),
         "你算的是交叉熵 H(p_老师, p_学生) = −Σ p_t · log p_s，不是 KL：两者差一个老师自己的熵 H(p_t)。对学生的梯度一样，"
         "但 loss 的值不再是 0 起步、也不能和 MiniMind 的日志对比。用 F.kl_div(log_softmax(s / T), softmax(t / T), "
         "reduction=\"batchmean\")，它算的是 Σ p_t · (log p_t − log p_s)。"),
        (F.mse_loss(ps, pt),
         "你算的是两个概率分布的均方误差 (MSE)，不是 KL 散度：蒸馏要的是 KL(p_老师 ‖ p_学生)，"
         "用 F.kl_div(log_softmax(s / T), softmax(t / T), reduction=\"batchmean\")。"),
        (_kl(ls, pt, "mean"), "reduction 用成了 \"mean\"：F.kl_div 的 \"mean\" 除以的是元素个数 N·V（行数 × 词表大小），"
                              "不是行数 N，结果小了 V 倍。要的是 reduction=\"batchmean\"：在词表上求和，再对 N 行取平均——这才是 KL 的平均值。"),
        (_kl(ls, pt, "sum"), "reduction 用成了 \"sum\"：结果是 N 行的 KL 之和，会随 batch 和序列长度变大。"
                             "要的是 reduction=\"batchmean\"（对行取平均）。"),
    ]
    out = [(_kl(ls, pt), f"少了 T² 因子：你返回的是 KL 本身，要乘 temperature ** 2（这里 T = {T:g}，差了 {T ** 2:g} 倍）。"
                         f"软化以后 KL 对 logits 的梯度大约小了 T² 倍，乘回 T² 它才不随温度消失，α 在不同的 T 下意思也大致相同。"),
           (T * _kl(ls, pt), f"乘的是 T 而不是 T²：要乘 temperature ** 2（这里 T = {T:g}，你的结果小了 {T:g} 倍）。"),
           (2 * T * _kl(ls, pt), f"乘的是 2·T（temperature * 2）而不是 T²（temperature ** 2）：这里 T = {T:g}，"
                                 f"2·T = {2 * T:g}，T² = {T ** 2:g}。只有 T = 2 时两者碰巧相等。")]
    factors = [(T ** 2, ""), (1.0, "而且少了 T² 因子。"), (T, "而且乘的是 T 而不是 T²。"),
               (2 * T, "而且乘的是 2·T（temperature * 2）而不是 T²（temperature ** 2）。")]
    for value, message in cores:
        for k, note in factors:
            out.append((k * value, message + (" " + note if note else "")))
    for T_fixed in (1.0, 1.5, 2.0):  # a temperature written into the code instead of the argument
        if T_fixed != T:
            out.append(((T_fixed ** 2) * _kl(F.log_softmax(s / T_fixed, -1), F.softmax(t / T_fixed, -1)),
                        f"temperature 参数没有用上：你的结果是 T = {T_fixed:g} 时的值，而这里传进去的是 T = {T:g}。"
                        f"不要把温度写死，用参数 temperature。"))
    return out


def _match(got: torch.Tensor, candidates: list[tuple[torch.Tensor, str]]) -> str | None:
    for value, message in candidates:
        if value.shape == got.shape and close(got, value, atol=ATOL, rtol=RTOL):
            return message
    return None


def _call_loss(impl, s, t, **kw) -> torch.Tensor:
    what = f"distillation_loss(student (N={s.shape[0]}, V={s.shape[1]}), ...)"
    return _scalar(impl.distillation_loss(s, t, **kw), what)


def _check_loss_value(impl, ref) -> None:
    for seed, T in ((0, TEMP), (1, TEMP2)):
        s, t = _rows(seed)
        want = ref.distillation_loss(s, t, temperature=T)
        s0, t0 = s.clone(), t.clone()
        got = _call_loss(impl, s, t, temperature=T)
        expect(torch.equal(s, s0) and torch.equal(t, t0), _IN_PLACE)
        if close(got, want, atol=ATOL, rtol=RTOL):
            continue
        if not torch.isfinite(got).item():
            fail(f"distillation_loss(temperature={T:g}) 得到了 {got.item()}。最常见的原因：kl_div 的第二个参数给了老师的"
                 f"对数概率。第二个参数要是老师的**概率** F.softmax(teacher / T, dim=-1)：F.kl_div 在 target 上取 log，"
                 f"对数概率是负数，log 一个负数就是 NaN。")
        message = _match(got, _loss_mistakes(s, t, T))
        fail(message or f"distillation_loss(temperature={T:g}) 应该是 T² · kl_div(log_softmax(s/T), softmax(t/T), "
                        f"reduction=\"batchmean\") = {want.item():.6g}，你的是 {got.item():.6g}。")

    s, t = _rows(2)
    got = _call_loss(impl, s, t)
    want = ref.distillation_loss(s, t)
    if not close(got, want, atol=ATOL, rtol=RTOL):
        if close(got, ref.distillation_loss(s, t, temperature=1.5), atol=ATOL, rtol=RTOL):
            fail("distillation_loss(s, t) 不给 temperature 时应该用 T = 1.0，你的用了 1.5。")
        fail(f"distillation_loss(s, t) 不给 temperature 时（T = 1）应该是 KL(p_t ‖ p_s) = {want.item():.6g}，"
             f"你的是 {got.item():.6g}。")

    s, t = _rows(4)
    got = impl.distillation_loss(s, t, temperature=TEMP, reduction="sum")
    want = ref.distillation_loss(s, t, temperature=TEMP, reduction="sum")
    if not (isinstance(got, torch.Tensor) and close(got, want, atol=ATOL, rtol=RTOL)):
        if isinstance(got, torch.Tensor) and close(got, ref.distillation_loss(s, t, temperature=TEMP),
                                                   atol=ATOL, rtol=RTOL):
            fail("reduction 参数没有用上：distillation_loss(..., reduction=\"sum\") 返回的还是 batchmean 的结果。"
                 "把 reduction 原样传给 F.kl_div(..., reduction=reduction)。")
        fail(f"distillation_loss(..., reduction=\"sum\") 应该是 T² · kl_div(..., reduction=\"sum\") = {want.item():.6g}，"
             f"你的是 {got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got}。")


# ---------------------------------------------------------------- 3. distillation_loss: gradients

_TEACHER_GRAD = ("梯度流进了老师 (teacher)：teacher_logits 收到了非零的梯度。老师是固定的目标，"
                 "它的 softmax 要在 `with torch.no_grad():` 里算（或者 .detach()）。否则训练时反向传播会穿进老师的计算图"
                 "（白白占内存和时间），老师的参数要是没冻结，还会被优化器一起改掉。")


def _teacher_grad_is_zero(t: torch.Tensor) -> bool:
    return t.grad is None or t.grad.abs().max().item() == 0


def _check_loss_grad(impl) -> None:
    s, t = _rows(5)
    s0, t0 = s.clone(), t.clone()
    _call_loss(impl, s, t, temperature=TEMP)
    expect(torch.equal(s, s0) and torch.equal(t, t0), _IN_PLACE)

    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = _call_loss(impl, s, t, temperature=TEMP)
    expect(loss.requires_grad, "distillation_loss 的结果不带梯度 (requires_grad=False)：学生一侧不能放在 no_grad 里，"
                               "也不要 .detach() 或 .item()。只有老师一侧不要梯度。")
    loss.backward()
    expect(_teacher_grad_is_zero(t), _TEACHER_GRAD)
    expect(s.grad is not None, "学生的 logits 没有收到梯度：学生一侧要留在计算图里。")
    with torch.no_grad():
        # d(T²·KL)/ds = T² · (1/T) · (softmax(s/T) − softmax(t/T)) / N
        want = TEMP * (F.softmax(s / TEMP, -1) - F.softmax(t / TEMP, -1)) / N_ROWS
    expect(close(s.grad, want, atol=1e-6, rtol=1e-4),
           f"学生 logits 的梯度应该是 T·(softmax(s/T) − softmax(t/T)) / N，最大差 {max_err(s.grad, want):.3g}。")


# ---------------------------------------------------------------- 4. distill_objective

def _call_objective(impl, student, teacher, labels, **kw):
    out = impl.distill_objective(student, teacher, labels, **kw)
    expect(isinstance(out, (tuple, list)) and len(out) == 3,
           f"distill_objective 应该返回三个值 (loss, ce, kd)，你返回的是 "
           f"{type(out).__name__}{'（' + str(len(out)) + ' 个）' if isinstance(out, (tuple, list)) else ''}。")
    names = ("loss", "ce", "kd")
    for name, x in zip(names, out):
        _scalar(x, f"distill_objective 的 {name}")
    return tuple(out)


def _rows_at(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits[mask].float()


def _objective_parts(student, teacher, labels, T, shift="right", positions="labelled", cut="first",
                     soft_then_cut=False):
    """(ce, kd) computed one (possibly wrong) way; the references for the diagnostics."""
    V = student.shape[-1]
    if shift == "right":
        s, t, y = student[:, :-1], teacher[:, :-1], labels[:, 1:]
    elif shift == "none":
        s, t, y = student, teacher, labels
    else:  # reversed
        s, t, y = student[:, 1:], teacher[:, 1:], labels[:, :-1]
    mask = y != -100 if positions == "labelled" else torch.ones_like(y, dtype=torch.bool)
    srows = _rows_at(s, mask)
    tfull = _rows_at(t, mask)
    ce = F.cross_entropy(srows, y[mask]) if positions == "labelled" else None
    if soft_then_cut:
        pt = F.softmax(tfull / T, -1)[:, :V]
        kd = T ** 2 * F.kl_div(F.log_softmax(srows / T, -1), pt, reduction="batchmean")
    else:
        trows = tfull[:, :V] if cut == "first" else tfull[:, -V:]
        kd = T ** 2 * F.kl_div(F.log_softmax(srows / T, -1), F.softmax(trows / T, -1), reduction="batchmean")
    return ce, kd, srows, mask


_LABEL_ZERO = ("{what} 漏掉了 label 是 0 的位置：你像是用 labels > 0（或 labels != pad_token_id）选被计数的位置。"
               "0 是一个正常的 token id（<|endoftext|>，碰巧也是 pad 的 id），回答里完全可能出现；"
               "不算 loss 的位置只由 -100 标出：counted = labels[:, 1:] != -100。")


def _positive_parts(student, teacher, labels, T):
    """(ce, kd) when the counted positions are chosen by labels > 0: the token id 0 left out."""
    fake = labels.clone()
    fake[fake == 0] = -100
    return _objective_parts(student, teacher, fake, T)[:2]


def _ce_mistakes(student, teacher, labels, T) -> list[tuple[torch.Tensor, str]]:
    ce, _, srows, mask = _objective_parts(student, teacher, labels, T)
    y = labels[:, 1:][mask]
    total = labels[:, 1:].numel()
    return [
        (_objective_parts(student, teacher, labels, T, shift="none")[0],
         "ce 忘了错位 (shift)：位置 t 的 logits 预测的是第 t+1 个 token，要用 student_logits[:, :-1] 对 labels[:, 1:]"
         "（labels 和模型的 labels 参数一样，是没有错位的）。你的像是 logits[:, t] 对 labels[:, t]，等于教模型抄写当前的 token。"),
        (_objective_parts(student, teacher, labels, T, shift="reversed")[0],
         "ce 错位的方向反了：要用 student_logits[:, :-1] 对 labels[:, 1:]（位置 t 预测 t+1），你的像是 logits[:, 1:] 对 labels[:, :-1]。"),
        (F.cross_entropy(srows, y, reduction="sum") / total,
         f"ce 的平均除错了数：你把被计数位置上的交叉熵之和除以了全部 {total} 个位置（含 prompt 和 padding），"
         f"应该除以被计数的位置数 N = {int(mask.sum())}。F.cross_entropy(rows, targets) 默认就是这 N 个的平均。"),
        (F.cross_entropy(srows, y, reduction="sum"),
         "ce 是求和 (sum) 不是平均：要的是被计数的 N 个位置上的平均交叉熵，和模型自己的 loss 一样。"),
        (_positive_parts(student, teacher, labels, T)[0], _LABEL_ZERO.format(what="ce")),
        (F.cross_entropy(srows / T, y),
         f"ce 里用了温度：交叉熵用学生**原本的** logits（T = 1），温度只用在 KD 那一项上（这里 T = {T:g}）。"),
    ]


def _kd_mistakes(student, teacher, labels, T) -> list[tuple[torch.Tensor, str]]:
    _, kd, _, mask = _objective_parts(student, teacher, labels, T)
    n = int(mask.sum())
    return [
        (_objective_parts(student, teacher, labels, T, shift="none")[1],
         "kd 忘了错位 (shift)：KD 的行要和 CE 的是同一批位置：student_logits[:, :-1] 和 teacher_logits[:, :-1] 里 "
         "labels[:, 1:] != -100 的那些行。你的像是在 labels[:, :] != -100 的位置上取了 logits[:, :] 的行。"),
        (_objective_parts(student, teacher, labels, T, shift="reversed")[1],
         "kd 错位的方向反了：要取 logits[:, :-1] 里 labels[:, 1:] != -100 的行。"),
        (_objective_parts(student, teacher, labels, T, positions="all")[1],
         "kd 把 prompt 和 padding 的位置也算进去了：KD 只在 labels[:, 1:] != -100 的位置上算（和 CE 同一批 N 行）。"
         "padding 上的 logits 毫无意义，prompt 不是要学的内容；算进去既稀释了平均，也让学生去模仿老师对它们的胡乱预测。"),
        (_objective_parts(student, teacher, labels, T, shift="none", positions="all")[1],
         "kd 把 prompt 和 padding 的位置也算进去了（而且没有错位）：KD 只在 labels[:, 1:] != -100 的位置上算，"
         "行取自 student_logits[:, :-1] 和 teacher_logits[:, :-1]。"),
        (_objective_parts(student, teacher, labels, T, cut="last")[1],
         f"老师的词表截错了：要取**前** V_s 列 teacher_logits[..., :V_s]（两个模型共享的词表就是前 {VOCAB} 个 id），"
         f"你的像是取了最后 V_s 列。"),
        (_objective_parts(student, teacher, labels, T, soft_then_cut=True)[1],
         "老师的词表截晚了：你先在老师的整个词表上 softmax，再截取前 V_s 列，这样的“概率”加起来不到 1。"
         "先截 logits（teacher_logits[..., :V_s]），再 softmax。"),
        (_objective_parts(student, teacher, labels, 1.0)[1],
         f"temperature 没有传给 distillation_loss：你的 kd 是 T = 1 时的值。distillation_loss 自己的默认温度是 1.0，"
         f"要写 distillation_loss(..., temperature=temperature)（这里 T = {T:g}）。"),
        (_positive_parts(student, teacher, labels, T)[1], _LABEL_ZERO.format(what="kd")),
        (kd * n / student.shape[0],
         f"kd 除以了 batch 大小 B = {student.shape[0]}，而不是被计数的位置数 N = {n}：reduction=\"batchmean\" 除以的是"
         f"第一维的长度，要先把 N 个位置取成 (N, V) 的行再算；直接在 (B, 序列, V) 上算，它除以的就是 B。"),
    ]


_NAMES = ("loss", "ce", "kd")


def _check_order(got: tuple, want: tuple) -> None:
    """The three values right, but returned in another order: name the order."""
    if all(close(g, w, atol=ATOL, rtol=RTOL) for g, w in zip(got, want)):
        return
    for perm in itertools.permutations(range(3)):
        if perm != (0, 1, 2) and all(close(got[i], want[perm[i]], atol=ATOL, rtol=RTOL) for i in range(3)):
            fail(f"distill_objective 的三个值都算对了，但返回的顺序不对：应为 (loss, ce, kd)，你的是 "
                 f"({', '.join(_NAMES[k] for k in perm)})。训练脚本按位置取 loss, ce, kd = distill_objective(...)，"
                 f"顺序一错，它就拿 {_NAMES[perm[0]]} 去 backward()，日志里的 ce 和 kd 也对不上。")


def _probe(impl, which: str) -> str | None:
    """Locate a wrong ce or kd: one label at a time, which student (and teacher) row does the
    learner's value come from?  Returns a diagnostic, or None when every probe is right."""
    student, teacher, _ = _batch()
    for j in (3, 6):
        labels = torch.full((BATCH, SEQ), -100, dtype=torch.long)
        labels[1, j] = 2  # one counted position: logits[1, j - 1] predicts it
        out = dict(zip(_NAMES, _call_objective(impl, student, teacher, labels, alpha=ALPHA, temperature=TEMP)))
        got = out[which]
        target = torch.tensor([2])

        def value(ts: int, tt: int) -> torch.Tensor:
            if which == "ce":
                return F.cross_entropy(student[1, ts:ts + 1].float(), target)
            return TEMP ** 2 * F.kl_div(F.log_softmax(student[1, ts:ts + 1] / TEMP, -1),
                                        F.softmax(teacher[1, tt:tt + 1, :VOCAB] / TEMP, -1), reduction="batchmean")

        rows = [(ts, tt) for ts in range(max(0, j - 2), min(SEQ, j + 2))
                for tt in (range(max(0, j - 2), min(SEQ, j + 2)) if which == "kd" else (ts,))]
        found = next(((ts, tt) for ts, tt in rows if close(got, value(ts, tt), atol=ATOL, rtol=RTOL)), None)
        if found == (j - 1, j - 1):
            continue
        head = (f"只在 labels[1, {j}] 上有一个 label（其余都是 -100）时，你的 {which} 是 {got.item():.5g}，"
                f"应为 {value(j - 1, j - 1).item():.5g}（来自 logits[1, {j - 1}]：位置 t 的 logits 预测 labels[:, t + 1]）。")
        if found is None:
            if not torch.isfinite(got).item():
                return head + ("得到的不是一个有限的数：选行的 mask 和目标没有对齐。例如用 labels[:, :-1] != -100 选了行，"
                               "目标却取 labels[:, 1:]：选中的那一行的目标是 -100，交叉熵在 0 个位置上取平均。"
                               "mask、行和目标要来自同一个错位：counted = labels[:, 1:] != -100，"
                               "行 = student_logits[:, :-1][counted]，目标 = labels[:, 1:][counted]。")
            if got.item() == 0:
                return head + "你的是 0：像是这个位置没有被计数。被计数的位置是 labels[:, 1:] != -100，对应 logits[:, :-1] 的行。"
            return head + ("它不是任何一个相邻位置单独算出来的值：像是把没有 label 的位置（-100）也算进去了，"
                           "或者混用了不同位置的行。被计数的行：logits[:, :-1][labels[:, 1:] != -100]。")
        ts, tt = found
        if which == "ce":
            return head + (f"你用的是 logits[1, {ts}] 这一行：错位{'多了' if ts < j - 1 else '少了'} {abs(j - 1 - ts)} 格。"
                           f"用 student_logits[:, :-1] 对 labels[:, 1:]。")
        parts = []
        if ts != j - 1:
            parts.append(f"学生用的是 logits[1, {ts}]")
        if tt != j - 1:
            parts.append(f"老师用的是 logits[1, {tt}]")
        return head + ("，".join(parts) + f"（应该都是 logits[1, {j - 1}]）：学生和老师要取同一批行，"
                       f"都是 [:, :-1] 里 labels[:, 1:] != -100 的位置，和 ce 的行一样。")
    return None


def _check_objective_value(impl, ref) -> None:
    student, teacher, labels = _batch()
    args = (student, teacher, labels)
    kw = dict(alpha=ALPHA, temperature=TEMP)
    try:
        loss, ce, kd = _call_objective(impl, *args, **kw)
    except RuntimeError as e:
        try:
            _call_objective(impl, student, teacher[..., :VOCAB].contiguous(), labels, **kw)
        except Exception:
            raise e from None
        fail(f"老师的词表比学生大（这里 {V_TEACHER} 对 {VOCAB}，MiniMind 里老师也可能更大），你的 distill_objective 就出错了："
             f"{type(e).__name__}: {str(e)[:120]}。老师的 logits 没有截到学生的词表：先取 teacher_logits[..., :student_logits.size(-1)]，"
             f"两个模型共享的是前 V_s 个 id。")
    want_loss, want_ce, want_kd = ref.distill_objective(*args, **kw)
    _check_order((loss, ce, kd), (want_loss, want_ce, want_kd))

    if not close(ce, want_ce, atol=ATOL, rtol=RTOL):
        message = _match(ce, _ce_mistakes(student, teacher, labels, TEMP))
        fail(message or _probe(impl, "ce") or f"ce 应该是被计数位置（labels[:, 1:] != -100）上学生的平均交叉熵 = "
                                              f"{want_ce.item():.6g}，你的是 {ce.item():.6g}。")
    if not close(kd, want_kd, atol=ATOL, rtol=RTOL):
        if close(kd, want_kd / TEMP ** 2, atol=ATOL, rtol=RTOL):
            fail(f"kd 少了 T² 因子（T = {TEMP:g}）：kd 是 T² · KL，用 distillation_loss(..., temperature=T) 算，它已经乘了 T²。")
        if close(kd, want_kd / TEMP, atol=ATOL, rtol=RTOL):
            fail(f"kd 乘的是 T 而不是 T²（T = {TEMP:g}，你的 kd 小了 {TEMP:g} 倍）：kd 是 T² · KL，"
                 f"用 distillation_loss(..., temperature=T) 算。")
        if close(kd, want_kd * 2 / TEMP, atol=ATOL, rtol=RTOL):
            fail(f"kd 乘的是 2·T 而不是 T²（T = {TEMP:g}：2·T = {2 * TEMP:g}，T² = {TEMP ** 2:g}）：temperature ** 2，不是 temperature * 2。")
        message = _match(kd, _kd_mistakes(student, teacher, labels, TEMP))
        fail(message or _probe(impl, "kd") or f"kd 应该是 distillation_loss(被计数位置的学生行, 老师行, temperature=T) = "
                                              f"{want_kd.item():.6g}，你的是 {kd.item():.6g}。")
    if not close(loss, want_loss, atol=ATOL, rtol=RTOL):
        message = _match(loss, [
            ((1 - ALPHA) * ce + ALPHA * kd,
             f"α 用反了：loss = α·CE + (1 − α)·KD，α 乘的是和真实 labels 的交叉熵，1 − α 乘的是老师的 KD 项。"
             f"这里 α = {ALPHA}：你的 loss 是 {1 - ALPHA:g}·CE + {ALPHA:g}·KD。"),
            (0.5 * ce + 0.5 * kd, f"alpha 参数没有用上：你的 loss 是 0.5·CE + 0.5·KD，可这里传进去的是 alpha = {ALPHA}。"),
            (ce + kd, "loss 没有按 α 加权：你的 loss 是 CE + KD，应该是 α·CE + (1 − α)·KD。"),
            (ALPHA * ce + kd, "KD 项少了 (1 − α)：loss = α·CE + (1 − α)·KD。"),
        ])
        fail(message or f"loss 应该是 α·ce + (1 − α)·kd = {want_loss.item():.6g}（α = {ALPHA}），你的是 {loss.item():.6g}。")

    got = _call_objective(impl, *args)
    want = ref.distill_objective(*args)
    if not all(close(g, w, atol=ATOL, rtol=RTOL) for g, w in zip(got, want)):
        fail(f"distill_objective(student, teacher, labels) 用默认值（alpha=0.5, temperature=1.5）时应该得到 "
             f"(loss, ce, kd) = ({', '.join(f'{w.item():.5g}' for w in want)})，你的是 "
             f"({', '.join(f'{g.item():.5g}' for g in got)})：默认值没有用上？")


def _check_objective_grad(impl, ref) -> None:
    student, teacher, labels = _batch(seed=5)
    copies = [x.clone() for x in (student, teacher, labels)]
    _call_objective(impl, student, teacher, labels, alpha=ALPHA, temperature=TEMP)
    expect(all(torch.equal(a, b) for a, b in zip((student, teacher, labels), copies)),
           "distill_objective 改动了输入（logits 或 labels，原地操作 in-place）：用切片和新张量，不要写回输入。")
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss, _, _ = _call_objective(impl, student, teacher, labels, alpha=ALPHA, temperature=TEMP)
    expect(loss.requires_grad, "distill_objective 的 loss 不带梯度：学生一侧不能 .detach() 或放进 no_grad。")
    loss.backward()
    expect(_teacher_grad_is_zero(teacher), _TEACHER_GRAD)
    s_ref = student.detach().clone().requires_grad_(True)
    ref.distill_objective(s_ref, teacher.detach(), labels, alpha=ALPHA, temperature=TEMP)[0].backward()
    expect(student.grad is not None and close(student.grad, s_ref.grad, atol=1e-6, rtol=1e-4),
           "学生 logits 的梯度和参考实现不一样"
           + (f"（最大差 {max_err(student.grad, s_ref.grad):.3g}）" if student.grad is not None else "（没有梯度）")
           + "：数值对了而梯度不对，多半是某一项被 .detach() 了。")


# ---------------------------------------------------------------- 5. edge cases

def _check_empty_and_dtype(impl, ref) -> None:
    student, teacher, labels = _batch(seed=6)
    labels = torch.full_like(labels, -100)
    labels[:, 0] = 5  # a label only at position 0: after the shift nothing is counted
    student.requires_grad_(True)
    out = _call_objective(impl, student, teacher, labels, alpha=ALPHA, temperature=TEMP)
    if not all(torch.isfinite(x).item() for x in out):
        fail("一个 batch 里没有一个被计数的位置（labels[:, 1:] 全是 -100，例如 prompt 太长、回答全被截掉了）时，"
             f"你的 (loss, ce, kd) 是 ({', '.join(f'{x.item():.3g}' for x in out)})：对 0 个位置取平均得到 NaN，"
             "一个 NaN 就会毁掉整个训练。这种 batch 要返回三个 0：zero = student_logits.sum() * 0.0。")
    expect(all(x.item() == 0 for x in out),
           f"没有被计数的位置时 (loss, ce, kd) 应该都是 0，你的是 ({', '.join(f'{x.item():.3g}' for x in out)})。")
    try:
        out[0].backward()
    except RuntimeError as e:
        fail(f"没有被计数的位置时，返回的 0 要连着 student_logits（zero = student_logits.sum() * 0.0），"
             f"训练脚本照常调用 loss.backward()；你的报错：{str(e)[:100]}。")
    if student.grad is None:
        fail("没有被计数的位置时，你返回的 0 能 backward()，却没有连着 student_logits（backward 之后 student_logits.grad "
             "还是 None）：像是新建了一个 torch.tensor(0.0, requires_grad=True)。多卡训练 (DDP) 时，这一步模型的参数收不到梯度，"
             "各个进程会一直等它的梯度同步。用 zero = student_logits.sum() * 0.0：值是 0，梯度也是 0，但计算图是连着的。")

    student, teacher, labels = _batch(seed=7)
    got = _call_objective(impl, student.bfloat16(), teacher.bfloat16(), labels, alpha=ALPHA, temperature=TEMP)
    dtypes = sorted({str(x.dtype) for x in got})
    expect(all(x.dtype == torch.float32 for x in got),
           f"bf16 的 logits（autocast 下模型的输出就是 bf16）进来，(loss, ce, kd) 应该是 float32，你的是 {', '.join(dtypes)}："
           f"取出 (N, V) 的行之后 .float() 一下再算 softmax 和交叉熵。bf16 只有 8 位二进制有效数字（约 2–3 位十进制），log_softmax 和 KL 里相减的差会丢掉大半。")
    want = ref.distill_objective(student.bfloat16(), teacher.bfloat16(), labels, alpha=ALPHA, temperature=TEMP)
    expect(all(close(g, w, atol=1e-4, rtol=1e-3) for g, w in zip(got, want)),
           f"bf16 的 logits 进来时 (loss, ce, kd) 应该是 ({', '.join(f'{w.item():.5g}' for w in want)})，你的是 "
           f"({', '.join(f'{g.item():.5g}' for g in got)})：先取行、转 float32，再算。")


def check(impl, ref) -> str:
    _check_signatures(impl)
    _check_loss_value(impl, ref)
    _check_loss_grad(impl)
    _check_objective_value(impl, ref)
    _check_objective_grad(impl, ref)
    _check_empty_and_dtype(impl, ref)
    return ("distillation_loss = T² · kl_div(log_softmax(s/T), softmax(t/T), \"batchmean\")，老师一侧没有梯度；"
            "distill_objective 错位、只算有 label 的位置、老师截到学生的词表、α·CE + (1 − α)·KD、"
            "空 batch 得 0、bf16 进来 float32 出去：全部正确。")
