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


_SIZES = ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "vocab_size",
          "max_position_embeddings")


class BoolAccepted(ref.MiniMindConfig):
    def __init__(self, **kw):
        # `isinstance(value, int) and value > 0` lets True through (bool is an int subclass)
        kw = {k: (int(v) if k in _SIZES and isinstance(v, bool) else v) for k, v in kw.items()}
        super().__init__(**kw)


class FloatAccepted(ref.MiniMindConfig):
    def __init__(self, **kw):
        # only `value > 0` checked: 512.0 slips through
        kw = {k: (int(v) if k in _SIZES and isinstance(v, float) and v > 0 and v.is_integer() else v)
              for k, v in kw.items()}
        super().__init__(**kw)


class DivisibilityFirst(ref.MiniMindConfig):
    def __init__(self, hidden_size=512, num_attention_heads=8, num_key_value_heads=2, **kw):
        # checks `hidden % heads` before "positive": a 0 divides by zero
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size ({hidden_size}) % num_attention_heads ({num_attention_heads}) != 0")
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f"num_attention_heads ({num_attention_heads}) % "
                             f"num_key_value_heads ({num_key_value_heads}) != 0")
        super().__init__(hidden_size=hidden_size, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, **kw)


class GqaChecksHidden(ref.MiniMindConfig):
    def __init__(self, hidden_size=512, num_attention_heads=8, num_key_value_heads=2, **kw):
        # checks hidden_size % num_key_value_heads instead of num_attention_heads % num_key_value_heads
        kv = num_key_value_heads
        if (isinstance(kv, int) and kv > 0 and isinstance(num_attention_heads, int) and num_attention_heads > 0
                and num_attention_heads % kv and not hidden_size % kv):
            super().__init__(hidden_size=hidden_size, num_attention_heads=num_attention_heads,
                             num_key_value_heads=1, **kw)
            self.num_key_value_heads = kv
            return
        super().__init__(hidden_size=hidden_size, num_attention_heads=num_attention_heads,
                         num_key_value_heads=kv, **kw)


class DropoutOneAccepted(ref.MiniMindConfig):
    def __init__(self, dropout=0.0, **kw):  # wrote `0 <= dropout <= 1`
        super().__init__(dropout=0.0 if dropout == 1.0 else dropout, **kw)
        self.dropout = dropout


class DropoutZeroRejected(ref.MiniMindConfig):
    def __init__(self, dropout=0.0, **kw):  # wrote `0 < dropout < 1`
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"dropout must be in (0, 1), got {dropout!r}")
        super().__init__(dropout=dropout, **kw)


class MoeNotValidated(ref.MiniMindConfig):
    def __init__(self, use_moe=False, **kw):  # forgot the use_moe rule
        super().__init__(use_moe=False, **kw)
        self.use_moe = use_moe


class MoeTopkStrict(ref.MiniMindConfig):
    def __init__(self, use_moe=False, num_experts_per_tok=2, n_routed_experts=4, **kw):
        if use_moe and not 1 <= num_experts_per_tok < n_routed_experts:  # `<` instead of `<=`
            raise ValueError(f"num_experts_per_tok ({num_experts_per_tok}) must be below "
                             f"n_routed_experts ({n_routed_experts})")
        super().__init__(use_moe=use_moe, num_experts_per_tok=num_experts_per_tok,
                         n_routed_experts=n_routed_experts, **kw)


class IntermediateNotValidated(ref.MiniMindConfig):
    def __init__(self, intermediate_size=None, **kw):
        super().__init__(intermediate_size=None, **kw)
        if intermediate_size is not None:
            self.intermediate_size = intermediate_size


class SharedYarnDict(ref.MiniMindConfig):
    def __init__(self, inference_rope_scaling=False, rope_scaling=None, **kw):
        super().__init__(inference_rope_scaling=inference_rope_scaling, rope_scaling=rope_scaling, **kw)
        if rope_scaling is None and inference_rope_scaling:
            self.rope_scaling = ref.YARN_ROPE_SCALING  # the module's dict itself, not a copy


class YarnOverridesExplicit(ref.MiniMindConfig):
    def __init__(self, inference_rope_scaling=False, rope_scaling=None, **kw):
        super().__init__(inference_rope_scaling=inference_rope_scaling, rope_scaling=rope_scaling, **kw)
        # MiniMind's own one-liner: ignores an explicit rope_scaling
        self.rope_scaling = dict(ref.YARN_ROPE_SCALING) if inference_rope_scaling else None


class KwargsDropped(ref.MiniMindConfig):
    _OWN = set(ref.MiniMindConfig.__init__.__code__.co_varnames[1:ref.MiniMindConfig.__init__.__code__.co_argcount])

    def __init__(self, **kw):
        # super().__init__(bos_token_id=..., eos_token_id=...) without **kwargs
        super().__init__(**{k: v for k, v in kw.items() if k in self._OWN})


class FlashHardcoded(ref.MiniMindConfig):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.flash_attn = True  # wrote the default instead of the argument


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
    "bool_accepted_as_size": (_with(cls=BoolAccepted), "isinstance(True, int)"),
    "float_accepted_as_size": (_with(cls=FloatAccepted), "浮点数 (float)"),
    "divide_before_positive": (_with(cls=DivisibilityFirst), "ZeroDivisionError"),
    "gqa_checks_hidden": (_with(cls=GqaChecksHidden), "num_attention_heads % num_key_value_heads"),
    "dropout_one_accepted": (_with(cls=DropoutOneAccepted), "dropout < 1，不是 dropout <= 1"),
    "dropout_zero_rejected": (_with(cls=DropoutZeroRejected), "包含 0"),
    "moe_not_validated": (_with(cls=MoeNotValidated), "num_experts_per_tok"),
    "moe_topk_equal_rejected": (_with(cls=MoeTopkStrict), "可以等于 n_routed_experts"),
    "intermediate_not_validated": (_with(cls=IntermediateNotValidated), "intermediate_size"),
    "yarn_shared_dict": (_with(cls=SharedYarnDict), "同一个 dict"),
    "yarn_overrides_explicit": (_with(cls=YarnOverridesExplicit), "显式传入的 rope_scaling"),
    "kwargs_dropped": (_with(cls=KwargsDropped), "**kwargs"),
    "field_hardcoded": (_with(cls=FlashHardcoded), "原样存成同名属性"),
}
