"""Two scaffolding levels: guided stubs (a fresh clone) and challenge stubs derived from them.

- the stored templates (workbook/stubs/) equal a fresh clone's exercise files;
- every challenge stub parses, keeps the guided stub's signatures and docstrings (its syntax tree
  is the guided one: only comments differ), keeps one TODO(learner) line per walkthrough block
  and nothing of the walkthrough, and its check says "not written yet";
- the walkthrough is the last hint level, or the one before a spelled-out "(line by line)" level;
- ``reset`` backs the learner's file up before overwriting it, restores the guided stub, remembers
  the level, and refuses bad input with one line and exit status 2;
- notebooks run at the challenge level with only their check cells failing.
"""
import ast
import json
import re
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import ROOT, learner_tree, run_in_tree
from tests.test_notebooks import CELL_TIMEOUT, check_cells
from workbook import hints, levels, stages, stubs
from workbook.checks.harness import TODO, check_module

FILES = [f for s in stages.STAGES for f in s.files()]
WITH_FILES = [s.id for s in stages.STAGES if s.modules]
CHECKED = [s.id for s in stages.STAGES if s.modules and check_module(s) is not None]


def _walkthrough_lines(source):
    """The comment lines of every walkthrough block but its first ("# TODO(learner): …") line."""
    lines = source.splitlines()
    return [lines[k].strip() for start, end, _ in stubs.blocks(source) for k in range(start + 1, end)]


def _contract(source):
    """{qualified name: (arguments, return annotation, decorators, docstring)} of every def and class."""
    out = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if isinstance(child, ast.ClassDef):
                    sig = ast.dump(ast.Tuple(elts=child.bases + [k.value for k in child.keywords]))
                    ret = None
                else:
                    sig, ret = ast.dump(child.args), child.returns and ast.dump(child.returns)
                out[name] = (sig, ret, [ast.dump(d) for d in child.decorator_list],
                             ast.get_docstring(child, clean=False))
                visit(child, name + ".")

    visit(ast.parse(source), "")
    return out


def test_fresh_clone_equals_the_guided_templates():
    bad = [rel for rel in FILES if not stubs.template_path(rel).is_file()
           or stubs.template_path(rel).read_bytes() != (ROOT / rel).read_bytes()]
    assert not bad, (f"exercise files that differ from workbook/stubs/: {bad}. After editing a stub run "
                     f".venv/bin/python tools/stubs.py sync")


def test_the_templates_travel_with_a_classroom_release():
    from workbook.release import _keep

    assert all(_keep(stubs.template_path(rel).relative_to(ROOT).as_posix()) for rel in FILES)


@pytest.mark.parametrize("rel", FILES)
def test_challenge_stub_keeps_the_contract_and_drops_the_walkthrough(rel):
    guided = stubs.text(rel, "guided")
    challenge = stubs.text(rel, "challenge")
    stage_id = stages.MODULE_STAGE[rel[len("workbook/"):-len(".py")].replace("/", ".")]
    # the contract: every def and class, its signature and its docstring
    assert _contract(challenge) == _contract(guided)
    # stronger: only comments differ, so the raise NotImplementedError("TODO(NN slug): …") is the same
    assert ast.dump(ast.parse(challenge)) == ast.dump(ast.parse(guided))
    # one short TODO line per walkthrough block, and none of the walkthrough
    walk = _walkthrough_lines(guided)
    assert walk, f"{rel}: the guided stub has no walkthrough block"
    assert len(stubs.blocks(challenge)) == len(stubs.blocks(guided))
    assert all(end - start == 1 for start, end, _ in stubs.blocks(challenge))
    assert challenge.count(stubs.todo_line(stage_id)) == len(stubs.blocks(guided))
    kept = {line.strip() for line in challenge.splitlines()}
    assert not kept & set(walk) - {"#"}, f"{rel}: walkthrough left in the challenge stub"
    assert "TODO(learner)" in challenge and "raise NotImplementedError" in challenge
    assert len(challenge.splitlines()) < len(guided.splitlines())


