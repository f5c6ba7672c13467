"""Grading for a teacher: `workbook grade` and its reports, tamper evidence, nbval failures that
carry the diagnostic, the fork workflow, and the classroom release without solutions/.  The attack
suite of sealed grading is in tests/test_sealed_grade.py."""
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, learner_tree, run_in_tree, run_py
from workbook import stages

WORKFLOW = ROOT / ".github" / "workflows" / "grade.yml"
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def finished_tree(tmp_path_factory):
    return learner_tree(tmp_path_factory.mktemp("graded") / "wb")


def _reports(tmp_path):
    return [f"--json={tmp_path / 'g.json'}", f"--junit={tmp_path / 'g.xml'}", f"--markdown={tmp_path / 'g.md'}"]


def test_grade_ignores_the_mode_and_writes_every_report(tmp_path):
    # a fresh clone graded with WORKBOOK_IMPL=solutions still grades the learner's (stub) files
    out = run_py(["-m", "workbook", "grade", "--stages", "00-02", *_reports(tmp_path)], mode="solutions")
    assert out.returncode == 1, out.stderr
    assert "通过 0/3 个阶段" in out.stdout and out.stdout.count("✗ 还没写") == 3
    data = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert data["schema"] == "minimind-workbook-grade/2" and data["mode"] == "sealed"
    assert (data["passed"], data["total"], data["all_passed"]) == (0, 3, False)
    assert data["workbook_version"] and data["created"].endswith("+00:00")
    first = data["stages"][0]
    assert set(first) == {"stage", "slug", "title", "status", "message", "seconds", "served_by_reference",
                          "notebook"}
    assert [s["stage"] for s in data["stages"]] == ["00", "01", "02"]
    assert all(s["status"] == "todo" and "还没写 (not written yet)" in s["message"] for s in data["stages"])
    suite = ET.parse(tmp_path / "g.xml").getroot()
    cases = list(suite.iter("testcase"))
    assert [c.get("name") for c in cases] == ["00 welcome", "01 rmsnorm", "02 rope"]
    failure = cases[1].find("failure")
    assert failure is not None and "TODO(01 rmsnorm)" in failure.get("message") and "TODO(01 rmsnorm)" in failure.text
    assert not ANSI.search((tmp_path / "g.xml").read_text(encoding="utf-8"))
    md = (tmp_path / "g.md").read_text(encoding="utf-8")
    assert "| 01 | 均方根归一化 (RMSNorm) | ✗ 还没写 |" in md and "0/3" in md


@pytest.mark.slow
def test_a_finished_learner_passes_and_exits_zero(finished_tree, tmp_path):
    out = run_in_tree(finished_tree, ["-m", "workbook", "grade", *_reports(tmp_path)], mode="solutions:00-05",
                      timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    data = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert data["all_passed"] and data["passed"] == data["total"] == len(stages.STAGES)
    assert not list(ET.parse(tmp_path / "g.xml").getroot().iter("failure"))


TAMPERS = [
    ("model/norm.py", "from solutions.model.norm import RMSNorm  # noqa\n", "01", "solutions.model.norm"),
    ("model/norm.py", "import importlib\nRMSNorm = importlib.import_module('_workbook_reference.model.norm').RMSNorm\n",
     "01", "_workbook_reference"),
    ("model/feedforward.py", "import os\nos.environ['WORKBOOK_IMPL'] = 'solutions'\n", "04", "WORKBOOK_IMPL"),
    ("model/feedforward.py", "from workbook import _modes\n", "04", "workbook._modes"),
]


@pytest.mark.parametrize("rel, line, stage_id, fragment", TAMPERS, ids=[t[3] for t in TAMPERS])
def test_a_learner_file_that_borrows_the_reference_is_reported_as_tampered(finished_tree, tmp_path, rel, line,
                                                                          stage_id, fragment):
    path = finished_tree / "workbook" / rel
    original = path.read_text(encoding="utf-8")
    path.write_text(original + "\n" + line, encoding="utf-8")
    try:
        out = run_in_tree(finished_tree, ["-m", "workbook", "grade", "--stages", stage_id, *_reports(tmp_path)])
    finally:
        path.write_text(original, encoding="utf-8")
    assert out.returncode == 1, out.stdout
    (entry,) = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))["stages"]
    assert entry["status"] == "tampered", entry
    assert "tamper evidence" in entry["message"] and f"workbook/{rel}" in entry["message"] and fragment in entry["message"]
    assert "篡改嫌疑" in out.stdout


