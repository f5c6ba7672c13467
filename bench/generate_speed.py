"""Generation speed: workbook.model.generate against transformers' generate() on the same weights.

    WORKBOOK_IMPL=solutions python bench/generate_speed.py [--batch 16] [--new_tokens 64] [--threads 1]

The shipped SFT model (data/base/full_sft_320.pth) runs twice on the same prompts (the grader's
held-out requests, chat template applied) and the same CPU threads:
- **workbook**: ``workbook.model.generate.generate`` over the MiniMindForCausalLM of the current
  WORKBOOK_IMPL (left padding, MiniMind's list KV cache, finished rows dropped);
- **transformers**: ``LlamaForCausalLM.generate`` on the ``--llama`` export of the same weights
  (``python -m workbook export-hf … --llama``; written to a temporary folder and loaded back
  with ``AutoModelForCausalLM``), left padding with its attention mask, DynamicCache, SDPA.
Both write exactly ``--new_tokens`` tokens per prompt (eos is not allowed to stop a row, so the
token counts match), greedy and sampled (temperature 0.8, top-p 0.9), at batch 1 (the first
``--single`` prompts one by one) and at batch ``--batch``.  Each figure is the median of
``--repeats`` runs, the two implementations alternating, so both see the same machine load.
Printed: tokens/s of each and the ratio workbook / transformers (> 1: the workbook is faster),
and, for the last case, whether the greedy answers agree.  The last case is the eval's workload: greedy until
``<|im_end|>``, counting only the tokens up to each row's eos (the workbook drops a finished row;
transformers keeps computing it until the whole batch has stopped).  llama.cpp's figure is added where ``llama-bench`` is on
the PATH (it needs a GGUF conversion, not done here; the line says so).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "data" / "base" / "full_sft_320.pth"


def prompts_ids(tok, n: int) -> list[list[int]]:
    from workbook.eval.runner import load_prompts

    out = []
    for p in load_prompts(limit=n):
        text = tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
        out.append(tok(text, add_special_tokens=False)["input_ids"])
    return out


def run_workbook(model, prompts, new_tokens: int, sampled: bool, batch: int, seed: int,
                 eos: int = -1) -> list[list[int]]:
    from workbook.model.generate import Sampling, generate

    sampling = Sampling(temperature=0.8, top_p=0.9, seed=seed) if sampled else Sampling()
    # eos -1: no row stops early, every prompt gets new_tokens tokens (as min_new_tokens below)
    return generate(model, prompts, new_tokens, eos_token_id=eos, sampling=sampling, batch_size=batch,
                    num_threads=None)


def to_eos(row: list[int], eos: int) -> list[int]:
    return row[:row.index(eos) + 1] if eos in row else row


def useful(rows: list[list[int]], eos: int) -> int:
    """Tokens up to and including each row's first eos (what a caller keeps)."""
    return sum(r.index(eos) + 1 if eos in r else len(r) for r in rows)


def run_hf(llama, prompts, new_tokens: int, sampled: bool, batch: int, seed: int, pad_id: int,
           eos: int | None = None) -> list[list[int]]:
    out = []
    torch.manual_seed(seed)
    for k in range(0, len(prompts), batch):
        rows = prompts[k:k + batch]
        width = max(map(len, rows))
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        kw = dict(do_sample=True, temperature=0.8, top_p=0.9, top_k=0) if sampled else dict(do_sample=False)
        kw.update(eos_token_id=eos) if eos is not None else kw.update(min_new_tokens=new_tokens)
        with torch.no_grad():
            y = llama.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                               pad_token_id=pad_id, **kw)
        out.extend(y[:, width:].tolist())
    return out


