"""Tamper evidence: a learner file that borrows the reference instead of implementing it.

A stage's check compares the learner's module with the reference; a learner file that simply
imports the reference (``from solutions.model.norm import RMSNorm``, the private
``_workbook_reference`` namespace, the mode switch ``workbook._modes``) or sets ``WORKBOOK_IMPL``
would pass without being written.  :func:`scan` reads the stage's files (their syntax tree, so
comments and docstrings do not count) and reports each such line; the check runner then reports
the stage as "tampered" instead of running it.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# module names learner code must not import
_FORBIDDEN_MODULES = ("solutions", "_workbook_reference", "workbook._modes")
# words that must not appear in a string the code uses (an import by name, an env var, a path)
_FORBIDDEN_WORDS = re.compile(r"\bsolutions\b|_workbook_reference|WORKBOOK_IMPL|WORKBOOK_REFERENCE")


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the repository root
    line: int
    text: str  # the source line
    why: str  # Chinese, one phrase


def _forbidden_module(name: str | None) -> bool:
    return bool(name) and any(name == m or name.startswith(m + ".") for m in _FORBIDDEN_MODULES)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (allowed to mention anything)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
    return ids


def scan_source(source: str, rel_path: str) -> list[Finding]:
    """Every line of `source` that borrows the reference or switches the mode."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the check itself reports the syntax error
    lines = source.splitlines()
    docstrings = _docstring_nodes(tree)
    found: list[Finding] = []

    def add(node: ast.AST, why: str) -> None:
        lineno = getattr(node, "lineno", 0)
        text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        found.append(Finding(rel_path, lineno, text, why))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _forbidden_module(alias.name):
                    add(node, f"导入了 {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and _forbidden_module(node.module):
                add(node, f"从 {node.module} 导入")
            elif node.level == 0 and node.module == "workbook" and any(a.name == "_modes" for a in node.names):
                add(node, "导入了模式开关 workbook._modes")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            m = _FORBIDDEN_WORDS.search(node.value)
            if m:
                add(node, f"用到了字符串 {m.group(0)!r}")
    # one finding per line is enough
    seen, unique = set(), []
    for f in sorted(found, key=lambda f: f.line):
        if f.line not in seen:
            seen.add(f.line)
            unique.append(f)
    return unique


def scan(files: list[Path], root: Path) -> list[Finding]:
    out: list[Finding] = []
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = str(path)
        out.extend(scan_source(source, rel))
    return out


def message(findings: list[Finding]) -> str:
    head = ("你的代码用了参考实现或模式开关，而不是自己实现 (tamper evidence)：这一阶段不算通过。"
            "删掉这些行，自己写出来；卡住时用 python -m workbook hint，或在 WORKBOOK_IMPL 里跳过这一阶段。")
    return head + "".join(f"\n  {f.path} 第 {f.line} 行（{f.why}）：{f.text[:160]}" for f in findings[:8])
