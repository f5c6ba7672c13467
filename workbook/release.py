"""``python -m workbook release DIR``: a student copy of the repository without the reference.

For a classroom: the teacher publishes DIR (stubs, notebooks, data, tools, the grading
workflow, and the tests that do not need the reference); ``solutions/`` stays private.  In the
copy, ``check`` and ``grade`` say that the reference is missing, and take ``--reference PATH``
(or ``WORKBOOK_REFERENCE=PATH``) so the teacher's grading job can supply it.

The copy is made from the files git tracks (or, outside git, from the working tree minus build
folders), and refused if an exercise file is not a stub: a teacher's own finished answers must
never leave with the release.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import _modes, stages

REPO = _modes.PACKAGE_DIR.parent
# Tests that pass without solutions/ (tests/test_release.py runs them inside a release)
RELEASE_TESTS = ("__init__.py", "conftest.py", "helpers.py", "test_data_faults.py",
                 "test_packaging.py")
_NEVER = ("solutions/", ".git/", ".venv/", "out/", "wandb/", "build/", "dist/", ".workbook/",
          ".pytest_cache/")
NOTE = """> **课堂发布版 (classroom release)**：这份仓库没有参考实现 `solutions/`。检查和评分由老师的评分任务
> 提供参考实现（`python -m workbook grade --reference PATH`）；不设它时，`check` 会说明参考实现缺失。
> *Classroom release: the reference implementation is not included; the teacher's grading job supplies it.*

"""


def _tracked_files(root: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
        files = [f for f in out.stdout.decode("utf-8").split("\0") if f]
        # files added to the working tree but not yet committed count too (a new stage, a test)
        extra = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=root,
                               capture_output=True, check=True)
        files += [f for f in extra.stdout.decode("utf-8").split("\0") if f]
        return sorted(set(files))
    except (OSError, subprocess.CalledProcessError):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                      and "__pycache__" not in p.parts)


def _keep(rel: str) -> bool:
    if rel.startswith(_NEVER) or "__pycache__" in rel or rel.endswith(".pyc"):
        return False
    if rel.startswith("tests/"):
        return rel.count("/") == 1 and rel.split("/", 1)[1] in RELEASE_TESTS
    return True


def write_release(dest: str | Path, root: Path = REPO) -> Path:
    """Write the student copy to `dest` (must not exist or be empty); returns it."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} 已存在且不是空目录：换一个目录。")
    exercise = {f for s in stages.STAGES for f in s.files()}
    for rel in sorted(exercise):
        text = (root / rel).read_text(encoding="utf-8")
        if "TODO(learner)" not in text or "raise NotImplementedError" not in text:
            raise ValueError(f"{rel} 不是占位 (stub)：学生版只能从没写过的仓库生成（例如一份干净的 "
                             f"git clone），不然你的答案会跟着发出去。")
    files = [f for f in _tracked_files(root) if _keep(f) and (root / f).is_file()]
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    readme = dest / "README.md"
    if readme.is_file():
        readme.write_text(NOTE + readme.read_text(encoding="utf-8"), encoding="utf-8")
    return dest