def test_switching_the_mode_at_run_time_changes_nothing(tmp_path):
    # hidden from the static scan: the name is built at run time; the sealed judge never reads it
    stub = (ROOT / "workbook" / "stubs" / "model" / "norm.py").read_text(encoding="utf-8")
    sub = tmp_path / "sub" / "workbook" / "model"
    sub.mkdir(parents=True)
    (sub / "norm.py").write_text(stub + "\nimport os\nos.environ['WORKBOOK' + '_IMPL'] = 'sol' + 'utions'\n",
                                 encoding="utf-8")
    out = run_py(["-m", "workbook", "grade", "--stages", "01", "--submission", str(tmp_path / "sub"),
                  *_reports(tmp_path)])
    (entry,) = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))["stages"]
    assert out.returncode == 1 and entry["status"] == "todo", entry


def test_a_notebook_that_sets_the_mode_does_not_change_its_checks():
    code = ("import os, workbook as wb\n"
            "os.environ['WORKBOOK_IMPL'] = 'solutions'\n"
            "try:\n    wb.check('01')\nexcept wb.lab.CheckNotPassed as e:\n    print('FAILED', e)\n")
    out = run_py(["-c", code], mode="learner")
    assert "FAILED" in out.stdout and "还没写 (not written yet)" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_nbval_failures_carry_the_diagnostic(tmp_path):
    xml = tmp_path / "nb.xml"
    out = run_py(["-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
                  "-p", "no:cacheprovider", "--color=no", "-o", "addopts=", f"--junitxml={xml}", "-q",
                  "--rootdir", str(ROOT), "notebooks/01_rmsnorm.ipynb"], mode="learner", timeout=600)
    text = xml.read_text(encoding="utf-8")
    failures = [c for c in ET.parse(xml).getroot().iter("testcase") if c.find("failure") is not None]
    assert len(failures) == 1, out.stdout[-2000:]
    body = failures[0].find("failure").text + failures[0].find("failure").get("message", "")
    assert "还没写 (not written yet)" in body and "TODO(01 rmsnorm)" in body
    assert "还没写 (not written yet)" in out.stdout
    assert not ANSI.search(text)


# --- the workflow for a learner's fork ---------------------------------------------------------

def test_workflow_validates_against_the_github_schema():
    exe = Path(sys.executable).with_name("check-jsonschema")
    out = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _workflow():
    flow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    job = flow["jobs"]["grade"]
    return flow, job, {s["id"]: s for s in job["steps"] if "id" in s}


def test_workflow_shape():
    flow, job, steps = _workflow()
    # never on the upstream repository (stubs on purpose): only in a fork or where a teacher opts in
    assert "github.event.repository.fork" in job["if"] and "vars.WORKBOOK_GRADE" in job["if"]
    uses = [s.get("uses", "") for s in job["steps"]]
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "3.11" and setup["with"]["cache"] == "pip"
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    install = next(s for s in job["steps"] if "make setup" in s.get("run", ""))
    assert "download.pytorch.org/whl/cpu" in install["run"] and install["working-directory"] == "course"
    # graded by the course, checked out at the pinned commit beside the fork, never by the fork itself
    checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout")]
    assert checkouts[0]["with"]["path"] == "submission"
    course = checkouts[1]["with"]
    assert course["path"] == "course" and "COURSE_REPO" in course["repository"] and "COURSE_REF" in course["ref"]
    assert "vars.WORKBOOK_COURSE_REF" in job["env"]["COURSE_REF"]
    grade = steps["grade"]
    assert grade["working-directory"] == "course"
    assert '--submission "$GITHUB_WORKSPACE/submission"' in grade["run"] and "--notebooks" in grade["run"]
    assert "$GITHUB_STEP_SUMMARY" in grade["run"]


def _run_step(script, cwd, env):
    return subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800)


