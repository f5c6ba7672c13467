"""Check for stage 12: DDP (init_distributed_mode, sampler, wrap, reduce_mean, resume, cleanup).

No second process is needed (starting one costs seconds; mutants are in-memory objects that
cannot be sent to one): torchrun's environment, CUDA and the collective calls are simulated
(patched for the duration of one call), the DistributedSampler takes an explicit rank, and the
DDP wrap and cleanup run in a real one-process gloo group.  Several nodes are simulated too
(RANK=3, LOCAL_RANK=1, WORLD_SIZE=4): the global rank decides who is the main process and which
slice a rank reads, the local rank which GPU it uses (set_device, device, DDP's device_ids, with
CUDA faked and DistributedDataParallel.__init__ only recording its arguments).  The real
two-process run is the notebook's live demo (workbook/train/ddp_demo.py) and tests/test_ddp.py.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from .tools import close, expect, fail

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
ROPE_NAMES = {"model.freqs_cos", "model.freqs_sin"}


@contextmanager
def _env(**values):
    """torchrun's variables set to `values` (the others removed) for the block."""
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    for k in ENV_KEYS:
        os.environ.pop(k, None)
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _patched(obj, **attrs):
    saved = {k: getattr(obj, k) for k in attrs}
    for k, v in attrs.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(obj, k, v)


def _info(ref, ddp=True, rank=0, world_size=2, device="cpu", local_rank=None):
    """A DistInfo; local_rank defaults to rank (one node), set it apart to simulate several nodes."""
    local_rank = rank if local_rank is None else local_rank
    return ref.DistInfo(ddp, rank, local_rank, world_size, torch.device(device))


# ------------------------------------------------------------------ convert_resume_step
def _check_convert(impl):
    for step, old, new, want in ((10, 2, 1, 20), (20, 1, 2, 10), (7, 2, 4, 3), (5, 3, 2, 7), (0, 8, 1, 0)):
        got = impl.convert_resume_step(step, old, new)
        if got == want:
            continue
        if got == step * new // old:
            fail(f"convert_resume_step({step}, old={old}, new={new}) 应为 {want}，你的是 {got}：比例反了。"
                 f"一个 micro-step 读 batch_size × world_size 条数据，所以在 {old} 个进程上走了 {step} 步 = "
                 f"{step * old} × batch_size 条数据，换成 {new} 个进程是 step · old // new = {want} 步。")
        if got == step:
            fail(f"convert_resume_step({step}, old={old}, new={new}) 原样返回了 {step}：换了进程数 (world size) 之后，"
                 f"同样的步数对应的数据量不一样了，要换算成 step · old // new = {want}。")
        fail(f"convert_resume_step({step}, old={old}, new={new}) 应为 {want}（step · old // new，整数），你的是 {got!r}。")


# ------------------------------------------------------------------ make_sampler
def _indices(impl, ref, n, rank, world_size, seed, epoch, local_rank=None):
    info = _info(ref, rank=rank, world_size=world_size, local_rank=local_rank)
    sampler = impl.make_sampler(list(range(n)), info, seed, epoch)
    return [int(i) for i in sampler], sampler


