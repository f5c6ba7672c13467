"""Helpers shared by the tests."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_py(args, mode="learner", timeout=300, **kw):
    """Run `python ARGS` from the repository root in WORKBOOK_IMPL=mode; returns CompletedProcess."""
    env = dict(os.environ, WORKBOOK_IMPL=mode, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def learner_tree(dest, finished=True):
    """A copy of the workbook at `dest` for fault injection: edit its learner files freely.

    finished=True: every exercise file holds the reference code (a learner who has written
    everything); False: the stubs of a fresh clone.  `data/` is a symlink to the repository's
    (read only).  Run commands in it with `run_in_tree`, which puts `dest` first on sys.path.
    """
    import shutil

    from workbook import stages

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in ("workbook", "solutions", "notebooks", "tools"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, dest / name)
    (dest / "data").symlink_to(ROOT / "data", target_is_directory=True)
    if finished:
        for stage in stages.STAGES:
            for rel in stage.modules:
                path = rel.replace(".", "/") + ".py"
                shutil.copyfile(ROOT / "solutions" / path, dest / "workbook" / path)
    return dest


def run_in_tree(tree, args, mode="learner", timeout=300, env=None, **kw):
    """`python ARGS` with cwd and sys.path[0] = tree (its `workbook` shadows the installed one)."""
    full_env = dict(os.environ, WORKBOOK_IMPL=mode, PYTHONIOENCODING="utf-8", PYTHONPATH=str(tree))
    if env:
        full_env.update(env)
    if mode is None:
        full_env.pop("WORKBOOK_IMPL")
    return subprocess.run([sys.executable, *args], cwd=tree, env=full_env, capture_output=True,
                          text=True, timeout=timeout, **kw)


# Runs a trainer module (argv[1]) with its remaining arguments, and SIGKILLs the process itself
# the moment its first checkpoint pair is on disk: a kill -9 at a known point, whatever the load
# (a test that polls for the file and then kills races the trainer on a busy machine).
KILL_AFTER_FIRST_SAVE = """
import os, runpy, signal, sys
import workbook.train.trainer as trainer
save_pair = trainer.save_pair
def save_then_die(*args, **kwargs):
    save_pair(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
trainer.save_pair = save_then_die
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def kill_and_resume(args_for, save_name, tmp_path, mode="solutions"):
    """Exact resume after kill -9, for any trainer.

    args_for(save_dir, *extra) -> the `python -m MODULE ...` arguments of one run.  The run is
    done once to the end (save_dir a), and once killed with SIGKILL right after its first
    checkpoint (KILL_AFTER_FIRST_SAVE), then resumed with --from_resume 1 (save_dir b).  Asserts
    the logged losses and the final weights agree; returns (full history, resumed history,
    micro-step the kill left on disk).
    """
    import torch

    a, b = tmp_path / "a", tmp_path / "b"
    out = run_py(args_for(a), mode=mode, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    full = torch.load(a / f"{save_name}_resume.pth", weights_only=True)["history"]

    args = args_for(b)
    assert args[0] == "-m", args
    killed = run_py(["-c", KILL_AFTER_FIRST_SAVE, *args[1:]], mode=mode, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    resume = b / f"{save_name}_resume.pth"
    assert resume.is_file() and not (b / f"{save_name}_summary.json").exists()
    saved_at = torch.load(resume, weights_only=True)["step"]

    out = run_py(args_for(b, "--from_resume", "1"), mode=mode, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "续训" in out.stdout
    resumed = torch.load(resume, weights_only=True)["history"]
    assert [s for s, _ in resumed["train"]] == [s for s, _ in full["train"]]
    for (s, x), (_, y) in zip(full["train"], resumed["train"]):
        assert abs(x - y) < 1e-5, f"loss differs at optimizer step {s}: {x} vs {y}"
    wa = torch.load(a / f"{save_name}.pth", weights_only=True)
    wb = torch.load(b / f"{save_name}.pth", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    return full, resumed, saved_at


def pretrain_tiny(save_dir, hidden: int = 64, layers: int = 2):
    """A 4-step pretrained tiny MiniMind (reference code) to start a Part 2 trainer from: the
    weights path; the config JSON beside it gives the trainers the shape."""
    out = run_py(["-m", "workbook.train.pretrain", "--save_dir", str(save_dir), "--hidden_size", str(hidden),
                  "--num_hidden_layers", str(layers), "--num_attention_heads", "4", "--num_key_value_heads", "2",
                  "--max_seq_len", "128", "--batch_size", "8", "--num_workers", "0", "--dtype", "float32",
                  "--no_progress", "--val_path", "", "--samples", "0",
                  "--data_path", str(ROOT / "data" / "pretrain_poetry_val.jsonl.gz"), "--max_steps", "4",
                  "--accumulation_steps", "1", "--save_interval", "4"], mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(save_dir) / f"pretrain_{hidden}.pth"
