"""The grading tree: the course's own files, plus only the files a learner owns.

``grade --submission DIR`` never runs anything of DIR but its exercise files.  This module builds a
fresh temporary tree from the *grading copy* (the teacher's clean course, where this package was
imported from): its ``workbook/`` package (checks, registry, provided code), its notebooks, and a
link to its data; then, for each exercise file the stage registry lists, it copies the
submission's file over the stub — if it is a regular file of sane size, reached without any
symbolic link.  Everything else in DIR (edited checks, ``stages.py``, ``conftest.py``,
``sitecustomize.py``, ``.pth`` files, notebooks, workflows) takes no part.

The reference is copied to a separate private temporary folder, so the judge can load it from a
place the learner's code is not given (see ``workbook.sealed.judge``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import stages, stubs

MAX_FILE_BYTES = 512 * 1024  # an exercise file is a few KB; a bigger one is refused
OK, MISSING, PRISTINE, REFUSED = "ok", "missing", "pristine", "refused"
# the judge's own files: never copied from a submission, and closed to learner code at run time
JUDGE_PATHS = ("workbook/checks", "workbook/sealed", "workbook/_modes.py", "workbook/grade.py",
               "workbook/stages.py", "tests")


@dataclass
class Owned:
    """One exercise file of the submission, as graded."""

    rel: str  # e.g. "workbook/model/norm.py"
    status: str  # OK (the learner's), PRISTINE (an untouched stub), MISSING, REFUSED
    sha256: str | None = None  # of the bytes graded (the stub's, unless OK)
    why: str = ""  # REFUSED: the reason, in Chinese
    tampered: bool = False  # REFUSED for a reason no honest learner has (a link, a device)

    def to_dict(self) -> dict:
        d = {"status": self.status, "sha256": self.sha256}
        if self.why:
            d["why"] = self.why
        return d


@dataclass
class GradingTree:
    course: Path  # the grading copy's root
    submission: Path
    tree: Path  # the fresh tree the checks run in (holds workbook/, notebooks/, data -> course)
    reference: Path  # private copy of the reference (its own temporary folder)
    files: dict[str, Owned] = field(default_factory=dict)

    def written(self, stage: stages.Stage) -> bool:
        """Did the learner write any of the stage's files?  A stage without files (13) counts as
        written when every stage with files it builds on is."""
        if stage.modules:
            return any(self.files[f].status == OK for f in stage.files())
        closure = [stages.get(s) for s in prerequisites(stage)]
        with_files = [s for s in closure if s.modules]
        return bool(with_files) and all(self.written(s) for s in with_files)

    def refused(self, stage: stages.Stage) -> list[Owned]:
        return [self.files[f] for f in stage.files() if self.files[f].status == REFUSED]

    def learner_files(self) -> list[Path]:
        """The files in the tree whose code is the learner's (what the judge guards against)."""
        return [self.tree / rel for rel, o in self.files.items() if o.status == OK]

    def cleanup(self) -> None:
        shutil.rmtree(self.tree.parent, ignore_errors=True)
        shutil.rmtree(self.reference, ignore_errors=True)


def prerequisites(stage: stages.Stage) -> list[str]:
    """Every stage `stage` builds on, transitively, in registry order (itself excluded)."""
    seen: set[str] = set()
    todo = list(stage.requires)
    while todo:
        sid = todo.pop()
        if sid not in seen:
            seen.add(sid)
            todo.extend(stages.get(sid).requires)
    return [s.id for s in stages.STAGES if s.id in seen]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_owned(submission: Path, rel: str) -> tuple[Owned, bytes | None]:
    """The submission's file `rel`, or why it is refused; no link is ever followed."""
    here = submission
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return Owned(rel, MISSING), None
        except OSError as e:
            return Owned(rel, REFUSED, why=f"读不了（{e.strerror}）"), None
        if stat.S_ISLNK(st.st_mode):
            what = "文件" if i == len(parts) - 1 else f"路径中的目录 {'/'.join(parts[:i + 1])}"
            return Owned(rel, REFUSED, why=f"{what}是符号链接 (symlink)：评分只收普通文件", tampered=True), None
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return Owned(rel, MISSING), None
    if not stat.S_ISREG(st.st_mode):
        return Owned(rel, REFUSED, why="不是普通文件（设备、管道或目录）", tampered=True), None
    if st.st_size > MAX_FILE_BYTES:
        return Owned(rel, REFUSED, why=f"文件太大（{st.st_size:,} 字节，上限 {MAX_FILE_BYTES:,}）"), None
    try:
        data = here.read_bytes()
    except OSError as e:
        return Owned(rel, REFUSED, why=f"读不了（{e.strerror}）"), None
    if len(data) > MAX_FILE_BYTES:  # it grew between lstat and read
        return Owned(rel, REFUSED, why=f"文件太大（上限 {MAX_FILE_BYTES:,} 字节）"), None
    return Owned(rel, OK, sha256(data)), data


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith(".pyc")}


def build(course: Path, submission: Path, reference: Path) -> GradingTree:
    """A fresh grading tree for `submission`, judged by the course at `course` against the
    reference folder `reference` (a ``solutions/`` layout).  Call ``cleanup()`` when done."""
    course, submission = Path(course).resolve(), Path(submission).absolute()
    root = Path(tempfile.mkdtemp(prefix="workbook-grade-"))
    tree = root / "tree"
    tree.mkdir()
    shutil.copytree(course / "workbook", tree / "workbook", ignore=_ignore)
    if (course / "notebooks").is_dir():
        shutil.copytree(course / "notebooks", tree / "notebooks", ignore=_ignore)
    if (course / "data").exists():
        (tree / "data").symlink_to(course / "data", target_is_directory=True)
    private = Path(tempfile.mkdtemp(prefix="wb-"))
    shutil.copytree(reference, private, ignore=_ignore, dirs_exist_ok=True)
    graded = GradingTree(course, submission, tree, private)
    for stage in stages.STAGES:
        for rel in stage.files():
            owned, data = _read_owned(submission, rel)
            if owned.status == OK and stubs.is_pristine(rel, data):
                owned.status = PRISTINE
            if owned.status != OK:
                data = stubs.guided(rel).encode("utf-8")  # the stub stands in: nothing to run
            (tree / rel).write_bytes(data)
            graded.files[rel] = owned
    return graded
