"""Every check must catch each known mistake of its stage, and name it."""
import importlib
import pkgutil

import pytest

import tests.mutants as mutants_pkg
from workbook.checks.harness import FAIL, run_check

CASES = []
for info in pkgutil.iter_modules(mutants_pkg.__path__):
    if info.name.startswith("stage"):
        module = importlib.import_module(f"tests.mutants.{info.name}")
        for name, (impl, fragment) in module.MUTANTS.items():
            CASES.append(pytest.param(info.name[len("stage"):], impl, fragment, id=f"{info.name}-{name}"))


@pytest.mark.parametrize("stage_id, impl, fragment", CASES)
def test_mutant_is_caught_and_named(stage_id, impl, fragment):
    result = run_check(stage_id, impl=impl, prereqs=False)
    assert result.status == FAIL, f"stage {stage_id}: the check passed a known-wrong implementation"
    assert fragment in result.message, f"diagnostic does not name the mistake:\n{result.message}"
