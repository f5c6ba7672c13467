"""Wrong FeedForwards a learner really writes, and what the check must say about each."""
import math
from types import SimpleNamespace

import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from workbook import _modes

_ref = _modes.reference_module("model.feedforward")


def _with_forward(forward):
    cls = type("FeedForward", (_ref.FeedForward,), {"forward": forward})
    return SimpleNamespace(FeedForward=cls)


def _with_width(width_of):
    class FeedForward(_ref.FeedForward):
        def __init__(self, config):
            super().__init__(config)
            h, i = config.hidden_size, width_of(config.hidden_size)
            self.gate_proj = nn.Linear(h, i, bias=False)
            self.down_proj = nn.Linear(i, h, bias=False)
            self.up_proj = nn.Linear(h, i, bias=False)

    return SimpleNamespace(FeedForward=FeedForward)


class _KeyErrorOnUnknownAct(_ref.FeedForward):
    def __init__(self, config):
        nn.Module.__init__(self)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.act_fn = ACT2FN[config.hidden_act]  # no check: an unknown name is a bare KeyError


MUTANTS = {
    "gelu": (_with_forward(lambda s, x: s.dropout(s.down_proj(F.gelu(s.gate_proj(x)) * s.up_proj(x)))), "GELU"),
    "relu": (_with_forward(lambda s, x: s.dropout(s.down_proj(F.relu(s.gate_proj(x)) * s.up_proj(x)))), "ReLU"),
    "act_on_up": (_with_forward(lambda s, x: s.dropout(s.down_proj(s.gate_proj(x) * F.silu(s.up_proj(x))))),
                  "SiLU 作用在了 up_proj 上"),
    "no_up_product": (_with_forward(lambda s, x: s.dropout(s.down_proj(F.silu(s.gate_proj(x))))), "up_proj 没用上"),
    "width_4h": (_with_width(lambda h: 4 * h), "4 倍宽"),
    "width_own_rule": (_with_width(lambda h: 64 * math.ceil(int(h * 8 / 3) / 64)), "8H/3"),
    "silu_hardcoded": (_with_forward(lambda s, x: s.dropout(s.down_proj(F.silu(s.gate_proj(x)) * s.up_proj(x)))),
                       "ACT2FN[config.hidden_act]"),
    "dropout_always_on": (_with_forward(lambda s, x: F.dropout(s.down_proj(s.act_fn(s.gate_proj(x)) * s.up_proj(x)),
                                                                s.dropout.p, training=True)), "eval()"),
    "unknown_act_keyerror": (SimpleNamespace(FeedForward=_KeyErrorOnUnknownAct), "你抛的是 KeyError"),
}
