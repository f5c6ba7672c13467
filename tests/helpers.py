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
