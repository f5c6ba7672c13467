"""Test-session set-up: learner mode in this process, a headless matplotlib.

The mode is read once, when `workbook` is first imported; tests of other modes start
subprocesses (tests/helpers.py: run_py).
"""
import os

os.environ["WORKBOOK_IMPL"] = "learner"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "offline")