def _check_sampler(impl, ref):
    n, seed = 11, 3  # 11 is odd on purpose: the DistributedSampler pads to 6 + 6
    got0, sampler = _indices(impl, ref, n, 0, 2, seed, 0)
    got1, _ = _indices(impl, ref, n, 1, 2, seed, 0)
    want0, _ = _indices(ref, ref, n, 0, 2, seed, 0)
    want1, _ = _indices(ref, ref, n, 1, 2, seed, 0)
    if sorted(got0) == sorted(got1) or len(got0) == n:
        fail(f"rank 0 和 rank 1 读到的是同样的数据（rank 0：{got0[:6]}…，rank 1：{got1[:6]}…）：没有用 "
             f"DistributedSampler。没有它，每个 rank 都读整个数据集，N 个进程算的是同一份数据——白白多花 N 倍算力。"
             f"要用 DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, ...)。")
    expect(isinstance(sampler, torch.utils.data.DistributedSampler),
           f"make_sampler 应该返回 torch.utils.data.DistributedSampler，你的是 {type(sampler).__name__}。")
    if (got0, got1) != (want0, want1):
        if got0 == list(range(0, n, 2)):
            fail(f"rank 0 读到的是 {got0}：没有打乱 (shuffle=False)。DistributedSampler 要 shuffle=True。")
        if len(got0) != len(want0):
            fail(f"11 条数据、2 个 rank 时每个 rank 应该读 {len(want0)} 条（drop_last=False：不够分时补齐），"
                 f"你的读了 {len(got0)} 条。")
        fail(f"seed={seed}、epoch 0 时 rank 0 应该读 {want0}，你的是 {got0}：检查 shuffle=True、seed=seed、"
             f"num_replicas=info.world_size、rank=info.rank。")
    e1, _ = _indices(impl, ref, n, 0, 2, seed, 1)
    w1, _ = _indices(ref, ref, n, 0, 2, seed, 1)
    if e1 != w1:
        if e1 == got0:
            fail(f"epoch 0 和 epoch 1 的顺序一模一样（rank 0 都是 {got0}）：忘了 sampler.set_epoch(epoch)。"
                 f"DistributedSampler 用 seed + epoch 打乱，不调 set_epoch 它永远当作 epoch 0，每个 epoch 都是同一个顺序。")
        fail(f"epoch 1 时 rank 0 应该读 {w1}，你的是 {e1}：set_epoch 要传当前的 epoch。")

    # two nodes × two GPUs: global rank 3 is GPU 1 of the second node; its slice follows the global rank
    g3, _ = _indices(impl, ref, n, 3, 4, seed, 0, local_rank=1)
    w3, _ = _indices(ref, ref, n, 3, 4, seed, 0)
    if g3 != w3:
        as_local, _ = _indices(ref, ref, n, 1, 4, seed, 0)
        if g3 == as_local:
            fail(f"两台机器 × 2 个 GPU 时，第二台机器上的 rank 3（LOCAL_RANK=1）读到的是 rank 1 那一片 {g3}，"
                 f"应该是 {w3}：DistributedSampler 的 rank 要用 info.rank（全局编号 (global rank)），不是 "
                 f"info.local_rank。用 local_rank 的话每台机器都读同样的两片，另外两片数据没有人读。")
        fail(f"world_size=4 时 rank 3（LOCAL_RANK=1）应该读 {w3}，你的是 {g3}：rank=info.rank，"
             f"num_replicas=info.world_size。")


# ------------------------------------------------------------------ init_distributed_mode
def _check_init(impl):
    calls = {"init": [], "set_device": []}

    def fake_init(backend=None, *args, **kwargs):
        calls["init"].append(backend)

    def fake_set_device(dev):
        calls["set_device"].append(dev)

    with _patched(dist, init_process_group=fake_init), \
            _patched(torch.cuda, is_available=lambda: True, set_device=fake_set_device):
        with _env():
            info = impl.init_distributed_mode("cpu")
        expect(not calls["init"], "没有 RANK 环境变量时（普通的 python 启动，不是 torchrun）不应该调用 "
                                  "init_process_group：这是单进程训练。")
        got = (info.ddp, info.rank, info.local_rank, info.world_size, torch.device(info.device))
        expect(got == (False, 0, 0, 1, torch.device("cpu")),
               f"没有 RANK 时应返回 DistInfo(ddp=False, rank=0, local_rank=0, world_size=1, device=cpu)，"
               f"你的是 ddp={got[0]}, rank={got[1]}, local_rank={got[2]}, world_size={got[3]}, device={got[4]}。")

        # second node of 2 × 2 GPUs: global rank 3, GPU 1 of its node (CUDA faked as available;
        # set_device and init_process_group are recorded, nothing touches a GPU)
        with _env(RANK=3, LOCAL_RANK=1, WORLD_SIZE=4, MASTER_ADDR="127.0.0.1", MASTER_PORT=29500):
            info = impl.init_distributed_mode("cuda")
        expect(len(calls["init"]) == 1, "RANK 设置了（torchrun 启动）就要调用一次 dist.init_process_group。")
        backend = calls["init"][0]
        expect(backend == "nccl", f"GPU 上 init_process_group 的 backend 应该是 'nccl'（GPU 之间直接通信），你的是 {backend!r}。")
        got = (info.ddp, info.rank, info.local_rank, info.world_size)
        expect(got == (True, 3, 1, 4),
               f"torchrun 设了 RANK=3, LOCAL_RANK=1, WORLD_SIZE=4，你的 DistInfo 是 ddp={got[0]}, rank={got[1]}, "
               f"local_rank={got[2]}, world_size={got[3]}：要用 int(os.environ[...]) 读这三个变量。")
        dev = torch.device(info.device)
        set_to = [torch.device(d).index if not isinstance(d, int) else d for d in calls["set_device"]]
        if dev == torch.device("cuda:3") or set_to == [3]:
            fail("GPU 编号用了 RANK（全局编号 3），应该用 LOCAL_RANK（本机上的编号 1）：第二台机器的 RANK 是 2、3，"
                 "但它的 GPU 编号仍是 0、1。")
        expect(set_to == [1], f"GPU 上要 torch.cuda.set_device(local_rank)（这里是 1），你的调用是 {calls['set_device']}。")
        expect(dev == torch.device("cuda:1"), f"GPU 上 device 应该是 cuda:<local_rank> = cuda:1，你的是 {dev}。")

        calls["init"].clear()
        calls["set_device"].clear()
        with _env(RANK=3, LOCAL_RANK=1, WORLD_SIZE=4, MASTER_ADDR="127.0.0.1", MASTER_PORT=29500):
            info = impl.init_distributed_mode("cpu")
        backend = calls["init"][0] if calls["init"] else None
        expect(backend == "gloo", f"--device cpu 时 backend 应该是 'gloo'（NCCL 只能在 GPU 上用），你的是 {backend!r}。")
        expect(torch.device(info.device) == torch.device("cpu"), f"--device cpu 时 device 应该是 cpu，你的是 {info.device}。")
        expect(not calls["set_device"], f"--device cpu 时不该调用 torch.cuda.set_device，你的调用是 {calls['set_device']}。")
        got = (info.rank, info.local_rank, info.world_size)
        expect(got == (3, 1, 4), f"--device cpu、RANK=3, LOCAL_RANK=1, WORLD_SIZE=4 时，DistInfo 的 rank, local_rank, "
                                 f"world_size 应该是 (3, 1, 4)，你的是 {got}。")


