"""Check for stage 00: MiniMindConfig (defaults, the intermediate_size rule, validation).

Every rule the stub states is tried at its boundaries: a value just inside must be accepted,
one just outside rejected with a ValueError that names the field.  Then the YaRN default, the
attributes (every argument and every extra keyword kept) and a save/load round trip.
"""
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

_POSITIVE = "正整数 (positive integer)"
_FLOAT = ("是浮点数 (float)，不是整数：只检查 value > 0 不够，要 isinstance(value, int)"
          "（512.0 做 view/reshape 的形状或 range 的参数都会出错）")
_BOOL = ("是布尔值 (bool)：Python 里 bool 是 int 的子类，isinstance(True, int) 为 True，"
         "所以要另外排除：not isinstance(value, bool)")

# (keyword arguments, the field the error message must name, why it is invalid)
INVALID = [
    ({"hidden_size": 500, "num_attention_heads": 8}, "hidden_size",
     "hidden_size=500 不能被 num_attention_heads=8 整除（head_dim 不是整数）"),
    ({"num_attention_heads": 8, "num_key_value_heads": 3}, "num_key_value_heads",
     "num_attention_heads=8 不能被 num_key_value_heads=3 整除（GQA 每个 kv 头要服务整数个 q 头）"),
    ({"hidden_size": 384, "num_attention_heads": 8, "num_key_value_heads": 3}, "num_key_value_heads",
     "num_attention_heads=8 不能被 num_key_value_heads=3 整除——hidden_size=384 倒是能被 3 整除，"
     "但 GQA 要检查的是 num_attention_heads % num_key_value_heads，不是 hidden_size % num_key_value_heads"),
    ({"hidden_size": 24, "num_attention_heads": 8, "num_key_value_heads": 2}, "head_dim",
     "hidden_size=24、8 个头时 head_dim=3 是奇数（RoPE 把维度两两配对）"),
    # sizes: zero and negative
    *[({f: 0}, f, f"{f}=0 不是{_POSITIVE}") for f in
      ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "vocab_size",
       "max_position_embeddings")],
    ({"num_hidden_layers": -1}, "num_hidden_layers", f"num_hidden_layers=-1 是负数，不是{_POSITIVE}"),
    ({"hidden_size": -512}, "hidden_size", f"hidden_size=-512 是负数，不是{_POSITIVE}"),
    # sizes: floats (each passes every divisibility test, so only a type check catches it)
    *[({f: v}, f, f"{f}={v!r} {_FLOAT}") for f, v in
      (("hidden_size", 512.0), ("num_attention_heads", 8.0), ("num_key_value_heads", 2.0),
       ("num_hidden_layers", 2.0), ("vocab_size", 6400.0), ("max_position_embeddings", 2048.0))],
    # sizes: bools (True == 1; chosen so that every other rule still holds)
    *[(kw, f, f"{f}=True {_BOOL}") for kw, f in
      (({"num_hidden_layers": True}, "num_hidden_layers"), ({"vocab_size": True}, "vocab_size"),
       ({"max_position_embeddings": True}, "max_position_embeddings"),
       ({"num_key_value_heads": True}, "num_key_value_heads"),
       ({"num_attention_heads": True, "num_key_value_heads": 1}, "num_attention_heads"))],
    # intermediate_size: None or a positive integer
    ({"intermediate_size": 0}, "intermediate_size", f"intermediate_size=0 不是 None 也不是{_POSITIVE}"),
    ({"intermediate_size": -64}, "intermediate_size", f"intermediate_size=-64 不是 None 也不是{_POSITIVE}"),
    ({"intermediate_size": 1408.0}, "intermediate_size", f"intermediate_size=1408.0 {_FLOAT}"),
    ({"intermediate_size": True}, "intermediate_size", f"intermediate_size=True {_BOOL}"),
    # dropout: [0, 1)
    ({"dropout": 1.5}, "dropout", "dropout=1.5 不在 [0, 1) 里"),
    ({"dropout": 1.0}, "dropout",
     "dropout=1.0 不在 [0, 1) 里：范围不含 1——p=1 会把所有激活置零（nn.Dropout(p=1) 的输出全是 0），"
     "条件要写 dropout < 1，不是 dropout <= 1"),
    ({"dropout": -0.1}, "dropout", "dropout=-0.1 是负数，不在 [0, 1) 里"),
    ({"scoring_func": "sigmoid"}, "scoring_func", "scoring_func='sigmoid'（MiniMind2 只支持 softmax）"),
    # MoE: only checked when use_moe
    ({"use_moe": True, "num_experts_per_tok": 0}, "num_experts_per_tok",
     "use_moe=True、num_experts_per_tok=0：每个 token 至少要选 1 个专家 (1 <= num_experts_per_tok)"),
    ({"use_moe": True, "num_experts_per_tok": 5, "n_routed_experts": 4}, "num_experts_per_tok",
     "use_moe=True、num_experts_per_tok=5 > n_routed_experts=4：top-k 不能比专家总数还多"),
]

