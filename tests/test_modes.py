"""WORKBOOK_IMPL: parsing, and which file each exercise module is loaded from."""
import json

import pytest

from tests.helpers import run_py
from workbook import _modes, stages

ALL = {s.id for s in stages.STAGES}
LAST = stages.STAGES[-1].id


@pytest.mark.parametrize("value, expected", [
    (None, set()), ("", set()), ("learner", set()), ("solutions", ALL),
    ("solutions:01", {"01"}), ("solutions:1,3", {"01", "03"}),
    ("solutions:01,02,05-08", {"01", "02", "05", "06", "07", "08"}),
    (f"solutions:00-{LAST}", ALL),
])
def test_parse_mode(value, expected):
    assert _modes.parse_mode(value) == expected


@pytest.mark.parametrize("value, fragment", [
    ("solution", "无法识别"), ("solutions:99", "没有阶段"), ("solutions:05-02", "范围"),
    ("solutions:", "没有阶段编号"), ("reference", "无法识别"),
])
def test_bad_mode_is_a_clear_error(value, fragment):
    with pytest.raises(_modes.ModeError, match=fragment):
        _modes.parse_mode(value)


PROBE = """
import json, workbook, workbook.config, workbook.model.norm, _workbook_reference.model.norm as r
print(json.dumps({"config": workbook.config.__file__, "norm": workbook.model.norm.__file__,
                  "ref_norm": r.__file__}))
"""


@pytest.mark.parametrize("mode, config_from, norm_from", [
    ("learner", "workbook", "workbook"),
    ("solutions", "solutions", "solutions"),
    ("solutions:01", "workbook", "solutions"),
    ("solutions:00", "solutions", "workbook"),
])
def test_modules_resolve_per_mode(mode, config_from, norm_from):
    out = run_py(["-c", PROBE], mode=mode)
    assert out.returncode == 0, out.stderr
    files = json.loads(out.stdout.strip().splitlines()[-1])
    assert f"/{config_from}/config.py" in files["config"]
    assert f"/{norm_from}/model/norm.py" in files["norm"]
    assert "/solutions/model/norm.py" in files["ref_norm"]  # the reference, whatever the mode


def test_learner_import_follows_the_mode(tmp_path):
    # A learner module that imports another stage by its workbook name gets the reference exactly
    # when that stage is listed: here a module importing RMSNorm, loaded under each mode.
    code = ("import workbook, importlib.util, sys\n"
            "from workbook.model.norm import RMSNorm\n"
            "import torch\n"
            "try:\n    RMSNorm(4)(torch.ones(4)); print('reference')\n"
            "except NotImplementedError:\n    print('stub')\n")
    assert run_py(["-c", code], mode="solutions:01").stdout.strip() == "reference"
    assert run_py(["-c", code], mode="solutions:00").stdout.strip() == "stub"


def test_bad_mode_at_import_names_the_variable():
    out = run_py(["-c", "import workbook"], mode="solutions:42")
    assert out.returncode != 0
    assert "WORKBOOK_IMPL" in out.stderr and "没有阶段" in out.stderr


def test_use_saves_the_mode_in_the_checkout_and_the_variable_still_wins(tmp_path):
    """`python -m workbook use solutions:00-13` once: every later command without WORKBOOK_IMPL
    (check, progress's header, the trainers' imports) runs in that mode; WORKBOOK_IMPL overrides it."""
    from tests.helpers import learner_tree, run_in_tree

    tree = learner_tree(tmp_path / "tree", finished=False)
    show = ["-c", "import workbook._modes as m, workbook.use as u; print(m.format_mode(m.reference_stages())); "
                  "print(u.current())"]
    out = run_in_tree(tree, ["-m", "workbook", "use", "solutions:00-13"], mode=None)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tree / ".workbook" / "mode").read_text(encoding="utf-8").strip() == "solutions:00-13"
    out = run_in_tree(tree, show, mode=None)
    assert out.stdout.splitlines()[0] == "solutions:00-13"
    assert ".workbook/mode 里保存的选择" in out.stdout
    out = run_in_tree(tree, ["-m", "workbook", "check", "03"], mode=None)
    assert out.returncode == 0 and "参考实现" in out.stdout, out.stdout[-2000:]
    out = run_in_tree(tree, show, mode="learner")  # the environment variable wins
    assert out.stdout.splitlines()[0] == "learner" and "环境变量 WORKBOOK_IMPL 选定" in out.stdout
    out = run_in_tree(tree, ["-m", "workbook", "use", "solutions:99"], mode=None)
    assert out.returncode == 2 and "无法识别" in out.stderr and "Traceback" not in out.stderr
    # a hand-edited file cannot lock the command out: learner mode and a warning
    (tree / ".workbook" / "mode").write_text("nonsense\n", encoding="utf-8")
    out = run_in_tree(tree, show, mode=None)
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "learner" and "无法识别" in out.stderr
    out = run_in_tree(tree, ["-m", "workbook", "use", "learner"], mode=None)
    assert out.returncode == 0 and run_in_tree(tree, show, mode=None).stdout.splitlines()[0] == "learner"
