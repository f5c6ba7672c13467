"""Guards that keep a training run from writing a bad state or hanging forever.

- Non-finite values: a NaN/inf loss or weights (a too-high learning rate, fp16 overflow without a
  scaler, a NaN clip threshold) must stop the run *before* anything is saved, so the last good
  checkpoint survives.  ``check_finite_loss`` runs at every log line, ``check_finite_weights``
  before every save (in the dtype the file stores: fp16 overflows above 65504), and
  ``check_finite_file`` on the weights file as written, before it replaces the last good one.  (An inf gradient under fp16 is normal: the GradScaler skips that step and
  the weights stay finite, so gradients are judged by the weights they produce.)
- Distributed timeouts: a rank that is alive but stuck would keep every other rank waiting in a
  collective for 30 minutes (gloo's default).  ``set_collective_timeout`` bounds that wait, and
  ``is_collective_timeout`` recognises the error the waiting ranks then raise.
Provided infrastructure; the trainers call it around the learner's loop.
"""
from __future__ import annotations

import datetime
import math

import torch


class NonFiniteError(RuntimeError):
    """The loss or the weights became NaN/inf; the message says where and what to try."""


_ADVICE = ("常见原因：学习率太大 (--learning_rate)、--grad_clip 不是正数、fp16 没有 GradScaler。"
           "可以调小学习率，或改用 --dtype bfloat16。")


def check_finite_loss(loss: float, where: str) -> None:
    """Raise NonFiniteError if the logged loss is NaN or inf."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"{where} 的 loss 是 {loss}（不是有限数 non-finite）：训练已停止，"
                             f"这一刻的权重没有保存，之前的存档保持原样。{_ADVICE}")


_FP_MAX = {torch.float16: 65504.0, torch.bfloat16: 3.39e38}


@torch.no_grad()
def check_finite_weights(model: torch.nn.Module, where: str, saved_dtype: torch.dtype | None = None) -> None:
    """Raise NonFiniteError naming the first parameter that holds a NaN or inf — as it is, and,
    with `saved_dtype`, once cast to the dtype the weights file stores (fp16: |x| > 65504 -> inf)."""
    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    if not named:
        return
    # one reduction per parameter on its device, a single host sync at the end
    finite = torch.stack([torch.isfinite(p).all() for _, p in named])
    if not bool(finite.all()):
        bad = named[int((~finite).nonzero()[0])][0]
        raise NonFiniteError(f"{where}：参数 {bad} 里出现了 NaN/inf（权重坏了）：训练已停止，"
                             f"没有保存，之前的存档保持原样。{_ADVICE}")
    if saved_dtype is None or saved_dtype not in _FP_MAX:
        return
    peaks = torch.stack([p.detach().abs().amax().float() for _, p in named])
    # what the cast would round to inf (fp16: 65520 and above; 65504 is the largest finite value)
    over = torch.stack([torch.isinf(peak.to(saved_dtype)) for peak in peaks])
    if not bool(over.any()):
        return
    i = int(over.nonzero()[0])
    name = str(saved_dtype).replace("torch.", "")
    raise NonFiniteError(
        f"{where}：参数 {named[i][0]} 的最大绝对值是 {float(peaks[i]):.3g}，超过了 {name} 能表示的最大值 "
        f"{_FP_MAX[saved_dtype]:g}：权重存成（或合并进）{name} 时这些值会变成 inf（溢出 overflow）。"
        f"训练已停止，没有保存，之前的存档保持原样。正常的权重绝对值不过几十；这么大通常是学习率太大 "
        f"(--learning_rate)，调小它再试。")


def check_finite_file(path, where: str) -> None:
    """Raise NonFiniteError naming the first tensor of a saved weights file that is not finite:
    the check of what was actually written (a learner's writer may use any dtype)."""
    from .checkpoint import safe_load

    state = safe_load(path, "刚写好的权重文件")
    tensors = state.items() if isinstance(state, dict) else []
    for key, value in tensors:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise NonFiniteError(f"{where}：写出的权重里 {key} 有 {n_bad} 个 NaN/inf（存成 {str(value.dtype).replace('torch.', '')}）："
                                 f"训练已停止，这一次没有保存，之前的存档保持原样。{_ADVICE}")


def set_collective_timeout(seconds: float) -> None:
    """Bound how long any collective (all-reduce, barrier) of the default group may wait."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d

    if not (dist.is_available() and dist.is_initialized()):
        return
    c10d._set_pg_timeout(datetime.timedelta(seconds=seconds))


def is_collective_timeout(exc: BaseException) -> bool:
    """True for the error a rank raises when a collective waited past its timeout."""
    text = str(exc).lower()
    dist_error = type(exc).__name__ in ("DistBackendError", "DistError", "DistNetworkError")
    return ("timed out" in text or "timeout" in text) and (
        dist_error or "gloo" in text or "nccl" in text or "collective" in text
        or "recv" in text or "send" in text)