@pytest.mark.parametrize("stage_id", WITH_FILES)
def test_the_walkthrough_is_the_last_hint_level(stage_id):
    levels = hints.levels(stage_id)
    if "(line by line)" in levels[-1].splitlines()[0]:  # the answer spelled out comes after it
        levels = levels[:-1]
    last = levels[-1]
    assert last.startswith(f"## 提示 {len(levels)}：逐步提示 (the guided walkthrough)")
    for rel in stages.get(stage_id).files():
        for step in stubs.steps(stubs.guided(rel), rel):
            assert f"{rel} · {step.where}" in last
            for line in step.text.splitlines():
                assert line.strip() in last


@pytest.fixture(scope="module")
def challenge_tree(tmp_path_factory):
    tree = learner_tree(tmp_path_factory.mktemp("challenge"), finished=False)
    out = run_in_tree(tree, ["-m", "workbook", "reset", "all", "--level", "challenge"])
    assert out.returncode == 0, out.stdout + out.stderr
    for rel in FILES:
        assert (tree / rel).read_text(encoding="utf-8") == stubs.text(rel, "challenge")
    return tree


_RUN_CHECKS = """
import json, sys
import workbook
from workbook.checks.harness import run_check
out = {"__file__": workbook.__file__}
for sid in sys.argv[1:]:
    r = run_check(sid, prereqs=False)
    out[sid] = [r.status, r.message]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def challenge_results(challenge_tree):
    """{stage id: (status, message)} of every check on the challenge stubs, run in one process
    inside the tree (in-process, without prerequisites, as tests/test_checks.py does)."""
    out = run_in_tree(challenge_tree, ["-c", _RUN_CHECKS, *CHECKED])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results.pop("__file__").startswith(str(challenge_tree))  # the tree's files, not the repository's
    return results


@pytest.mark.parametrize("stage_id", CHECKED)
def test_challenge_stub_check_says_not_written_yet(challenge_results, stage_id):
    stage = stages.get(stage_id)
    status, message = challenge_results[stage_id]
    assert status == TODO, message
    assert "还没写 (not written yet)" in message
    assert f"TODO({stage.id} {stage.slug})" in message and stage.notebook in message


@pytest.mark.parametrize("stage_id", ["01", "03"])
def test_challenge_stub_check_command_says_not_written_yet(challenge_tree, stage_id):
    # the learner's command; the other stages from the reference, so no prerequisite blocks it
    stage = stages.get(stage_id)
    others = ",".join(s for s in WITH_FILES if s != stage_id)
    out = run_in_tree(challenge_tree, ["-m", "workbook", "check", stage_id], mode=f"solutions:{others}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "还没写 (not written yet)" in out.stdout, out.stdout
    assert f"TODO({stage.id} {stage.slug})" in out.stdout and stage.notebook in out.stdout


def _backup_path(stdout, rel):
    m = re.search(rf"^{re.escape(rel)}：.*备份 \(backup\) 在 (\S+)$", stdout, re.MULTILINE)
    assert m, stdout
    return m.group(1)


def test_reset_backs_up_and_restores(tmp_path):
    tree = learner_tree(tmp_path / "tree", finished=False)
    rel = "workbook/model/norm.py"
    edited = stubs.guided(rel).replace("raise NotImplementedError(", "x = 'my own line'\n        raise NotImplementedError(", 1)
    (tree / rel).write_text(edited, encoding="utf-8")

    out = run_in_tree(tree, ["-m", "workbook", "reset", "01", "--level", "challenge"])
    assert out.returncode == 0, out.stdout + out.stderr
    backup = tree / _backup_path(out.stdout, rel)
    assert re.fullmatch(r"\.workbook/backups/\d{8}-\d{6}(-\d+)?/workbook/model/norm\.py",
                        backup.relative_to(tree).as_posix())
    assert backup.read_text(encoding="utf-8") == edited  # the learner's line is kept
    assert (tree / rel).read_text(encoding="utf-8") == stubs.text(rel, "challenge")
    state = json.loads((tree / ".workbook" / "state.json").read_text(encoding="utf-8"))
    assert state["levels"]["01"] == "challenge"
    progress = run_in_tree(tree, ["-m", "workbook", "progress"])
    assert "挑战级 (challenge) 的阶段：01" in progress.stdout, progress.stdout + progress.stderr

    out = run_in_tree(tree, ["-m", "workbook", "reset", "01", "--level", "guided"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "不用备份" in out.stdout  # an untouched challenge stub holds nothing of the learner's
    assert (tree / rel).read_bytes() == stubs.template_path(rel).read_bytes()
    assert len(list((tree / ".workbook" / "backups").iterdir())) == 1
    state = json.loads((tree / ".workbook" / "state.json").read_text(encoding="utf-8"))
    assert state["levels"]["01"] == "guided"


@pytest.mark.parametrize("args, says", [
    (["reset", "01", "--level", "hard"], "没有 'hard' 这一级 (level)"),
    (["reset", "42", "--level", "challenge"], "没有阶段 (stage) '42'"),
    (["reset", "13", "--level", "challenge"], "没有要你写的文件"),
])
def test_reset_refuses_bad_input_with_one_line(tmp_path, args, says):
    tree = learner_tree(tmp_path / "tree", finished=False)
    out = run_in_tree(tree, ["-m", "workbook", *args])
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
    assert all((tree / rel).read_bytes() == (ROOT / rel).read_bytes() for rel in FILES)


def test_reset_overwrites_nothing_when_the_backup_fails(tmp_path):
    tree = learner_tree(tmp_path / "tree", finished=False)
    rel = "workbook/model/norm.py"
    (tree / rel).write_text("my answer\n", encoding="utf-8")
    (tree / ".workbook").write_text("not a folder", encoding="utf-8")  # backups cannot be made
    out = run_in_tree(tree, ["-m", "workbook", "reset", "all", "--level", "challenge"])
    assert out.returncode == 2 and "备份 (backup) 失败" in out.stderr, out.stdout + out.stderr
    assert (tree / rel).read_text(encoding="utf-8") == "my answer\n"
    assert all((tree / f).read_bytes() == (ROOT / f).read_bytes() for f in FILES if f != rel)


def test_backup_folders_are_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(hints, "STATE_FILE", tmp_path / ".workbook" / "state.json")
    first, second = levels._backup_root(), levels._backup_root()  # same second
    assert first != second and first.parent == second.parent == tmp_path / ".workbook" / "backups"


def test_unknown_level_is_refused_in_process():
    with pytest.raises(ValueError, match="guided"):
        levels.parse_level("Hard")
    assert levels.parse_level(" Challenge ") == "challenge"


@pytest.mark.slow
def test_notebooks_at_the_challenge_level_fail_only_in_check_cells(challenge_tree, tmp_path):
    notebooks = ["notebooks/00_welcome.ipynb", "notebooks/01_rmsnorm.ipynb", "notebooks/02_rope.ipynb"]
    xml = tmp_path / "nbval.xml"
    out = run_in_tree(challenge_tree, [
        "-m", "pytest", "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT}",
        "-p", "no:cacheprovider", "-o", "addopts=", "-q", f"--junitxml={xml}",
        "--rootdir", str(challenge_tree), *notebooks], timeout=60 * 20)
    assert xml.exists(), out.stdout[-3000:] + out.stderr[-3000:]
    failed, seen = set(), set()
    for case in ET.parse(xml).getroot().iter("testcase"):
        label = case.get("classname", "") + " " + case.get("file", "") + " " + case.get("name", "")
        nb, cell = re.search(r"(\d\d_\w+)\.ipynb", label), re.search(r"Cell \d+", label)
        assert nb and cell, f"unexpected nbval item: {case.attrib}"
        key = (nb.group(1) + ".ipynb", cell.group(0))
        seen.add(key[0])
        if any(child.tag in ("failure", "error") for child in case):
            failed.add(key)
    assert seen == {n.split("/")[1] for n in notebooks}, out.stdout[-2000:]
    expected = {(n.split("/")[1], c) for n in notebooks for c in check_cells(challenge_tree / n)}
    assert failed == expected, (f"unexpected failures: {sorted(failed - expected)}; "
                                f"check cells that passed: {sorted(expected - failed)}\n{out.stdout[-3000:]}")
