"""Distributed data parallel (DDP): the same model on N processes, each on its own slice of data.

Data parallelism: every process ("rank") holds a full copy of the model.  Each global batch is
cut into `world_size` slices, one per rank; every rank runs forward and backward on its slice,
and during backward DDP **all-reduces** the gradients (sums them over the ranks and divides by
`world_size`), so after `backward()` every rank holds the gradient of the *whole* global batch
and the identical optimiser step keeps the copies identical.

    effective batch = batch_size × world_size × accumulation_steps      (samples per optimizer step)

Four details make it correct:
- the DistributedSampler gives each rank a different slice (without it every rank reads the same
  samples: N times the compute for the data of one process);
- ``sampler.set_epoch(epoch)`` reshuffles each epoch (without it every epoch has the same order);
- MiniMind's ``freqs_cos``/``freqs_sin`` RoPE tables are non-persistent constant buffers that
  every rank computes identically: DDP is told to ignore them, so it does not broadcast them;
- only rank 0 (the main process) logs and saves: the ranks are identical, N writers of the same
  file would race and N logs would repeat each other.

``torchrun`` starts the processes and tells each who it is through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
Lesson: notebooks/12_ddp.ipynb.  Check: ``python -m workbook check 12``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

# buffers every rank computes itself from the config (RoPE cos/sin tables, persistent=False)
ROPE_BUFFER_SUFFIXES = ("freqs_cos", "freqs_sin")


@dataclass
class DistInfo:
    """Who this process is.  ddp=False: a plain single-process run (rank 0 of 1)."""

    ddp: bool
    rank: int  # global rank, 0 … world_size-1, over all nodes
    local_rank: int  # rank on this node = which GPU of this node
    world_size: int  # number of processes over all nodes
    device: torch.device


def init_distributed_mode(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun set up, or report a single-process run.

    RANK unset (plain ``python -m ...``) -> DistInfo(False, 0, 0, 1, torch.device(device)).
    Otherwise read RANK, LOCAL_RANK, WORLD_SIZE (torchrun sets them, plus MASTER_ADDR/PORT),
    init_process_group with backend "nccl" on GPU (device "cuda…" and CUDA available) or
    "gloo" on CPU; on GPU pin this process to GPU LOCAL_RANK: device = cuda:LOCAL_RANK.
    """
    # TODO(learner):
    #   1. RANK not in os.environ -> return DistInfo(False, 0, 0, 1, torch.device(device)).
    #   2. rank, local_rank, world_size = int(...) of RANK, LOCAL_RANK, WORLD_SIZE.
    #   3. use_cuda = torch.cuda.is_available() and device starts with "cuda";
    #      dist.init_process_group(backend="nccl" if use_cuda else "gloo").
    #   4. on CUDA: torch.cuda.set_device(local_rank), the device is cuda:<local_rank>
    #      (LOCAL_RANK, not RANK: on the second node RANK is 8…15 but the GPUs are 0…7).
    #   5. return DistInfo(True, rank, local_rank, world_size, device).
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 init_distributed_mode，见 notebooks/12_ddp.ipynb")


def is_main_process() -> bool:
    """True when not distributed or global rank 0: the one process that logs, plots and saves.

    Global rank (RANK, dist.get_rank()), not LOCAL_RANK: with several nodes every node has a
    LOCAL_RANK 0, but only one process of the whole job may write the logs and checkpoints.
    """
    # TODO(learner):
    #   not distributed (dist.is_initialized() is False) -> True; otherwise dist.get_rank() == 0.
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 is_main_process，见 notebooks/12_ddp.ipynb")


def make_sampler(dataset, info: DistInfo, seed: int, epoch: int) -> DistributedSampler:
    """The slice of `dataset` this rank reads in `epoch`.

    Shuffles with (seed + epoch) — the same permutation on every rank — then rank r takes
    indices r, r + world_size, r + 2·world_size, … of it (padded to equal length); r is the
    global rank info.rank (info.local_rank repeats on every node: those slices would be read
    once per node and the others never).
    set_epoch(epoch): a new permutation every epoch; without it every epoch repeats epoch 0.
    """
    # TODO(learner):
    #   1. DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
    #      shuffle=True, seed=seed, drop_last=False).
    #   2. sampler.set_epoch(epoch)  (forget it and every epoch has epoch 0's order).
    #   3. return the sampler.
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 make_sampler，见 notebooks/12_ddp.ipynb")


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel(model): broadcasts rank 0's weights once, then averages the
    gradients over all ranks during every backward.

    The RoPE tables (``model.freqs_cos``, ``model.freqs_sin``) are buffers registered with
    persistent=False: constants every rank computes itself.  DDP would broadcast them from
    rank 0 (at wrap time and, with broadcast_buffers, before every forward) for nothing, so they
    are listed in ``_ddp_params_and_buffers_to_ignore``.
    """
    # TODO(learner):
    #   1. model._ddp_params_and_buffers_to_ignore = the set of full buffer names from
    #      model.named_buffers() that end in ROPE_BUFFER_SUFFIXES ("model.freqs_cos", ...).
    #   2. device_ids = [info.local_rank] on CUDA, None on CPU.
    #   3. return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids).
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 wrap_ddp，见 notebooks/12_ddp.ipynb")


def reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of `value` over all ranks (for logging a loss averaged over the ranks).

    mean = (Σ_ranks value) / world_size; works on a copy, `value` is unchanged.
    Not distributed: `value` itself (identity).
    """
    # TODO(learner):
    #   1. not info.ddp -> return value.
    #   2. out = value.detach().clone()  (all_reduce works in place: never on `value` itself).
    #   3. dist.all_reduce(out, op=dist.ReduceOp.SUM), then divide by info.world_size.
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 reduce_mean，见 notebooks/12_ddp.ipynb")


def convert_resume_step(step: int, old_world_size: int, new_world_size: int) -> int:
    """Micro-steps done with `old_world_size` ranks -> micro-steps with `new_world_size` ranks
    that cover the same number of samples:  step · old // new.

    One micro-step consumes batch_size × world_size samples, so 10 steps on 2 ranks = 20 on 1.
    """
    # TODO(learner):
    #   one line: the same number of samples, counted in micro-steps of the new world size.
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 convert_resume_step，见 notebooks/12_ddp.ipynb")


def cleanup(info: DistInfo) -> None:
    """Wait for every rank (barrier), then leave the process group; no-op when not DDP.

    Without the barrier a fast rank could tear the group down while rank 0 is still saving.
    """
    # TODO(learner):
    #   not info.ddp -> nothing; otherwise dist.barrier(), then dist.destroy_process_group().
    raise NotImplementedError("TODO(12 ddp): 在 workbook/train/distributed.py 里写 cleanup，见 notebooks/12_ddp.ipynb")
