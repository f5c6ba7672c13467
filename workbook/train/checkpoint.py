"""Checkpoints: fp16 weights in MiniMind's .pth layout, and a resume file for exact restarts.

The trainers save the two as one pair (:func:`save_pair`): both are written to ``NAME.tmp``
first and renamed into place only when both are on disk and the weights passed their check, so
a run killed mid-save, a full disk or weights that overflow fp16 leave the previous pair intact;
the resume file records the SHA-256 of the weights saved with it.  Both are read with ``torch.load(weights_only=True)``:
they hold only tensors and plain values, so a crafted file cannot run code when loaded.
Provided infrastructure; the lesson is notebooks/11_train_loop.ipynb.
"""
from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable

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
        if state and all(".lora." in k for k in state):
            parts.append("  这是一个 LoRA 适配器 (adapter) 文件，不是完整的模型权重：--from_weight 给基座模型，"
                         "适配器用 python -m workbook eval 基座.pth --lora 适配器.pth 装上。")
        else:
            parts.append("  检查 --hidden_size / --num_hidden_layers / --use_moe 等是否和保存时一样。")
        raise CheckpointError("\n".join(parts))
    target.load_state_dict(state, strict=True)


def weight_name(save_weight: str, hidden_size: int, use_moe: bool) -> str:
    """MiniMind's file naming: pretrain_512.pth, pretrain_640_moe.pth."""
    return f"{save_weight}_{hidden_size}{'_moe' if use_moe else ''}"


