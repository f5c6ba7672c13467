"""What every export folder carries besides the weights: a complete ``generation_config.json`` and a
model card (``README.md``): what the model is, how it was trained (from the run's summary beside the
weights, when there is one), and how to use it from transformers, PEFT and llama.cpp — with the
chat template spelled out, since it differs from MiniMind2's (no default system line)."""
from __future__ import annotations

import json
from pathlib import Path

GENERATION = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False,
              "max_new_tokens": 128}


def write_generation_config(out: str | Path) -> Path:
    """generation_config.json with the pad token (transformers 4.x warns on every generate() without
    it), greedy decoding and the grader's answer length as defaults."""
    import transformers

    path = Path(out) / "generation_config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.update(GENERATION)
    data["transformers_version"] = transformers.__version__
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def _summary(weights: Path) -> dict:
    for name in (f"{weights.stem}_summary.json", "summary.json"):
        path = weights.with_name(name)
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                return {}
    return {}


def model_card(config, weights: str | Path, *, llama: bool, gguf: bool, lora: bool, dtype: str) -> str:
    """The README.md of an export folder (English, with the Chinese names where they help)."""
    weights = Path(weights)
    summary = _summary(weights)
    params = summary.get("params_M")
    trained = []
    if summary.get("steps"):
        trained.append(f"{summary['steps']:,} optimizer steps")
    if summary.get("seconds"):
        trained.append(f"{summary['seconds'] / 60:.1f} minutes")
    if summary.get("val_loss") is not None:
        trained.append(f"validation loss {summary['val_loss']}")
    load = ("AutoModelForCausalLM.from_pretrained(folder)" if llama
            else "AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)")
    tok = "AutoTokenizer.from_pretrained(folder)" if llama else \
        "AutoTokenizer.from_pretrained(folder, trust_remote_code=True)"
    kind = "a native `LlamaForCausalLM` (no remote code)" if llama else \
        "MiniMind with its modelling code (`trust_remote_code=True`)"
    lines = [
        f"# {weights.stem} — a MiniMind trained with the MiniMind Workbook", "",
        f"A small Chinese language model of the MiniMind2 architecture, written and trained by a learner of the "
        f"MiniMind Workbook, exported as {kind}, weights in {dtype}.", "",
        "| | |", "|---|---|",
        f"| hidden size / layers | {config.hidden_size} / {config.num_hidden_layers} |",
        f"| attention heads (q / kv) | {config.num_attention_heads} / {config.num_key_value_heads} |",
        f"| vocabulary | {config.vocab_size} (byte-level BPE) |",
        f"| RoPE base | {config.rope_theta:g} |",
        f"| mixture of experts | {'yes' if getattr(config, 'use_moe', False) else 'no'} |",
    ]
    if params:
        lines.append(f"| parameters | {params}M |")
    lines += [f"| trained from | `{weights.name}`" + (f": {', '.join(trained)}" if trained else "") + " |", ""]
    if summary.get("samples"):
        lines += ["Samples written at the end of training:", "", "```", *summary["samples"][:3], "```", ""]
    lines += [
        "## Chat template", "",
        "ChatML, exactly as the model was trained: `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then "
        "`<|im_start|>assistant\\n` to ask for an answer; generation ends at `<|im_end|>` (id 2). Unlike MiniMind2's "
        "own template, **no default system line** is added when the messages have none — add your own system message "
        "if you want one.", "",
        "## transformers", "", "```python",
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "folder = \"PATH/TO/THIS/FOLDER\"",
        f"model = {load}",
        f"tokenizer = {tok}",
        "messages = [{\"role\": \"user\", \"content\": \"写一首五言绝句，题目是《山中秋夜》。\"}]",
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
        "                                       return_dict=True)",
        "out = model.generate(**inputs, max_new_tokens=128)",
        "print(tokenizer.decode(out[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```", "",
    ]
    if lora:
        lines += ["## PEFT (the LoRA adapter in `adapter/`)", "", "```python", "from peft import PeftModel",
                  "model = PeftModel.from_pretrained(model, folder + \"/adapter\")  # r = lora_alpha = rank",
                  "merged = model.merge_and_unload()", "```", ""]
    if gguf:
        lines += ["## llama.cpp (`model.gguf`)", "", "```bash",
                  "llama-cli -m model.gguf -cnv   # the chat template and <|im_end|> are inside the file", "```", ""]
    lines += ["MiniMind (jingyaogong/minimind) is Apache-2.0; the workbook re-implements its architecture.", ""]
    return "\n".join(lines)


def write_model_card(out: str | Path, config, weights, **kw) -> Path:
    path = Path(out) / "README.md"
    path.write_text(model_card(config, weights, **kw), encoding="utf-8")
    return path
