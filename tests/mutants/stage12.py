"""Wrong DDP code a learner really writes (one change each), and what the check must say."""
import os
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler

from workbook import _modes

ref = _modes.reference_module("train.distributed")


def _impl(**changes):
    names = ("DistInfo", "init_distributed_mode", "is_main_process", "make_sampler", "wrap_ddp",
             "reduce_mean", "convert_resume_step", "cleanup")
    ns = SimpleNamespace(**{n: getattr(ref, n) for n in names})
    for k, v in changes.items():
        setattr(ns, k, v)
    return ns


def _no_set_epoch(dataset, info, seed, epoch):
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                              seed=seed, drop_last=False)


def _no_distributed_sampler(dataset, info, seed, epoch):
    return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed + epoch))


def _no_shuffle(dataset, info, seed, epoch):
    s = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=False)
    s.set_epoch(epoch)
    return s


def _reduce_sum(value, info):
    if not info.ddp:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _reduce_in_place(value, info):
    if not info.ddp:
        return value
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def _wrap_bare(model, info):
    model._ddp_params_and_buffers_to_ignore = {n for n, _ in model.named_buffers()
                                                if n.endswith(("freqs_cos", "freqs_sin"))}
    return model


def _wrap_no_ignore(model, info):
    return torch.nn.parallel.DistributedDataParallel(model)


def _wrap_short_names(model, info):
    model._ddp_params_and_buffers_to_ignore = {"freqs_cos", "freqs_sin"}
    return torch.nn.parallel.DistributedDataParallel(model)


def _wrap_ignore_after(model, info):
    wrapped = torch.nn.parallel.DistributedDataParallel(model)
    model._ddp_params_and_buffers_to_ignore = {"model.freqs_cos", "model.freqs_sin"}
    return wrapped


def _sampler_local_rank(dataset, info, seed, epoch):
    s = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.local_rank, shuffle=True,
                           seed=seed, drop_last=False)
    s.set_epoch(epoch)
    return s


def _main_by_local_rank():
    return int(os.environ.get("LOCAL_RANK", 0)) == 0


def _wrap_global_rank_gpu(model, info):
    model._ddp_params_and_buffers_to_ignore = {n for n, _ in model.named_buffers()
                                                if n.endswith(("freqs_cos", "freqs_sin"))}
    device_ids = [info.rank] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _cleanup_no_barrier(info):
    if info.ddp:
        dist.destroy_process_group()


def _init(backend_cpu="gloo", backend_gpu="nccl", gpu_from="LOCAL_RANK"):
    def init_distributed_mode(device="cpu"):
        if "RANK" not in os.environ:
            return ref.DistInfo(False, 0, 0, 1, torch.device(device))
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        use_cuda = torch.cuda.is_available() and device.startswith("cuda")
        dist.init_process_group(backend=backend_gpu if use_cuda else backend_cpu)
        dev = torch.device(device)
        if use_cuda:
            gpu = int(os.environ[gpu_from])
            torch.cuda.set_device(gpu)
            dev = torch.device(f"cuda:{gpu}")
        return ref.DistInfo(True, rank, local_rank, world_size, dev)
    return init_distributed_mode


MUTANTS = {
    # the sampler is built but never told the epoch: every epoch repeats epoch 0's order
    "no_set_epoch": (_impl(make_sampler=_no_set_epoch), "set_epoch"),
    # an ordinary shuffling sampler: every rank reads the whole dataset
    "no_distributed_sampler": (_impl(make_sampler=_no_distributed_sampler), "DistributedSampler"),
    "no_shuffle": (_impl(make_sampler=_no_shuffle), "shuffle=False"),
    # every rank logs and saves
    "every_rank_is_main": (_impl(is_main_process=lambda: True), "rank 1 上 is_main_process() 返回了 True"),
    "get_rank_unguarded": (_impl(is_main_process=lambda: dist.get_rank() == 0), "普通单进程运行"),
    # the logged loss is N times too big
    "reduce_sum": (_impl(reduce_mean=_reduce_sum), "返回的是总和"),
    "reduce_in_place": (_impl(reduce_mean=_reduce_in_place), "原地 (in-place)"),
    # no DDP at all: gradients are never averaged, the ranks drift apart
    "bare_model": (_impl(wrap_ddp=_wrap_bare), "不是 DistributedDataParallel"),
    "rope_not_ignored": (_impl(wrap_ddp=_wrap_no_ignore), "freqs_cos / freqs_sin"),
    "rope_short_names": (_impl(wrap_ddp=_wrap_short_names), "完整的名字"),
    "rope_ignored_too_late": (_impl(wrap_ddp=_wrap_ignore_after), "之前设置"),
    "no_barrier": (_impl(cleanup=_cleanup_no_barrier), "barrier"),
    "resume_ratio_inverted": (_impl(convert_resume_step=lambda step, old, new: step * new // old), "比例反了"),
    "resume_not_converted": (_impl(convert_resume_step=lambda step, old, new: step), "原样返回"),
    # several nodes: RANK 3 is GPU 1 of the second node
    "sampler_by_local_rank": (_impl(make_sampler=_sampler_local_rank), "不是 info.local_rank"),
    "main_by_local_rank": (_impl(is_main_process=_main_by_local_rank), "像是按 LOCAL_RANK 判断的"),
    "ddp_device_ids_global_rank": (_impl(wrap_ddp=_wrap_global_rank_gpu), "device_ids 用了 info.rank"),
    "nccl_on_cpu": (_impl(init_distributed_mode=_init(backend_cpu="nccl")), "'gloo'"),
    "gpu_from_global_rank": (_impl(init_distributed_mode=_init(gpu_from="RANK")), "LOCAL_RANK"),
}
