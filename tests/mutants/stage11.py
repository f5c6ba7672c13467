"""Wrong training loops a learner really writes (one flag each), and what the check must say."""
import math
from types import SimpleNamespace

import torch

from workbook import _modes

ref = _modes.reference_module("train.loop")


def _loop(divide=True, clip_first=False, zero_every=False, count_from=1, add_aux=True,
          scaler_step=True, log_divided=False, lr_groups="all", lr_step="global", flush=True,
          zero_after_flush=True, acc_counter="local", log_last=True, tokens_full=False, log_base_lr=False,
          log_first=True, log_value="mean", mean_count="actual", lm_aux="mean"):
    """log_value: "mean" over the interval or the "last" micro-step's; mean_count: divide the sum by
    the micro-steps really run ("actual"), by "log_interval" (or 1 at step 1:
    "log_interval_but_first"), or by step - previous log step with the first interval counted
    "from_zero" (ignoring start_step); lm_aux: "mean" or "last"."""
    def train_epoch(epoch, loader, iters, model, optimizer, scaler, ctx, *, lr, total_steps,
                    accumulation_steps=8, grad_clip=1.0, device="cpu", log_interval=100,
                    start_step=0, on_log=None, on_step_end=None):
        def update():
            if clip_first:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.unscale_(optimizer)
            else:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler_step:
                scaler.step(optimizer)
            else:
                optimizer.step()
            scaler.update()

        tokens, step = 0, start_step
        sums, n, prev = [0.0, 0.0], 0, 0  # prev: the last logged step, from 0 even after a resume
        for step, (x, y) in enumerate(loader, start=start_step + count_from):
            if lr_step == "global":
                lr_now = ref.get_lr(epoch * iters + step, total_steps, lr)
            elif lr_step == "epoch":  # restarts every epoch
                lr_now = ref.get_lr(step, total_steps, lr)
            else:  # "iters": a schedule one epoch long
                lr_now = ref.get_lr(epoch * iters + step, iters, lr)
            groups = optimizer.param_groups if lr_groups == "all" else optimizer.param_groups[:1]
            for g in groups:
                g["lr"] = lr_now
            with ctx:
                out = model(x, labels=y)
                loss = out.loss + (out.aux_loss if add_aux else 0)
                if divide:
                    loss = loss / accumulation_steps
            scaler.scale(loss).backward()
            if zero_every and step % accumulation_steps:
                optimizer.zero_grad(set_to_none=True)
            counter = step if acc_counter == "local" else epoch * iters + step
            if counter % accumulation_steps == 0:
                update()
                optimizer.zero_grad(set_to_none=True)
            elif flush and step == iters:  # the epoch's last, shorter group
                update()
                if zero_after_flush:
                    optimizer.zero_grad(set_to_none=True)
            tokens += int((y != -100).sum())
            lm, aux = out.loss.item(), out.aux_loss.item()
            scale = 1 / accumulation_steps if log_divided else 1  # logs the divided loss
            sums[0] += lm * scale
            sums[1] += aux * scale
            n += 1
            if on_log is not None and (step % log_interval == 0 or (log_first and step == 1)
                                       or (log_last and step == iters)):
                count = {"actual": n, "log_interval": log_interval, "from_zero": step - prev,
                         "log_interval_but_first": 1 if step == 1 else log_interval}[mean_count]
                mean = [v / count for v in sums]
                last = [lm * scale, aux * scale]
                shown = mean if log_value == "mean" else last
                parts = mean if lm_aux == "mean" and log_value == "mean" else last
                n_tok = log_interval * int((y != -100).sum()) if tokens_full else tokens
                on_log(ref.StepLog(epoch, step, iters, shown[0] + shown[1], parts[0], parts[1],
                                   lr if log_base_lr else lr_now, n_tok, 1.0))
                tokens, sums, n, prev = 0, [0.0, 0.0], 0, step
            if on_step_end is not None and on_step_end(step):
                break
        return step
    return train_epoch