def _write_synced(obj: Any, path: Path) -> None:
    """torch.save into an open file, flushed and fsynced: on disk when this returns."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def tmp_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is renamed into place: NAME.tmp beside it."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nest of dicts, lists and tuples (what torch.save writes, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _write_error(e: BaseException) -> BaseException | None:
    """The OSError behind a failed write, wherever it sits: torch.save raises RuntimeError
    ("[enforce fail at inline_container.cc] unexpected pos") with the OSError (ENOSPC) as its
    __context__, not its __cause__.  A RuntimeError of torch's stream writer counts too."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError):
            return x
        todo += [x.__cause__, x.__context__]
    text = str(e)
    if isinstance(e, RuntimeError) and ("inline_container" in text or "file write failed" in text
                                        or "unexpected pos" in text):
        return e
    return None


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def _save_error(e: BaseException, files: list[Path], needed: int) -> SaveError | None:
    """A SaveError that names the folder, the space the save needs and the space left, or None
    when `e` is not a failed write (then the caller re-raises it as it is)."""
    import shutil

    cause = _write_error(e)
    if cause is None:
        return None
    folder = files[0].parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    full = (getattr(cause, "errno", None) == errno.ENOSPC or "No space left" in str(cause)
            or (free is not None and free < needed))
    which = " 和 ".join(p.name for p in files)
    if full:
        left = f"，那里现在只剩 {_mb(free)}" if free is not None else ""
        why = (f"磁盘空间不足 (No space left on device)：这次存档（{which}）需要约 {_mb(needed)}{left}")
    else:
        why = f"写入失败（{type(cause).__name__}: {str(cause)[:200]}）"
    existing = [p for p in files if p.exists()]
    kept = ("之前的存档保持原样（" + "、".join(p.name for p in existing) + "）") if existing else "之前没有存档"
    return SaveError(f"保存到 {folder} 时{why}。这一次什么都没有存下：{kept}，临时文件已删除。"
                     f"腾出空间（或换一个 --save_dir）后用 --from_resume 1 续训。")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to path.tmp, fsync, then rename over path (atomic on POSIX).

    On any failure (a full disk, a kill) `path` keeps its previous content; the temporary file
    is removed, and a failed write becomes SaveError with a message that says so.
    """
    return atomic_write(path, lambda tmp: _write_synced(obj, tmp), needed=tensor_bytes(obj))


def atomic_write(path: str | os.PathLike, write, needed: int = 0) -> Path:
    """`write(tmp)` writes the file at a temporary path, which then replaces `path` in one rename.

    For writers that take a path (a learner's save_lora): the same guarantees as atomic_save.
    needed: the bytes the file will take (for the message when the disk is full).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        _unlink(tmp)
        err = _save_error(e, [path], needed)
        if err is not None:
            raise err from None
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_pair(weights: str | os.PathLike, write_weights: Callable[[Path], Any],
              resume: str | os.PathLike, resume_state: dict,
              verify_weights: Callable[[Path], Any] | None = None, weights_bytes: int = 0) -> str:
    """Save a weights file and its resume file as one pair: both or neither.

    1. `write_weights(tmp)` writes the weights to ``WEIGHTS.tmp``; `verify_weights(tmp)` may then
       refuse them (e.g. values that became inf in fp16) by raising;
    2. the resume state, plus the weights' SHA-256 (``weights_sha256``), goes to ``RESUME.tmp``;
    3. only when both are on disk, both are renamed into place (weights first).
    Any failure before step 3 removes both temporary files and leaves the previous pair as it
    was; a failed write becomes SaveError naming the folder and the space needed.  A kill between
    the two renames (a few microseconds) is caught on resume by :func:`check_pair`.
    Returns the weights' SHA-256.
    """
    weights, resume = Path(weights), Path(resume)
    weights.parent.mkdir(parents=True, exist_ok=True)
    w_tmp, r_tmp = tmp_path(weights), tmp_path(resume)
    try:
        write_weights(w_tmp)
        if verify_weights is not None:
            verify_weights(w_tmp)
        digest = file_sha256(w_tmp)
        _write_synced({**resume_state, "weights_file": weights.name, "weights_sha256": digest}, r_tmp)
        os.replace(w_tmp, weights)
        os.replace(r_tmp, resume)
    except BaseException as e:
        _unlink(w_tmp, r_tmp)
        err = _save_error(e, [weights, resume], weights_bytes + tensor_bytes(resume_state))
        if err is not None:
            raise err from None
        raise
    return digest


def check_pair(resume_state: dict, weights: str | os.PathLike) -> str | None:
    """None when `weights` is the file saved together with this resume state; otherwise a note
    (Chinese) saying that the run continues from the resume file's own weights."""
    digest = resume_state.get("weights_sha256")
    weights = Path(weights)
    if digest is None or not weights.is_file() or file_sha256(weights) == digest:
        return None
    return (f"注意：{weights} 不是和 resume 文件一起存下的那一份（上一次存档可能在两个文件改名之间被打断）。"
            f"续训只用 resume 文件里自己的权重（第 {resume_state.get('step')} 个 micro-step），"
            f"下一次存档会把两个文件重新写成一对。")


CONFIG_SUFFIX = "_config.json"  # the trainers write {weights stem}_config.json beside the weights


def config_beside(weights: str | os.PathLike) -> Path:
    """out/pretrain_512.pth -> out/pretrain_512_config.json (MiniMindConfig.to_dict())."""
    weights = Path(weights)
    return weights.with_name(weights.stem + CONFIG_SUFFIX)


def model_config_kwargs(weights: str | os.PathLike, overrides: dict | None = None, *,
                        infer: bool = False) -> tuple[dict, Path | None]:
    """MiniMindConfig keyword arguments for `weights`, and the config JSON they came from.

    The JSON beside the weights (when it exists) gives every field; without it, and with `infer`,
    the fields the tensors determine are read off the weights (``train/shapes.py``: hidden size,
    layers, vocabulary, FFN width, MoE, key/value heads).  Each override that is not None replaces
    one.  An explicit ``inference_rope_scaling`` also drops the saved
    ``rope_scaling``, so that the config derives it again from the flag.  ValueError names a
    config file that is not a JSON object.
    """
    import inspect
    import json

    from ..config import MiniMindConfig

    fields = {name for name, p in inspect.signature(MiniMindConfig.__init__).parameters.items()
              if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    path = config_beside(weights)
    saved: dict = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"模型配置 (config) {path} 不是合法的 JSON：{e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"模型配置 (config) {path} 应该是一个 JSON 对象 (MiniMindConfig.to_dict())")
        saved = {k: v for k, v in data.items() if k in fields}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if infer and not path.is_file():
        # no JSON (a MiniMind2 checkpoint): what the tensors determine, read off them (train/shapes.py)
        import sys

        from .shapes import describe, infer_config_kwargs
        saved = infer_config_kwargs(safe_load(weights, "权重"), given.get("num_attention_heads"))
        print(describe(saved, "num_attention_heads" in given), file=sys.stderr)
    if "inference_rope_scaling" in given:
        saved.pop("rope_scaling", None)
    return {**saved, **given}, (path if path.is_file() else None)


def write_config(config, path: str | os.PathLike) -> Path:
    """The model config beside its weights, as JSON (config.to_dict()), written atomically."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
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


SAVED_DTYPE = torch.float16  # MiniMind's .pth weights are fp16


def weights_state(model: torch.nn.Module) -> dict:
    """Every state_dict key (the tied embedding/lm_head pair twice, as MiniMind stores it), fp16, on the CPU."""
    return {k: v.detach().to("cpu", SAVED_DTYPE) if v.is_floating_point() else v.detach().cpu()
            for k, v in unwrap(model).state_dict().items()}


def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """The weights in MiniMind's .pth layout (:func:`weights_state`), written atomically."""
    return atomic_save(weights_state(model), path)


def write_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """:func:`weights_state` to `path` directly (the caller makes it atomic: see save_pair)."""
    _write_synced(weights_state(model), Path(path))


def resume_state(*, model, optimizer, scaler, epoch: int, step: int, world_size: int, config: dict,
                 extra: dict | None = None) -> dict:
    """Everything needed to continue exactly: weights (fp32), optimiser and scaler state,
    where in the data we are (epoch, micro-step), the world size, the RNG states."""
    return {
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


def save_resume(path: str | os.PathLike, **fields) -> Path:
    """:func:`resume_state` written atomically on its own (the trainers use :func:`save_pair`)."""
    return atomic_save(resume_state(**fields), path)


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
