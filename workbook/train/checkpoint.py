"""Checkpoints: fp16 weights in MiniMind's .pth layout, and a resume file for exact restarts.

Both are written atomically (to ``NAME.tmp``, then renamed), so a run killed mid-save — or a full
disk — leaves the previous file intact.  Both are read with ``torch.load(weights_only=True)``:
they hold only tensors and plain values, so a crafted file cannot run code when loaded.
Provided infrastructure; the lesson is notebooks/11_train_loop.ipynb.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

# Config fields that must match for a resume file to fit the model being built.
RESUME_MUST_MATCH = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "vocab_size", "intermediate_size", "use_moe",
                     "n_routed_experts", "n_shared_experts", "num_experts_per_tok")


class ResumeMismatch(ValueError):
    """The resume file was written by a run with a different model configuration."""


class CheckpointError(ValueError):
    """A weights or resume file that cannot be used; the message names the file and why."""


class SaveError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the previous one is intact."""


# Key prefixes that wrappers add: DistributedDataParallel (module.) and torch.compile (_orig_mod.)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def safe_load(path: str | os.PathLike, what: str = "文件") -> Any:
    """torch.load with weights_only=True: tensors and plain values only, never code.

    A file that needs anything else to unpickle (a crafted pickle, a whole pickled model) is
    refused with CheckpointError instead of being executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"找不到{what} {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the offending object ("Unsupported global: GLOBAL posix.system ...")
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what_inside = f"要求加载 {found.group(1)}" if found else "里面有张量和普通数值以外的东西"
        raise CheckpointError(
            f"拒绝加载{what} {path}：它{what_inside}，不是纯权重 (weights_only=True 拒绝了它)。"
            f"这种文件在加载时可以运行任意代码，所以没有加载、什么都没有执行；"
            f"只用你信任的、由本工具或 MiniMind 保存的权重。") from None
    except Exception as e:  # truncated, not a torch file at all, ...
        raise CheckpointError(f"{what} {path} 读不出来（{type(e).__name__}: {str(e)[:200]}）："
                              f"文件不完整或不是 torch 保存的文件？") from None


def strip_wrapper_prefixes(state: dict) -> dict:
    """Keys as the plain model names them: 'module._orig_mod.lm_head.weight' -> 'lm_head.weight'."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a MiniMind-layout weights file into `model` strictly (after stripping wrapper
    prefixes); a mismatch names the missing, unexpected and wrongly shaped keys."""
    state = safe_load(path, "权重文件")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        hint = "（这像是 resume 文件：续训用 --from_resume 1）" if isinstance(state, dict) and "optimizer" in state else ""
        raise CheckpointError(f"{path} 不是 {{参数名: 张量}} 形式的权重文件{hint}。")
    state = strip_wrapper_prefixes(state)
    target = unwrap(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: 文件 {tuple(state[k].shape)} ≠ 模型 {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def show(keys):
            return ", ".join(keys[:6]) + (f" …（共 {len(keys)} 个）" if len(keys) > 6 else "")
        parts = [f"{path} 和现在的模型对不上（严格加载 strict=True）："]
        if missing:
            parts.append(f"  模型有、文件里没有 (missing)：{show(missing)}")
        if unexpected:
            parts.append(f"  文件有、模型里没有 (unexpected)：{show(unexpected)}")
        if shapes:
            parts.append(f"  形状不同 (shape)：{show(shapes)}")
        parts.append("  检查 --hidden_size / --num_hidden_layers / --use_moe 等是否和保存时一样。")
        raise CheckpointError("\n".join(parts))
    target.load_state_dict(state, strict=True)


def weight_name(save_weight: str, hidden_size: int, use_moe: bool) -> str:
    """MiniMind's file naming: pretrain_512.pth, pretrain_640_moe.pth."""
    return f"{save_weight}_{hidden_size}{'_moe' if use_moe else ''}"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to path.tmp, fsync, then rename over path (atomic on POSIX).

    On any failure (a full disk, a kill) `path` keeps its previous content; the temporary file
    is removed, and an OSError becomes SaveError with a message that says so.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """`write(tmp)` writes the file at a temporary path, which then replaces `path` in one rename.

    For writers that take a path (a learner's save_lora): the same guarantees as atomic_save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) or isinstance(e.__cause__, OSError) or "No space" in str(e):
            full = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)
            why = "磁盘空间不足 (No space left on device)" if full else f"写入失败（{e}）"
            kept = "之前的存档保持原样" if path.exists() else "之前没有存档"
            raise SaveError(f"保存 {path} 时{why}：这一次没有存下来，{kept}，临时文件已删除。"
                            f"腾出空间（或换一个 --save_dir）后用 --from_resume 1 续训。") from None
        raise
    return path


def write_config(config, path: str | os.PathLike) -> Path:
    """The model config beside its weights, as JSON (config.to_dict()), written atomically."""
    import json

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                   encoding="utf-8")
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
    state = safe_load(path, "resume 文件")
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "step"} <= set(state):
        raise CheckpointError(f"{path} 不是本工具写的 resume 文件（缺少 model/optimizer/epoch/step）。")
    saved = state.get("config", {})
    for key in RESUME_MUST_MATCH:
        if key in saved and saved[key] != config.get(key):
            raise ResumeMismatch(
                f"resume 文件 {path} 来自另一个模型配置：{key}={saved[key]!r}，"
                f"而现在是 {key}={config.get(key)!r}。换一个 --save_dir，或用相同的模型参数续训。")
    return state
