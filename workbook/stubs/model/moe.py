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

from workbook.config import MiniMindConfig
from workbook.model.feedforward import FeedForward


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
        # Provided: copy the routing settings out of the config.
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
        # TODO(learner): create the router parameter and initialise it:
        #   1. self.weight = nn.Parameter(torch.empty((self.n_routed_experts, self.gating_dim)))
        #      (a Parameter named `weight`, not an nn.Linear: the key is "mlp.gate.weight")
        #   2. self.reset_parameters()
        raise NotImplementedError(
            "TODO(05 moe): 在 workbook/model/moe.py 里写 MoEGate.__init__，见 notebooks/05_moe.ipynb")

    def reset_parameters(self) -> None:
        # Provided: the same init nn.Linear gives its weight
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, hidden_states: torch.Tensor):
        # TODO(learner):
        #   1. flatten the tokens: (b, s, H) -> (b·s, H); logits = F.linear(x, self.weight)  (b·s, E)
        #   2. scores = softmax over the experts; any other scoring_func -> NotImplementedError
        #   3. topk_weight, topk_idx = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        #   4. only if top_k > 1 and norm_topk_prob: topk_weight /= (its sum over k + 1e-20)
        #   5. aux loss only if self.training and self.alpha > 0, else a 0-d zero (scores.new_zeros(())):
        #      seq_aux=True : ce[b, e] = (slots of sequence b routed to e) / (s·k / E)
        #                     aux = alpha · mean_b Σ_e ce[b, e] · mean_t scores[b, t, e]
        #      seq_aux=False: f_e = E · (fraction of all b·s·k slots routed to e)
        #                     P_e = mean over all tokens of scores[:, e];  aux = alpha · Σ_e P_e f_e
        #      (the aux loss uses the *softmax scores*, before top-k and renormalisation)
        #   6. return topk_idx, topk_weight, aux_loss
        raise NotImplementedError(
            "TODO(05 moe): 在 workbook/model/moe.py 里写 MoEGate.forward，见 notebooks/05_moe.ipynb")


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
        # TODO(learner): in this order (it fixes the state_dict keys):
        #   1. self.experts = nn.ModuleList of config.n_routed_experts FeedForward(config)
        #   2. self.gate = MoEGate(config)
        #   3. if config.n_shared_experts > 0: self.shared_experts = nn.ModuleList of
        #      config.n_shared_experts FeedForward(config)
        #   4. self.aux_loss = torch.zeros(())
        raise NotImplementedError(
            "TODO(05 moe): 在 workbook/model/moe.py 里写 MOEFeedForward.__init__，见 notebooks/05_moe.ipynb")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO(learner):
        #   1. topk_idx, topk_weight, aux_loss = self.gate(x); flatten x to (b·s, H) and
        #      topk_idx to flat_topk_idx (b·s·k,): slot j of token t is entry t·k + j
        #   2. training: x.repeat_interleave(k, dim=0) (one copy per slot); y = zeros_like;
        #      for each expert i: mask = flat_topk_idx == i; y[mask] = expert(x[mask]);
        #      an expert nobody chose still adds 0 * sum(p.sum() for p in expert.parameters())
        #      (DDP needs a gradient for every parameter); then weight the k slots and sum:
        #      (y.view(b·s, k, H) * topk_weight.unsqueeze(-1)).sum(dim=1)
        #   3. eval: y = self.moe_infer(x, flat_topk_idx, topk_weight.view(-1, 1))
        #   4. reshape to (b, s, H); add every shared expert's output on the *original* x
        #   5. self.aux_loss = aux_loss; return y
        raise NotImplementedError(
            "TODO(05 moe): 在 workbook/model/moe.py 里写 MOEFeedForward.forward，见 notebooks/05_moe.ipynb")

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
        # TODO(learner):
        #   1. expert_cache = zeros_like(x); idxs = flat_expert_indices.argsort()
        #      (slots sorted by expert: each expert's slots form one contiguous segment)
        #   2. ends = torch.bincount(flat_expert_indices, minlength=E).cumsum(0).tolist()
        #   3. token_idxs = idxs // k   (slot t·k + j belongs to token t)
        #   4. for each expert i with a non-empty segment [start, end):
        #        out = experts[i](x[token_idxs[start:end]]) * flat_expert_weights[idxs[start:end]]
        #        expert_cache.scatter_add_(0, token index expanded to (n, H), out)
        #   5. return expert_cache
        raise NotImplementedError(
            "TODO(05 moe): 在 workbook/model/moe.py 里写 MOEFeedForward.moe_infer，见 notebooks/05_moe.ipynb")
