"""``export-hf WEIGHTS OUT --lora ADAPTER``: a LoRA adapter as a Hugging Face PEFT folder.

The workbook's LoRA (stage 15, MiniMind's) is PEFT's LoRA with ``lora_alpha = r``: PEFT scales the
update by alpha / r, and MiniMind does not scale at all, so alpha = r makes the two the same.  Only
the names differ::

    model.layers.0.self_attn.q_proj.lora.A.weight  ->  base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
    model.layers.0.self_attn.q_proj.lora.B.weight  ->  base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight

The folder (``adapter_config.json`` + ``adapter_model.safetensors``) loads with
``PeftModel.from_pretrained(base, folder)`` on the exported base (``--llama`` or remote code), and
from there into TRL, ``merge_and_unload`` or llama.cpp's ``convert_lora_to_gguf.py``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

_KEY = re.compile(r"^(?P<module>.+)\.lora\.(?P<part>[AB])\.weight$")
ADAPTER_DIR = "adapter"


class AdapterError(ValueError):
    """The file is not a LoRA adapter of these weights; the message says why."""


def _load(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AdapterError(f"--lora {path}：文件不存在") from None
    except Exception as e:  # a pickle that is not plain tensors, a truncated file
        raise AdapterError(f"--lora {path}：读不了（{type(e).__name__}: {e}）") from None
    if not isinstance(state, dict) or not state:
        raise AdapterError(f"--lora {path}：不是 LoRA 适配器（应当是 {{名字: 张量}} 的字典）")
    return state


def peft_adapter(adapter: str | Path, base_keys: set[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config, PEFT-named tensors) for the workbook adapter file `adapter`, checked
    against the base weights' keys `base_keys` (every adapted module must exist in the base)."""
    state = _load(adapter)
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name = key
        while name.startswith(("module.", "_orig_mod.")):
            name = name.split(".", 1)[1]
        m = _KEY.match(name)
        if m is None:
            raise AdapterError(f"--lora {adapter}：{key} 不是 LoRA 的键（应当形如 model.layers.0.self_attn."
                               f"q_proj.lora.A.weight）；这像是整份模型权重，不是 save_lora 存的适配器")
        modules.setdefault(m.group("module"), {})[m.group("part")] = tensor
    ranks = set()
    for module, parts in modules.items():
        if set(parts) != {"A", "B"}:
            raise AdapterError(f"--lora {adapter}：{module} 只有 {'、'.join(sorted(parts))}，A 和 B 要成对")
        if f"{module}.weight" not in base_keys:
            raise AdapterError(f"--lora {adapter}：基座模型里没有 {module}（适配器是给另一个模型训练的？）")
        ranks.add(parts["A"].shape[0])
    if len(ranks) != 1:
        raise AdapterError(f"--lora {adapter}：各层的秩 (rank) 不一样：{sorted(ranks)}")
    rank = ranks.pop()
    suffixes = sorted({m.rsplit(".", 1)[-1] for m in modules})
    # the suffix names when they cover exactly the adapted modules (MiniMind: every square linear)
    covered = {k[:-len(".weight")] for k in base_keys
               if k.endswith(".weight") and k[:-len(".weight")].rsplit(".", 1)[-1] in suffixes}
    targets = suffixes if covered == set(modules) else sorted(modules)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "target_modules": targets, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
        "inference_mode": True, "base_model_name_or_path": None,
    }
    tensors = {}
    for module, parts in sorted(modules.items()):
        tensors[f"base_model.model.{module}.lora_A.weight"] = parts["A"].contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = parts["B"].contiguous()
    return config, tensors


def export_peft(adapter: str | Path, out: str | Path, base_keys: set[str], base_path: str | None = None) -> Path:
    """Write the PEFT folder for `adapter` to `out` (created); returns it."""
    from safetensors.torch import save_file

    config, tensors = peft_adapter(adapter, base_keys)
    config["base_model_name_or_path"] = base_path
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                             encoding="utf-8")
    return out
