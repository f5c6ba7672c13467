"""Check for stage 11: get_lr, the autocast ctx, the GradScaler, and train_epoch's contract.

train_epoch is run on a tiny stand-in model whose loss has a known gradient (workbook.toys), with
an optimiser that records what it sees at every step; the learner's loop and the reference loop
must agree -- in one epoch, after a resume, and over two epochs of one cosine schedule with two
param groups, a last log interval shorter than log_interval and an epoch whose last accumulation
group is short (flush).  The logs are judged against the losses the model really returned at
each micro-step, so a wrong mean (last value, divided, wrong count) is named.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from ..toys import BATCH, SEQ, TinyLM, toy_batches
from .tools import close, expect, fail, max_err, seeded


class PoisonableLM(TinyLM):
    """TinyLM whose loss is inf while `poison` is set, as after an fp16 overflow."""

    poison = False

    def forward(self, input_ids, labels=None):
        out = super().forward(input_ids, labels)
        if self.poison:
            out.loss = out.loss * float("inf")
        return out


class RecordingSGD(torch.optim.SGD):
    """SGD that remembers, at each real step, the lr, a copy of every gradient (in the model's
    parameter order) and how many micro-steps had run by then (`clock`)."""

    def __init__(self, params, lr=0.1, order=(), clock=lambda: 0):
        super().__init__(params, lr=lr)
        self.order, self.clock = list(order), clock
        self.steps: list[dict] = []

    def step(self, closure=None):
        grads = [p.grad.detach().clone() if p.grad is not None else None for p in self.order]
        self.steps.append({"lr": self.param_groups[0]["lr"], "grads": grads, "micro": self.clock()})
        return super().step(closure)


def _run(mod, *, steps=6, acc=3, clip=100.0, scaler=None, lr=0.1, total=None, log_interval=2,
         start_step=0, poison_at=None, aux_weight=0.5, stop_at=None, iters=None, epochs=1, groups=1):
    """`steps` batches per epoch (after `start_step` skipped ones); iters = start_step + steps."""
    iters = iters or start_step + steps
    with seeded(7):
        model = PoisonableLM(aux_weight)
    lrs, logs = [], []  # lrs: every group's lr at each forward pass
    seen = []  # seen[epoch]: (lm_loss, aux_loss) the model returned at each micro-step, in order
    model.register_forward_hook(lambda module, args, out: seen[-1].append((out.loss.item(), out.aux_loss.item())))
    if groups == 1:
        params = model.parameters()
    else:  # as when parameters without weight decay get a group of their own
        params = [{"params": [model.embed.weight, model.head.weight, model.head.bias]},
                  {"params": [model.router]}]
    opt = RecordingSGD(params, lr=lr, order=model.parameters(), clock=lambda: len(lrs))
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    data = toy_batches(steps * epochs)

    def loader(epoch):
        seen.append([])
        for i in range(epoch * steps, (epoch + 1) * steps):
            model.poison = poison_at is not None and i == poison_at
            yield data[i]

    class LRSpy:
        def __enter__(self):
            lrs.append(tuple(g["lr"] for g in opt.param_groups))

        def __exit__(self, *exc):
            return False

    def on_step_end(step):
        return stop_at is not None and step >= stop_at

    for epoch in range(epochs):
        last = mod.train_epoch(epoch, loader(epoch), iters, model, opt, scaler, LRSpy(), lr=lr,
                               total_steps=total or epochs * iters, accumulation_steps=acc, grad_clip=clip,
                               device="cpu", log_interval=log_interval, start_step=start_step if epoch == 0 else 0,
                               on_log=logs.append, on_step_end=on_step_end)
    return SimpleNamespace(model=model, opt=opt, lrs=lrs, logs=logs, last=last, scaler=scaler, seen=seen,
                           iters=iters, acc=acc, log_interval=log_interval, start_step=start_step, lr=lr)


def _last_batch_grads(acc: int = 3):
    """Gradients of the third micro-batch alone, at the initial weights, divided by acc."""
    with seeded(7):
        model = TinyLM()
    x, y = toy_batches(acc)[acc - 1]
    out = model(x, labels=y)
    ((out.loss + out.aux_loss) / acc).backward()
    return [p.grad for p in model.parameters()]


def _same(a, b, rel_tol=1e-9) -> bool:
    """Two lists of floats (or of tuples of floats) equal up to rounding."""
    def flat(xs):
        return [y for x in xs for y in (x if isinstance(x, tuple) else (x,))]
    fa, fb = flat(a), flat(b)
    return len(a) == len(b) and len(fa) == len(fb) and all(
        math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-12) for x, y in zip(fa, fb))


def _rounded(xs):
    return [round(x, 5) for x in xs]


def _grad_norm(grads):
    return torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)).item()


def _check_get_lr(impl, ref):
    for t, total, lr in ((0, 100, 1.0), (1, 100, 5e-4), (50, 100, 5e-4), (100, 100, 5e-4), (37, 90, 2e-3)):
        got, want = impl.get_lr(t, total, lr), ref.get_lr(t, total, lr)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            if math.isclose(got, lr * 0.5 * (1 + math.cos(math.pi * t / total)), rel_tol=1e-9, abs_tol=1e-12):
                fail(f"get_lr({t}, {total}, {lr}) = {got:.4g}：学习率最后降到了 0。MiniMind 的余弦调度有下限 (floor)："
                     f"lr·(0.1 + 0.45·(1 + cos(πt/T)))，从 lr 降到 lr/10，应为 {want:.4g}。")
            fail(f"get_lr({t}, {total}, {lr}) 应为 {want:.6g}，你的是 {got:.6g}。"
                 f"公式：lr·(0.1 + 0.45·(1 + cos(π·t/T)))。")


def _check_precision(impl):
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with impl.autocast_context("cpu", "float32"):
        expect((a @ b).dtype == torch.float32, "float32 时 ctx 应该什么都不做（nullcontext），矩阵乘结果应是 float32。")
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        with impl.autocast_context("cpu", name):
            got = (a @ b).dtype
        expect(got == dtype, f"autocast_context('cpu', '{name}') 里矩阵乘的结果应是 {dtype}，你的是 {got}："
                             f"要用 torch.autocast(device_type, dtype=...)，CPU 上也可以。")
    try:
        impl.autocast_context("cpu", "float8")
    except ValueError as e:
        expect("float8" in str(e), f"未知 dtype 的 ValueError 要写出这个值（你的信息：{e}）。")
    else:
        fail("autocast_context('cpu', 'float8') 应该抛 ValueError：只认 float32 / bfloat16 / float16。")
    for name, enabled in (("float16", True), ("bfloat16", False), ("float32", False)):
        got = impl.make_scaler(name, "cpu").is_enabled()
        if got != enabled:
            fail(f"make_scaler('{name}') 的 GradScaler 应该{'启用' if enabled else '关闭'}（enabled={enabled}），你的是 {got}。"
                 f"只有 fp16 需要缩放：它的指数只有 5 位，小梯度会下溢成 0；bf16 的范围和 fp32 一样，不需要。")


def _check_accumulation(impl, ref):
    r, m = _run(ref), _run(impl)
    n_ref, n_got = len(r.opt.steps), len(m.opt.steps)
    if n_got != n_ref:
        if n_got == 6:
            fail(f"6 个 micro-step、accumulation_steps=3 时优化器应该只更新 {n_ref} 次，你的更新了 6 次："
                 f"要在 step % accumulation_steps == 0（或 epoch 的最后一步 step == iters）时才 step。")
        fail(f"6 个 micro-step、accumulation_steps=3 时优化器应该更新 {n_ref} 次，你的是 {n_got} 次。")
    m_lrs, r_lrs = [x[0] for x in m.lrs], [x[0] for x in r.lrs]
    if not _same(m_lrs, r_lrs):
        if _same(m_lrs, [ref.get_lr(t, 6, 0.1) for t in range(0, 6)]):
            fail("第一个 micro-step 的学习率是 get_lr(0, …)：step 要从 1 开始数 (enumerate(loader, start=start_step + 1))，"
                 "current_step = epoch * iters + step。")
        fail(f"前向计算时的学习率不对：应为 {_rounded(r_lrs)}，你的是 {_rounded(m_lrs)}。"
             f"每个 micro-step 在前向之前设置 lr = get_lr(epoch * iters + step, total_steps, lr)。")
    router = [i for i, p in enumerate(m.model.parameters()) if p is m.model.router][0]
    for k, (rs, ms) in enumerate(zip(r.opt.steps, m.opt.steps)):
        rg, mg = rs["grads"], ms["grads"]
        if (mg[router] is None or mg[router].abs().sum() == 0) and rg[router].abs().sum() > 0:
            fail("只被 aux_loss 影响的参数没有梯度：loss 要用 (out.loss + out.aux_loss) / accumulation_steps——"
                 "MoE 的负载均衡损失 (aux loss) 也要参与反向传播。")
        if any(g is None for g in mg):
            fail("优化器更新时有参数没有梯度：zero_grad 放在了 backward 和 step 之间吗？")
        if all(close(a, b, 1e-5, 1e-4) for a, b in zip(mg, rg)):
            continue
        ratio = _grad_norm(mg) / max(_grad_norm(rg), 1e-12)
        if abs(ratio - 3) < 0.05:
            fail("优化器看到的梯度是应有的 3 倍（accumulation_steps=3）：loss 要除以 accumulation_steps 再 backward，"
                 "这样 3 个 micro-batch 的梯度加起来才等于一个大 batch 的平均梯度。")
        if k == 0 and all(close(a, b, 1e-5, 1e-4) for a, b in zip(mg, _last_batch_grads())):
            fail("优化器只看到了最后一个 micro-batch 的梯度：zero_grad 放在了每个 micro-step 里。"
                 "梯度累积要求中间的 micro-step 把梯度一直加在 .grad 上，只在 optimizer.step() 之后清零。")
        fail(f"第 {k + 1} 次优化器更新时的梯度和参考实现不一致（范数 {_grad_norm(mg):.4g} vs {_grad_norm(rg):.4g}）。")
    # The contract itself: 3 accumulated micro-batches = one batch three times as big.
    with seeded(7):
        big = TinyLM()
    xs, ys = zip(*toy_batches(3))
    out = big(torch.cat(xs), labels=torch.cat(ys))
    (out.loss + out.aux_loss).backward()
    for (pn, p), g in zip(big.named_parameters(), m.opt.steps[0]["grads"]):
        expect(close(g, p.grad, 1e-5, 1e-4),
               f"累积 3 个 micro-batch 后 {pn} 的梯度不等于一个 3 倍大的 batch 的梯度（最大误差 {max_err(g, p.grad):.3g}）。")
    for (pn, a), b in zip(m.model.named_parameters(), r.model.parameters()):
        expect(close(a, b, 1e-5, 1e-4), f"训练后参数 {pn} 和参考实现不一致（最大误差 {max_err(a, b):.3g}）。")


def _check_clipping(impl, ref):
    # A scaler with a large scale and a small clip threshold: clipping the *scaled* gradients
    # leaves them far below the threshold once unscaled.
    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000, enabled=True)

    r = _run(ref, steps=3, acc=3, clip=0.05, scaler=scaler())
    m = _run(impl, steps=3, acc=3, clip=0.05, scaler=scaler())
    expect(len(m.opt.steps) == 1, f"3 个 micro-step、accumulation_steps=3 时应该更新 1 次，你的是 {len(m.opt.steps)} 次。")
    got, want = _grad_norm(m.opt.steps[0]["grads"]), _grad_norm(r.opt.steps[0]["grads"])
    if abs(got - want) > 1e-3 * max(want, 1e-6):
        if got < want / 100:
            fail(f"优化器看到的梯度范数是 {got:.3g}，应为 {want:.3g}（= grad_clip）：你在 scaler.unscale_ 之前就裁剪了。"
                 f"此时梯度还乘着缩放因子 (scale=1024)，阈值作用在放大的梯度上；先 unscale_，再 clip_grad_norm_。")
        if got > want * 10:
            fail(f"优化器看到的梯度范数是 {got:.3g}，应为 {want:.3g}：梯度没有被 scaler.unscale_ 还原或没有被裁剪 (clip_grad_norm_)。")
        fail(f"裁剪后的梯度范数应为 {want:.4g}（grad_clip），你的是 {got:.4g}。")


def _check_inf_skip(impl, ref):
    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)

    m = _run(impl, steps=3, acc=3, scaler=scaler(), poison_at=1)
    with seeded(7):
        fresh = TinyLM()
    changed = any(not torch.equal(a, b) for a, b in zip(m.model.parameters(), fresh.parameters()))
    if changed or any(not torch.isfinite(p).all() for p in m.model.parameters()):
        fail("梯度里有 inf 时，这一步应该被跳过，参数保持不变：要用 scaler.step(optimizer) 而不是 optimizer.step()，"
             "GradScaler 发现 inf/nan 就不更新，并把 scale 减半。")
    expect(m.scaler.get_scale() < 1024.0, "出现 inf 梯度后 scaler.update() 应该把 scale 调小：每次更新后都要调用 scaler.update()。")


def _intervals(run, positions):
    """For each log position (epoch, step): the (lm_loss, aux_loss) of the micro-steps since the
    previous log, as the model returned them, and the step the interval starts after."""
    out, prev = [], {}
    for e, s in positions:
        first = run.start_step if e == 0 else 0  # the micro-step before this epoch's first one
        after = prev.get(e, first)
        out.append((run.seen[e][after - first:s - first], after))
        prev[e] = s
    return out


def _diagnose_loss(m, r, where: str) -> None:
    """The learner's logged losses differ from the reference's: name the known mistake whose
    values, recomputed from the losses the model really returned, match every log."""
    positions = [(x.epoch, x.step) for x in r.logs]
    parts = _intervals(m, positions)
    acc, li = m.acc, m.log_interval

    def total(xs):
        return [lm + aux for lm, aux in xs]

    candidates = {
        "last": [total(xs)[-1] for xs, _ in parts],
        "mean_div": [sum(total(xs)) / len(xs) / acc for xs, _ in parts],
        "last_div": [total(xs)[-1] / acc for xs, _ in parts],
        "over_li": [sum(total(xs)) / li for xs, _ in parts],
        # the same, with step 1 (one micro-step) handled
        "over_li_but_first": [sum(total(xs)) / (1 if s == 1 else li) for (xs, _), (e, s) in zip(parts, positions)],
        # the count taken as step - previous log step, from 0 even after a resume
        "from_zero": [sum(total(xs)) / (s - (after if after > m.start_step or e else 0))
                      for (xs, after), (e, s) in zip(parts, positions)],
        "sum": [sum(total(xs)) for xs, _ in parts],
    }
    got = [x.loss for x in m.logs]
    match = next((k for k, v in candidates.items() if _same(got, v, rel_tol=1e-4)), None)
    # the first log where the learner differs, for the numbers in the message
    k = next(i for i, (a, b) in enumerate(zip(m.logs, r.logs)) if not math.isclose(a.loss, b.loss, rel_tol=1e-4))
    a, b, (xs, after) = m.logs[k], r.logs[k], parts[k]
    at = f"{where}：epoch {b.epoch} 第 {b.step} 步的日志"
    n = len(xs)
    span = f"第 {after + 1} 步" if n == 1 else f"第 {after + 1}–{b.step} 步"
    want = f"loss 应为 {b.loss:.4f}（上次日志以来{span}这 {n} 个 micro-step 的平均），你的是 {a.loss:.4f}"
    if match == "mean_div":
        fail(f"{at}：{want}——是除以 accumulation_steps={acc} 之后的值：记录时要乘回去（或直接累加 out.loss + out.aux_loss），"
             f"否则 loss 曲线会随 accumulation_steps 变化。")
    if match == "last_div":
        fail(f"{at}：{want}——是最后一个 micro-step 除以 accumulation_steps={acc} 之后的值 (loss.item())。"
             f"要记这一段每个 micro-step 的 out.loss + out.aux_loss 的平均，不除以 accumulation_steps"
             f"（乘回去）。")
    if match == "last":
        fail(f"{at}：{want}——只是最后一个 micro-step 的值。每个 micro-batch 的 loss 起伏很大，只取一个点，"
             f"曲线就全是噪声：要把每个 micro-step 的 out.loss + out.aux_loss 在 device 上累加起来（不要每步 .item()），"
             f"记日志时除以这一段的步数，再清零。")
    if match in ("over_li", "over_li_but_first"):
        fail(f"{at}：{want}——总和除以了 log_interval={li}，可这一段只有 {n} 个 micro-step。"
             f"第 1 步那一段（1 步）和紧接着的一段（log_interval - 1 步）、续训后的第一段、epoch 末尾不满一段的最后一段"
             f"都比 log_interval 短："
             f"要自己数这一段跑了几个 micro-step，除以这个数，记完清零。")
    if match == "from_zero":
        fail(f"{at}：{want}——除以了 {b.step}。续训 (start_step={m.start_step}) 后的第一段只有 {n} 个 micro-step："
             f"步数要从续训开始的地方数起，不是从 0；最简单的是每个 micro-step 加 1，记完日志清零。")
    if match == "sum":
        fail(f"{at}：{want}——是这一段的总和，没有除以这一段的 micro-step 数。")
    fail(f"{at}：{want}。loss 记 out.loss + out.aux_loss（不除以 accumulation_steps）在这一段里的平均。")


def _compare_logs(m, r, *, where: str) -> None:
    """The learner's StepLogs against the reference's: when, the interval means, tokens, lr."""
    got, want = [(x.epoch, x.step) for x in m.logs], [(x.epoch, x.step) for x in r.logs]
    li = r.log_interval
    if got != want:
        no_first = [(e, s) for e, s in want if s != 1 or s % li == 0]
        no_last = [(e, s) for e, s in want if s % li == 0 or s == 1]
        old = [(e, s) for e, s in want if s % li == 0]
        first = (f"每个 epoch 的第 1 个 micro-step 没有记日志：条件要加上 step == 1。从头训练时 loss 曲线的第一个点"
                 f"就是还没更新过的模型的 loss（≈ ln vocab_size，MiniMind 是 ln 6400 ≈ 8.76），一眼看得出训练从哪里开始")
        last = (f"最后一段不满 log_interval 步，没有记日志：条件还要加上 step == iters，"
                f"否则每个 epoch 末尾那几步的 loss 和 tokens 永远不会出现在日志里")
        calls = f"on_log 应在 (epoch, step) = {want} 调用，你的是 {got}"
        if got == no_first and no_first != want:
            fail(f"{where}：{first}。{calls}。")
        if got == no_last and no_last != want:
            fail(f"{where}：{last}。{calls}。")
        if got == old and old not in (no_first, no_last):
            fail(f"{where}：{first}；{last}。{calls}。条件是 step % log_interval == 0 or step == 1 or step == iters。")
        fail(f"{where}：{calls}。")
    if not all(math.isclose(a.loss, b.loss, rel_tol=1e-4) for a, b in zip(m.logs, r.logs)):
        _diagnose_loss(m, r, where)
    parts = _intervals(m, want)
    for a, b, (xs, _) in zip(m.logs, r.logs, parts):
        at = f"{where}：epoch {b.epoch} 第 {b.step} 步的日志"
        if not (math.isclose(a.lm_loss, b.lm_loss, rel_tol=1e-4) and math.isclose(a.aux_loss, b.aux_loss, rel_tol=1e-4)):
            if math.isclose(a.lm_loss, xs[-1][0], rel_tol=1e-4) and math.isclose(a.aux_loss, xs[-1][1], rel_tol=1e-4):
                fail(f"{at}：loss 是这一段的平均，StepLog 的 lm_loss 和 aux_loss 却是最后一个 micro-step 的值"
                     f"（{a.lm_loss:.4f}、{a.aux_loss:.4f}，应为 {b.lm_loss:.4f}、{b.aux_loss:.4f}）：它们也要累加、取平均，"
                     f"loss = lm_loss + aux_loss。")
            fail(f"{at}：lm_loss、aux_loss 应为这一段的平均 {b.lm_loss:.4f}、{b.aux_loss:.4f}，你的是 "
                 f"{a.lm_loss:.4f}、{a.aux_loss:.4f}。")
        if a.tokens != b.tokens:
            if a.tokens == li * BATCH * (SEQ - 1) and b.tokens < a.tokens:
                fail(f"{at}：tokens 应为 {b.tokens}，你的是 {a.tokens}——按整整 log_interval={li} 步算的。"
                     f"第 1 步那一段、续训后的第一段和 epoch 末尾的最后一段都不满 log_interval 步："
                     f"tokens 要数实际跑过的 micro-step 里不是 -100 的位置，每次记日志后清零。")
            fail(f"{at}：tokens 应为 {b.tokens}（上次日志以来不是 -100 的位置数），你的是 {a.tokens}。")
        if not math.isclose(a.lr, b.lr, rel_tol=1e-6):
            if math.isclose(a.lr, r.lr, rel_tol=1e-9):
                fail(f"{at}：StepLog.lr 是传进来的基础学习率 (base lr) {r.lr}，应为这一步实际用的 "
                     f"get_lr(epoch * iters + step, total_steps, lr) = {b.lr:.5g}。")
            fail(f"{at}：StepLog.lr 应为这一步实际用的学习率 {b.lr:.5g}，你的是 {a.lr:.5g}。")


def _check_logging_and_stop(impl, ref):
    # logs at steps 1, 4 and 6: intervals of 1, 3 and 2 micro-steps, none log_interval long, so
    # each wrong mean (last value, / accumulation_steps, / log_interval) gives other numbers
    kw = dict(steps=6, acc=2, log_interval=4)
    r, m = _run(ref, **kw), _run(impl, **kw)
    _compare_logs(m, r, where="6 个 micro-step、accumulation_steps=2、log_interval=4")
    m = _run(impl, steps=6, acc=2, stop_at=3)
    expect(m.last == 3, f"on_step_end(3) 返回 True 时应在第 3 步停下并返回 3，你的返回 {m.last}。")
    # resume: 4 of 9 micro-steps done before, the loader yields the other 5; logs at 6 and 9
    kw = dict(steps=5, acc=2, start_step=4, log_interval=3)
    m, r = _run(impl, **kw), _run(ref, **kw)
    expect(_same(m.lrs, r.lrs), "从 start_step 续训时，step 要从 start_step + 1 接着数（学习率才能接上）。")
    _compare_logs(m, r, where="从 start_step=4 续训（iters=9、log_interval=3）")


def _check_epochs(impl, ref):
    """Two epochs of iters=5 micro-steps, accumulation_steps=2, log_interval=3, two param groups:
    one cosine schedule over 10 micro-steps, a flush at step 5 and a shorter last log interval."""
    iters, acc, epochs, lr = 5, 2, 2, 0.1
    total = epochs * iters
    kw = dict(steps=iters, acc=acc, log_interval=3, epochs=epochs, groups=2, lr=lr)
    r, m = _run(ref, **kw), _run(impl, **kw)
    where = f"{epochs} 个 epoch × {iters} 个 micro-step（accumulation_steps={acc}）"

    # 1. the lr of every group at every micro-step: one schedule across both epochs
    if not _same(m.lrs, r.lrs):
        first = [x[0] for x in m.lrs]
        if _same(first, [x[0] for x in r.lrs]):
            stuck = ", ".join(f"{x:.5g}" for x in sorted({x[1] for x in m.lrs}))
            fail(f"只设置了 param_groups[0] 的学习率：第 2 组一直停在 {stuck}，第 1 组在按调度变。"
                 f"要对 optimizer.param_groups 里的每一组都写 group['lr'] = lr_now——优化器可以有多组参数"
                 f"（比如不做 weight decay 的参数单独一组），每组都要跟着调度走。")
        steps = [(e, s) for e in range(epochs) for s in range(1, iters + 1)]
        if _same(first, [ref.get_lr(s, total, lr) for e, s in steps]):
            fail(f"第 2 个 epoch 的学习率又从头开始了：它的第 1 步用了 get_lr(1, …) = {first[iters]:.5g}，"
                 f"应为 get_lr(1 * {iters} + 1, …) = {r.lrs[iters][0]:.5g}。"
                 f"current_step = epoch * iters + step：整个训练只走一遍余弦调度，跨 epoch 累加。")
        if _same(first, [ref.get_lr(e * iters + s, iters, lr) for e, s in steps]):
            fail(f"学习率调度的长度用了 iters={iters}（一个 epoch）：T 应为传进来的 total_steps={total}，"
                 f"即整个训练的 micro-step 数 (epochs * iters)，否则第 2 个 epoch 的学习率会往回涨。")
        fail(f"{where}：第 1 组的学习率应为 {_rounded([x[0] for x in r.lrs])}，你的是 {_rounded(first)}。")

    # 2. when the optimiser steps: every acc micro-steps and at step == iters (the flush)
    got, want = [x["micro"] for x in m.opt.steps], [x["micro"] for x in r.opt.steps]
    if got != want:
        local = [e * iters + s for e in range(epochs) for s in range(1, iters + 1) if s % acc == 0]
        glob = [t for t in range(1, total + 1) if t % acc == 0]
        if got == local:
            fail(f"每个 epoch 末尾凑不满 accumulation_steps={acc} 个的最后几个 micro-batch 没有更新：优化器应在全局第 "
                 f"{want} 个 micro-step 后更新，你的是 {got}。条件要写成 step % accumulation_steps == 0 or "
                 f"step == iters (flush)：否则这几个 micro-batch 的梯度留在 .grad 里，混进下一个 epoch 的第一次更新，"
                 f"最后一个 epoch 的则直接丢掉。")
        if got in (glob, sorted(set(glob) | {e * iters for e in range(1, epochs + 1)})):
            fail(f"累积计数用了跨 epoch 的全局步数 (epoch * iters + step)：优化器应在全局第 {want} 个 micro-step 后更新，"
                 f"你的是 {got}。累积要用 epoch 内的 step 计数，每个 epoch 从头凑，末尾 step == iters 时把剩下的更新掉。")
        fail(f"{where}：优化器应在全局第 {want} 个 micro-step 后更新，你的是 {got}。")

    # 3. what each update saw
    for k, (rs, ms) in enumerate(zip(r.opt.steps, m.opt.steps)):
        if any(g is None for g in ms["grads"]):
            fail(f"{where}：第 {k + 1} 次更新时有参数没有梯度。")
        if all(close(a, b, 1e-5, 1e-4) for a, b in zip(ms["grads"], rs["grads"])):
            continue
        prev = r.opt.steps[k - 1]["grads"] if k else None
        if prev is not None and all(close(a, b + c, 1e-5, 1e-4) for a, b, c in zip(ms["grads"], rs["grads"], prev)):
            flushed = r.opt.steps[k - 1]["micro"] % iters == 0
            fail(("epoch 末尾那次更新之后没有清空梯度 (zero_grad)" if flushed else "上一次更新之后没有清空梯度 (zero_grad)")
                 + f"：第 {k + 1} 次更新看到的梯度 = 这一组 micro-batch 的梯度 + 上一次更新已经用过的梯度。"
                 f"epoch 末尾的 flush 和平常的更新一样，"
                 f"scaler.step → scaler.update 之后都要 optimizer.zero_grad(set_to_none=True)。")
        fail(f"{where}：第 {k + 1} 次更新时的梯度和参考实现不一致（范数 {_grad_norm(ms['grads']):.4g} vs "
             f"{_grad_norm(rs['grads']):.4g}）。")

    # 4. logs: a shorter last interval at step == iters, with its own tokens and this step's lr
    _compare_logs(m, r, where=where + "、log_interval=3")
    for (pn, a), b in zip(m.model.named_parameters(), r.model.parameters()):
        expect(close(a, b, 1e-5, 1e-4), f"{where} 后参数 {pn} 和参考实现不一致（最大误差 {max_err(a, b):.3g}）。")


def check(impl, ref) -> str:
    _check_get_lr(impl, ref)
    _check_precision(impl)
    _check_accumulation(impl, ref)
    _check_clipping(impl, ref)
    _check_inf_skip(impl, ref)
    _check_logging_and_stop(impl, ref)
    _check_epochs(impl, ref)
    return ("get_lr、autocast、GradScaler、梯度累积、先 unscale 再裁剪、inf 跳过、日志（第 1 步、每段的平均 loss）"
            "与续训计数、跨 epoch 的学习率、每个 param group、epoch 末尾的 flush 与不满一段的日志：全部正确。")
