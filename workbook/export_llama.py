"""A dense MiniMind as a native Hugging Face ``LlamaForCausalLM`` folder: no remote code.

MiniMind2's dense model *is* a Llama: pre-norm blocks of RMSNorm, bias-free GQA attention and a
SwiGLU MLP, RoPE in the half-split (rotate_half) layout, tied embeddings.  Its state-dict keys are
already Llama's (``model.layers.0.self_attn.q_proj.weight`` …), so the weights go across
unchanged; only config.json is translated.  The folder loads with plain ``AutoModelForCausalLM``,
``AutoTokenizer`` and ``pipeline`` in transformers 4.x and 5.x without ``trust_remote_code``; it
is the layout Llama tooling (vLLM, llama.cpp's converter) reads.

- RoPE is written twice: ``rope_parameters`` for transformers 5, and top-level ``rope_theta``
  (plus ``rope_scaling`` with YaRN) for 4.x, which ignores ``rope_parameters`` and would silently
  fall back to rope_theta = 10000.
- YaRN is written with ``attention_factor: 1.0``: MiniMind scales no attention temperature,
  while transformers' default (0.1·ln(factor) + 1) would multiply cos/sin.
- MiniMind only rescales RoPE when the table is longer than YaRN's original context
  (``max_position_embeddings > original_max_position_embeddings``); otherwise plain RoPE is written.
- Mixture-of-experts layers have no Llama counterpart: a MoE model is refused (NotALlama).

``export_llama`` checks the result before writing anything: the Llama's inverse frequencies and
its logits on a probe must equal the MiniMind model's.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

# <|endoftext|>: the tokenizer's pad (and unk) token, data/tokenizer (spec §3)
PAD_TOKEN_ID = 0
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# export_llama refuses when the Llama differs from MiniMind by more than this (fp32, relative)
INV_FREQ_RTOL = 1e-5
LOGITS_RTOL = 1e-4


class NotALlama(ValueError):
    """The model has no native Llama equivalent (MoE, an unknown RoPE scaling, …)."""


def yarn_applies(config) -> bool:
    """MiniMind's rule: YaRN only when the RoPE table outgrows the original context."""
    scaling = config.rope_scaling
    if not scaling:
        return False
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "yarn":
        raise NotALlama(f"rope_scaling 的类型是 {kind!r}：MiniMind 只有 YaRN (yarn)，不知道怎么换成 Llama 的配置。")
    return config.max_position_embeddings / scaling.get("original_max_position_embeddings", 2048) > 1.0


def rope_parameters(config) -> dict:
    """transformers-5 ``rope_parameters`` equal to MiniMind's RoPE (see rope.py's defaults)."""
    params = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    if yarn_applies(config):
        s = config.rope_scaling
        params = {"rope_type": "yarn", "rope_theta": float(config.rope_theta),
                  "factor": float(s.get("factor", 16)),
                  "original_max_position_embeddings": int(s.get("original_max_position_embeddings", 2048)),
                  "beta_fast": float(s.get("beta_fast", 32.0)),
                  "beta_slow": float(s.get("beta_slow", 1.0)),
                  # explicit: transformers would otherwise use 0.1·ln(factor) + 1 (1.277 for 16)
                  "attention_factor": float(s.get("attention_factor", 1.0))}
    return params


def llama_config(config, dtype: str = "float16") -> dict:
    """The config.json of the Llama folder, readable by transformers 4.x and 5.x alike."""
    if config.use_moe:
        raise NotALlama("Llama (LlamaForCausalLM) 没有混合专家 (MoE) 层，MoE 模型导出不成原生 Llama。"
                        "去掉 --llama：导出带模型代码 (remote code) 的目录，用 "
                        "AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True) 加载。")
    rope = rope_parameters(config)
    out = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.hidden_size // config.num_attention_heads,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": PAD_TOKEN_ID,
        # transformers 5
        "rope_parameters": rope,
        # transformers 4.x: top-level theta, and rope_scaling for YaRN
        "rope_theta": rope["rope_theta"],
        "dtype": dtype,
        "torch_dtype": dtype,  # the 4.x name of "dtype"
    }
    if rope["rope_type"] != "default":
        out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return out


