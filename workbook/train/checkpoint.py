"""Checkpoints: fp16 weights in MiniMind's .pth layout, and a resume file for exact restarts.

Both are written atomically (to ``NAME.tmp``, then renamed), so a run killed mid-save leaves the
previous file intact.  Provided infrastructure; the lesson is notebooks/11_train_loop.ipynb.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

# Config fields that must match for a resume file to fit the model being built.
RESUME_MUST_MATCH = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "vocab_size", "intermediate_size", "use_moe",
                     "n_routed_experts", "n_shared_experts", "num_experts_per_tok")


class ResumeMismatch(ValueError):
    """The resume file was written by a run with a different model configuration."""


def weight_name(save_weight: str, hidden_size: int, use_moe: bool) -> str:
    """MiniMind's file naming: pretrain_512.pth, pretrain_640_moe.pth."""
    return f"{save_weight}_{hidden_size}{'_moe' if use_moe else ''}"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to path.tmp, fsync, then rename over path (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model under DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Every state_dict key (the tied embedding/lm_head pair twice, as MiniMind stores it), fp16."""
    state = {k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()
             for k, v in unwrap(model).state_dict().items()}
    return atomic_save(state, path)


def save_resume(path: str | os.PathLike, *, model, optimizer, scaler, epoch: int, step: int,
                world_size: int, config: dict, extra: dict | None = None) -> Path:
    """Everything needed to continue exactly: weights (fp32), optimiser and scaler state,
    where in the data we are (epoch, micro-step), the world size, the RNG states."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "step": step,
        "world_size": world_size,
        "config": {k: config.get(k) for k in RESUME_MUST_MATCH},
        "rng": {"torch": torch.random.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        **(extra or {}),
    }
    return atomic_save(state, path)


def load_resume(path: str | os.PathLike, config: dict) -> dict:
    """Read a resume file and refuse it, naming the field, if the model config differs."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise ValueError(f"resume 文件 {path} 读不出来（{type(e).__name__}: {e}）。") from None
    saved = state.get("config", {})
    for key in RESUME_MUST_MATCH:
        if key in saved and saved[key] != config.get(key):
            raise ResumeMismatch(
                f"resume 文件 {path} 来自另一个模型配置：{key}={saved[key]!r}，"
                f"而现在是 {key}={config.get(key)!r}。换一个 --save_dir，或用相同的模型参数续训。")
    return state