# ------------------------------------------------------------------ is_main_process
def _check_is_main(impl):
    expect(not dist.is_initialized(), "检查开始时不应该已经有进程组 (process group)：重启 kernel 再试。")
    with _env():
        try:
            main = impl.is_main_process()
        except Exception as e:
            fail(f"没有初始化进程组（普通单进程运行）时 is_main_process() 出错了：{type(e).__name__}: {e}。"
                 f"先看 dist.is_initialized()，没初始化就返回 True。")
        expect(main is True or main == True, "没有初始化进程组（普通单进程运行）时 is_main_process() 应该返回 True。")  # noqa: E712
    # one node of 2 GPUs, then the second node of 2 × 2 GPUs (RANK ≠ LOCAL_RANK there)
    for rank, local_rank, world_size, want in ((1, 1, 2, False), (0, 0, 2, True), (2, 0, 4, False), (3, 1, 4, False)):
        with _env(RANK=rank, LOCAL_RANK=local_rank, WORLD_SIZE=world_size), \
                _patched(dist, is_initialized=lambda: True, get_rank=lambda *a, **k: rank,
                         get_world_size=lambda *a, **k: world_size):
            got = bool(impl.is_main_process())
        if got != want and rank == 1:
            fail("在 rank 1 上 is_main_process() 返回了 True：那每个 rank 都会打印日志、写 checkpoint——N 个进程同时写同一个文件会互相覆盖，"
                 "日志也会重复 N 遍。只有 rank 0（dist.get_rank() == 0）是主进程。")
        if got != want and local_rank == 0:
            fail(f"两台机器 × 2 个 GPU 时，第二台机器的第一个进程（RANK={rank}, LOCAL_RANK=0）上 is_main_process() "
                 f"返回了 True：像是按 LOCAL_RANK 判断的。每台机器都有一个 LOCAL_RANK=0 的进程，这样就有好几个“主进程”"
                 f"同时写日志和 checkpoint。主进程是全局 rank 0（global rank）：dist.get_rank() == 0，不是 LOCAL_RANK。")
        expect(got == want, f"在 rank {rank}（LOCAL_RANK={local_rank}）上 is_main_process() 应该返回 {want}，你的是 {got}。")


