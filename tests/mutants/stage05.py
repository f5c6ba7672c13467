"""Wrong MoEGates / MOEFeedForwards a learner really writes, and what the check must say."""
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from workbook import _modes

_ref = _modes.reference_module("model.moe")
_Gate, _MoE = _ref.MoEGate, _ref.MOEFeedForward
_FF = _modes.reference_module("model.feedforward").FeedForward


def _gate_forward(self, x, *, renorm="rule", aux_mode="ref", aux_always=False):
    b, s, h = x.shape
    scores = F.linear(x.view(-1, h), self.weight).softmax(-1)
    w, idx = torch.topk(scores, self.top_k, dim=-1, sorted=False)
    if renorm == "always" or (renorm == "rule" and self.top_k > 1 and self.norm_topk_prob):
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    if (self.training or aux_always) and self.alpha > 0:
        E, k = self.n_routed_experts, self.top_k
        if self.seq_aux:
            ce = F.one_hot(idx.view(b, -1), E).float().sum(1)
            norm = {"seq_no_k_over_E": s, "seq_no_k": s / E}.get(aux_mode, s * k / E)
            aux = (ce / norm * scores.view(b, s, E).mean(1)).sum(1).mean() * self.alpha
        else:
            f = F.one_hot(idx.view(-1), E).float().mean(0)
            f = f if aux_mode == "no_E" else f * E
            aux = (f * scores.mean(0)).sum() * self.alpha
    else:
        aux = scores.new_zeros(())
    return idx, w, aux


def _gate(**opts):
    G = type("MoEGate", (_Gate,), {"forward": lambda self, x: _gate_forward(self, x, **opts)})

    class M(_MoE):
        def __init__(self, config):
            super().__init__(config)
            w = self.gate.weight.data
            self.gate = G(config)
            self.gate.weight.data.copy_(w)

    return SimpleNamespace(MoEGate=G, MOEFeedForward=M)


def _moe_forward(self, x, *, shared=True, power=1, skip_unused=False, shared_on_output=False):
    idx, w, aux = self.gate(x)
    flat = x.view(-1, x.shape[-1])
    k = idx.shape[1]
    xs = flat.repeat_interleave(k, dim=0)
    y = torch.zeros_like(xs)
    fi = idx.view(-1)
    for i, e in enumerate(self.experts):
        mask = fi == i
        if mask.any():
            y[mask] = e(xs[mask])
        elif not skip_unused:
            y = y + 0 * sum(p.sum() for p in e.parameters())
    y = (y.view(*w.shape, -1) * (w ** power).unsqueeze(-1)).sum(1).view(x.shape)
    if shared:
        for s in self.shared_experts:
            y = y + s(y if shared_on_output else x)
    self.aux_loss = aux
    return y


def _moe(**opts):
    M = type("MOEFeedForward", (_MoE,), {"forward": lambda self, x: _moe_forward(self, x, **opts)})
    return SimpleNamespace(MoEGate=_Gate, MOEFeedForward=M)


def _infer_no_div_k(self, x, flat_idx, flat_w):
    cache = torch.zeros_like(x)
    idxs = flat_idx.argsort()
    ends = torch.bincount(flat_idx, minlength=len(self.experts)).cumsum(0).tolist()
    for i, end in enumerate(ends):
        start = 0 if i == 0 else ends[i - 1]
        if start == end:
            continue
        tok = idxs[start:end]  # forgot // k
        out = self.experts[i](x[tok]) * flat_w[idxs[start:end]]
        cache.scatter_add_(0, tok.view(-1, 1).expand(-1, x.shape[-1]), out)
    return cache


