"""Wrong RMSNorms a learner really writes, and what the check must say about each."""
from types import SimpleNamespace

import torch
from torch import nn


def _norm_class(normalise, *, weight_name="weight", bias=False, upcast=True, cast_back=True,
                use_weight=True):
    """Build an RMSNorm class from the parts a learner can get wrong."""

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps=1e-5):
            super().__init__()
            self.eps = eps
            setattr(self, weight_name, nn.Parameter(torch.ones(dim)))
            if bias:
                self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            h = x.float() if upcast else x
            y = normalise(h, self.eps)
            if cast_back:
                y = y.type_as(x)
            if use_weight:
                y = getattr(self, weight_name) * y
            if bias:
                y = y + self.bias
            return y

    return SimpleNamespace(RMSNorm=RMSNorm)


def _rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


MUTANTS = {
    # mean of x instead of mean of x²
    "mean_of_x": (_norm_class(lambda x, eps: x * torch.rsqrt(x.mean(-1, keepdim=True) + eps)),
                  "mean(x)"),
    # eps added after the square root
    "eps_outside_sqrt": (_norm_class(lambda x, eps: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)),
                         "eps 加在了根号外面"),
    # no fp32 upcast: fp16 x² overflows
    "no_upcast": (_norm_class(_rms, upcast=False), "65504"),
    # normalised over the sequence dimension
    "wrong_dim": (_norm_class(lambda x, eps: x * torch.rsqrt(x.pow(2).mean(-2, keepdim=True) + eps)),
                  "归一化的维度不对"),
    # weight never applied
    "weight_unused": (_norm_class(_rms, use_weight=False), "self.weight"),
    # weight called gamma
    "gamma_name": (_norm_class(_rms, weight_name="gamma"), "要叫 weight"),
    # a bias added, LayerNorm-style
    "with_bias": (_norm_class(_rms, bias=True), "bias"),
    # LayerNorm: subtract the mean first
    "layernorm": (_norm_class(lambda x, eps: (x - x.mean(-1, keepdim=True))
                              * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)),
                  "LayerNorm"),
    # eps forgotten
    "no_eps": (_norm_class(lambda x, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))), "没有加 eps"),
    # eps argument ignored (hard-coded)
    "eps_hardcoded": (_norm_class(lambda x, eps: _rms(x, 1e-5)), "self.eps"),
    # result left in fp32
    "no_cast_back": (_norm_class(_rms, cast_back=False), ".type_as(x)"),
}
