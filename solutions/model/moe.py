"""MoE: a mixture of experts replaces the one FeedForward by several, and each token uses only k (stage 05).

A small router (the gate) scores every token against every routed expert, keeps the top-k and
mixes those experts' outputs with the (renormalised) scores.  Parameters grow with the number of
experts, compute per token does not.  Shared experts run on every token, for what all tokens
need.  Left alone, a router sends everything to one or two favourite experts; the auxiliary
(load-balancing) loss, added to the LM loss in training, pushes the routing back towards uniform.
Lesson: notebooks/05_moe.ipynb.  Check: ``python -m workbook check 05``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MiniMindConfig
from .feedforward import FeedForward


class MoEGate(nn.Module):
    """The router: softmax scores over the routed experts, top-k per token, aux loss in training.

    Parameter: ``weight`` (n_routed_experts, hidden), kaiming-uniform(a=√5) like an nn.Linear.
    forward(hidden_states: (batch, seq, hidden)) returns
        topk_idx    (batch·seq, k) int64 — the chosen experts of each token,
        topk_weight (batch·seq, k)       — their scores, renormalised to sum to 1 if k > 1,
        aux_loss    ()                   — the load-balancing loss, 0 outside training.
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.config = config
        self.top_k = config.num_experts_per_tok
        self.n_routed_experts = config.n_routed_experts
        self.scoring_func = config.scoring_func
        self.alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        self.norm_topk_prob = config.norm_topk_prob
        self.gating_dim = config.hidden_size
        if not 1 <= self.top_k <= self.n_routed_experts:
            raise ValueError(f"num_experts_per_tok ({self.top_k}) must be between 1 and "
                             f"n_routed_experts ({self.n_routed_experts})")
        self.weight = nn.Parameter(torch.empty((self.n_routed_experts, self.gating_dim)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same init nn.Linear gives its weight
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, hidden_states: torch.Tensor):
        bsz, seq_len, h = hidden_states.shape
        # every token is routed on its own: (b, s, H) -> (b·s, H)
        hidden_states = hidden_states.view(-1, h)
        # logits = x Wᵀ : (b·s, E)
        logits = F.linear(hidden_states, self.weight, None)
        if self.scoring_func == "softmax":
            scores = logits.softmax(dim=-1)
        else:
            raise NotImplementedError(f"MoEGate: scoring_func {self.scoring_func!r} is not "
                                      f"supported, only 'softmax'")
        # the k best experts per token; their order does not matter (sorted=False is faster)
        topk_weight, topk_idx = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            # renormalise the kept scores to sum to 1 (+1e-20: never divide by zero)
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)

        if self.training and self.alpha > 0.0:
            aux_topk = self.top_k
            # (b, s·k): the k·s routing slots of each sequence
            topk_idx_for_aux_loss = topk_idx.view(bsz, -1)
            if self.seq_aux:
                scores_for_seq_aux = scores.view(bsz, seq_len, -1)
                # ce[b, e] = (slots of sequence b sent to e) / (s·k / E); 1 everywhere when uniform
                ce = torch.zeros(bsz, self.n_routed_experts, device=hidden_states.device)
                ce.scatter_add_(1, topk_idx_for_aux_loss,
                                torch.ones(bsz, seq_len * aux_topk, device=hidden_states.device))
                ce = ce.div(seq_len * aux_topk / self.n_routed_experts)
                # aux = α · mean_b Σ_e ce[b, e] · mean_t scores[b, t, e]
                aux_loss = (ce * scores_for_seq_aux.mean(dim=1)).sum(dim=1).mean() * self.alpha
            else:
                # f_e = E · (fraction of all routing slots sent to e)
                mask_ce = F.one_hot(topk_idx_for_aux_loss.view(-1), num_classes=self.n_routed_experts)
                f = mask_ce.float().mean(0) * self.n_routed_experts
                # P_e = mean over tokens of scores[:, e]
                p = scores.mean(0)
                # aux = α · Σ_e P_e · f_e
                aux_loss = (p * f).sum() * self.alpha
        else:
            aux_loss = scores.new_zeros(())
        return topk_idx, topk_weight, aux_loss


