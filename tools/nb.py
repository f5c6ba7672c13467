"""Author notebooks as plain text, commit them as .ipynb without outputs.

    python tools/nb.py build notebooks/src/01_rmsnorm.py notebooks/01_rmsnorm.ipynb
    python tools/nb.py text notebooks/01_rmsnorm.ipynb        # back to the text form, on stdout
    python tools/nb.py strip notebooks/*.ipynb                 # drop outputs in place

Text form ("percent" format): a line ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown
cell whose lines start with "# ", and ``# %% tags=["check"]`` a code cell with tags.  The check
cell of a lesson carries the tag ``check``: the notebook tests expect exactly those cells to fail
in learner mode.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def parse(text: str) -> list[dict]:
    cells: list[dict] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            cells.append({"kind": "markdown" if m["md"] else "code",
                          "tags": json.loads(m["tags"]) if m["tags"] else [], "lines": []})
        elif cells:
            cells[-1]["lines"].append(line)
    out = []
    for c in cells:
        lines = c["lines"]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if c["kind"] == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        source = [ln + "\n" for ln in lines]
        if source:
            source[-1] = source[-1].rstrip("\n")
        cell = {"cell_type": c["kind"], "metadata": {"tags": c["tags"]} if c["tags"] else {},
                "source": source}
        if c["kind"] == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return out


def build(src: Path, dst: Path) -> None:
    nb = {
        "cells": parse(src.read_text(encoding="utf-8")),
        "metadata": {
            # the kernel `make setup` registers (tools/lab.py): the project's .venv
            "kernelspec": {"display_name": "MiniMind Workbook", "language": "python", "name": "minimind-workbook"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4, "nbformat_minor": 5,
    }
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"{dst.stem[:2]}-{i:03d}"
    dst.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def to_text(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        head = "# %%" + (" [markdown]" if cell["cell_type"] == "markdown" else "")
        if tags:
            head += " tags=" + json.dumps(tags, ensure_ascii=False)
        body = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            body = "\n".join("# " + ln if ln else "#" for ln in body.split("\n"))
        parts.append(head + "\n" + body + "\n")
    return "\n".join(parts)


def strip(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "build":
        build(Path(args[0]), Path(args[1]))
    elif cmd == "text":
        sys.stdout.write(to_text(Path(args[0])))
    elif cmd == "strip":
        for a in args:
            strip(Path(a))
    else:
        raise SystemExit(__doc__)
