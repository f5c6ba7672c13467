"""``export-hf WEIGHTS OUT --gguf``: one GGUF file for llama.cpp (``OUT/model.gguf``).

A dense MiniMind is a Llama, so the file declares the ``llama`` architecture and carries:

- the weights under llama.cpp's tensor names (``gguf.TensorNameMap`` maps the Hugging Face names:
  ``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``), 2-D matrices in the
  chosen dtype, norms in fp32.  ``q_proj`` and ``k_proj`` are permuted: MiniMind (like HF Llama)
  rotates the two *halves* of each head (rotate_half), llama.cpp's ``llama`` rotates adjacent
  *pairs*; reordering each head's rows from [half 1, half 2] to interleaved pairs makes the two
  rotations the same computation (llama.cpp's own converter does this);
- the tokenizer: byte-level BPE with GPT-2's pre-tokenizer regex (``tokenizer.ggml.model =
  gpt2``, ``pre = gpt-2``), every token and merge, the three special tokens as control tokens,
  no automatic BOS (MiniMind adds none), and the ChatML chat template;
- the shape and RoPE (``rope.freq_base``; YaRN is not written yet and is refused).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

GGUF_DTYPES = {"float16": np.float16, "float32": np.float32}


class NotForGGUF(ValueError):
    """This model or setting has no GGUF export (yet); the message says why."""


def permute_rotary(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a q/k projection (n_head·head_dim, in), each head's [half 1; half 2] reordered into
    interleaved pairs: rotate_half's layout -> llama.cpp's (GPT-J style) one."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def tokenizer_tables(tokenizer_dir: str | Path) -> dict:
    """tokens (by id), token types, merges, special ids and chat template of the shipped tokenizer."""
    import gguf

    spec = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((Path(tokenizer_dir) / "tokenizer_config.json").read_text(encoding="utf-8"))
    model = spec["model"]
    if model.get("type") != "BPE" or spec.get("pre_tokenizer", {}).get("type") != "ByteLevel":
        raise NotForGGUF("只支持 byte-level BPE 分词器（MiniMind 的）")
    vocab = dict(model["vocab"])
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [None] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    if any(t is None for t in tokens):
        raise NotForGGUF("分词器的 id 不连续")
    special = {a["id"] for a in spec.get("added_tokens", []) if a.get("special")}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    ids = {name: vocab[config[name]] for name in ("bos_token", "eos_token", "pad_token") if config.get(name)}
    return {"tokens": tokens, "types": types, "merges": merges, "ids": ids,
            "chat_template": config.get("chat_template")}


def check_gguf(config, dtype: str) -> None:
    """Raise NotForGGUF when `config` or `dtype` has no GGUF export (called before anything is written)."""
    if getattr(config, "use_moe", False):
        raise NotForGGUF("MoE 模型没有对应的 llama.cpp 架构，--gguf 只导出稠密模型")
    if getattr(config, "rope_scaling", None):
        raise NotForGGUF("--gguf 还不写 YaRN (inference_rope_scaling)：去掉它再导出")
    if dtype not in GGUF_DTYPES:
        raise NotForGGUF(f"--gguf 只支持 --dtype float16 或 float32，不是 {dtype}")


def export_gguf(model, path: str | Path, tokenizer_dir: str | Path, dtype: str = "float16") -> Path:
    """Write `model` (a dense MiniMindForCausalLM) and the tokenizer to one GGUF file."""
    import gguf

    config = model.config
    check_gguf(config, dtype)
    path = Path(path)
    tables = tokenizer_tables(tokenizer_dir)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("MiniMind (MiniMind Workbook)")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "float16" else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tables["tokens"])
    writer.add_token_types(tables["types"])
    writer.add_token_merges(tables["merges"])
    if "bos_token" in tables["ids"]:
        writer.add_bos_token_id(tables["ids"]["bos_token"])
    if "eos_token" in tables["ids"]:
        writer.add_eos_token_id(tables["ids"]["eos_token"])
    if "pad_token" in tables["ids"]:
        writer.add_pad_token_id(tables["ids"]["pad_token"])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if tables["chat_template"]:
        writer.add_chat_template(tables["chat_template"])
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise NotForGGUF(f"{key} 没有对应的 llama.cpp 张量名")
        data = tensor.detach().float()
        if key.endswith("self_attn.q_proj.weight"):
            data = permute_rotary(data, n_head)
        elif key.endswith("self_attn.k_proj.weight"):
            data = permute_rotary(data, n_kv)
        array = data.numpy().astype(GGUF_DTYPES[dtype] if data.dim() == 2 else np.float32)
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
