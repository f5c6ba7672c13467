"""Every notebook runs top to bottom under nbval, in every mode.

- solutions mode: every cell passes;
- learner mode (a fresh clone: every exercise a stub): exactly the cells tagged ``check`` fail.
  Any other failing cell, or a check cell that passes on a stub, fails this test.
- no notebook carries stored outputs, and none names the solutions package.
"""
import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import ROOT, run_py

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 600


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def check_cells(path):
    """nbval item names ('Cell N', N = index among code cells) of the cells tagged `check`."""
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    return {f"Cell {i}" for i, c in enumerate(code) if "check" in c.get("metadata", {}).get("tags", [])}


def run_nbval(mode, tmp_path):
    """Run nbval on all notebooks in `mode`; returns {notebook: {cell: passed}}."""
    xml = tmp_path / f"nbval-{mode.replace(':', '_')}.xml"
    n = "2" if (os.cpu_count() or 1) >= 2 else "1"
    out = run_py(["-m", "pytest", "--nbval-lax", "--nbval-current-env",
                  f"--nbval-cell-timeout={CELL_TIMEOUT}", "-p", "no:cacheprovider",
                  "-n", n, "--dist", "loadfile", f"--junitxml={xml}", "-q", "-o", "addopts=",
                  "--rootdir", str(ROOT), *[str(p.relative_to(ROOT)) for p in NOTEBOOKS]],
                 mode=mode, timeout=60 * 30)
    assert xml.exists(), out.stdout[-3000:] + out.stderr[-3000:]
    results: dict = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name", "")
        nb = re.search(r"(\d\d_\w+)\.ipynb", case.get("classname", "") + " " + case.get("file", "") + " " + name)
        cell = re.search(r"Cell \d+", name)
        assert nb and cell, f"unexpected nbval item: {case.attrib}"
        failed = any(child.tag in ("failure", "error") for child in case)
        results.setdefault(nb.group(1) + ".ipynb", {})[cell.group(0)] = (not failed, case)
    return results, out


def _failures(results):
    return {(nb, cell) for nb, cells in results.items() for cell, (ok, _) in cells.items() if not ok}


def _detail(results, keys):
    parts = []
    for nb, cell in sorted(keys):
        case = results[nb][cell][1]
        for child in case:
            parts.append(f"--- {nb} {cell}\n{(child.text or child.get('message', ''))[-1500:]}")
    return "\n".join(parts)


def test_every_notebook_has_a_check_cell():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        assert check_cells(path), f"{path.name} has no cell tagged 'check'"


@pytest.mark.slow
def test_notebooks_pass_in_solutions_mode(tmp_path):
    results, out = run_nbval("solutions", tmp_path)
    assert {p.name for p in NOTEBOOKS} == set(results), out.stdout[-2000:]
    bad = _failures(results)
    assert not bad, "cells failing in solutions mode:\n" + _detail(results, bad)


@pytest.mark.slow
def test_only_check_cells_fail_in_learner_mode(tmp_path):
    results, out = run_nbval("learner", tmp_path)
    assert {p.name for p in NOTEBOOKS} == set(results), out.stdout[-2000:]
    expected = {(p.name, c) for p in NOTEBOOKS for c in check_cells(p)}
    bad = _failures(results)
    unexpected = bad - expected
    assert not unexpected, "cells that must not fail on stubs:\n" + _detail(results, unexpected)
    passing_checks = expected - bad
    assert not passing_checks, f"check cells that passed on a stub: {sorted(passing_checks)}"


def test_notebooks_have_no_outputs():
    for path in NOTEBOOKS:
        for cell in _cells(path):
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, path.name


def test_notebooks_import_only_workbook():
    for path in NOTEBOOKS:
        for cell in _cells(path):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                assert not re.search(r"\bsolutions\b|_workbook_reference", src), (path.name, src[:200])
