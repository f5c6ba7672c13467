"""``grade --notebooks``: the course's notebook of each passed stage, run on the submission's files.

The notebooks come from the grading copy (the tree ``workbook.sealed.tree`` built), never from the
submission, so an edited or deleted check cell, a cell that sets ``WORKBOOK_IMPL`` or a
``conftest.py`` changes nothing; pytest runs with ``--noconftest`` and no ini file.  Only a stage
the sealed check passed is run, so a notebook can turn a pass into a failure, never the reverse:
the kernel runs learner code unguarded, and what it does there cannot create a pass.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import _modes, stages
from ..checks.harness import FAIL, PASS
from .tree import GradingTree

CELL_TIMEOUT = 600


def run_notebook(graded: GradingTree, stage: stages.Stage, served: list[str],
                 timeout: float = 60 * 30) -> tuple[str, str]:
    """(PASS or FAIL, message) for the course's notebook of `stage`, run in the grading tree."""
    notebook = graded.tree / stage.notebook
    if not notebook.is_file():
        return PASS, "这一阶段没有笔记本。"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WORKBOOK_"))}
    env.update(PYTHONPATH=str(graded.tree), PYTHONIOENCODING="utf-8", MPLBACKEND="Agg",
               WORKBOOK_IMPL=_modes.format_mode(frozenset(served)), WORKBOOK_REFERENCE=str(graded.reference))
    with tempfile.TemporaryDirectory(prefix="workbook-nb-") as tmp:
        xml = Path(tmp) / "nb.xml"
        try:
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
                 f"--nbval-cell-timeout={CELL_TIMEOUT}", "-p", "no:cacheprovider", "--noconftest",
                 "-o", "addopts=", "--color=no", "-q", f"--junitxml={xml}", "--rootdir", str(graded.tree),
                 "-c", os.devnull, stage.notebook],
                cwd=graded.tree, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return FAIL, f"{stage.notebook} 运行超过 {timeout:g} 秒。"
        if not xml.exists():
            return FAIL, f"{stage.notebook} 没能运行：\n" + "\n".join(out.stdout.splitlines()[-8:])
        failed = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            for child in case:
                if child.tag in ("failure", "error"):
                    cell = re.search(r"Cell \d+", case.get("name", ""))
                    text = (child.get("message") or "") + "\n" + (child.text or "")
                    failed.append(f"{cell.group(0) if cell else case.get('name')}：" +
                                  "\n".join(text.strip().splitlines()[-6:]))
        if failed or out.returncode != 0:
            return FAIL, (f"{stage.notebook} 里有 {len(failed)} 个单元格出错（课程的笔记本，用你的文件）：\n"
                          + "\n".join(failed[:3]))
        return PASS, f"{stage.notebook} 从头到尾跑通了。"