# ------------------------------------------------------------------ reduce_mean
def _check_reduce_mean(impl, ref):
    value = torch.tensor([2.0, 4.0])
    out = impl.reduce_mean(value, _info(ref, ddp=False, world_size=1))
    expect(close(torch.as_tensor(out), value, atol=0, rtol=0),
           f"不是分布式时 reduce_mean 应该原样返回，你的是 {out}。")

    other = torch.tensor([6.0, 0.0])  # what "rank 1" holds
    seen = []

    def fake_all_reduce(t, op=dist.ReduceOp.SUM, *args, **kwargs):
        seen.append(t)
        if op == dist.ReduceOp.AVG:
            t.copy_((t + other) / 2)
        else:
            t.add_(other)

    value = torch.tensor([2.0, 4.0])
    with _patched(dist, all_reduce=fake_all_reduce, get_world_size=lambda *a, **k: 2):
        out = torch.as_tensor(impl.reduce_mean(value, _info(ref, ddp=True, world_size=2))).float()
    want = (torch.tensor([2.0, 4.0]) + other) / 2
    if not seen:
        fail("reduce_mean 没有调用 dist.all_reduce：每个 rank 只有自己那一份 loss，要先 all_reduce 求和再除以 world_size。")
    if not torch.equal(value, torch.tensor([2.0, 4.0])):
        fail(f"reduce_mean 改掉了传进来的张量（现在是 {value.tolist()}）：all_reduce 是原地 (in-place) 操作，"
             f"要在 value.detach().clone() 上做。")
    if close(out, want * 2, atol=1e-6):
        fail(f"reduce_mean 返回的是总和 {out.tolist()}（两个 rank 的值 [2, 4] 和 [6, 0]），应该是平均值 {want.tolist()}："
             f"all_reduce(SUM) 之后要除以 world_size。不除的话，日志里的 loss 是真实值的 N 倍。")
    expect(close(out, want, atol=1e-6),
           f"两个 rank 的值是 [2, 4] 和 [6, 0]，reduce_mean 应该返回平均值 {want.tolist()}，你的是 {out.tolist()}。")


# ------------------------------------------------------------------ wrap_ddp and cleanup (real 1-process group)
class _Backbone(torch.nn.Module):
    """Stands in for MiniMindModel: an embedding and the two non-persistent RoPE tables."""

    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(16, 8)
        self.register_buffer("freqs_cos", torch.ones(32, 4), persistent=False)
        self.register_buffer("freqs_sin", torch.zeros(32, 4), persistent=False)


class _TinyLM(torch.nn.Module):
    """Stands in for MiniMindForCausalLM: the buffers are named model.freqs_cos / model.freqs_sin."""

    def __init__(self):
        super().__init__()
        self.model = _Backbone()
        self.lm_head = torch.nn.Linear(8, 16, bias=False)

    def forward(self, input_ids):
        return self.lm_head(self.model.embed_tokens(input_ids))


def _tiny_model():
    torch.manual_seed(0)
    return _TinyLM()


@contextmanager
def _one_process_group():
    from ..train.ddp_demo import free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _check_wrap(impl, ref):
    model = _tiny_model()
    try:
        wrapped = impl.wrap_ddp(model, _info(ref, world_size=1))
    except ValueError as e:
        if "device_ids" in str(e):
            fail(f"DistributedDataParallel 报错：{e}\nCPU 上 device_ids 要是 None，只有 GPU 上才是 [info.local_rank]。")
        raise
    if not isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
        fail(f"wrap_ddp 返回的是 {type(wrapped).__name__}，不是 DistributedDataParallel：没有 DDP，各个 rank 的梯度"
             f"不会在反向传播时求平均 (all-reduce)，每个 rank 只按自己那一份数据更新，模型很快就各不相同了。")
    expect(wrapped.module is model, "DistributedDataParallel 要直接包住传进来的 model（wrapped.module is model）。")
    ignore = getattr(model, "_ddp_params_and_buffers_to_ignore", None)
    if not ignore:
        fail("没有告诉 DDP 忽略 RoPE 的 freqs_cos / freqs_sin：它们是 persistent=False 的常量 buffer，每个 rank 都自己算好了，"
             "不需要从 rank 0 广播 (broadcast)。包装之前设置 model._ddp_params_and_buffers_to_ignore = "
             "{'model.freqs_cos', 'model.freqs_sin'}（从 model.named_buffers() 里按名字找）。")
    ignore = set(ignore)
    if ignore == {"freqs_cos", "freqs_sin"}:
        fail("_ddp_params_and_buffers_to_ignore 里要写完整的名字 'model.freqs_cos'、'model.freqs_sin'"
             "（model.named_buffers() 给出的名字），你写的是 'freqs_cos'、'freqs_sin'，DDP 对不上。")
    expect(ignore == ROPE_NAMES, f"_ddp_params_and_buffers_to_ignore 应该是 {sorted(ROPE_NAMES)}，你的是 {sorted(ignore)}。"
                                 f"只忽略 RoPE 的两张表：参数不能忽略，否则它们的梯度不会被平均。")
    seen_by_ddp = set(getattr(wrapped, "parameters_to_ignore", ROPE_NAMES))
    expect(ROPE_NAMES <= seen_by_ddp, "DDP 没有看到要忽略的 buffer：_ddp_params_and_buffers_to_ignore 要在 "
                                      "DistributedDataParallel(model) 之前设置，DDP 只在构造时读它。")


