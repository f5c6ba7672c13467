"""Check for stage 00: MiniMindConfig (defaults, the intermediate_size rule, validation)."""
from __future__ import annotations

import math
import tempfile

from transformers import PretrainedConfig

from .tools import expect, fail

# The spec's defaults (minimind-spec.md §1), besides intermediate_size and rope_scaling.
DEFAULTS = {
    "dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 512, "max_position_embeddings": 32768, "num_attention_heads": 8,
    "num_hidden_layers": 8, "num_key_value_heads": 2, "vocab_size": 6400, "rms_norm_eps": 1e-5,
    "rope_theta": 1e6, "inference_rope_scaling": False, "flash_attn": True, "use_moe": False,
    "num_experts_per_tok": 2, "n_routed_experts": 4, "n_shared_experts": 1,
    "scoring_func": "softmax", "aux_loss_alpha": 0.01, "seq_aux": True, "norm_topk_prob": True,
}

# (keyword arguments, the field the error message must name, why it is invalid)
INVALID = [
    ({"hidden_size": 500, "num_attention_heads": 8}, "hidden_size",
     "hidden_size=500 不能被 num_attention_heads=8 整除（head_dim 不是整数）"),
    ({"num_attention_heads": 8, "num_key_value_heads": 3}, "num_key_value_heads",
     "num_attention_heads=8 不能被 num_key_value_heads=3 整除（GQA 每个 kv 头要服务整数个 q 头）"),
    ({"num_attention_heads": 0}, "num_attention_heads", "num_attention_heads=0 不是正整数"),
    ({"hidden_size": 24, "num_attention_heads": 8, "num_key_value_heads": 2}, "head_dim",
     "hidden_size=24、8 个头时 head_dim=3 是奇数（RoPE 把维度两两配对）"),
    ({"dropout": 1.5}, "dropout", "dropout=1.5 不在 [0, 1) 里"),
    ({"scoring_func": "sigmoid"}, "scoring_func", "scoring_func='sigmoid'（MiniMind2 只支持 softmax）"),
]


def _make(impl, **kw):
    return impl.MiniMindConfig(**kw)


def check(impl, ref) -> str:
    cls = impl.MiniMindConfig
    expect(isinstance(cls, type) and issubclass(cls, PretrainedConfig),
           "MiniMindConfig 要继承 transformers.PretrainedConfig（这样才能 save_pretrained / "
           "from_pretrained，AutoConfig 才认得它）。")
    expect(getattr(cls, "model_type", None) == "minimind",
           f"MiniMindConfig.model_type 应该是 'minimind'，你的是 {getattr(cls, 'model_type', None)!r}。")

    # 1. The SwiGLU width rule, as a function and as written back into the config.
    for hidden in (512, 640, 768, 64, 100, 1000):
        want = ref.default_intermediate_size(hidden)
        got = impl.default_intermediate_size(hidden)
        if got != want:
            exact = hidden * 8 / 3
            if got == int(exact):
                fail(f"default_intermediate_size({hidden}) = {got}，少了“向上取整到 64 的倍数”这一步：应为 {want}。"
                     f"GPU 上 64 的倍数的矩阵乘更快。")
            if got == 64 * (int(exact) // 64):
                fail(f"default_intermediate_size({hidden}) = {got}：你向下取整了，应该向上取整 "
                     f"(math.ceil) 到 64 的倍数，得 {want}。")
            if got == 4 * hidden:
                fail(f"default_intermediate_size({hidden}) = {got}：这是普通 MLP 的 4 倍宽。SwiGLU 有三个矩阵，"
                     f"所以用 8/3 倍保持参数量相当，再向上取整到 64 的倍数：{want}。")
            fail(f"default_intermediate_size({hidden}) 应为 {want}，你的是 {got}。"
                 f"规则：64 * ceil(int(hidden * 8 / 3) / 64)。")

    cfg = _make(impl)
    for name, want in DEFAULTS.items():
        got = getattr(cfg, name, "（缺少这个属性）")
        same = (math.isclose(got, want) if isinstance(want, float) and isinstance(got, (int, float))
                else got == want)
        if not same or type(got) is not type(want) and not isinstance(want, float):
            fail(f"默认值不对：config.{name} 应该是 {want!r}，你的是 {got!r}。")
    if cfg.intermediate_size is None:
        fail("intermediate_size=None 时要按规则算出宽度并写回 config.intermediate_size（你的还是 None）。"
             "这样保存的 config.json 里记录的是真实宽度。")
    expect(cfg.intermediate_size == 1408,
           f"默认配置 (hidden_size=512) 的 intermediate_size 应为 1408，你的是 {cfg.intermediate_size}。")
    for hidden, heads, want in ((640, 8, 1728), (768, 8, 2048)):
        got = _make(impl, hidden_size=hidden, num_attention_heads=heads).intermediate_size
        expect(got == want, f"hidden_size={hidden} 时 intermediate_size 应为 {want}，你的是 {got}。")
    got = _make(impl, intermediate_size=1000).intermediate_size
    expect(got == 1000, f"显式给了 intermediate_size=1000 就要保留它，你的变成了 {got}。")

    # 2. YaRN switch.
    expect(cfg.rope_scaling is None,
           f"inference_rope_scaling=False 时 rope_scaling 应为 None，你的是 {cfg.rope_scaling!r}。")
    yarn = _make(impl, inference_rope_scaling=True).rope_scaling
    want_yarn = ref.YARN_ROPE_SCALING
    if yarn != want_yarn:
        fail(f"inference_rope_scaling=True 时 rope_scaling 应为 {want_yarn}，你的是 {yarn!r}。")

    # 3. Bad values raise ValueError naming the field.
    for kwargs, field, why in INVALID:
        try:
            _make(impl, **kwargs)
        except ValueError as e:
            if field not in str(e):
                fail(f"{why}：ValueError 抛出来了，但信息里没有写出字段名 '{field}'"
                     f"（你的信息：{e}）。好的报错要指出是哪个字段、什么值。")
            continue
        except Exception as e:  # noqa: BLE001 - any other type is the learner's mistake to report
            fail(f"{why}：应该抛 ValueError，你抛的是 {type(e).__name__}: {e}")
        fail(f"{why}：这样的配置应该抛 ValueError（并写出字段名 '{field}'），你的代码接受了它。")

    # 4. Saves and loads through Hugging Face (config.json), extra kwargs go to PretrainedConfig.
    small = _make(impl, hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                  num_hidden_layers=2, use_moe=True, inference_rope_scaling=True,
                  tie_word_embeddings=True)
    with tempfile.TemporaryDirectory() as d:
        small.save_pretrained(d)
        back = cls.from_pretrained(d)
    for name in ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
                 "intermediate_size", "use_moe", "rope_scaling"):
        expect(getattr(back, name, None) == getattr(small, name),
               f"save_pretrained 后再 from_pretrained，{name} 从 {getattr(small, name)!r} "
               f"变成了 {getattr(back, name, None)!r}：每个参数都要存成同名属性。")
    return "默认值、intermediate_size 规则、YaRN 开关、参数校验、保存/加载：全部正确。"
