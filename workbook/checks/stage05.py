"""Check for stage 05: MoEGate and MOEFeedForward.

Gate: unsorted top-k compared as sets, the renormalisation rule (k > 1 only), both aux-loss
forms against the reference, zero outside training, and a fresh gate's initialisation
(kaiming_uniform(a=√5), compared with the reference's statistics).  MoE layer: the state_dict keys
and their order (experts, gate, shared_experts), the training path, the eval path (moe_infer) and
their agreement, shared experts, the zero contribution of an unused expert.
Known mistakes are named by recomputing what each would output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .stage06 import HIDDEN, load_same_weights, small_config
from .tools import close, diagnose, expect, expect_shape, fail, max_err, seeded

E = 4


def _cfg(**kw):
    base = dict(use_moe=True, n_routed_experts=E, num_experts_per_tok=2, n_shared_experts=1,
                aux_loss_alpha=0.1, seq_aux=True)
    base.update(kw)
    return small_config(**base)


def _gate_pair(impl, ref, cfg, seed=0):
    with seeded(seed):
        try:
            g = impl.MoEGate(cfg)
        except TypeError as e:
            fail(f"MoEGate(config) 构造失败：{e}。")
        r = ref.MoEGate(cfg)
    load_same_weights(g, r, "MoEGate")
    return g, r


def _sorted(idx, w):
    order = idx.argsort(dim=-1)
    return idx.gather(-1, order), w.gather(-1, order)


def _run_gate(g, x, what):
    x0 = x.clone()
    res = g(x)
    expect(isinstance(res, tuple) and len(res) == 3,
           f"{what} 应该返回 (topk_idx, topk_weight, aux_loss) 三个值。")
    expect(torch.equal(x, x0), f"{what} 改动了输入（原地操作 in-place）。")
    idx, w, aux = res
    n = x.shape[0] * x.shape[1]
    expect_shape(idx, (n, g.top_k if hasattr(g, "top_k") else idx.shape[1]), f"{what} 的 topk_idx")
    expect(idx.dtype == torch.int64, f"{what} 的 topk_idx 应该是 int64，你的是 {idx.dtype}。")
    expect(isinstance(aux, torch.Tensor) and aux.dim() == 0, f"{what} 的 aux_loss 应该是 0-d 张量，你的是 {aux!r}。")
    return idx, w, aux


def _aux_candidates(scores, idx, bsz, seq, k, alpha, seq_aux):
    """What the usual aux-loss mistakes compute (scores: (b·s, E), idx: (b·s, k))."""
    counts = F.one_hot(idx.view(bsz, -1), E).float().sum(1)        # (b, E) slots per expert
    s_mean = scores.view(bsz, seq, E).mean(1)                      # (b, E)
    f_all = F.one_hot(idx.view(-1), E).float().mean(0)             # fraction of all slots
    p = scores.mean(0)
    if seq_aux:
        return [
            (lambda: alpha * (counts / seq * s_mean).sum(1).mean(),
             "seq_aux 的归一化因子不对：ce[b, e] 要除以 s·k/E（均匀时每个专家分到的槽数），你像是只除以了 s。"),
            (lambda: alpha * (counts / (seq / E) * s_mean).sum(1).mean(),
             "seq_aux 的归一化因子少了 k：ce[b, e] 要除以 s·k/E（每个 token 有 k 个路由槽 (slot)，一条序列共 s·k 个），"
             "你像是除以了 s/E，结果是正确值的 k 倍。"),
            (lambda: alpha * (counts / (seq * k) * s_mean).sum(1).mean(),
             "seq_aux 的归一化因子不对：你除以了 s·k（得到比例），还要再乘 E：ce[b, e] = 次数 / (s·k/E)，均匀时 ce = 1。"),
            (lambda: alpha * (counts / (seq * k / E) * s_mean).sum(1).sum(),
             "seq_aux 对 batch 求了和：应该是 mean_b Σ_e ce[b, e]·mean_t scores[b, t, e]（对序列取平均）。"),
            (lambda: alpha * (f_all * E * p).sum(),
             "seq_aux=True 却算成了整批 (batch-level) 的形式：要按序列分别统计 ce[b, e] 和 mean_t scores[b, t, e]。"),
        ]
    return [
        (lambda: alpha * (f_all * p).sum(),
         "seq_aux=False 的 f_e 少乘了 E：f_e = E · (分到 e 的槽的比例)，均匀时 Σ P_e f_e = 1。"),
        (lambda: alpha * (counts / (seq * k / E) * s_mean).sum(1).mean(),
         "seq_aux=False 却算成了按序列 (seq_aux) 的形式：这时 f_e、P_e 都在整批 token 上统计。"),
    ]


def _check_gate(impl, ref) -> None:
    with seeded(1):
        x = torch.randn(3, 5, HIDDEN)
    # 1. parameter, eval outputs, renormalisation
    g, r = _gate_pair(impl, ref, _cfg())
    expect(list(dict(g.named_parameters())) == ["weight"],
           f"MoEGate 只有一个参数 weight，形状 (n_routed_experts, hidden)；你的是 {list(dict(g.named_parameters()))}。")
    g.eval(); r.eval()
    with torch.no_grad():
        idx, w, aux = _run_gate(g, x, "MoEGate")
        ridx, rw, _ = r(x)
        scores = F.linear(x.view(-1, HIDDEN), r.weight).softmax(-1)
        si, sw = _sorted(idx, w)
        rsi, rsw = _sorted(ridx, rw)
        if not torch.equal(si, rsi):
            fail("选出的专家 (topk_idx) 不对：对 softmax(x·Wᵀ) 在专家维上取 top-k（torch.topk(scores, k, dim=-1)）。")
        if not close(sw, rsw, atol=1e-6):
            raw = scores.gather(-1, si)
            reason = diagnose(sw, [
                (lambda: raw, "top-k 权重没有重新归一化 (renormalise)：k > 1 且 norm_topk_prob=True 时要除以 "
                              "这 k 个分数之和（+1e-20）。"),
                (lambda: raw.softmax(-1), "top-k 权重做了第二次 softmax：应该直接除以它们的和，不是再 softmax。"),
                (lambda: F.linear(x.view(-1, HIDDEN), r.weight).gather(-1, si),
                 "top-k 权重用的是 logits，不是 softmax 之后的分数 (scores)。"),
            ], atol=1e-6)
            fail(reason or f"topk_weight 不对：最大误差 {max_err(sw, rsw):.3g}。")
        if float(aux) != 0.0:
            fail(f"评估模式 (eval) 下 aux_loss 应该是 0（只在 self.training 且 alpha > 0 时计算），你的是 {float(aux):.4g}。")
    # 2. k = 1: no renormalisation (the weight stays the softmax score)
    g1, r1 = _gate_pair(impl, ref, _cfg(num_experts_per_tok=1))
    g1.eval()
    with torch.no_grad():
        _, w1, _ = _run_gate(g1, x, "MoEGate(k=1)")
        _, rw1, _ = r1.eval()(x)
        if not close(w1, rw1, atol=1e-6):
            if close(w1, torch.ones_like(w1), atol=1e-6):
                fail("k=1 时不该重新归一化：归一化后唯一的权重总是 1，路由器就收不到分数的梯度。"
                     "规则是 top_k > 1 且 norm_topk_prob 时才除以和。")
            fail(f"k=1 时 topk_weight 应该就是 softmax 分数，最大误差 {max_err(w1, rw1):.3g}。")
    # 3. aux loss, both forms, in training; zero when alpha = 0
    for seq_aux in (True, False):
        g2, r2 = _gate_pair(impl, ref, _cfg(seq_aux=seq_aux), seed=2)
        g2.train(); r2.train()
        idx2, _, aux2 = _run_gate(g2, x, f"MoEGate(train, seq_aux={seq_aux})")
        _, _, raux = r2(x)
        expect(aux2.requires_grad, "训练时 aux_loss 要能反向传播到 gate.weight：用 softmax 分数算，不要 detach。")
        if not close(aux2, raux, atol=1e-6):
            with torch.no_grad():
                sc = F.linear(x.view(-1, HIDDEN), r2.weight).softmax(-1)
                ridx2 = r2(x)[0]
                cands = _aux_candidates(sc, ridx2, 3, 5, 2, 0.1, seq_aux)
                if float(aux2) == 0.0:
                    fail(f"训练模式下 aux_loss 是 0：self.training 且 alpha > 0 时要计算负载均衡损失（seq_aux={seq_aux}）。")
                reason = diagnose(aux2.detach(), cands, atol=1e-6)
            fail(reason or f"aux_loss（seq_aux={seq_aux}）应为 {float(raux):.6g}，你的是 {float(aux2):.6g}。"
                           f"对照 docstring 里的公式（注意用的是 softmax 分数 scores，不是 topk_weight）。")
    g3, _ = _gate_pair(impl, ref, _cfg(aux_loss_alpha=0.0))
    g3.train()
    _, _, aux3 = _run_gate(g3, x, "MoEGate(alpha=0)")
    expect(float(aux3) == 0.0, "aux_loss_alpha=0 时 aux_loss 应该是 0。")


INIT_HIDDEN = 256  # wide enough (E·H = 1024 weights) for stable init statistics


def _fresh_gate_weight(build, cfg, what):
    """The gate weight a freshly built module holds (its own initialisation, no weights loaded)."""
    # Poison the allocator: a weight left at torch.empty then likely reuses this freed block and
    # holds NaN, instead of the values of a previously freed, properly initialised gate.
    torch.full((cfg.n_routed_experts, cfg.hidden_size), float("nan"))  # allocated and freed at once
    with seeded(7):
        try:
            module = build(cfg)
        except TypeError as e:
            fail(f"{what}(config) 构造失败：{e}。")
    gate = module if what == "MoEGate" else getattr(module, "gate", None)
    w = getattr(gate, "weight", None)
    expect(isinstance(w, torch.Tensor) and tuple(w.shape) == (cfg.n_routed_experts, cfg.hidden_size),
           f"{what} 的门控参数 weight 形状应该是 (n_routed_experts, hidden) = "
           f"{(cfg.n_routed_experts, cfg.hidden_size)}，你的是 {getattr(w, 'shape', w)!r}。")
    return w.detach().double().clone()


def _check_gate_init(impl, ref) -> None:
    """A fresh gate: kaiming_uniform_(a=√5), i.e. U(-1/√H, 1/√H), as the reference gives it."""
    cfg = _cfg(hidden_size=INIT_HIDDEN)
    with seeded(7):
        rw = ref.MoEGate(cfg).weight.detach().double()
    bound = 1 / INIT_HIDDEN ** 0.5  # kaiming_uniform_(a=√5): gain √(1/3), bound = gain·√(3/fan_in)
    r_std = rw.std().item()
    for what, build in (("MoEGate", impl.MoEGate), ("MOEFeedForward", impl.MOEFeedForward)):
        w = _fresh_gate_weight(build, cfg, what)
        name = "MoEGate.weight" if what == "MoEGate" else "MOEFeedForward 新建时的 gate.weight"
        want = (f"应该是 kaiming_uniform_(a=√5)，即均匀分布 U(-1/√H, 1/√H)：H={INIT_HIDDEN} 时 |w| ≤ {bound:.4f}，"
                f"标准差 std ≈ {r_std:.4f}")
        if not torch.isfinite(w).all():
            fail(f"{name} 里有 NaN/inf：像是只建了 torch.empty 却没有初始化。torch.empty 只分配内存，里面是残留的"
                 f"随机字节。{want}：在 __init__ 里建好参数后调用 self.reset_parameters()。")
        std, mx = w.std().item(), w.abs().max().item()
        if mx == 0.0:
            fail(f"{name} 全是 0：所有专家的分数都一样 (1/E)，选谁全看并列 (tie) 怎么打破，路由器从一开始就分不出专家。"
                 f"{want}。像是用了 torch.zeros，或 torch.empty 之后没有调用 self.reset_parameters()。")
        if mx <= bound * 1.0001 and abs(std / r_std - 1) < 0.15 and abs(w.mean().item()) < 0.2 * r_std:
            continue
        guess = ""
        if 0.8 < std < 1.2:
            guess = ("你的像是标准正态 N(0, 1)（torch.randn / nn.init.normal_）：logits 大了 √(3H) 倍，"
                     "softmax 几乎是 one-hot，一开始每个 token 就只认一个专家。")
        elif abs(std / (r_std * 6 ** 0.5) - 1) < 0.15:
            guess = "你的像是 kaiming_uniform_ 没有传 a=math.sqrt(5)（默认 a=0，范围大了 √6 倍）。"
        fail(f"{name} 的初始分布不对：{want}；你的 std = {std:.4g}，max|w| = {mx:.4g}。{guess}"
             f"在 __init__ 里建好 nn.Parameter(torch.empty(...)) 后调用 self.reset_parameters()（已经写好），"
             f"不要另外初始化。")


def _moe_pair(impl, ref, cfg, seed=3):
    with seeded(seed):
        try:
            m = impl.MOEFeedForward(cfg)
        except TypeError as e:
            fail(f"MOEFeedForward(config) 构造失败：{e}。")
        r = ref.MOEFeedForward(cfg)
    load_same_weights(m, r, "MOEFeedForward")
    got, want = list(m.state_dict()), list(r.state_dict())
    if got != want:
        def top(keys):
            return list(dict.fromkeys(k.split(".")[0] for k in keys))
        if top(got) != top(want):
            fail(f"MOEFeedForward 的子模块注册顺序 (registration order) 不对：state_dict 的键应该按 "
                 f"{' → '.join(top(want))} 的顺序排，你的是 {' → '.join(top(got))}。state_dict 按 __init__ 里"
                 f"赋值的先后排列，MiniMind2 的 checkpoint 也是这个顺序：先建 experts，再建 gate，最后 shared_experts。")
        first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        fail(f"MOEFeedForward 的 state_dict 键顺序和 MiniMind2 不一致：第 {first} 个键应该是 {want[first]}，"
             f"你的是 {got[first]}。子模块（包括 FeedForward 里的 gate_proj、down_proj、up_proj）要按文档字符串"
             f"的顺序创建。")
    return m, r


def _by_hand(r, x, *, shared=True, weight_power=1):
    """Σ_j w_j^p · expert_{idx_j}(x) (+ shared), computed token by token."""
    idx, w, _ = r.gate(x)
    flat = x.view(-1, x.shape[-1])
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for j in range(idx.shape[1]):
            out[t] += w[t, j] ** weight_power * r.experts[int(idx[t, j])](flat[t:t + 1])[0]
    out = out.view(x.shape)
    if shared and hasattr(r, "shared_experts"):
        for s in r.shared_experts:
            out = out + s(x)
    return out


def _shared_on_routed(r, x):
    """The shared experts applied to the routed output y instead of the input x: y + shared(y)."""
    y = _by_hand(r, x, shared=False)
    for s in r.shared_experts:
        y = y + s(y)
    return y


def _infer_mod_k(r, x):
    """moe_infer with token_idxs = idxs % k: slot t·k + j lands on token j, not on token t."""
    idx, w, _ = r.gate(x)
    flat = x.view(-1, x.shape[-1])
    k = idx.shape[1]
    out = torch.zeros_like(flat)
    for slot, (e, wt) in enumerate(zip(idx.view(-1).tolist(), w.view(-1))):
        out[slot % k] += wt * r.experts[e](flat[slot % k:slot % k + 1])[0]
    out = out.view(x.shape)
    for s in r.shared_experts:
        out = out + s(x)
    return out


def _moe_candidates(r, x):
    return [
        (lambda: _by_hand(r, x, shared=False), "共享专家 (shared experts) 没有加上：路由专家的结果之外，还要加上每个 "
                                                "shared_experts 在全部 token 上的输出。"),
        (lambda: _shared_on_routed(r, x),
         "共享专家 (shared experts) 读的是路由专家的输出 y（y + shared(y)），应该读原始输入 x：两者并列，"
         "y = routed(x) + Σ shared(x)。forward 开头先存 identity = x（后面 x 会被 view / repeat_interleave 改掉），"
         "最后 y = y + expert(identity)。"),
        (lambda: _by_hand(r, x, weight_power=0), "路由权重 (topk_weight) 没有乘上：每个专家的输出要乘它的权重再求和。"),
        (lambda: _by_hand(r, x, weight_power=2), "路由权重乘了两次：专家输出只乘一次 topk_weight。"),
    ]


def _check_moe(impl, ref) -> None:
    cfg = _cfg()
    m, r = _moe_pair(impl, ref, cfg)
    with seeded(4):
        x = torch.randn(2, 6, HIDDEN)
    x0 = x.clone()
    # training path
    m.train(); r.train()
    y = m(x)
    expect(torch.equal(x, x0), "MOEFeedForward 改动了输入 x（原地操作 in-place）。")
    expect_shape(y, x.shape, "MOEFeedForward 的输出")
    ry = r(x)
    if not close(y, ry, atol=1e-5):
        with torch.no_grad():
            reason = diagnose(y.detach(), _moe_candidates(r, x), atol=1e-5)
        fail(reason or f"训练路径 (training path) 的输出和参考实现不一致：最大误差 {max_err(y, ry):.3g}。")
    aux = getattr(m, "aux_loss", None)
    expect(isinstance(aux, torch.Tensor) and close(aux, r.aux_loss, atol=1e-6),
           f"forward 之后 self.aux_loss 应该是门控返回的 aux_loss（{float(r.aux_loss.detach()):.6g}），你的是 {aux!r}。")
    # eval path (moe_infer) and agreement with the training path
    m.eval(); r.eval()
    with torch.no_grad():
        try:
            ye = m(x)
        except IndexError as e:
            fail(f"eval 模式 (moe_infer) 出错 IndexError: {e}。像是把排序后的槽号 idxs 直接当成了 token 号："
                 f"槽 t·k + j 属于 token t，要 token_idxs = idxs // k。")
        rye = r(x)
        if not close(ye, rye, atol=1e-5):
            reason = diagnose(ye, _moe_candidates(r, x) + [
                (lambda: _infer_mod_k(r, x),
                 "moe_infer 里的 token_idxs 用了 idxs % k：槽 (slot) t·k + j 属于 token t，token 号是 idxs // k；"
                 "idxs % k 得到的是 j（这个 token 的第几个选择），于是所有输出都读、写前 k 个 token。"),
            ], atol=1e-5)
            fail(reason or f"评估路径 (moe_infer) 的输出和参考实现不一致：最大误差 {max_err(ye, rye):.3g}。")
        expect(close(ye, y.detach(), atol=1e-5),
               f"eval 模式 (moe_infer) 和训练路径在同一输入上的结果应该相同（fp32 误差 ≤1e-5），差了 {max_err(ye, y):.3g}。")
        mi = m.moe_infer(x.view(-1, HIDDEN), *[t for t in (r.gate(x)[0].view(-1), r.gate(x)[1].view(-1, 1))])
        expect_shape(mi, (12, HIDDEN), "moe_infer 的输出")
        expect(aux is not None and float(m.aux_loss) == 0.0, "eval 模式下 self.aux_loss 应该是 0。")
    # an expert that gets no token still takes part (times zero), so DDP sees a gradient for it
    m.train()
    with torch.no_grad():
        m.gate.weight.copy_(torch.randn(E, HIDDEN).abs())
        m.gate.weight[E - 1].fill_(-1.0)  # positive inputs never pick the last expert
    xp = torch.rand(2, 6, HIDDEN) + 0.1
    m.zero_grad()
    m(xp).square().mean().backward()
    unused = [n for n, p in m.experts[E - 1].named_parameters() if p.grad is None]
    expect(not unused, "没有 token 选中的专家，它的参数没有梯度 (grad is None)：训练路径里要给它加 "
                       "0 * sum(p.sum() for p in expert.parameters())，否则 DDP 会一直等这些梯度而卡住。")
    expect(all(float(p.grad.abs().sum()) == 0 for p in m.experts[E - 1].parameters()),
           "没有 token 选中的专家得到了非零梯度：它的贡献应该是 0 · Σ参数，不改变输出。")


def check(impl, ref) -> str:
    _check_gate(impl, ref)
    _check_moe(impl, ref)
    _check_gate_init(impl, ref)
    return ("门控 top-k 与重新归一化、k=1、两种 aux loss、eval 时为 0、kaiming 初始化；训练路径、moe_infer、二者一致、"
            "共享专家、无人选中的专家、state_dict 键的顺序：全部正确。")
