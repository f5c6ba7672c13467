"""The pretraining loop: learning-rate schedule, mixed precision, accumulation, clipping (stage 11).

One optimiser step = `accumulation_steps` micro-batches: each micro-batch's loss is divided by
`accumulation_steps` and back-propagated, so the gradients add up to those of one big batch.
Then: unscale (GradScaler) -> clip -> step -> update the scaler -> zero the gradients.
An epoch's last micro-batches that do not fill a whole group are flushed at step == iters, so an
epoch has ceil(iters / accumulation_steps) optimiser steps.
Lesson: notebooks/11_train_loop.ipynb.  Check: ``python -m workbook check 11``.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def get_lr(current_step: int, total_steps: int, lr: float) -> float:
    """Cosine decay from lr to lr/10, no warm-up.

    lr_t = lr * (0.1 + 0.45 * (1 + cos(pi * t / T)))      t = current_step, T = total_steps
    """
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * current_step / total_steps)))


def autocast_context(device_type: str, dtype: str):
    """The `ctx` of MiniMind's trainer: where the forward pass runs in lower precision.

    float32 -> no autocast (nullcontext); bfloat16 / float16 -> torch.autocast on that device
    (CPU autocast supports bfloat16 and float16).  Parameters stay fp32.  Inside the context:
    - matmul / linear / bmm / conv / scaled_dot_product_attention run in the low dtype on CPU and CUDA;
    - ops on the device's fp32 list are computed in fp32, and the lists differ: CUDA's is long
      (softmax, log_softmax, layer_norm, sum, exp, pow, rsqrt, the losses), CPU's is short (the
      losses such as cross_entropy / nll_loss / mse_loss, linear algebra, fft);
    - any other op runs in its input's dtype: on CPU a softmax of a bf16 matmul result is bf16,
      on CUDA it is fp32.
    So the MiniMind model casts by hand where precision matters (RMSNorm's x.float(), softmax of
    scores.float()): those ops then run in fp32 on either device.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=DTYPES[dtype])


def make_scaler(dtype: str, device_type: str = "cuda") -> torch.amp.GradScaler:
    """GradScaler, enabled only for float16 (its 5-bit exponent underflows small gradients).

    bf16 has fp32's exponent range, so it needs no scaling; a disabled scaler is a no-op whose
    scale/unscale_/step/update calls simply pass through, so the loop stays the same.
    """
    return torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))


@dataclass
class StepLog:
    """What one logging call reports (also handed to wandb).

    Everything but `lr` is about the micro-steps since the previous log of this epoch (or since
    the epoch's start / the resume point): the losses are their mean, undivided by
    accumulation_steps, so one log line -- and the loss curve -- is an average, not the noisy
    value of one micro-batch, and it does not change with accumulation_steps.
    """
    epoch: int
    step: int  # micro-step within the epoch, counted from 1
    iters: int  # micro-steps per epoch
    loss: float  # lm_loss + aux_loss: mean over the micro-steps since the previous log, undivided
    lm_loss: float  # mean over the same micro-steps
    aux_loss: float  # mean over the same micro-steps
    lr: float  # the lr of this micro-step
    tokens: int  # non-pad tokens seen since the previous log
    seconds: float  # wall time since the previous log


def train_epoch(
    epoch: int,
    loader: Iterable,
    iters: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ctx,
    *,
    lr: float,
    total_steps: int,
    accumulation_steps: int = 8,
    grad_clip: float = 1.0,
    device: str | torch.device = "cpu",
    log_interval: int = 100,
    start_step: int = 0,
    on_log: Callable[[StepLog], None] | None = None,
    on_step_end: Callable[[int], bool | None] | None = None,
) -> int:
    """Run one epoch of micro-steps; return the last micro-step done.

    loader yields (input_ids, labels), each (batch, seq) int64; labels use -100 for ignored
    positions.  `start_step` micro-steps of this epoch were done before (resume): the loader
    must already skip them, and counting continues from start_step + 1.
    total_steps: the schedule's length in micro-steps (MiniMind: epochs * iters); the lr of
    micro-step `step` of epoch `epoch` is get_lr(epoch * iters + step, total_steps, lr), set on
    every param group.
    The optimiser steps when step % accumulation_steps == 0 or step == iters: the epoch's last
    micro-batches are flushed, not carried into the next epoch's first step nor dropped.
    on_log gets a StepLog at step == 1 (a fresh run's first point: the loss before any update),
    every log_interval micro-steps and at step == iters (a shorter last interval); its losses
    are the mean over the micro-steps since the previous log.  on_step_end(step) runs after
    every micro-step (save, validate, stop); returning True stops.
    """
    last_log = time.perf_counter()
    # summed on the device since the previous log: an .item() per micro-step would make the
    # CPU wait for the GPU every step; the host reads them once per log line
    tokens = torch.zeros((), dtype=torch.long, device=device)
    lm_sum = torch.zeros((), dtype=torch.float32, device=device)
    aux_sum = torch.zeros((), dtype=torch.float32, device=device)
    n = 0  # micro-steps since the previous log (a resume starts the count at 0, not at start_step)
    step = start_step
    for step, (input_ids, labels) in enumerate(loader, start=start_step + 1):
        input_ids = input_ids.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        # cosine schedule, set on every micro-step; steps count from 1 across epochs
        lr_now = get_lr(epoch * iters + step, total_steps, lr)
        for group in optimizer.param_groups:
            group["lr"] = lr_now

        with ctx:
            out = model(input_ids, labels=labels)
            # the MoE balance loss joins the LM loss; /accumulation_steps so that the summed
            # gradients of the micro-steps equal one big batch's mean gradient
            loss = (out.loss + out.aux_loss) / accumulation_steps
        # scale (fp16 only) so small gradients do not underflow, then accumulate into .grad
        scaler.scale(loss).backward()

        # step == iters: flush the epoch's last, shorter group (like MiniMind, without undoing its
        # 1/accumulation_steps) -- left in .grad it would leak into the next epoch's first step,
        # or be lost after the last epoch
        if step % accumulation_steps == 0 or step == iters:
            # back to true gradients first: the clip threshold is meant for them, not scaled ones
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            # skipped by the scaler if any gradient is inf/nan (fp16 overflow)
            scaler.step(optimizer)
            scaler.update()
            # only after the step: the micro-steps in between must keep adding up
            optimizer.zero_grad(set_to_none=True)

        # the undivided losses, for the log's mean over the interval
        lm_sum += out.loss.detach()
        aux_sum += out.aux_loss.detach()
        n += 1
        tokens += (labels != -100).sum()
        # step == 1: a fresh run's first point is the loss before any update (≈ ln vocab);
        # step == iters: the last interval may be shorter than log_interval; log it too
        if on_log is not None and (step % log_interval == 0 or step == 1 or step == iters):
            # the one host synchronisation, once per log line (the reads after it find the
            # device idle)
            lm, aux = (torch.stack((lm_sum, aux_sum)) / n).tolist()
            now = time.perf_counter()
            on_log(StepLog(epoch, step, iters, lm + aux, lm, aux, lr_now, int(tokens), now - last_log))
            last_log = now
            for t in (tokens, lm_sum, aux_sum):
                t.zero_()
            n = 0
        if on_step_end is not None and on_step_end(step):
            break
    return step
