"""The pristine stub of every exercise file, at two scaffolding levels.

- ``guided`` (the default; what a fresh clone holds): the contract docstring, then a
  ``# TODO(learner):`` comment block that walks through the solution step by step.
- ``challenge``: the same file with each such block cut to one ``# TODO(learner): …`` line.
  Only comments change, so the syntax tree, and with it every signature, docstring and
  ``raise NotImplementedError("TODO(NN slug): …")``, is the guided stub's.

This folder stores the guided stubs, mirroring the package (``workbook/stubs/model/norm.py`` is
the pristine ``workbook/model/norm.py``), so they survive the learner's edits and need no git.
Everything else is derived from them: the challenge text (:func:`challenge`) and the
walkthrough that ``python -m workbook hint ID`` shows as its last level (:func:`walkthrough`).

A walkthrough block is a comment line starting ``# TODO(learner)`` alone on its line, plus the
comment-only lines right below it at the same indentation.  After editing a stub, copy it here
with ``python tools/stubs.py sync`` (tests/test_levels.py checks that they agree).
"""
from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

from .. import stages

TEMPLATES_DIR = Path(__file__).resolve().parent
MARKER = "# TODO(learner)"
LEVELS = ("guided", "challenge")


@dataclass(frozen=True)
class Step:
    """One walkthrough block: where it stands and what it says."""

    path: str  # the exercise file, relative to the repository root
    where: str  # the enclosing function or class, e.g. "RMSNorm.forward" ("" at module level)
    text: str  # the block without the comment marks and the "TODO(learner):" prefix


def template_path(rel: str) -> Path:
    """The stored guided stub of exercise file `rel` (e.g. "workbook/model/norm.py")."""
    parts = Path(rel).parts
    if not parts or parts[0] != "workbook":
        raise ValueError(f"not an exercise file of the workbook package: {rel}")
    return TEMPLATES_DIR.joinpath(*parts[1:])


def guided(rel: str) -> str:
    """The guided stub of `rel`, as stored."""
    return template_path(rel).read_text(encoding="utf-8")


def text(rel: str, level: str) -> str:
    """The pristine stub of exercise file `rel` at `level` ("guided" or "challenge")."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: {', '.join(LEVELS)}")
    source = guided(rel)
    return source if level == "guided" else challenge(source, _stage_of(rel))


def is_pristine(rel: str, data: bytes | None) -> bool:
    """True when `data` (the bytes of exercise file `rel`; None = the file is missing) is an
    untouched stub of some level: nothing of the learner's is in it."""
    return data is None or data in {text(rel, level).encode("utf-8") for level in LEVELS}


def _stage_of(rel: str) -> str:
    module = Path(rel).with_suffix("").relative_to("workbook").as_posix().replace("/", ".")
    return stages.MODULE_STAGE[module]


def _lone_comments(source: str) -> dict[int, int]:
    """{0-based line: column} of every comment that stands alone on its line.

    Tokenised, so a "# TODO(learner)" inside a string or docstring never counts.
    """
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and not tok.line[:tok.start[1]].strip():
            found[tok.start[0] - 1] = tok.start[1]
    return found


def blocks(source: str) -> list[tuple[int, int, int]]:
    """(first line, end line (exclusive), column), 0-based, of every walkthrough block."""
    lines = source.splitlines(keepends=True)
    comments = _lone_comments(source)
    found, i = [], 0
    while i < len(lines):
        col = comments.get(i)
        if col is not None and lines[i][col:].startswith(MARKER):
            j = i + 1
            while comments.get(j) == col:
                j += 1
            found.append((i, j, col))
            i = j
        else:
            i += 1
    return found


def todo_line(stage_id: str) -> str:
    """The one comment a challenge stub keeps of each walkthrough block."""
    return f"{MARKER}: write it to the contract in the docstrings (stuck? python -m workbook hint {stage_id})"


def challenge(source: str, stage_id: str) -> str:
    """`source` (a guided stub) with every walkthrough block cut to :func:`todo_line`."""
    lines = source.splitlines(keepends=True)
    for start, end, col in reversed(blocks(source)):
        ending = "\r\n" if lines[end - 1].endswith("\r\n") else "\n"
        lines[start:end] = [lines[start][:col] + todo_line(stage_id) + ending]
    return "".join(lines)


def _scopes(source: str) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name), 1-based, of every function and class."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                found.append((child.lineno, child.end_lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def steps(source: str, rel: str) -> list[Step]:
    """The walkthrough blocks of `source` (exercise file `rel`), in file order."""
    lines = source.splitlines()
    scopes = _scopes(source)
    out = []
    for start, end, col in blocks(source):
        inside = [s for s in scopes if s[0] <= start + 1 <= s[1]]
        where = max(inside)[2] if inside else ""  # the innermost: it starts last
        first = lines[start][col + len(MARKER):].lstrip(":").strip()
        rest = textwrap.dedent("\n".join(line[col + 1:] for line in lines[start + 1:end]))
        body = "\n".join(part for part in (first, rest.strip("\n")) if part)
        out.append(Step(rel, where, body))
    return out


def walkthrough(stage_id: str) -> str:
    """The guided walkthrough of a stage, as hint text ("" for a stage without exercise files)."""
    stage = stages.get(stage_id)
    parts = []
    for rel in stage.files():
        try:
            source = guided(rel)
        except OSError:
            continue
        for step in steps(source, rel):
            title = f"{step.path} · {step.where}" if step.where else step.path
            parts.append(f"{title}\n{textwrap.indent(step.text, '    ')}")
    if not parts:
        return ""
    return ("引导级 (guided) 占位 (stub) 里一步一步的做法，也就是刚克隆下来时文件里的 "
            "`# TODO(learner)` 注释，每个函数一段：\n\n" + "\n\n".join(parts))
