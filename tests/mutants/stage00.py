"""Wrong MiniMindConfigs, built by changing one thing in the reference."""
import math
from types import SimpleNamespace

from workbook import _modes

ref = _modes.reference_module("config")


def _with(intermediate=None, cls=None):
    return SimpleNamespace(
        MiniMindConfig=cls or ref.MiniMindConfig,
        default_intermediate_size=intermediate or ref.default_intermediate_size,
        YARN_ROPE_SCALING=ref.YARN_ROPE_SCALING,
    )


class NotWrittenBack(ref.MiniMindConfig):
    def __init__(self, intermediate_size=None, **kw):
        super().__init__(intermediate_size=intermediate_size, **kw)
        self.intermediate_size = intermediate_size  # forgot the rule


class NoKvValidation(ref.MiniMindConfig):
    def __init__(self, num_attention_heads=8, num_key_value_heads=2, **kw):
        # "validates" by silently rounding kv heads down instead of raising
        if num_attention_heads > 0 and num_key_value_heads > 0 and num_attention_heads % num_key_value_heads:
            num_key_value_heads = 1
        super().__init__(num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, **kw)


class RopeTheta1e4(ref.MiniMindConfig):
    def __init__(self, rope_theta=1e4, **kw):  # the original Transformer/Llama-1 base
        super().__init__(rope_theta=rope_theta, **kw)


class NoYarn(ref.MiniMindConfig):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.rope_scaling = None


class AssertInsteadOfValueError(ref.MiniMindConfig):
    def __init__(self, hidden_size=512, num_attention_heads=8, **kw):
        assert num_attention_heads > 0 and hidden_size % num_attention_heads == 0
        super().__init__(hidden_size=hidden_size, num_attention_heads=num_attention_heads, **kw)


class VagueError(ref.MiniMindConfig):
    def __init__(self, **kw):
        try:
            super().__init__(**kw)
        except ValueError:
            raise ValueError("invalid config") from None


MUTANTS = {
    "no_round_to_64": (_with(lambda h: int(h * 8 / 3)), "向上取整到 64"),
    "floor_instead_of_ceil": (_with(lambda h: 64 * (int(h * 8 / 3) // 64)), "向下取整"),
    "four_times_hidden": (_with(lambda h: 4 * h), "4 倍"),
    "not_written_back": (_with(cls=NotWrittenBack), "写回"),
    "kv_heads_not_validated": (_with(cls=NoKvValidation), "num_key_value_heads"),
    "rope_theta_1e4": (_with(cls=RopeTheta1e4), "rope_theta"),
    "yarn_missing": (_with(cls=NoYarn), "inference_rope_scaling=True"),
    "assert_not_valueerror": (_with(cls=AssertInsteadOfValueError), "AssertionError"),
    "error_without_field": (_with(cls=VagueError), "字段名"),
}
