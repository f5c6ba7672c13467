"""Faults injected on purpose: a pass is always earned, a run never destroys work, a file never
runs code.  Every case is a real fault (a hanging or exiting learner file, a NaN run, a crafted
pickle, a full disk, a stopped DDP rank), not a mock of the code under test.

The learner-code cases run in a copy of the workbook (tests.helpers.learner_tree) whose learner
files hold the reference code plus the injected fault.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, learner_tree, run_in_tree, run_py

NORM_ANCHOR = "        # Square and average in fp32"


@pytest.fixture(scope="module")
def finished_tree(tmp_path_factory):
    """A learner who has written every stage (the reference code in the learner files)."""
    return learner_tree(tmp_path_factory.mktemp("finished") / "wb")


def inject_into_norm(tree: Path, code: str) -> None:
    path = tree / "workbook" / "model" / "norm.py"
    original = (ROOT / "solutions" / "model" / "norm.py").read_text(encoding="utf-8")
    assert NORM_ANCHOR in original
    path.write_text(original.replace(NORM_ANCHOR, code + "\n" + NORM_ANCHOR), encoding="utf-8")


def restore_norm(tree: Path) -> None:
    (tree / "workbook" / "model" / "norm.py").write_text(
        (ROOT / "solutions" / "model" / "norm.py").read_text(encoding="utf-8"), encoding="utf-8")


# --- 2. checks run learner code under a time limit and pass only positively ---------------------

# The limit the hang tests set: short enough to keep them quick, long enough that an honest
# check (its process start-up included: importing torch takes seconds on a loaded 2-core
# machine) never reaches it.  4 s failed there.
LIMIT = "15"

@pytest.mark.parametrize("code, exit_code, fragment", [
    ("        while True:\n            pass", 1, f"运行超过 {LIMIT} 秒：死循环？"),
    ("        import os; print('bye'); os._exit(0)", 1, "检查进程提前退出了（退出码 0）"),
    ("        import sys; sys.exit(0)", 1, "调用了 sys.exit(0)"),
    ("        import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", 1, "被信号 SIGSEGV 终止"),
])
def test_check_survives_hangs_and_exits_in_learner_code(finished_tree, code, exit_code, fragment):
    inject_into_norm(finished_tree, code)
    try:
        # the budget: a hang must end within the check's limit, long before this timeout
        out = run_in_tree(finished_tree, ["-m", "workbook", "check", "01"],
                          env={"WORKBOOK_CHECK_TIMEOUT": LIMIT}, timeout=300)
    finally:
        restore_norm(finished_tree)
    assert out.returncode == exit_code, out.stdout + out.stderr
    assert fragment in out.stdout, out.stdout
    assert "✗ 01" in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_progress_and_export_inherit_the_time_limit(finished_tree, tmp_path):
    inject_into_norm(finished_tree, "        while True:\n            pass")
    try:
        out = run_in_tree(finished_tree, ["-m", "workbook", "progress"],
                          env={"WORKBOOK_CHECK_TIMEOUT": LIMIT}, timeout=300)
        assert out.returncode == 0, out.stderr
        rows = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.startswith("  ") and ln.split()[0].isdigit()}
        assert "✗ 未通过" in rows["01"] and "✓ 通过" in rows["00"] and "✓ 通过" in rows["02"]
        assert "等前置阶段" in rows["06"]  # the block needs RMSNorm
        dest = tmp_path / "exp"
        out = run_in_tree(finished_tree, ["-m", "workbook", "export", str(dest)],
                          env={"WORKBOOK_CHECK_TIMEOUT": LIMIT}, timeout=300)
    finally:
        restore_norm(finished_tree)
    assert out.returncode == 1
    assert "01 rmsnorm" in out.stderr and f"运行超过 {LIMIT} 秒" in out.stderr
    assert not dest.exists()


def default_sigint() -> None:
    """In the child: Ctrl-C acts as in a terminal even when the test run itself was started in the
    background (`cmd &` in a non-interactive shell ignores SIGINT, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_a_check_is_one_friendly_line(finished_tree):
    # the learner's code says when it is inside the loop (the check echoes it): no fixed sleep,
    # which a loaded machine can outlast before the check has even started
    inject_into_norm(finished_tree, "        print('INSIDE THE LOOP', flush=True)\n        while True:\n            pass")
    env = dict(os.environ, WORKBOOK_IMPL="learner", PYTHONPATH=str(finished_tree), PYTHONIOENCODING="utf-8")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "workbook", "check", "01"], cwd=finished_tree,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=default_sigint)
        for line in proc.stdout:
            if "INSIDE THE LOOP" in line:
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        restore_norm(finished_tree)
    assert proc.returncode == 130
    assert "已中断 (Ctrl-C)" in stderr and "Traceback" not in stdout + stderr


