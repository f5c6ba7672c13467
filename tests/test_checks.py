"""Every written stage: the reference passes its check, the stub fails with 'not written yet'."""
import pytest

from workbook import _modes, stages
from workbook.checks.harness import PASS, TODO, check_module, run_check

WRITTEN = [s.id for s in stages.STAGES if check_module(s) is not None and s.modules]


def test_foundation_stages_are_written():
    assert {"00", "01"} <= set(WRITTEN)


def _reference_impl(stage):
    from workbook.checks.harness import _load_reference
    return _load_reference(stage)


@pytest.mark.parametrize("stage_id", WRITTEN)
def test_reference_passes(stage_id):
    stage = stages.get(stage_id)
    result = run_check(stage_id, impl=_reference_impl(stage), prereqs=False)
    assert result.status == PASS, result.message


@pytest.mark.parametrize("stage_id", WRITTEN)
def test_stub_says_not_written_yet(stage_id):
    stage = stages.get(stage_id)
    assert not _modes.uses_reference(stage_id)
    result = run_check(stage_id, prereqs=False)
    assert result.status == TODO, result.message
    assert "还没写 (not written yet)" in result.message
    assert f"TODO({stage.id} {stage.slug})" in result.message
    assert stage.notebook in result.message


@pytest.mark.parametrize("stage_id", WRITTEN)
def test_stub_files_are_marked_for_the_learner(stage_id):
    for f in stages.get(stage_id).files():
        text = (_modes.PACKAGE_DIR.parent / f).read_text(encoding="utf-8")
        assert "TODO(learner)" in text and "raise NotImplementedError" in text, f


def test_blocked_stage_names_its_prerequisite(monkeypatch):
    # A stage whose prerequisite fails says "先通过 NN" before anything else.
    fake = stages.Stage("01", "rmsnorm", "RMSNorm", ("model.norm",), ("00",))
    monkeypatch.setitem(stages.BY_ID, "01", fake)
    result = run_check("01")
    assert result.status == "blocked"
    assert "先通过 00" in result.message


def test_crash_inside_learner_code_is_located(tmp_path):
    # An exception raised by the learner's code is reported with its file and line.
    from types import SimpleNamespace
    import torch

    def broken_forward(self, x):
        return x @ torch.ones(3, 3)  # shape mismatch

    ref = _modes.reference_module("model.norm")
    Broken = type("RMSNorm", (ref.RMSNorm,), {"forward": broken_forward})
    result = run_check("01", impl=SimpleNamespace(RMSNorm=Broken), prereqs=False)
    assert result.status == "fail"
    assert "RuntimeError" in result.message