def _device_index(d):
    return d if isinstance(d, int) else torch.device(d).index


def _check_wrap_gpu(impl, ref):
    """On GPU 1 of the second node (rank 3), DDP gets the local GPU: device_ids=[info.local_rank].

    No GPU needed: CUDA is faked as available and DistributedDataParallel.__init__ only records
    its arguments.  A wrap_ddp that moves the model to the GPU itself cannot be simulated: skipped.
    """
    DDP = torch.nn.parallel.DistributedDataParallel
    seen = {}

    def fake_init(self, module, device_ids=None, output_device=None, *args, **kwargs):
        torch.nn.Module.__init__(self)
        self.module = module
        seen.update(device_ids=device_ids, output_device=output_device)

    info = _info(ref, rank=3, local_rank=1, world_size=4, device="cuda:1")
    with _patched(DDP, __init__=fake_init), \
            _patched(torch.cuda, is_available=lambda: True, device_count=lambda: 2):
        try:
            impl.wrap_ddp(_tiny_model(), info)
        except Exception as e:  # noqa: BLE001 - a real CUDA call cannot run here
            if seen or not any(w in str(e).lower() for w in ("cuda", "gpu", "device")):
                raise
            return
    if not seen:
        return  # not DistributedDataParallel at all: _check_wrap says so
    ids, out_dev = seen["device_ids"], seen["output_device"]
    expect(ids is None or isinstance(ids, (list, tuple)),
           f"device_ids 要是一个列表 [info.local_rank]，你传的是 {ids!r}。")
    got = None if ids is None else [_device_index(d) for d in ids]
    if got == [3] or (out_dev is not None and _device_index(out_dev) == 3):
        fail("GPU 上 DistributedDataParallel 的 device_ids 用了 info.rank（全局编号 3），应该用 info.local_rank（本机上的"
             "编号 1）：第二台机器上的 rank 2、3 用的是它自己的 GPU 0、1，根本没有 cuda:3。"
             "device_ids = [info.local_rank]。")
    expect(got in (None, [1]), f"rank 3（LOCAL_RANK=1）在 GPU 上包装时 device_ids 应该是 [info.local_rank] = [1]，"
                               f"你的是 {ids!r}。")
    expect(out_dev is None or _device_index(out_dev) == 1,
           f"output_device 不用传；要传就是 info.local_rank = 1，你的是 {out_dev!r}。")


def _check_cleanup(impl, ref):
    order = []
    real_barrier, real_destroy = dist.barrier, dist.destroy_process_group

    def barrier(*a, **k):
        order.append("barrier")
        return real_barrier(*a, **k)

    def destroy(*a, **k):
        order.append("destroy")
        return real_destroy(*a, **k)

    with _patched(dist, barrier=barrier, destroy_process_group=destroy):
        impl.cleanup(_info(ref, ddp=False, world_size=1))
        expect(not order, f"不是分布式时 cleanup 什么都不该做，你的调用了 {order}。")
        impl.cleanup(_info(ref, ddp=True, world_size=1))
    if "destroy" in order and "barrier" not in order[: order.index("destroy")]:
        fail("cleanup 没有先 dist.barrier() 就 destroy_process_group()：跑得快的 rank 会先拆掉进程组，"
             "而 rank 0 可能还在存 checkpoint 或做最后一次 all_reduce。先 barrier 等所有 rank 到齐。")
    expect(order == ["barrier", "destroy"], f"cleanup 应该依次调用 dist.barrier() 和 dist.destroy_process_group()，你的调用是 {order}。")
    expect(not dist.is_initialized(), "cleanup 之后进程组应该已经销毁（dist.is_initialized() 是 False）。")


def check(impl, ref) -> str:
    _check_convert(impl)
    _check_sampler(impl, ref)
    _check_init(impl)
    _check_is_main(impl)
    _check_reduce_mean(impl, ref)
    with _one_process_group():
        _check_wrap(impl, ref)
        _check_wrap_gpu(impl, ref)
        _check_cleanup(impl, ref)
    return ("init_distributed_mode（nccl/gloo、LOCAL_RANK）、DistributedSampler + set_epoch、DDP 包装忽略 RoPE buffer、"
            "rank 0 才保存、多机时 RANK 与 LOCAL_RANK 各管各的、reduce_mean 求平均、续训步数换算、先 barrier 再销毁。")