# --- 1. export judges the learner's own files ----------------------------------------------------

def test_export_ignores_the_mode_and_names_stages_served_by_the_reference(tmp_path):
    # a fresh clone: every exercise is a stub, even if WORKBOOK_IMPL serves 00-06 from the reference
    out = run_py(["-m", "workbook", "export", str(tmp_path / "x")], mode="solutions:00-06", timeout=300)
    assert out.returncode == 1
    for sid in ("00 welcome", "01 rmsnorm", "02 rope", "03 attention", "06 block"):
        assert sid in out.stderr, out.stderr
    assert "不看 WORKBOOK_IMPL" in out.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_forced_export_records_and_warns_about_failing_stages(finished_tree, tmp_path):
    attention = finished_tree / "workbook" / "model" / "attention.py"
    original = attention.read_text(encoding="utf-8")
    broken = original.replace("is_causal=True", "is_causal=False")
    assert broken != original
    attention.write_text(broken, encoding="utf-8")
    dest = tmp_path / "exp"
    try:
        out = run_in_tree(finished_tree, ["-m", "workbook", "export", str(dest), "--force"],
                          mode="solutions", timeout=600)
    finally:
        attention.write_text(original, encoding="utf-8")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "警告" in out.stderr and "03 attention" in out.stderr
    status = json.loads((dest / "workbook" / "export_status.json").read_text(encoding="utf-8"))
    assert status["forced"] and status["source"] == "learner"
    assert "03 attention" in status["failing"] and "01 rmsnorm" not in status["failing"]
    by_stage = {s["stage"]: s for s in status["stages"]}
    assert by_stage["03"]["status"] == "fail" and by_stage["01"]["status"] == "pass"
    assert "03 attention" in (dest / "README.md").read_text(encoding="utf-8")
    assert (dest / "workbook" / "model" / "attention.py").read_text(encoding="utf-8") == broken
    # the package itself warns whenever it is imported
    warn = subprocess.run([sys.executable, "-c", "import workbook"], cwd=dest, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(dest)))
    assert warn.returncode == 0 and "--force" in warn.stderr and "03 attention" in warn.stderr


# --- 4-6. training never writes a bad state; no file runs code -----------------------------------

TINY = ["--data_path", str(ROOT / "data" / "pretrain_poetry_val.jsonl.gz"), "--hidden_size", "64",
        "--num_hidden_layers", "2", "--num_attention_heads", "4", "--num_key_value_heads", "2",
        "--max_seq_len", "64", "--batch_size", "8", "--num_workers", "0", "--dtype", "float32",
        "--samples", "0", "--no_progress", "--val_path", "", "--accumulation_steps", "1", "--log_interval", "1"]


def pretrain(save_dir, *extra, timeout=300):
    return run_py(["-m", "workbook.train.pretrain", "--save_dir", str(save_dir), *TINY, *extra],
                  mode="solutions", timeout=timeout)


def snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step run: weights, resume file, summary."""
    save = tmp_path_factory.mktemp("trained")
    out = pretrain(save, "--max_steps", "4", "--save_interval", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    return save


def test_diverging_run_stops_before_saving_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    for p in trained.iterdir():
        (save / p.name).write_bytes(p.read_bytes())
    before = snapshot(save)
    # a finite but absurd learning rate: the weights turn NaN within a few steps
    out = pretrain(save, "--from_weight", "pretrain", "--learning_rate", "1e4", "--max_steps", "8",
                   "--save_interval", "8")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "不是有限数 non-finite" in out.stderr or "NaN/inf" in out.stderr
    assert "之前的存档保持原样" in out.stderr and "Traceback" not in out.stderr
    assert "完成" not in out.stdout
    assert snapshot(save) == before


@pytest.mark.parametrize("flag, value", [("--learning_rate", "inf"), ("--grad_clip", "nan"),
                                         ("--learning_rate", "-1")])
def test_non_finite_or_negative_hyperparameters_are_refused_up_front(tmp_path, flag, value):
    out = pretrain(tmp_path, flag, value, "--max_steps", "2", "--save_interval", "2")
    assert out.returncode == 2 and f"{flag} 必须是有限的正数" in out.stderr
    assert not any(tmp_path.iterdir())


def test_resuming_a_finished_run_changes_nothing(trained):
    before = snapshot(trained)
    out = pretrain(trained, "--max_steps", "4", "--save_interval", "2", "--from_resume", "1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "已经完成" in out.stdout and "什么都没有改动" in out.stdout
    assert snapshot(trained) == before


def test_from_weight_loads_strictly_and_strips_wrapper_prefixes(trained, tmp_path):
    weights = torch.load(trained / "pretrain_64.pth", weights_only=True)
    torch.save({f"module._orig_mod.{k}": v for k, v in weights.items()}, tmp_path / "wrapped_64.pth")
    out = pretrain(tmp_path, "--from_weight", "wrapped", "--max_steps", "1", "--save_interval", "1",
                   "--learning_rate", "1e-9", "--save_weight", "again")
    assert out.returncode == 0, out.stderr[-2000:]
    again = torch.load(tmp_path / "again_64.pth", weights_only=True)
    # lr 1e-9: one step moves nothing that fp16 can see, so the loaded weights come back
    assert all(torch.allclose(again[k].float(), weights[k].float(), atol=1e-3) for k in weights)
    # a file for another model: missing and unexpected keys are named, nothing is written
    shrunk = {k: v for k, v in weights.items() if ".layers.1." not in k}
    shrunk["model.layers.9.mlp.up_proj.weight"] = torch.zeros(1)
    torch.save(shrunk, tmp_path / "other_64.pth")
    out = pretrain(tmp_path / "o", "--from_weight", str(tmp_path / "other_64.pth"), "--max_steps", "1",
                   "--save_interval", "1")
    assert out.returncode == 2
    assert "missing" in out.stderr and "model.layers.1.self_attn.q_proj.weight" in out.stderr
    assert "unexpected" in out.stderr and "model.layers.9.mlp.up_proj.weight" in out.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


class _Evil:
    """Unpickling this calls os.system: a crafted checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("as_what", ["resume", "from_weight"])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, as_what):
    marker = tmp_path / "PWNED"
    save = tmp_path / "run"
    save.mkdir()
    if as_what == "resume":
        torch.save({"model": _Evil(marker), "optimizer": {}, "epoch": 0, "step": 1},
                   save / "pretrain_64_resume.pth")
        extra = ["--from_resume", "1"]
    else:
        torch.save({"lm_head.weight": _Evil(marker)}, save / "evil_64.pth")
        extra = ["--from_weight", "evil"]
    before = snapshot(save)
    out = pretrain(save, *extra, "--max_steps", "1", "--save_interval", "1")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "拒绝加载" in out.stderr and "posix.system" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists(), "the crafted file ran code"
    assert snapshot(save) == before


