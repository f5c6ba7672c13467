"""DDP on CPU with gloo: the reference of stage 12 and the pretrain command under torchrun.

- two ranks with batch b end with the same weights as one process with batch 2b;
- two "nodes" on localhost (two torchrun launchers, --nnodes 2) do exactly what one node with
  two processes does, and only node 0 (rank 0) writes files;
- an MoE expert that receives no tokens on one rank neither hangs nor errors;
- a run saved with 2 ranks resumes with 1 (micro-steps converted);
- the notebook's live two-process demo (workbook/train/ddp_demo.py) averages the gradients.

Every subprocess runs WORKBOOK_IMPL=solutions and has a timeout, so a hang fails the test.
"""
import os
import time
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, run_py
from workbook.train.ddp_demo import free_port

TIMEOUT = 180
TINY = ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
        "--num_key_value_heads", "1", "--max_seq_len", "32", "--num_workers", "0", "--dtype", "float32",
        "--samples", "0", "--val_path", "", "--no_progress", "--accumulation_steps", "2",
        "--log_interval", "1", "--save_interval", "1000"]
# measured: 2 ranks vs 1 process after 4 optimizer steps differ by at most 2.3e-7 (float32 sums
# in another order); 1e-5 leaves room for other CPUs
ATOL = 1e-5


def torchrun(*args):
    """Arguments for `python`: torchrun as a module (run_py adds the interpreter)."""
    return ["-m", "torch.distributed.run", *args]


def pretrain(save_dir, data, *extra):
    return ["-m", "workbook.train.pretrain", "--save_dir", str(save_dir), "--data_path", str(data),
            *TINY, *extra]


def ok(out):
    assert out.returncode == 0, (out.stdout[-2000:] + "\n" + out.stderr[-4000:])
    return out


