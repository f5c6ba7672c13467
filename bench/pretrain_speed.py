"""Pretraining throughput: tokens/s and MFU of the eager path and the fast path, in one run.

    python bench/pretrain_speed.py                      # on a GPU: every case below
    python bench/pretrain_speed.py --smoke              # tiny config on the CPU: checks it runs

Cases (26M = MiniMind2-Small: hidden 512, 8 layers; seq 512, bf16 autocast):
  eager-b32       MiniMind-style: padded jsonl batches, AdamW (foreach), no compile, routed MoE
  fast-b32        packed .bin + pinned memory + non_blocking, fused AdamW, torch.compile,
                  SDPA flash attention, no per-step host sync (and dense MoE for the MoE config)
  fast-bBEST      the fast path at the largest batch in --best_batches that fits
  moe-eager-b32   MiniMind2-MoE (hidden 640, 8 layers, 4 routed + 1 shared, top-2), eager
  moe-fast-b32    the same, fast path
Tokens/s counts every position of every batch (batch x seq), the usual throughput figure.
MFU = tokens/s x FLOPs per token / peak: FLOPs per token = 6 x (matmul parameters active per
token, lm_head included) + 12 x layers x hidden x seq (attention scores and values).
Results go to stdout and, with --out, to a JSON file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WORKBOOK_IMPL", "solutions")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

torch.set_float32_matmul_precision("high")  # TF32 for whatever runs outside autocast
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0, "3090": 71.0}


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def flops_per_token(model, config, seq: int) -> float:
    """6 x active matmul parameters (+ lm_head) + 12 x L x H x S."""
    from workbook.train.checkpoint import unwrap

    m = unwrap(model)
    n = 0
    for name, p in m.named_parameters():
        if p.dim() < 2 or "embed_tokens" in name:
            continue  # norms, and the embedding lookup (its matrix is counted as lm_head)
        if ".experts." in name:
            n += p.numel() * config.num_experts_per_tok / config.n_routed_experts  # only k experts per token
        elif name.endswith("gate.weight") and ".mlp." in name and p.shape[0] == config.n_routed_experts:
            n += p.numel()
        else:
            n += p.numel()
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq


def build(config_kwargs: dict, device, *, compile_: bool, fused: bool, dense_moe: bool, lr=5e-4,
          compile_mode: str = "default"):
    from workbook.config import MiniMindConfig
    from workbook.model.causal_lm import MiniMindForCausalLM
    from workbook.train.fast import enable_dense_moe, make_optimizer

    config = MiniMindConfig(**config_kwargs)
    torch.manual_seed(0)
    model = MiniMindForCausalLM(config).to(device)
    model.train()
    opt = make_optimizer(model, lr, fused=fused)
    if dense_moe:
        enable_dense_moe(model)
    if compile_:
        torch._dynamo.reset()
        model = torch.compile(model, mode=compile_mode)
    return config, model, opt


def loader_for(kind: str, tokenizer, seq: int, batch: int, device, data: dict):
    if kind == "padded":
        from workbook.data.dataset import PretrainDataset
        ds = PretrainDataset(data["jsonl"], tokenizer, seq)
        pin = False
    else:
        from workbook.data.packed import PackedDataset
        ds = PackedDataset(data["bin"], seq)
        pin = device.type == "cuda"
    sampler = RandomSampler(ds, replacement=True, num_samples=10 ** 7,
                            generator=torch.Generator().manual_seed(0))
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=data["workers"],
                      pin_memory=pin, drop_last=True, persistent_workers=data["workers"] > 0)


def run_case(name, config_kwargs, *, batch, seq, steps, warmup, device, fast, data, tokenizer, peak,
             compile_=True, compile_mode="default"):
    from workbook.train.loop import autocast_context

    config, model, opt = build(config_kwargs, device, compile_=fast and compile_, fused=fast and device.type == "cuda",
                               dense_moe=fast and config_kwargs.get("use_moe", False), compile_mode=compile_mode)
    loader = iter(loader_for("packed" if fast else "padded", tokenizer, seq, batch, device, data))
    ctx = autocast_context(device.type, "bfloat16")
    nb = fast and device.type == "cuda"

    def step():
        x, y = next(loader)
        x, y = x.to(device, non_blocking=nb), y.to(device, non_blocking=nb)
        with ctx:
            out = model(x, labels=y)
            loss = out.loss + out.aux_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_compile = time.perf_counter()
    for _ in range(warmup):
        loss = step()
    sync(device)
    t_compile = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    dt = time.perf_counter() - t0
    tok_s = batch * seq * steps / dt
    fpt = flops_per_token(model, config, seq)
    res = {"case": name, "compile_mode": compile_mode if fast and compile_ else None, "batch": batch, "seq": seq, "tokens_per_s": round(tok_s), "step_ms": round(1000 * dt / steps, 2),
           "loss": round(float(loss.detach()), 4), "warmup_s": round(t_compile, 1),
           "gflops_per_token": round(fpt / 1e9, 4),
           "mfu": round(tok_s * fpt / peak, 4) if peak else None,
           "max_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None}
    print(json.dumps(res), flush=True)
    del model, opt, loader
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return res


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--best_batches", default="64,128,256")
    p.add_argument("--cases", default="eager-b32,fast-b32,moe-eager-b32,moe-fast-b32,fast-best,fast-cg-b32")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--peak_tflops", type=float, default=None, help="bf16 peak of the card, if not known")
    p.add_argument("--smoke", action="store_true", help="tiny config, CPU-sized, no compile")
    p.add_argument("--out", default=None)
    p.add_argument("--time_budget", type=float, default=1e9, help="skip the remaining cases after this many seconds")
    a = p.parse_args()

    from transformers import AutoTokenizer

    device = torch.device(a.device)
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "data" / "tokenizer")
    dense = dict(hidden_size=512, num_hidden_layers=8)
    moe = dict(hidden_size=640, num_hidden_layers=8, use_moe=True)
    batch, seq, steps, warmup, compile_ = 32, a.seq, a.steps, a.warmup, True
    best = [int(b) for b in a.best_batches.split(",") if b]
    if a.smoke:
        dense = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        moe = dict(dense, use_moe=True)
        batch, seq, steps, warmup, compile_, best = 4, 64, 3, 1, False, [8]
    workers = 0 if a.smoke else a.workers

    with tempfile.TemporaryDirectory() as d:
        from workbook.data.packed import pack_jsonl
        t = time.perf_counter()
        src = ROOT / "data" / "pretrain_poetry_val.jsonl.gz" if a.smoke else ROOT / "data" / "pretrain_poetry_train.jsonl.gz"
        binp = Path(d) / "train.bin"
        pack_jsonl(src, tokenizer, binp)
        print(json.dumps({"packed": str(src.name), "seconds": round(time.perf_counter() - t, 1)}), flush=True)
        data = {"jsonl": str(src), "bin": str(binp), "workers": workers}
        peak = peak_flops(device, a.peak_tflops)
        info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "peak_tflops": peak / 1e12 if peak else None}
        print(json.dumps(info), flush=True)
        kw = dict(seq=seq, steps=steps, warmup=warmup, device=device, data=data, tokenizer=tokenizer,
                  peak=peak, compile_=compile_)
        results = []
        plan = []  # (name, config, batch, fast, compile_mode), in priority order
        for case in a.cases.split(","):
            if case == "eager-b32":
                plan.append(("eager-b32", dense, batch, False, "default"))
            elif case == "fast-b32":
                plan.append(("fast-b32", dense, batch, True, "default"))
            elif case == "fast-cg-b32":
                plan.append(("fast-cg-b32", dense, batch, True, "reduce-overhead"))
            elif case == "fast-best":
                plan += [(f"fast-b{b}", dense, b, True, "default") for b in best]
            elif case == "moe-eager-b32":
                plan.append(("moe-eager-b32", moe, batch, False, "default"))
            elif case == "moe-fast-b32":
                plan.append(("moe-fast-b32", moe, batch, True, "default"))
            elif case == "moe-fast-cg-b32":
                plan.append(("moe-fast-cg-b32", moe, batch, True, "reduce-overhead"))
            elif case == "fast-cg-best":
                plan += [(f"fast-cg-b{b}", dense, b, True, "reduce-overhead") for b in best]
        t_start = time.perf_counter()
        for name, cfg, b, fast, mode in plan:
            if time.perf_counter() - t_start > a.time_budget:
                print(json.dumps({"case": name, "skipped": "time budget spent"}), flush=True)
                continue
            try:
                results.append(run_case(name, cfg, batch=b, fast=fast, compile_mode=mode, **kw))
            except Exception as e:  # one failing case must not lose the others' figures
                print(json.dumps({"case": name, "error": f"{type(e).__name__}: {str(e)[:500]}"}), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if a.out:
                Path(a.out).write_text(json.dumps({"info": info, "results": results}, indent=1))

    by = {r["case"]: r for r in results}
    summary = dict(info)
    fast = [r for r in results if r["case"].startswith("fast")]
    if fast:
        top = max(fast, key=lambda r: r["tokens_per_s"])
        summary["fast_best"] = {"batch": top["batch"], "tokens_per_s": top["tokens_per_s"], "mfu": top["mfu"]}
    for fast_case in ("fast-b32", "fast-cg-b32"):
        if "eager-b32" in by and fast_case in by:
            summary[f"{fast_case}_over_eager_b32"] = round(by[fast_case]["tokens_per_s"] / by["eager-b32"]["tokens_per_s"], 2)
    for fast_case in ("moe-fast-b32", "moe-fast-cg-b32"):
        if "moe-eager-b32" in by and fast_case in by:
            summary[f"{fast_case}_over_eager"] = round(by[fast_case]["tokens_per_s"] / by["moe-eager-b32"]["tokens_per_s"], 2)
    print(json.dumps({"summary": summary}), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"results": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