class MOEFeedForward(nn.Module):
    """Routed experts (top-k of n_routed_experts) plus shared experts, each a FeedForward.

    out = Σ_{j<k} topk_weight_j · experts[topk_idx_j](x) + Σ_s shared_experts[s](x)

    Submodules: ``experts`` (ModuleList of n_routed_experts), ``gate`` (MoEGate),
    ``shared_experts`` (ModuleList of n_shared_experts, only if > 0).
    Shapes: x (batch, seq, hidden) -> (batch, seq, hidden).  After each call ``self.aux_loss``
    holds the gate's load-balancing loss (a 0-d tensor).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.config = config
        self.experts = nn.ModuleList([FeedForward(config) for _ in range(config.n_routed_experts)])
        self.gate = MoEGate(config)
        if config.n_shared_experts > 0:
            self.shared_experts = nn.ModuleList(
                [FeedForward(config) for _ in range(config.n_shared_experts)])
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        orig_shape = x.shape
        topk_idx, topk_weight, aux_loss = self.gate(x)
        k = self.config.num_experts_per_tok
        # (b, s, H) -> (b·s, H); slot j of token t is routed to flat_topk_idx[t·k + j]
        x = x.view(-1, x.shape[-1])
        flat_topk_idx = topk_idx.view(-1)
        if self.training:
            # one copy of each token per slot: (b·s·k, H), in the order of flat_topk_idx
            x = x.repeat_interleave(k, dim=0)
            y = torch.zeros_like(x)
            for i, expert in enumerate(self.experts):
                mask = flat_topk_idx == i
                if mask.any():
                    y[mask] = expert(x[mask]).to(y.dtype)
                else:
                    # No token chose expert i in this batch.  Touch its parameters anyway (times 0):
                    # DDP waits for a gradient of every parameter and would hang without it.
                    y = y + 0 * sum(p.sum() for p in expert.parameters())
            # mix the k slots of each token: Σ_j w_j · y_j  -> (b·s, H)
            y = (y.view(*topk_weight.shape, -1) * topk_weight.unsqueeze(-1)).sum(dim=1)
            y = y.view(*orig_shape)
        else:
            y = self.moe_infer(x, flat_topk_idx, topk_weight.view(-1, 1)).view(*orig_shape)
        if self.config.n_shared_experts > 0:
            for expert in self.shared_experts:
                y = y + expert(identity)
        self.aux_loss = aux_loss
        return y

    @torch.no_grad()
    def moe_infer(self, x: torch.Tensor, flat_expert_indices: torch.Tensor,
                  flat_expert_weights: torch.Tensor) -> torch.Tensor:
        """Inference path: each expert runs once, on all its slots at the same time.

        Args:
            x: (tokens, hidden).
            flat_expert_indices: (tokens·k,) the expert of every routing slot.
            flat_expert_weights: (tokens·k, 1) the weight of every slot.
        Returns:
            (tokens, hidden): Σ over each token's slots of weight · expert(token).
        """
        expert_cache = torch.zeros_like(x)
        k = self.config.num_experts_per_tok
        # sort the slots by expert, so each expert's slots form one contiguous segment
        idxs = flat_expert_indices.argsort()
        # segment ends: tokens_per_expert[i] = number of slots with expert <= i
        tokens_per_expert = torch.bincount(flat_expert_indices,
                                           minlength=len(self.experts)).cumsum(0).tolist()
        # slot t·k + j belongs to token t
        token_idxs = idxs // k
        for i, end_idx in enumerate(tokens_per_expert):
            start_idx = 0 if i == 0 else tokens_per_expert[i - 1]
            if start_idx == end_idx:
                continue  # nobody chose expert i
            exp_token_idx = token_idxs[start_idx:end_idx]
            expert_out = self.experts[i](x[exp_token_idx]).to(expert_cache.dtype)
            # scale by each slot's gate weight
            expert_out = expert_out * flat_expert_weights[idxs[start_idx:end_idx]]
            # add each row back onto its token (a token appears once per chosen expert)
            expert_cache.scatter_add_(0, exp_token_idx.view(-1, 1).expand(-1, x.shape[-1]),
                                      expert_out)
        return expert_cache