def timed(fn) -> tuple[float, list]:
    start = time.perf_counter()
    res = fn()
    return time.perf_counter() - start, res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--batch", type=int, default=16, help="batch N (N prompts per call)")
    ap.add_argument("--single", type=int, default=4, help="prompts run one by one for batch 1")
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    for flag in ("batch", "single", "new_tokens", "threads", "repeats"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} {getattr(args, flag)}: must be >= 1")

    from transformers import AutoModelForCausalLM

    from workbook.eval.runner import load_model, load_tokenizer
    from workbook.export_llama import export_llama

    torch.set_num_threads(args.threads)
    tok = load_tokenizer()
    model, _ = load_model(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        export_llama(model, tmp, dtype="float32")
        llama = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    model = model.float().eval()
    prompts = prompts_ids(tok, max(args.batch, args.single))
    pad = tok.pad_token_id or 0

    rows = []
    for label, batch, ps in (("batch 1", 1, prompts[:args.single]), (f"batch {args.batch}", args.batch, prompts[:args.batch])):
        for sampled in (False, True):
            wb_t, hf_t = [], []
            for r in range(args.repeats):
                t, wb_out = timed(lambda: run_workbook(model, ps, args.new_tokens, sampled, batch, r))
                wb_t.append(t)
                t, hf_out = timed(lambda: run_hf(llama, ps, args.new_tokens, sampled, batch, r, pad))
                hf_t.append(t)
            n_tok = len(ps) * args.new_tokens
            assert all(len(x) == args.new_tokens for x in wb_out) and all(len(x) == args.new_tokens for x in hf_out)
            mode = "sampled" if sampled else "greedy"
            wb_s, hf_s = n_tok / statistics.median(wb_t), n_tok / statistics.median(hf_t)
            rows.append({"case": f"{mode}, {label}", "tokens": n_tok, "workbook_tok_s": round(wb_s, 1),
                         "transformers_tok_s": round(hf_s, 1), "ratio": round(wb_s / hf_s, 2)})
            print(f"{mode + ', ' + label:<22} workbook {wb_s:8.1f} tok/s   transformers {hf_s:8.1f} tok/s   "
                  f"ratio {wb_s / hf_s:5.2f}x", flush=True)
    # the eval's workload: greedy until <|im_end|> (at most 2 × new_tokens); a row that stopped
    # costs the workbook nothing more, transformers keeps it in the batch until all have stopped
    eos, wb_t, hf_t = tok.eos_token_id, [], []
    ps = prompts[:args.batch]
    for r in range(args.repeats):
        t, wb_out = timed(lambda: run_workbook(model, ps, 2 * args.new_tokens, False, args.batch, r, eos))
        wb_t.append(t)
        t, hf_out = timed(lambda: run_hf(llama, ps, 2 * args.new_tokens, False, args.batch, r, pad, eos))
        hf_t.append(t)
    wb_s, hf_s = useful(wb_out, eos) / statistics.median(wb_t), useful(hf_out, eos) / statistics.median(hf_t)
    label = f"greedy to eos, batch {args.batch}"
    rows.append({"case": label, "tokens": useful(wb_out, eos), "tokens_transformers": useful(hf_out, eos),
                 "workbook_tok_s": round(wb_s, 1), "transformers_tok_s": round(hf_s, 1), "ratio": round(wb_s / hf_s, 2)})
    print(f"{label:<22} workbook {wb_s:8.1f} tok/s   transformers {hf_s:8.1f} tok/s   ratio {wb_s / hf_s:5.2f}x"
          f"   (useful tokens, up to each row's eos: {useful(wb_out, eos)} / {useful(hf_out, eos)})", flush=True)
    # (the fixed-length cases cannot be compared token for token: transformers' min_new_tokens
    # forbids eos, so after a row's first eos the two continue differently)
    agree = sum(to_eos(a, eos) == to_eos(b, eos) for a, b in zip(wb_out, hf_out)) / len(ps)
    print(f"greedy answers (up to eos) identical to transformers', batch {args.batch}: {agree:.0%} of prompts")
    llama_cpp = shutil.which("llama-bench")
    print(f"llama.cpp: {'llama-bench at ' + llama_cpp + ' (GGUF conversion not done here)' if llama_cpp else 'not installed on this machine'}")
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None
    weights = Path(args.weights).resolve()
    # a path inside the repository is recorded relative to it (the report is committed)
    shown = str(weights.relative_to(ROOT)) if weights.is_relative_to(ROOT) else str(weights)
    report = {"settings": {**vars(args), "weights": shown, "torch": torch.__version__, "machine": platform.machine(),
                           "cpus": __import__("os").cpu_count(), "loadavg_at_end": load},
              "rows": rows, "greedy_agreement": agree, "llama_cpp": llama_cpp}
    print(f"load average at the end: {load}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