def _infer_mod_k(self, x, flat_idx, flat_w):
    cache = torch.zeros_like(x)
    k = self.config.num_experts_per_tok
    idxs = flat_idx.argsort()
    ends = torch.bincount(flat_idx, minlength=len(self.experts)).cumsum(0).tolist()
    token_idxs = idxs % k  # the mistake: % instead of //
    for i, end in enumerate(ends):
        start = 0 if i == 0 else ends[i - 1]
        if start == end:
            continue
        tok = token_idxs[start:end]
        out = self.experts[i](x[tok]) * flat_w[idxs[start:end]]
        cache.scatter_add_(0, tok.view(-1, 1).expand(-1, x.shape[-1]), out)
    return cache


class _GateFirst(_MoE):
    """Registers gate before experts: same keys, but in another order than MiniMind2's."""

    def __init__(self, config):
        nn.Module.__init__(self)
        self.config = config
        self.gate = _Gate(config)
        self.experts = nn.ModuleList([_FF(config) for _ in range(config.n_routed_experts)])
        if config.n_shared_experts > 0:
            self.shared_experts = nn.ModuleList([_FF(config) for _ in range(config.n_shared_experts)])
        self.aux_loss = torch.zeros(())


def _gate_init(init):
    """A MoEGate whose __init__ initialises `weight` with `init(hidden, experts)` (or leaves it)."""

    class MoEGate(_Gate):
        def __init__(self, config):
            nn.Module.__init__(self)
            self.config = config
            self.top_k = config.num_experts_per_tok
            self.n_routed_experts = config.n_routed_experts
            self.scoring_func = config.scoring_func
            self.alpha = config.aux_loss_alpha
            self.seq_aux = config.seq_aux
            self.norm_topk_prob = config.norm_topk_prob
            self.gating_dim = config.hidden_size
            self.weight = nn.Parameter(init(self.n_routed_experts, self.gating_dim))

    class MOEFeedForward(_MoE):
        def __init__(self, config):
            super().__init__(config)
            self.gate = MoEGate(config)

    return SimpleNamespace(MoEGate=MoEGate, MOEFeedForward=MOEFeedForward)


MUTANTS = {
    "no_topk_renorm": (_gate(renorm="never"), "没有重新归一化"),
    "renorm_when_k1": (_gate(renorm="always"), "k=1 时不该重新归一化"),
    "seq_aux_wrong_normaliser": (_gate(aux_mode="seq_no_k_over_E"), "s·k/E"),
    "batch_aux_missing_E": (_gate(aux_mode="no_E"), "少乘了 E"),
    "aux_in_eval": (_gate(aux_always=True), "评估模式 (eval) 下 aux_loss 应该是 0"),
    "shared_experts_left_out": (_moe(shared=False), "共享专家"),
    "weights_not_applied": (_moe(power=0), "没有乘上"),
    "weights_applied_twice": (_moe(power=2), "乘了两次"),
    "unused_expert_skipped": (_moe(skip_unused=True), "DDP"),
    "seq_aux_missing_k": (_gate(aux_mode="seq_no_k"), "少了 k"),
    "shared_experts_on_routed_output": (_moe(shared_on_output=True), "应该读原始输入 x"),
    "moe_infer_token_mod_k": (SimpleNamespace(MoEGate=_Gate, MOEFeedForward=type(
        "MOEFeedForward", (_MoE,), {"moe_infer": torch.no_grad()(_infer_mod_k)})), "idxs % k"),
    "gate_registered_first": (SimpleNamespace(MoEGate=_Gate, MOEFeedForward=_GateFirst), "注册顺序"),
    # forgot self.reset_parameters(): whatever bytes torch.empty found (often NaN or 0 here)
    "gate_init_forgotten": (_gate_init(lambda e, h: torch.empty(e, h)), "reset_parameters"),
    "gate_init_zeros": (_gate_init(lambda e, h: torch.zeros(e, h)), "全是 0"),
    "gate_init_randn": (_gate_init(lambda e, h: torch.randn(e, h)), "N(0, 1)"),
    "moe_infer_wrong_tokens": (SimpleNamespace(MoEGate=_Gate, MOEFeedForward=type(
        "MOEFeedForward", (_MoE,), {"moe_infer": torch.no_grad()(_infer_no_div_k)})), "idxs // k"),
}