def resume_state(save_dir, name="pretrain_32"):
    return torch.load(Path(save_dir) / f"{name}_resume.pth", weights_only=True)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The validation split packed into fixed windows: every sample has the same token count,
    so the mean over 2b samples equals the mean of two means over b."""
    out = tmp_path_factory.mktemp("packed") / "val.bin"
    ok(run_py(["-m", "workbook.data.pack", "data/pretrain_poetry_val.jsonl.gz", str(out),
               "--tokenizer", "data/tokenizer"], mode="solutions", timeout=TIMEOUT))
    return out


@pytest.fixture(scope="module")
def two_ranks(packed, tmp_path_factory):
    """torchrun, one node, 2 processes, batch 4 each, 4 optimizer steps of 2 micro-steps."""
    save = tmp_path_factory.mktemp("two_ranks")
    out = ok(run_py(torchrun("--standalone", "--nproc_per_node", "2",
                             *pretrain(save, packed, "--batch_size", "4", "--max_steps", "4")),
                    mode="solutions", timeout=TIMEOUT))
    return save, out


@pytest.mark.slow
def test_two_ranks_end_with_the_weights_of_one_process_with_twice_the_batch(packed, two_ranks, tmp_path):
    save2, out2 = two_ranks
    assert "2 个进程" in out2.stdout and "有效 batch 16" in out2.stdout
    out1 = ok(run_py(pretrain(tmp_path, packed, "--batch_size", "8", "--max_steps", "4"),
                     mode="solutions", timeout=TIMEOUT))
    assert "有效 batch 16" in out1.stdout
    r2, r1 = resume_state(save2), resume_state(tmp_path)
    assert (r2["world_size"], r1["world_size"]) == (2, 1)
    assert r2["step"] == r1["step"] == 8  # micro-steps per rank
    diff = max_diff(r2["model"], r1["model"])
    assert diff < ATOL, f"2 ranks vs 1 process: max weight difference {diff:.3g}"
    # the logged loss is averaged over the ranks, so the two logs agree as well
    l2 = [l for _, l in r2["history"]["train"]]
    l1 = [l for _, l in r1["history"]["train"]]
    assert len(l2) == len(l1) == 8
    assert max(abs(a - b) for a, b in zip(l2, l1)) < 1e-4


@pytest.mark.slow
def test_two_nodes_on_localhost(packed, two_ranks, tmp_path):
    port = str(free_port())
    nodes = []
    for node in (0, 1):
        cmd = [sys.executable, *torchrun("--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
                       "--master_addr", "127.0.0.1", "--master_port", port,
                       *pretrain(tmp_path / f"node{node}", packed, "--batch_size", "4", "--max_steps", "4"))]
        env = dict(os.environ, WORKBOOK_IMPL="solutions", PYTHONIOENCODING="utf-8")
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    for p, (stdout, stderr) in zip(nodes, outs):
        assert p.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert "完成" in outs[0][0] and "完成" not in outs[1][0]  # only rank 0 logs the summary
    assert not (tmp_path / "node1").exists() or not any((tmp_path / "node1").iterdir())  # nor saves
    # the same computation as one node with 2 processes
    diff = max_diff(resume_state(tmp_path / "node0")["model"], resume_state(two_ranks[0])["model"])
    assert diff < ATOL, diff


@pytest.mark.slow
def test_resume_with_another_world_size(packed, two_ranks, tmp_path):
    shutil.copytree(two_ranks[0], tmp_path, dirs_exist_ok=True)
    assert resume_state(tmp_path)["step"] == 8
    out = ok(run_py(pretrain(tmp_path, packed, "--batch_size", "4", "--max_steps", "12", "--from_resume", "1"),
                    mode="solutions", timeout=TIMEOUT))
    # 8 micro-steps × 2 ranks × batch 4 = 64 samples = 16 micro-steps of one process
    assert "第 16 个 micro-step 之后（存档时 2 个进程，现在 1 个）" in out.stdout, out.stdout[-2000:]
    state = resume_state(tmp_path)
    assert state["world_size"] == 1 and state["step"] == 24  # max_steps 12 × accumulation 2
    steps = [s for s, _ in state["history"]["train"]]
    assert len(steps) == 8 + 8 and steps == sorted(steps)


@pytest.mark.slow
def test_moe_under_torchrun_does_not_hang(packed, tmp_path):
    # tiny batches of short windows (4 tokens × top-2 over 4 experts): an expert often gets no token
    # on a rank; the forced case is test_moe_expert_without_tokens_on_one_rank
    out = ok(run_py(torchrun("--standalone", "--nproc_per_node", "2",
                             *pretrain(tmp_path, packed, "--batch_size", "1", "--max_seq_len", "4",
                                       "--max_steps", "3", "--use_moe", "1")),
                    mode="solutions", timeout=TIMEOUT))
    assert "完成" in out.stdout
    assert (tmp_path / "pretrain_32_moe.pth").is_file()


def _moe_worker(rank: int, out_dir: str) -> None:
    """Rank 1 feeds one repeated token: every position has the same hidden state, so all of them
    pick the same top-2 experts and the other experts receive no token on that rank.

    The ranks meet through a TCP store on a port the system picks for rank 0 (port 0), which rank 0
    passes on through a file: a port picked in advance can be taken by another process on a busy
    machine, and a file:// store can hang for minutes at teardown while the last rank removes its
    file (torchrun's tests cover env://). A collective that waits longer than 60 s raises."""
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    from workbook import _modes

    d = _modes.reference_module("train.distributed")
    Config = _modes.reference_module("config").MiniMindConfig
    LM = _modes.reference_module("model.causal_lm").MiniMindForCausalLM
    port_file = Path(out_dir) / "port"
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, timeout=timedelta(seconds=60),
                              wait_for_workers=False)
        port_file.with_suffix(".tmp").write_text(str(store.port))
        port_file.with_suffix(".tmp").replace(port_file)  # rank 1 never reads half a number
    else:
        deadline = time.time() + 120
        while not port_file.exists():
            if time.time() > deadline:
                raise TimeoutError("rank 0 never published its store port")
            time.sleep(0.05)
        store = dist.TCPStore("127.0.0.1", int(port_file.read_text()), 2, is_master=False,
                              timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=timedelta(seconds=60))
    info = d.DistInfo(True, rank, rank, 2, torch.device("cpu"))
    torch.manual_seed(0)
    model = LM(Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      vocab_size=64, use_moe=True))
    ddp = d.wrap_ddp(model, info)
    experts = model.model.layers[0].mlp.experts
    used = [0] * len(experts)
    for i, e in enumerate(experts):
        e.register_forward_hook(lambda m, a, o, i=i: used.__setitem__(i, used[i] + 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(rank)
    for _ in range(3):
        x = torch.randint(0, 64, (2, 8), generator=g) if rank == 0 else torch.full((2, 8), 5)
        out = ddp(x, labels=x)
        (out.loss + out.aux_loss).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.save({"used": used, "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}},
               Path(out_dir) / f"rank{rank}.pt")
    d.cleanup(info)


@pytest.mark.slow
def test_moe_expert_without_tokens_on_one_rank(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_moe_worker, args=(str(tmp_path),), nprocs=2, join=False,
                             start_method="spawn")
    try:
        deadline = time.time() + 300  # start-up included; the collectives themselves time out at 60 s
        while not ctx.join(timeout=0.5):
            if time.time() > deadline:
                done = [r for r in (0, 1) if (tmp_path / f"rank{r}.pt").exists()]
                pytest.fail(f"the 2-rank MoE run hung (ranks that finished: {done})")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert 0 in r1["used"], f"every expert got tokens on rank 1: {r1['used']}"
    # gradients were averaged every step: the ranks still hold identical weights
    assert max_diff(r0["weights"], r1["weights"]) == 0.0


@pytest.mark.slow
def test_live_demo_averages_gradients():
    from workbook.train import ddp_demo

    r0, r1 = ddp_demo.run_demo(2, module="_workbook_reference.train.distributed", epochs=2)
    assert (r0["main"], r1["main"]) == (True, False)
    a, b = r0["indices"][0], r1["indices"][0]
    assert not set(a) & set(b) and sorted(a + b) == list(range(ddp_demo.N_SAMPLES))
    assert r0["indices"][0] != r0["indices"][1]  # set_epoch: a new order every epoch
    assert not torch.equal(r0["weight_before_wrap"], r1["weight_before_wrap"])
    assert torch.equal(r0["weight_after_wrap"], r1["weight_after_wrap"])  # broadcast from rank 0
    mean = (r0["local_grad"] + r1["local_grad"]) / 2
    assert torch.allclose(r0["grad"], mean, atol=1e-4) and torch.allclose(r1["grad"], mean, atol=1e-4)
    assert r0["mean_loss"] == pytest.approx((r0["loss"] + r1["loss"]) / 2, rel=1e-6)
