"""Run every eval prompt through a model and grade the answers: :func:`evaluate`.

Each prompt's messages are rendered with the tokenizer's own chat template plus the generation
prompt ``<|im_start|>assistant\\n`` and continued greedily (deterministic) until ``<|im_end|>`` or
``max_new_tokens`` by :func:`workbook.model.generate.generate`: batched, left-padded, KV-cached
decoding over MiniMind's forward (it needs only the forward, not ``generate()``).  A batched run
gives the answers of a one-by-one run: the padding is masked, RoPE scores depend only on
relative positions, and finished rows leave the batch (``tests/test_generate.py`` checks it
token for token on the 120 held-out requests with the shipped model).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .grader import grade_answer
from .tasks import CHECKS, METRICS, TASKS

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROMPTS = ROOT / "data" / "sft_eval_prompts.jsonl"
DEFAULT_TOKENIZER = ROOT / "data" / "tokenizer"
# The longest reference answer of the shipped prompts is 88 tokens with its <|im_end|> (a ci):
# 128 leaves room for a correct answer and bounds a runaway one.
DEFAULT_MAX_NEW_TOKENS = 128
SAMPLING = {"temperature": 0.8, "top_p": 0.9}  # greedy=False: as the pretrain samples


def load_prompts(path: str | Path = DEFAULT_PROMPTS, limit: int | None = None) -> list[dict]:
    """The prompt records of ``sft_eval_prompts.jsonl`` (the first `limit` of them).

    DataError ("file:line: …") for a line that is not a prompt record: malformed JSON, an unknown
    "task", "messages" that are not a valid chat ending with a user message, or no "form" where
    the task is graded on it.
    """
    from workbook.data.validate import DataError, decode_json_line, read_jsonl_lines

    records = []
    for lineno, raw in read_jsonl_lines(path):
        if not raw.strip():
            continue
        rec = decode_json_line(raw, path, lineno)
        if not isinstance(rec, dict) or rec.get("task") not in TASKS:
            task = rec.get("task") if isinstance(rec, dict) else None
            raise DataError(path, f'"task" 是 {task!r}，不是 {", ".join(TASKS)} 之一 (unknown task)', lineno)
        msgs = rec.get("messages")
        if (not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs)
                or msgs[-1].get("role") != "user"):
            raise DataError(path, '"messages" 应该是一串 {"role", "content"}，最后一条是 user 的提问', lineno)
        if "form" in CHECKS[rec["task"]] and (not isinstance(rec.get("form"), dict)
                                             or not isinstance(rec["form"].get("pattern"), list)):
            raise DataError(path, '缺少 "form" (missing form)：{"name", "pattern", ...}', lineno)
        rec.setdefault("id", f"{rec['task']}-{lineno}")
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise DataError(path, "没有提示 (no prompts)")
    return records


def generate_answers(model, tokenizer, prompts: list[dict], device="cpu",
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, greedy: bool = True,
                     batch_size: int = 16, seed: int = 0, progress=None,
                     num_threads: int | None = 1) -> list[dict]:
    """[{"answer": str, "stopped": bool, "new_tokens": int}] for each prompt, in order.

    stopped: the model wrote ``<|im_end|>`` (eos) within max_new_tokens; the answer is the text
    before it, special tokens removed.  Sampling (greedy=False, SAMPLING's temperature and top-p)
    draws with one generator per prompt seeded from (`seed`, prompt index): the answers do not
    depend on batch_size, and the global RNG is not touched.
    """
    from workbook.model.generate import Sampling, generate
    from workbook.train.checkpoint import unwrap

    eos = tokenizer.eos_token_id
    texts = [tokenizer.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    sampling = Sampling() if greedy else Sampling(temperature=SAMPLING["temperature"],
                                                  top_p=SAMPLING["top_p"], seed=seed)
    rows = generate(unwrap(model), ids, max_new_tokens, eos, pad_token_id=tokenizer.pad_token_id or 0,
                    sampling=sampling, batch_size=batch_size, device=device, progress=progress,
                    num_threads=num_threads)
    out = []
    for row in rows:
        stopped = bool(row) and row[-1] == eos
        out.append({"answer": tokenizer.decode(row[:-1] if stopped else row, skip_special_tokens=True),
                    "stopped": stopped, "new_tokens": len(row)})
    return out


def rates(graded: list[dict]) -> dict:
    """Per task and overall: n and the share of True for each metric (None: not graded on it)."""
    def summarise(rows: list[dict]) -> dict:
        out: dict = {"n": len(rows)}
        for metric in METRICS:
            values = [r[metric] for r in rows if r.get(metric) is not None]
            out[metric] = sum(map(bool, values)) / len(values) if values else None
        return out

    tasks = {t: summarise([g for g in graded if g["task"] == t]) for t in TASKS
             if any(g["task"] == t for g in graded)}
    return {"tasks": tasks, "overall": summarise(graded)}


def evaluate(model, tokenizer, prompts: list[dict], device="cpu",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, greedy: bool = True,
             batch_size: int = 16, progress=None, num_threads: int | None = 1) -> dict:
    """Answer and grade every prompt; returns the report.

    Args:
        model: a MiniMindForCausalLM (any mode), on `device`.
        tokenizer: the shipped tokenizer (``AutoTokenizer.from_pretrained("data/tokenizer")``).
        prompts: records of ``sft_eval_prompts.jsonl`` (:func:`load_prompts`).
        greedy: True (default) = argmax decoding, the same answers on every run.
        num_threads: torch threads while generating on CPU (workbook.model.generate: 1 is fastest).
    Returns: ``{"settings": {...}, "tasks": {task: {"n", "pass", "form", "title", "correct",
        "stopped"}}, "overall": {...}, "answers": [{"id", "task", "request", "answer", "stopped",
        "new_tokens", "scores"}]}`` — rates in [0, 1], None where a task is not graded on a metric.
    """
    start = time.perf_counter()
    answers = generate_answers(model, tokenizer, prompts, device, max_new_tokens, greedy,
                               batch_size, progress=progress, num_threads=num_threads)
    rows, graded = [], []
    for p, a in zip(prompts, answers):
        scores = grade_answer(p["task"], p, a["answer"], a["stopped"])
        graded.append(scores)
        rows.append({"id": p.get("id"), "task": p["task"], "request": p["messages"][-1]["content"], **a,
                     "scores": scores})
    report = {"settings": {"prompts": len(prompts), "max_new_tokens": max_new_tokens,
                           "greedy": greedy, "batch_size": batch_size,
                           "seconds": round(time.perf_counter() - start, 2)},
              **rates(graded), "answers": rows}
    return report


def load_model(weights: str | Path, device="cpu", lora: str | Path | None = None, shape: dict | None = None):
    """A MiniMindForCausalLM of the current WORKBOOK_IMPL with `weights` loaded (eval mode).

    The shape comes from ``{weights stem}_config.json`` beside the weights (the trainers write
    it); without that file, from the weights' own shapes (``train/shapes.py``); `shape` (flags,
    None = not given) overrides either.  `lora`: an adapter file of
    ``python -m workbook.train.lora`` to attach with stage 15's apply_lora / load_lora (its rank is
    read from the file).  Returns (model, config path or None).
    """
    from workbook.config import MiniMindConfig
    from workbook.model.causal_lm import MiniMindForCausalLM
    from workbook.train.checkpoint import load_weights, model_config_kwargs

    kwargs, config_path = model_config_kwargs(weights, shape, infer=True)
    model = MiniMindForCausalLM(MiniMindConfig(**kwargs))
    load_weights(model, weights)
    if lora is not None:
        attach_lora(model, lora, weights)
    return model.to(device).eval(), config_path


def attach_lora(model, lora: str | Path, weights: str | Path = "") -> None:
    """Stage 15's apply_lora (at the adapter file's rank) and load_lora; ValueError, naming the
    file, for a missing file, a file that is not an adapter, or an adapter of another model."""
    import torch

    from workbook.model.lora import apply_lora, load_lora
    from workbook.train.checkpoint import safe_load

    lora = Path(lora)
    if not lora.is_file():
        raise ValueError(f"--lora：找不到 LoRA 适配器 (adapter) {lora}：python -m workbook.train.lora 把它存成 "
                         "{save_dir}/{lora_name}_{hidden}.pth，例如 out/lora/lora_identity_320.pth")
    adapter = safe_load(lora, "LoRA 适配器")
    a_weights = ({k: v for k, v in adapter.items() if isinstance(v, torch.Tensor) and k.endswith(".A.weight")}
                 if isinstance(adapter, dict) else {})
    ranks = {v.shape[0] for v in a_weights.values()}
    if len(ranks) != 1:
        keys = sorted(adapter)[:3] if isinstance(adapter, dict) else type(adapter).__name__
        raise ValueError(f"--lora {lora} 不像 LoRA 适配器文件：找不到统一秩的 *.lora.A.weight（{keys}）")
    hidden = model.config.hidden_size
    widths = {v.shape[1] for v in a_weights.values()}
    if widths != {hidden}:
        raise ValueError(f"--lora {lora} 是给 {'/'.join(map(str, sorted(widths)))} 宽的模型训练的，"
                         f"而 {weights or '这个模型'} 是 {hidden} 宽：适配器只能装在训练它时的那个基座模型上。")
    apply_lora(model, rank=ranks.pop())
    try:
        load_lora(model, lora)
    except (RuntimeError, KeyError) as e:  # a learner's load_lora may raise these on a mismatch
        raise ValueError(f"--lora {lora} 装不上 {weights or '这个模型'}：{str(e).splitlines()[0][:300]}") from None


def load_tokenizer(path: str | Path = DEFAULT_TOKENIZER):
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"找不到分词器目录 (tokenizer) {path}")
    return AutoTokenizer.from_pretrained(str(path))


def evaluate_weights(weights: str | Path, prompts: str | Path | list[dict] = DEFAULT_PROMPTS,
                     limit: int | None = None, device="cpu", tokenizer=None,
                     json_path: str | Path | None = None, **kwargs) -> dict:
    """The notebook entry point: load `weights`, evaluate, optionally write the JSON report.

    ``wb_eval.evaluate_weights("out/full_sft_512.pth", limit=30)`` — kwargs go to :func:`evaluate`.
    """
    records = load_prompts(prompts, limit) if isinstance(prompts, (str, Path)) else list(prompts)[:limit]
    model, config_path = load_model(weights, device)
    report = evaluate(model, tokenizer or load_tokenizer(), records, device, **kwargs)
    report["settings"].update(weights=str(weights), config=str(config_path) if config_path else None)
    if json_path is not None:
        write_report(report, json_path)
    return report


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


__all__ = ["evaluate", "evaluate_weights", "generate_answers", "load_prompts", "load_model",
           "load_tokenizer", "rates", "write_report", "DEFAULT_PROMPTS", "DEFAULT_MAX_NEW_TOKENS"]