def _impl(**changes):
    ns = SimpleNamespace(get_lr=ref.get_lr, autocast_context=ref.autocast_context,
                         make_scaler=ref.make_scaler, train_epoch=ref.train_epoch, StepLog=ref.StepLog)
    for k, v in changes.items():
        setattr(ns, k, v)
    return ns


MUTANTS = {
    "no_division_by_accumulation": (_impl(train_epoch=_loop(divide=False)), "除以 accumulation_steps"),
    "clip_before_unscale": (_impl(train_epoch=_loop(clip_first=True)), "unscale_ 之前就裁剪"),
    "zero_grad_every_micro_step": (_impl(train_epoch=_loop(zero_every=True)), "zero_grad 放在了每个 micro-step"),
    "lr_floor_missing": (_impl(get_lr=lambda t, T, lr: lr * 0.5 * (1 + math.cos(math.pi * t / T))), "下限"),
    "steps_counted_from_zero": (_impl(train_epoch=_loop(count_from=0)), "从 1 开始数"),
    "aux_loss_not_added": (_impl(train_epoch=_loop(add_aux=False)), "aux_loss"),
    "optimizer_step_not_through_scaler": (_impl(train_epoch=_loop(scaler_step=False)), "scaler.step(optimizer)"),
    "logs_divided_loss": (_impl(train_epoch=_loop(log_divided=True)), "乘回去"),
    "scaler_always_on": (_impl(make_scaler=lambda dtype, device_type="cuda": torch.amp.GradScaler(device_type)),
                         "只有 fp16 需要缩放"),
    "autocast_on_float32": (_impl(autocast_context=lambda d, t: torch.autocast(d, dtype=torch.bfloat16)), "nullcontext"),
    # several epochs, several param groups, the log's lr, the last short log interval, the flush
    "lr_only_first_param_group": (_impl(train_epoch=_loop(lr_groups="first")), "param_groups[0]"),
    "lr_restarts_every_epoch": (_impl(train_epoch=_loop(lr_step="epoch")), "又从头开始"),
    "lr_schedule_length_is_iters": (_impl(train_epoch=_loop(lr_step="iters")), "调度的长度用了 iters"),
    "logs_base_lr": (_impl(train_epoch=_loop(log_base_lr=True)), "基础学习率"),
    "last_short_log_interval_not_logged": (_impl(train_epoch=_loop(log_last=False)), "不满 log_interval"),
    "tokens_assume_full_log_interval": (_impl(train_epoch=_loop(tokens_full=True)), "实际跑过"),
    "no_flush_at_epoch_end": (_impl(train_epoch=_loop(flush=False)), "凑不满"),
    "flush_without_zero_grad": (_impl(train_epoch=_loop(zero_after_flush=False)), "末尾那次更新之后没有清空梯度"),
    "accumulation_counted_across_epochs": (_impl(train_epoch=_loop(acc_counter="global", flush=False)),
                                           "epoch 内的 step"),
    # the log: a point at step 1, the mean over the interval (undivided, over the right count)
    "step_one_not_logged": (_impl(train_epoch=_loop(log_first=False)), "step == 1"),
    "logs_last_micro_step_loss": (_impl(train_epoch=_loop(log_value="last")), "只是最后一个 micro-step 的值"),
    "logs_last_micro_step_divided_loss": (_impl(train_epoch=_loop(log_value="last", log_divided=True)),
                                          "最后一个 micro-step 除以 accumulation_steps"),
    "loss_mean_over_log_interval": (_impl(train_epoch=_loop(mean_count="log_interval")), "总和除以了 log_interval"),
    "loss_mean_over_log_interval_but_step_one": (_impl(train_epoch=_loop(mean_count="log_interval_but_first")),
                                                 "总和除以了 log_interval"),
    "loss_mean_count_ignores_resume": (_impl(train_epoch=_loop(mean_count="from_zero")), "续训 (start_step=4) 后的第一段"),
    "lm_aux_loss_not_averaged": (_impl(train_epoch=_loop(lm_aux="last")), "lm_loss 和 aux_loss"),
    "old_contract_last_value_no_step_one": (_impl(train_epoch=_loop(log_first=False, log_value="last")),
                                            "step == 1"),
}