def _workflow_env(job, workspace, stages_spec, summary):
    env = {**os.environ, **{k: str(v) for k, v in job["env"].items()},
           "GRADE_STAGES": stages_spec, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_WORKSPACE": str(workspace),
           "GITHUB_REPOSITORY": "learner/minimind-workbook", "COURSE_REPO": "teacher/minimind-workbook",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    env.pop("WORKBOOK_IMPL", None)
    return env


@pytest.mark.slow
def test_the_workflow_commands_grade_a_finished_fork(finished_tree, tmp_path):
    # the fork: a finished learner whose checks and notebooks were edited (they take no part)
    _, job, steps = _workflow()
    workspace = tmp_path / "ws"
    fork = workspace / "submission"
    shutil.copytree(finished_tree / "workbook", fork / "workbook")
    (fork / "workbook" / "checks" / "stage02.py").write_text("def check(impl, ref):\n    return 'ok'\n")
    shutil.copytree(ROOT / "notebooks", fork / "notebooks")
    (fork / "notebooks" / "01_rmsnorm.ipynb").write_text("{}")
    summary = tmp_path / "summary.md"
    out = _run_step(steps["grade"]["run"], ROOT, _workflow_env(job, workspace, "00-02", summary))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "3/3 个阶段通过" in summary.read_text(encoding="utf-8")
    grade = workspace / "grade"
    assert {"grade.json", "grade.xml", "grade.md"} <= {p.name for p in grade.iterdir()}
    data = json.loads((grade / "grade.json").read_text(encoding="utf-8"))
    assert [s["notebook"] for s in data["stages"]] == ["pass"] * 3  # the course's notebooks, on the fork's files
    norm = (fork / "workbook" / "model" / "norm.py").read_bytes()
    import hashlib
    assert data["files"]["workbook/model/norm.py"]["sha256"] == hashlib.sha256(norm).hexdigest()
    assert data["grading_commit"] and data["submission"] == str(fork)


def test_the_workflow_grade_step_fails_on_an_unfinished_fork(tmp_path):
    _, job, steps = _workflow()
    workspace = tmp_path / "ws"
    (workspace / "submission").mkdir(parents=True)
    summary = tmp_path / "summary.md"
    out = _run_step(steps["grade"]["run"], ROOT, _workflow_env(job, workspace, "00-01", summary))
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "0/2 个阶段通过" in summary.read_text(encoding="utf-8")


# --- classroom release --------------------------------------------------------------------------

@pytest.mark.slow
def test_classroom_release_has_no_reference_and_grades_with_one_supplied(tmp_path):
    dest = tmp_path / "release"
    out = run_py(["-m", "workbook", "release", str(dest)])
    assert out.returncode == 0, out.stderr
    files = [p for p in dest.rglob("*") if p.is_file()]
    names = {p.relative_to(dest).as_posix() for p in files}
    assert not any(n.startswith("solutions") for n in names)
    assert not any(n.startswith("tests/mutants") for n in names)
    assert {"README.md", "Makefile", ".github/workflows/grade.yml", "workbook/checks/stage03.py",
            "notebooks/03_attention.ipynb", "data/tokenizer/tokenizer.json"} <= names
    reference = {p.read_bytes() for p in (ROOT / "solutions").rglob("*.py")}
    assert not [p for p in files if p.read_bytes() in reference], "a reference file leaked into the release"
    assert "课堂发布版" in (dest / "README.md").read_text(encoding="utf-8")

    # without the reference: one clear message, exit 2
    out = run_in_tree(dest, ["-m", "workbook", "check", "01"])
    assert out.returncode == 2 and "课堂发布版" in out.stdout and "--reference" in out.stdout
    out = run_in_tree(dest, ["-m", "workbook", "grade", "--stages", "01"])
    assert out.returncode == 2

    # a learner, working in their own copy of the release, finishes stages 00-02 and 14; the teacher
    # grades that copy from the release with the reference supplied
    learner = tmp_path / "learner"
    shutil.copytree(dest / "workbook", learner / "workbook")
    for stage in [stages.get(s) for s in ("00", "01", "02", "10", "14")]:
        for f in stage.files():
            shutil.copyfile(ROOT / "solutions" / f.removeprefix("workbook/"), learner / f)
    report = tmp_path / "g.json"
    out = run_in_tree(dest, ["-m", "workbook", "grade", "--reference", str(ROOT / "solutions"), "--stages",
                             "00-02,14", "--submission", str(learner), f"--json={report}"], timeout=900)
    assert out.returncode == 0, out.stdout[-3000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["all_passed"] and [s["stage"] for s in data["stages"]] == ["00", "01", "02", "14"]

    # the tests shipped with the release pass without the reference
    out = run_in_tree(dest, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "tests"], timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]


def test_release_refuses_a_tree_with_finished_exercises(finished_tree, tmp_path):
    out = run_in_tree(finished_tree, ["-m", "workbook", "release", str(tmp_path / "r")])
    assert out.returncode == 2 and "不是占位 (stub)" in out.stderr
    assert not (tmp_path / "r").exists()