def test_the_resume_file_holds_only_plain_values(trained):
    state = torch.load(trained / "pretrain_64_resume.pth", weights_only=True)
    assert {"model", "optimizer", "scaler", "epoch", "step", "history", "rng"} <= set(state)


def test_a_full_disk_keeps_the_previous_checkpoint_and_cleans_up(trained, tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    for p in trained.iterdir():
        (save / p.name).write_bytes(p.read_bytes())
    before = snapshot(save)
    # the temporary file of the next save points at /dev/full: every write fails with ENOSPC
    (save / "pretrain_64.pth.tmp").symlink_to("/dev/full")
    out = pretrain(save, "--max_steps", "2", "--save_interval", "2")
    assert out.returncode == 1, out.stderr[-2000:]
    assert "磁盘空间不足 (No space left on device)" in out.stderr and "之前的存档保持原样" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (save / "pretrain_64.pth.tmp").exists() and not (save / "pretrain_64.pth.tmp").is_symlink()
    assert snapshot(save) == before


@pytest.mark.slow
def test_ctrl_c_during_training_prints_the_resume_command(tmp_path):
    env = dict(os.environ, WORKBOOK_IMPL="solutions", PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    args = ["-m", "workbook.train.pretrain", "--save_dir", str(tmp_path), *TINY, "--max_steps", "100000",
            "--save_interval", "2"]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    for line in proc.stdout:
        if "micro-step 3/" in line:  # a checkpoint exists at micro-step 2
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "已中断 (Ctrl-C)" in stderr and "--from_resume 1" in stderr and "Traceback" not in stderr
    assert (tmp_path / "pretrain_64_resume.pth").is_file()


# --- 7. DDP cannot hang unboundedly ------------------------------------------------------------

def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


@pytest.mark.slow
def test_a_stopped_ddp_rank_ends_every_process_within_the_timeout(tmp_path):
    timeout = 10
    # gloo detects the missing peer after --ddp_timeout; torchrun then gives the stopped rank 30 s
    # to exit after SIGTERM before it sends SIGKILL: about 40 s.  The budget leaves a loaded
    # machine room and still tells this apart from gloo's default wait (30 minutes)
    bound = 300
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "workbook.train.pretrain", "--save_dir", str(tmp_path), *TINY,
           "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
           "--num_key_value_heads", "1", "--batch_size", "4", "--max_steps", "100000",
           "--save_interval", "1000", "--ddp_timeout", str(timeout)]
    env = dict(os.environ, WORKBOOK_IMPL="solutions", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    workers = []
    try:
        for line in proc.stdout:
            if "micro-step 3/" in line:
                break
        workers = _children(proc.pid)
        rank1 = [w for w in workers if b"RANK=1\0" in Path(f"/proc/{w}/environ").read_bytes()]
        assert len(workers) == 2 and len(rank1) == 1, workers
        os.kill(rank1[0], signal.SIGSTOP)
        stopped = time.monotonic()
        rest, _ = proc.communicate(timeout=bound + 60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode != 0
    assert took < bound, f"took {took:.0f} s after the rank was stopped"
    assert "分布式通信超时" in rest and f"{timeout} 秒（--ddp_timeout）" in rest, rest[-3000:]
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]


# --- 6. data faults are found before step 1 --------------------------------------------------------

def test_a_malformed_line_stops_the_run_before_step_one(tmp_path):
    import gzip

    lines = gzip.open(ROOT / "data" / "pretrain_poetry_val.jsonl.gz", "rt", encoding="utf-8").read().splitlines()
    lines[300] = lines[300][:-5]  # cut inside the string: no longer JSON
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    save = tmp_path / "out"
    out = run_py(["-m", "workbook.train.pretrain", "--save_dir", str(save), *TINY, "--data_path", str(data),
                  "--max_steps", "2", "--save_interval", "2"], mode="solutions")
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"{data}:301:" in out.stderr and "malformed JSON" in out.stderr and "Traceback" not in out.stderr
    assert "step 1" not in out.stdout
    assert not save.exists() or not any(save.iterdir())
