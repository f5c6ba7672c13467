"""A model's shape, read off its weights: for checkpoints that come without a ``*_config.json``.

The trainers write ``{weights stem}_config.json`` beside every ``.pth``; MiniMind2's own releases
and trainers do not.  What the tensors determine is taken from them::

    model.embed_tokens.weight        (vocab_size, hidden_size)
    model.layers.{i}.…               num_hidden_layers = 1 + the largest i
    mlp.gate_proj.weight             (intermediate_size, hidden_size)          dense
    mlp.experts.{e}.gate_proj.weight  n_routed_experts = 1 + the largest e     MoE (use_moe)
    mlp.shared_experts.{s}.…         n_shared_experts

The number of attention heads is not in the weights (q_proj is hidden × hidden whatever the head
count): it is MiniMind's default (8) unless ``--num_attention_heads`` says otherwise, and the
key/value heads follow from k_proj's rows: ``num_key_value_heads = rows / (hidden / heads)``.
RoPE's base and the context length are not in the weights either: the defaults, or the flags.
"""
from __future__ import annotations

import re

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_EXPERT = re.compile(r"^model\.layers\.0\.mlp\.experts\.(\d+)\.")
_SHARED = re.compile(r"^model\.layers\.0\.mlp\.shared_experts\.(\d+)\.")
DEFAULT_HEADS = 8  # MiniMindConfig's num_attention_heads


class ShapeError(ValueError):
    """The weights do not describe a MiniMind, or the given head count does not fit them."""


def _strip(name: str) -> str:
    while name.startswith(("module.", "_orig_mod.")):
        name = name.split(".", 1)[1]
    return name


def infer_config_kwargs(state: dict, num_attention_heads: int | None = None) -> dict:
    """MiniMindConfig fields that `state` (a MiniMind state dict) determines, plus the head counts."""
    state = {_strip(k): v for k, v in state.items()}
    embed = state.get("model.embed_tokens.weight")
    if embed is None or embed.dim() != 2:
        raise ShapeError("权重里没有 model.embed_tokens.weight：这不像 MiniMind 的权重")
    vocab, hidden = embed.shape
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    if not layers:
        raise ShapeError("权重里没有 model.layers.N.…：这不像 MiniMind 的权重")
    kwargs = {"vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": max(layers) + 1}
    experts = {int(m.group(1)) for k in state if (m := _EXPERT.match(k))}
    if experts:
        shared = {int(m.group(1)) for k in state if (m := _SHARED.match(k))}
        kwargs.update(use_moe=True, n_routed_experts=max(experts) + 1, n_shared_experts=len(shared),
                      intermediate_size=int(state["model.layers.0.mlp.experts.0.gate_proj.weight"].shape[0]))
    else:
        gate = state.get("model.layers.0.mlp.gate_proj.weight")
        if gate is None:
            raise ShapeError("权重里没有 model.layers.0.mlp.gate_proj.weight，也没有 MoE 的 experts")
        kwargs.update(use_moe=False, intermediate_size=int(gate.shape[0]))
    heads = num_attention_heads or DEFAULT_HEADS
    if hidden % heads:
        raise ShapeError(f"hidden_size {hidden} 不能被注意力头数 {heads} 整除：用 --num_attention_heads 给出正确的头数")
    k_rows = int(state["model.layers.0.self_attn.k_proj.weight"].shape[0])
    head_dim = hidden // heads
    if k_rows % head_dim:
        raise ShapeError(f"k_proj 有 {k_rows} 行，不是 head_dim {head_dim}（hidden {hidden} / {heads} 个头）的整数倍："
                         f"用 --num_attention_heads 给出正确的头数")
    kwargs.update(num_attention_heads=heads, num_key_value_heads=k_rows // head_dim)
    return kwargs


def describe(kwargs: dict, heads_given: bool) -> str:
    """One line for the user: what was read off the weights, and what was assumed."""
    moe = f"，MoE {kwargs['n_routed_experts']} 个专家 + {kwargs['n_shared_experts']} 个共享" if kwargs.get("use_moe") else ""
    heads = "" if heads_given else f"（注意力头数权重里看不出来，用默认的 {DEFAULT_HEADS}；不对就加 --num_attention_heads）"
    return (f"没有 *_config.json：形状取自权重——hidden {kwargs['hidden_size']}、{kwargs['num_hidden_layers']} 层、"
            f"词表 {kwargs['vocab_size']}、FFN {kwargs['intermediate_size']}{moe}、"
            f"{kwargs['num_attention_heads']} 个 q 头 / {kwargs['num_key_value_heads']} 个 kv 头{heads}")


SHAPE_FLAGS = (("hidden_size", int), ("num_hidden_layers", int), ("num_attention_heads", int),
               ("num_key_value_heads", int), ("vocab_size", int), ("intermediate_size", int),
               ("rope_theta", float), ("max_position_embeddings", int))


def add_shape_arguments(p) -> None:
    """The shape flags of eval, chat and serve: each overrides the config JSON (or what the weights say)."""
    for flag, kind in SHAPE_FLAGS:
        p.add_argument(f"--{flag}", type=kind, default=None,
                       help="不给时用权重旁边的 *_config.json；没有它时从权重的形状推出来（注意力头数默认 8）")
    p.add_argument("--use_moe", type=int, default=None, choices=[0, 1], help="1 = 混合专家 (MoE) 模型")


def shape_overrides(args) -> dict:
    given = {flag: getattr(args, flag, None) for flag, _ in SHAPE_FLAGS}
    given["use_moe"] = None if getattr(args, "use_moe", None) is None else bool(args.use_moe)
    return given