# (keyword arguments, why they are valid): boundary values that must NOT raise
VALID = [
    ({"dropout": 0.0}, "dropout=0 就是不用 dropout（也是默认值）：范围 [0, 1) 包含 0，条件写 0 <= dropout，不是 0 < dropout"),
    ({"dropout": 0.5}, "0 <= dropout < 1"),
    ({"num_key_value_heads": 8}, "num_key_value_heads = num_attention_heads 是普通多头注意力 (MHA)，n_rep = 1"),
    ({"num_key_value_heads": 1}, "num_key_value_heads=1 是多查询注意力 (MQA)，8 个 q 头共用一个 kv 头"),
    ({"hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 2}, "head_dim=2 是正偶数"),
    ({"num_hidden_layers": 1, "vocab_size": 3, "max_position_embeddings": 1}, "1 层、长度 1 都是正整数"),
    ({"intermediate_size": 1}, "intermediate_size=1 是正整数"),
    ({"use_moe": True, "num_experts_per_tok": 4, "n_routed_experts": 4},
     "num_experts_per_tok 可以等于 n_routed_experts（每个 token 用全部专家）：1 <= k <= n_routed_experts 包含两端"),
    ({"use_moe": True, "num_experts_per_tok": 1}, "num_experts_per_tok=1 是 top-1 路由（Switch Transformer 就这样）"),
]

# Every argument at a non-default value: all of them must be stored as given and survive save/load.
CUSTOM_ROPE = {"type": "yarn", "factor": 4, "original_max_position_embeddings": 64, "beta_fast": 32,
               "beta_slow": 1, "attention_factor": 1.0}
NON_DEFAULT = {
    "dropout": 0.1, "bos_token_id": 3, "eos_token_id": 4, "hidden_act": "gelu", "hidden_size": 64,
    "intermediate_size": 96, "max_position_embeddings": 128, "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 1, "vocab_size": 100, "rms_norm_eps": 1e-6,
    "rope_theta": 1e4, "inference_rope_scaling": True, "rope_scaling": CUSTOM_ROPE, "flash_attn": False,
    "use_moe": True, "num_experts_per_tok": 3, "n_routed_experts": 5, "n_shared_experts": 0,
    "scoring_func": "softmax", "aux_loss_alpha": 0.1, "seq_aux": False, "norm_topk_prob": False,
}
# Keywords MiniMindConfig does not name itself: they go through **kwargs to PretrainedConfig.
EXTRA = {
    "tie_word_embeddings": False,
    "auto_map": {"AutoConfig": "configuration_minimind.MiniMindConfig"},
    "workbook_note": "一个 PretrainedConfig 不认识的关键字",
}
_KWARGS_HINT = ("__init__ 的 **kwargs 要原样传给 super().__init__(bos_token_id=..., eos_token_id=..., **kwargs)："
                "PretrainedConfig 把它们存成属性、写进 config.json。")


def _make(impl, **kw):
    return impl.MiniMindConfig(**kw)


def _attempt(impl, kw):
    """(config, None) if MiniMindConfig(**kw) works, else (None, the exception)."""
    try:
        return _make(impl, **kw), None
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - any exception is reported to the learner
        return None, e


def _args(kw: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items()) or "（默认参数）"


def _expect_rejected(impl, kw, field, why) -> None:
    _, err = _attempt(impl, kw)
    call = f"MiniMindConfig({_args(kw)})"
    if err is None:
        fail(f"{call} 应该抛 ValueError（信息里写出字段名 '{field}'），你的代码接受了它。原因：{why}。")
    if isinstance(err, ZeroDivisionError):
        fail(f"{call} 应该抛 ValueError，你抛的是 ZeroDivisionError: {err}。先检查是不是正整数，再做整除检查 (%)："
             f"0 根本不该走到 % 那一步。")
    if not isinstance(err, ValueError):
        fail(f"{call} 应该抛 ValueError，你抛的是 {type(err).__name__}: {err}。原因：{why}。")
    if field not in str(err):
        fail(f"{call}：ValueError 抛出来了，但信息里没有写出字段名 '{field}'"
             f"（你的信息：{err}）。好的报错要指出是哪个字段、什么值。原因：{why}。")


def _expect_accepted(impl, kw, why):
    cfg, err = _attempt(impl, kw)
    if err is not None:
        fail(f"MiniMindConfig({_args(kw)}) 是合法的配置（{why}），你的代码却抛了 {type(err).__name__}: {err}")
    return cfg


def _check_rope_scaling(impl, ref) -> None:
    cfg = _make(impl)
    expect(cfg.rope_scaling is None,
           f"inference_rope_scaling=False 时 rope_scaling 应为 None，你的是 {cfg.rope_scaling!r}。")
    a = _make(impl, inference_rope_scaling=True)
    want_yarn = ref.YARN_ROPE_SCALING
    if a.rope_scaling != want_yarn:
        fail(f"inference_rope_scaling=True 时 rope_scaling 应为 {want_yarn}，你的是 {a.rope_scaling!r}。")
    # a fresh copy per config: the shared-mutable-default mistake
    modules = [d for d in (getattr(impl, "YARN_ROPE_SCALING", None), ref.YARN_ROPE_SCALING) if d is not None]
    if any(a.rope_scaling is d for d in modules):
        fail("inference_rope_scaling=True 时你的 rope_scaling 就是模块里的 YARN_ROPE_SCALING 本身（同一个 dict），"
             "不是副本：一个 config 改了 rope_scaling['factor']，模块常量和之后所有 config 都跟着变。"
             "用 dict(YARN_ROPE_SCALING) 复制一份。")
    b = _make(impl, inference_rope_scaling=True)
    if a.rope_scaling is b.rope_scaling:
        fail("两个 inference_rope_scaling=True 的 config 共用同一个 rope_scaling dict（共享的可变默认值 "
             "shared mutable default）：改一个就改了另一个。每个 config 都要 dict(YARN_ROPE_SCALING) 复制一份。")
    saved = [(d, dict(d)) for d in modules]
    try:
        a.rope_scaling["factor"] = 99
        leaked = b.rope_scaling.get("factor") != want_yarn["factor"] or any(d != s for d, s in saved)
    finally:
        for d, s in saved:  # never leave a module constant changed by this test
            d.clear()
            d.update(s)
    if leaked:
        fail("改了一个 config 的 rope_scaling['factor']，另一个 config（或模块的 YARN_ROPE_SCALING）也跟着变了："
             "rope_scaling 要是每个 config 自己的副本 (copy)，用 dict(YARN_ROPE_SCALING)。")
    # an explicit rope_scaling wins over inference_rope_scaling (config.json gives both back)
    for irs in (True, False):
        got = _make(impl, rope_scaling=dict(CUSTOM_ROPE), inference_rope_scaling=irs).rope_scaling
        if got != CUSTOM_ROPE:
            fail(f"显式传入的 rope_scaling 要原样保留（这里 inference_rope_scaling={irs}）：传入 {CUSTOM_ROPE}，"
                 f"你的 config.rope_scaling 是 {got!r}。只有 rope_scaling 是 None 且 inference_rope_scaling=True "
                 f"时才用 YARN_ROPE_SCALING 的副本——from_pretrained 读回 config.json 时两个字段都会传进来。")


def _check_stored(impl, cfg, what: str) -> None:
    for name, want in {**NON_DEFAULT, **EXTRA}.items():
        got = getattr(cfg, name, "（缺少这个属性）")
        if got == want and (type(got) is type(want) or isinstance(want, float)):
            continue
        if name in EXTRA:
            fail(f"{what}额外的关键字参数 {name}={want!r} 不见了（config.{name} 是 {got!r}）：{_KWARGS_HINT}")
        fail(f"{what}传入 {name}={want!r}，config.{name} 却是 {got!r}：每个参数都要原样存成同名属性"
             f"（不要写死默认值，也不要改名）。")


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

    cfg, err = _attempt(impl, {})
    if err is not None:
        if "dropout" in str(err):
            fail(f"默认配置 MiniMindConfig() 被拒绝了：{type(err).__name__}: {err}。默认 dropout=0.0 是合法的——"
                 f"范围 [0, 1) 包含 0，条件写 0 <= dropout < 1，不是 0 < dropout。")
        fail(f"默认配置 MiniMindConfig() 必须合法，你的代码抛了 {type(err).__name__}: {err}。"
             f"检查校验条件有没有写反（例如写成了 num_key_value_heads % num_attention_heads）。")
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

    # 2. YaRN switch: a fresh copy per config; an explicit rope_scaling wins.
    _check_rope_scaling(impl, ref)

    # 3. Bad values raise ValueError naming the field; values on the boundary are accepted.
    for kwargs, field, why in INVALID:
        _expect_rejected(impl, kwargs, field, why)
    for kwargs, why in VALID:
        _expect_accepted(impl, kwargs, why)

    # 4. Every argument and every extra keyword is kept, and survives save/load (config.json).
    full = _expect_accepted(impl, {**NON_DEFAULT, **EXTRA}, "每个字段都取了合法的非默认值")
    _check_stored(impl, full, "")
    try:
        with tempfile.TemporaryDirectory() as d:
            full.save_pretrained(d)
            back = cls.from_pretrained(d)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001
        fail(f"save_pretrained 再 from_pretrained 出错了：{type(e).__name__}: {e}。config.json 里还有 model_type、"
             f"transformers_version 等键，from_pretrained 会把它们当关键字参数传回来：{_KWARGS_HINT}")
    for name in (*NON_DEFAULT, *EXTRA):
        if getattr(back, name, None) != getattr(full, name):
            tail = _KWARGS_HINT if name in EXTRA else "每个参数都要存成同名属性。"
            fail(f"save_pretrained 后再 from_pretrained，{name} 从 {getattr(full, name)!r} "
                 f"变成了 {getattr(back, name, None)!r}：{tail}")
    return ("默认值、intermediate_size 规则、YaRN 开关（副本、显式优先）、参数校验（边界值）、"
            "保存/加载（含额外关键字）：全部正确。")
