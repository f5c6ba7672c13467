"""Check 13 (pretraining with the whole package) must fail, and say why, for a broken package.

Each case is a copy of the workbook whose learner files hold the reference code, with one fault
injected into one file; check 13 runs in a subprocess on that copy (tests.helpers.run_in_tree).
"""
import json

import pytest

from tests.helpers import ROOT, learner_tree, run_in_tree

RUN_CHECK_13 = (
    "import json\n"
    "from workbook.checks.harness import run_check\n"
    "r = run_check('13', prereqs=False)\n"
    "print('RESULT ' + json.dumps({'status': r.status, 'message': r.message}))\n"
)


def _inject(tree, rel: str, old: str, new: str) -> None:
    """Replace `old` by `new` in the tree's learner file `rel`; the text must occur exactly once."""
    path = tree / rel
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{rel}: the fault cannot be injected, {old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _check13(tree) -> dict:
    proc = run_in_tree(tree, ["-c", RUN_CHECK_13], timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"check 13 did not report:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_finished_package_passes(tmp_path):
    # the control: the same copy without a fault lands inside the band
    result = _check13(learner_tree(tmp_path / "tree"))
    assert result["status"] == "pass", result["message"]


@pytest.mark.slow
def test_reversed_tie_fails_on_the_initial_loss(tmp_path):
    # the shared matrix keeps nn.Embedding's N(0, 1): the first loss is ~62 instead of ~ln 6400
    tree = learner_tree(tmp_path / "tree")
    _inject(tree, "workbook/model/causal_lm.py",
            "self.model.embed_tokens.weight = self.lm_head.weight",
            "self.lm_head.weight = self.model.embed_tokens.weight")
    result = _check13(tree)
    assert result["status"] == "fail", result["message"]
    assert "初始 loss" in result["message"] and "绑反" in result["message"], result["message"]


@pytest.mark.slow
def test_attention_without_causal_mask_is_named(tmp_path):
    # the model sees the next token; 40 steps are too few to learn to copy it (validation loss
    # 6.92 against the reference's 6.85), so the causality probe before the run must name it
    tree = learner_tree(tmp_path / "tree")
    rel = "workbook/model/attention.py"
    _inject(tree, rel, "dropout_p=self.dropout if self.training else 0.0, is_causal=True)",
            "dropout_p=self.dropout if self.training else 0.0, is_causal=False)")
    _inject(tree, rel, "mask = torch.triu(causal, diagonal=start_pos + 1)", "pass")
    result = _check13(tree)
    assert result["status"] == "fail", result["message"]
    assert "未来的 token" in result["message"] and "因果掩码 (causal mask)" in result["message"], result["message"]


@pytest.mark.slow
def test_padding_in_the_loss_fails_on_a_too_low_final_loss(tmp_path):
    # a dataset that leaves -100 off the padding: the easy pad positions pull the mean loss far
    # below the reference's (6.13 against 6.85 after 40 steps)
    tree = learner_tree(tmp_path / "tree")
    _inject(tree, "workbook/data/dataset.py", "labels[len(ids):] = -100", "pass")
    result = _check13(tree)
    assert result["status"] == "fail", result["message"]
    assert "低得不正常" in result["message"] and "-100" in result["message"], result["message"]


def test_fault_anchors_are_in_the_solutions():
    # the faults above are edits of the reference text: a fast guard that the anchors still exist
    for rel, anchor in (("model/causal_lm.py", "self.model.embed_tokens.weight = self.lm_head.weight"),
                        ("model/attention.py", "is_causal=True)"),
                        ("model/attention.py", "torch.triu(causal, diagonal=start_pos + 1)"),
                        ("data/dataset.py", "labels[len(ids):] = -100")):
        assert anchor in (ROOT / "solutions" / rel).read_text(encoding="utf-8"), (rel, anchor)