def _inverse_frequencies(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """MiniMind's inv_freq_i, read back from its tables: the angle at position 1, (head_dim / 2,)."""
    half = cos.shape[-1] // 2
    return torch.atan2(sin[1, :half].double(), cos[1, :half].double())


def compare(model, llama, probe_len: int = 24) -> dict:
    """Figures that say whether `llama` computes what the MiniMind `model` computes (fp32).

    inv_freq_rtol: max relative difference of the RoPE inverse frequencies (MiniMind's read back
    from its cos/sin tables); logits_max_abs: on a seeded probe of `probe_len` tokens.
    """
    theirs = llama.model.rotary_emb.inv_freq.double()
    # a one-row table (max_position_embeddings = 1) has no angle to read: nothing to compare
    ours = (_inverse_frequencies(model.model.freqs_cos, model.model.freqs_sin)
            if model.model.freqs_cos.shape[0] > 1 else theirs)
    # transformers multiplies cos/sin by attention_scaling; MiniMind by rope_scaling's attention_factor
    scale = float(getattr(llama.model.rotary_emb, "attention_scaling", 1.0))
    expected = float((model.config.rope_scaling or {}).get("attention_factor", 1.0)) \
        if yarn_applies(model.config) else 1.0
    probe = torch.randint(0, model.config.vocab_size, (1, probe_len),
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(probe).logits.float()
        b = llama(probe).logits.float()
    return {"inv_freq_rtol": float(((theirs - ours).abs() / ours.abs()).max()),
            "attention_scaling": (scale, expected),
            "logits_max_abs": float((a - b).abs().max()),
            "logits_scale": float(a.abs().max())}


def to_llama(model, dtype: str = "float16"):
    """A transformers ``LlamaForCausalLM`` (fp32) holding `model`'s weights, and its config dict.

    Refuses (NotALlama) when the model has no Llama equivalent or when the Llama does not
    reproduce the model (see compare).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config_dict = llama_config(model.config, dtype)
    # a deep copy: LlamaConfig fills in the nested RoPE dicts it is given
    llama_cfg = LlamaConfig.from_dict(copy.deepcopy({k: v for k, v in config_dict.items()
                                                     if k not in ("dtype", "torch_dtype")}))
    llama = LlamaForCausalLM(llama_cfg).float().eval()
    state = {k: v.float() for k, v in model.state_dict().items()}
    mismatch = llama.load_state_dict(state, strict=False)
    if mismatch.missing_keys or mismatch.unexpected_keys:
        raise NotALlama(f"参数名和 LlamaForCausalLM 对不上：缺 {mismatch.missing_keys[:5]}，"
                        f"多 {mismatch.unexpected_keys[:5]}")
    model = model.float().eval()
    figures = compare(model, llama)
    scale, expected = figures["attention_scaling"]
    bad = []
    if figures["inv_freq_rtol"] > INV_FREQ_RTOL:
        bad.append(f"RoPE 逆频率 (inv_freq) 相对误差 {figures['inv_freq_rtol']:.2e}")
    if abs(scale - expected) > 1e-6:
        bad.append(f"cos/sin 的缩放 (attention_scaling) 是 {scale}，MiniMind 是 {expected}")
    if figures["logits_max_abs"] > LOGITS_RTOL * max(1.0, figures["logits_scale"]):
        bad.append(f"logits 最大差 {figures['logits_max_abs']:.2e}")
    if bad:
        raise NotALlama("换成 LlamaForCausalLM 后算出来的和你的模型不一样（"
                        + "；".join(bad) + "），没有导出。用不带 --llama 的导出 (remote code)。")
    return llama, config_dict, figures


def export_llama(model, out: str | Path, dtype: str = "float16") -> dict:
    """Write `model` (a dense MiniMindForCausalLM) to `out` as a Llama folder; returns the
    figures of the check (see compare).  The tokenizer is the caller's business."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype 只能是 {'/'.join(DTYPES)}，不是 {dtype!r}")
    import transformers

    out = Path(out)
    llama, config_dict, figures = to_llama(model, dtype)
    # what storing in `dtype` costs: the rounded weights, computed in fp32, against the model
    with torch.no_grad():
        for p in llama.parameters():
            p.copy_(p.to(DTYPES[dtype]).float())
    figures["stored_logits_max_abs"] = compare(model, llama)["logits_max_abs"]
    llama.to(DTYPES[dtype]).save_pretrained(out, safe_serialization=True)
    # save_pretrained writes transformers-5 RoPE only: replace its config.json with ours
    config_dict["transformers_version"] = transformers.__version__
    (out / "config.json").write_text(json.dumps(config_dict, ensure_ascii=False, indent=2) + "\n",
                                     encoding="utf-8")
    return figures
