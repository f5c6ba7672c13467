"""A live two-process DDP run on CPU (gloo, 127.0.0.1), for notebooks/12_ddp.ipynb and check 12.

Provided, not an exercise.  Functions defined in a notebook cannot be started in a new process
(the child has to import them), so the worker lives here.  The worker imports the functions
under test *by module name* — by default ``workbook.train.distributed``, i.e. the learner's own
code in the current WORKBOOK_IMPL mode — so the demo runs exactly the learner's DDP.

    run_demo(world_size=2)  ->  one dict per rank: which samples it read, its loss, the loss
                                averaged over the ranks, its gradient after backward, ...
"""
from __future__ import annotations

import importlib
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

N_SAMPLES, DIM, BATCH = 16, 4, 4


def free_port() -> int:
    """A TCP port nobody listens on right now (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_data() -> torch.utils.data.TensorDataset:
    """16 samples (x, y) of a small linear regression; sample i has x[0] = i so it is recognisable."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, DIM, generator=g)
    x[:, 0] = torch.arange(N_SAMPLES, dtype=torch.float32)
    y = x @ torch.tensor([0.5, -1.0, 2.0, 0.25]) + 0.1 * torch.randn(N_SAMPLES, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def demo_model(seed: int) -> nn.Module:
    """A linear model; every rank builds it with a *different* seed to show that DDP's wrap
    copies rank 0's weights to all ranks."""
    torch.manual_seed(seed)
    return nn.Linear(DIM, 1)


def worker(rank: int, world_size: int, port: int, module: str, out_dir: str, epochs: int) -> None:
    """One rank.  Plays torchrun: sets the env vars, then runs the functions of `module`.

    A stub (NotImplementedError) is reported in the result file instead of a traceback."""
    try:
        _work(rank, world_size, port, module, out_dir, epochs)
    except NotImplementedError as e:
        torch.save({"todo": str(e)}, Path(out_dir) / f"rank{rank}.pt")
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _work(rank: int, world_size: int, port: int, module: str, out_dir: str, epochs: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import workbook._modes as modes

    modes.install()  # so that `workbook.train.distributed` resolves as in the parent's mode
    d = importlib.import_module(module)
    info = d.init_distributed_mode("cpu")
    data = demo_data()
    model = demo_model(seed=100 + rank)
    before = model.weight.detach().clone()
    ddp_model = d.wrap_ddp(model, info)
    after_wrap = model.weight.detach().clone()
    epochs_seen = []
    for epoch in range(epochs):
        sampler = d.make_sampler(data, info, seed=0, epoch=epoch)
        epochs_seen.append([int(i) for i in sampler])
    # one training micro-step on this rank's first batch of epoch 0
    sampler = d.make_sampler(data, info, seed=0, epoch=0)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, sampler=sampler)
    x, y = next(iter(loader))
    loss = nn.functional.mse_loss(ddp_model(x).squeeze(-1), y)
    twin = nn.Linear(DIM, 1)  # same weights, outside DDP: the gradient of this rank's slice alone
    twin.load_state_dict(model.state_dict())
    nn.functional.mse_loss(twin(x).squeeze(-1), y).backward()
    local_grad = twin.weight.grad
    loss.backward()  # DDP all-reduces (averages) the gradients here
    mean_loss = d.reduce_mean(loss.detach(), info)
    result = {
        "rank": info.rank, "world_size": info.world_size, "main": bool(d.is_main_process()),
        "indices": epochs_seen, "batch_x0": x[:, 0].long().tolist(),
        "weight_before_wrap": before, "weight_after_wrap": after_wrap,
        "loss": loss.item(), "mean_loss": float(mean_loss), "local_grad": local_grad,
        "grad": model.weight.grad.detach().clone(),
    }
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    d.cleanup(info)


def run_demo(world_size: int = 2, module: str = "workbook.train.distributed", epochs: int = 2,
             timeout: float = 120.0) -> list[dict]:
    """Start `world_size` worker processes (torch.multiprocessing, spawn) and collect their results.

    A stub (NotImplementedError) in a worker comes back as NotImplementedError here (so that
    ``with wb.needs("12"):`` shows a short note); any other error in a worker is raised as
    torch.multiprocessing.ProcessRaisedException; a run that does not finish within `timeout`
    seconds is killed (TimeoutError).
    """
    import torch.multiprocessing as mp

    for attempt in (1, 2):
        try:
            return _run_once(mp, world_size, module, epochs, timeout)
        except mp.ProcessRaisedException as e:
            # the free port was taken by another program between the pick and the start: pick again
            if attempt == 2 or "address already in use" not in str(e).lower():
                raise
    raise AssertionError("unreachable")


def _run_once(mp, world_size: int, module: str, epochs: int, timeout: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(worker, args=(world_size, free_port(), module, out_dir, epochs),
                                 nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=0.2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world_size} 个进程 {timeout:.0f} 秒内没有结束"
                                       "（某个 rank 可能在等 barrier 或 all_reduce）")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        results = [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for r in results:
        if "todo" in r:
            raise NotImplementedError(r["todo"])
    return results
