"""Sealed grading: only the learner's files count, and learner code cannot reach the judge or the
reference.  An attack suite — each attempt in its own submission, graded in one gradebook run —
where every attempt ends "tampered" or "fail", never "pass"; in the same run an honest finished
stage passes.  Then: a Part-2-only learner, the report's cap and redaction, the gradebook files."""
import csv
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_py

NORM = (ROOT / "solutions" / "model" / "norm.py").read_text(encoding="utf-8")
# a realistic wrong RMSNorm: eps left out of the square root (the check names it)
WRONG_NORM = NORM.replace("+ self.eps)", ")")
assert WRONG_NORM != NORM
STUB_NORM = (ROOT / "workbook" / "stubs" / "model" / "norm.py").read_text(encoding="utf-8")

# where the grading copy lives, as learner code could find it: the editable install's .pth file
COURSE = '''
def _ref():  # the reference folder, its name built so that no static scan sees it
    import glob, os, site
    for pth in glob.glob(os.path.join(site.getsitepackages()[0], "__editable__*.pth")):
        return open(pth).read().split()[0] + "/" + "sol" + "utions"
'''

# a tensor that turns into whatever it is compared with (its __torch_function__ swaps itself out)
MIRROR = 'import torch\nfrom torch import nn\n\n\nclass _Mirror(torch.Tensor):\n    """Whatever it is compared with, it turns into that."""\n\n    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n        kwargs = kwargs or {}\n        flat = [a for a in args if isinstance(a, torch.Tensor)]\n        plain = [a for a in flat if not isinstance(a, _Mirror)]\n        if plain:\n            args = tuple(plain[0] if isinstance(a, _Mirror) and a.shape == plain[0].shape else a for a in args)\n        with torch._C.DisableTorchFunctionSubclass():\n            out = func(*args, **kwargs)\n        if isinstance(out, torch.Tensor) and not plain:\n            return out.as_subclass(_Mirror)\n        return out\n\n\nclass RMSNorm(nn.Module):\n    def __init__(self, dim, eps=1e-5):\n        super().__init__()\n        self.eps = eps\n        self.weight = nn.Parameter(torch.ones(dim))\n\n    def forward(self, x):\n        return (x * 0 * self.weight).as_subclass(_Mirror)\n'

# name -> (the submission's files, the statuses that are acceptable, a fragment the message must hold)
ATTACKS = {
    # files the learner does not own take no part
    "edited_check": ({"workbook/checks/stage01.py": "def check(impl, ref):\n    return 'ok'\n",
                      "workbook/model/norm.py": WRONG_NORM}, {"fail"}, "eps"),
    "finder_in_stages_py": ({"workbook/stages.py": (ROOT / "workbook/stages.py").read_text(encoding="utf-8")
                             + "\nimport sys\nclass F:\n    def find_spec(self, *a):\n        return None\n"
                               "sys.meta_path.insert(0, F())\n",
                             "workbook/model/norm.py": WRONG_NORM}, {"fail"}, "eps"),
    "neutered_tamper_scan": ({"workbook/checks/tamper.py": "def scan(*a):\n    return []\n",
                              "workbook/model/norm.py": "from solutions.model.norm import RMSNorm  # noqa\n"},
                             {"tampered"}, "solutions.model.norm"),
    "sitecustomize_and_pth": ({"sitecustomize.py": "import builtins\nbuiltins.GRADE_HACK = 1\n",
                               "usercustomize.py": "raise SystemExit(0)\n", "hack.pth": "import os\n",
                               "workbook/model/norm.py": WRONG_NORM}, {"fail"}, "eps"),
    "conftest": ({"conftest.py": "import pytest\n@pytest.hookimpl(tryfirst=True)\n"
                                 "def pytest_runtest_call(item):\n    return True\n",
                  "workbook/model/norm.py": WRONG_NORM}, {"fail"}, "eps"),
    # importing the reference by a computed name
    "import_module_computed": ({"workbook/model/norm.py":
                                "import importlib\nRMSNorm = importlib.import_module('sol' + 'utions.model.norm').RMSNorm\n"},
                               {"tampered"}, "solutions (import)"),
    "dunder_import_reversed": ({"workbook/model/norm.py":
                                "RMSNorm = __import__('mron.ledom.snoitulos'[::-1], fromlist=['x']).RMSNorm\n"},
                               {"tampered"}, "solutions"),
    "private_namespace_from_pieces": ({"workbook/model/norm.py":
                                       "import importlib\nRMSNorm = importlib.import_module("
                                       "'_workbook' + '_reference' + '.model.norm').RMSNorm\n"},
                                      {"tampered"}, "_workbook_reference"),
    # reading the reference's file
    "open_and_exec": ({"workbook/model/norm.py": COURSE + "exec(open(_ref() + '/model/norm.py').read())\n"},
                      {"tampered"}, "读取评分器或参考实现的文件"),
    "runpy": ({"workbook/model/norm.py": COURSE + "import runpy\n"
                                          "RMSNorm = runpy.run_path(_ref() + '/model/norm.py')['RMSNorm']\n"},
              {"tampered"}, "读取评分器或参考实现的文件"),
    "raise_the_reference_source": ({"workbook/model/norm.py": COURSE + "import glob\nraise ValueError(''.join("
                                    "open(f).read() for f in sorted(glob.glob(_ref() + '/**/*.py',"
                                    " recursive=True))))\n"}, {"tampered"}, "读取评分器或参考实现的文件"),
    # a leaked copy of the whole reference, raised as the exception text: reports never carry it
    "raise_an_embedded_reference": ({"workbook/model/norm.py": "raise ValueError(" + repr("".join(
        p.read_text(encoding="utf-8") for p in sorted((ROOT / "solutions").rglob("*.py")))) + ")\n"},
        {"fail", "tampered"}, ""),
    "symlink_to_reference": ({"workbook/model/norm.py": ROOT / "solutions" / "model" / "norm.py"},
                             {"tampered"}, "符号链接"),
    "symlinked_directory": ({"workbook/model": ROOT / "solutions" / "model"}, {"tampered"}, "符号链接"),
    "oversized_file": ({"workbook/model/norm.py": NORM + "#" * 600_000 + "\n"}, {"fail"}, "太大"),
    # replacing the judge from the learner's file
    "replace_check_function": ({"workbook/model/norm.py": STUB_NORM + "\nimport sys\n"
                                "sys.modules['workbook.checks.stage01'].check = lambda impl, ref: 'ok'\n"},
                               {"tampered"}, "workbook.checks.stage01.check"),
    "patch_torch_allclose": ({"workbook/model/norm.py": WRONG_NORM + "\nimport torch\n"
                              "torch.allclose = lambda *a, **k: True\n"}, {"tampered"}, "torch.allclose"),
    "patch_builtins": ({"workbook/model/norm.py": WRONG_NORM + "\nimport builtins\n"
                        "builtins.max = lambda *a, **k: 0\n"}, {"tampered"}, "builtins.max"),
    "swap_judge_code": ({"workbook/model/norm.py": WRONG_NORM + "\nimport sys\n"
                         "t = sys.modules['workbook.checks.tools']\n"
                         "t.close.__code__ = (lambda *a, **k: True).__code__\n"}, {"tampered"}, "__code__"),
    "finder_on_meta_path": ({"workbook/model/norm.py": WRONG_NORM + "\nimport sys\nclass F:\n"
                             "    def find_spec(self, *a):\n        return None\nsys.meta_path.insert(0, F())\n"},
                            {"tampered"}, "meta_path"),
    # frame, trace and gc introspection
    "module_getattr_walks_frames": ({"workbook/model/norm.py": "import sys\n\ndef __getattr__(name):\n"
                                     "    f = sys._getframe(1)\n    while f is not None:\n"
                                     "        ref = f.f_locals.get('ref')\n"
                                     "        if ref is not None and hasattr(ref, name):\n"
                                     "            return getattr(ref, name)\n        f = f.f_back\n"
                                     "    raise AttributeError(name)\n"}, {"tampered"}, "sys._getframe"),
    "inspect_stack": ({"workbook/model/norm.py": "import inspect\n\ndef __getattr__(name):\n"
                       "    for info in inspect.stack():\n        ref = info.frame.f_locals.get('ref')\n"
                       "        if ref is not None and hasattr(ref, name):\n            return getattr(ref, name)\n"
                       "    raise AttributeError(name)\n"}, {"tampered"}, "sys._getframe"),
    "traceback_frames": ({"workbook/model/norm.py": "def __getattr__(name):\n    try:\n        raise KeyError\n"
                          "    except KeyError as e:\n        f = e.__traceback__.tb_frame\n"
                          "    while f is not None:\n        ref = f.f_locals.get('ref')\n"
                          "        if ref is not None and hasattr(ref, name):\n            return getattr(ref, name)\n"
                          "        f = f.f_back\n    raise AttributeError(name)\n"}, {"tampered"}, "tb_frame"),
    "settrace": ({"workbook/model/norm.py": WRONG_NORM + "\nimport sys\nsys.settrace(lambda *a: None)\n"},
                 {"tampered"}, "sys.settrace"),
    "gc_objects": ({"workbook/model/norm.py": "import gc\nRMSNorm = next(o for o in gc.get_objects() "
                    "if isinstance(o, type) and o.__name__ == 'RMSNorm')\n"}, {"tampered"}, "gc.get_objects"),
    "ask_the_mode_switch": ({"workbook/model/norm.py": "import sys\nRMSNorm = sys.modules['workbook._modes']"
                             ".reference_module('model.norm').RMSNorm\n"}, {"tampered"}, "reference_module"),
    "own_audit_hook": ({"workbook/model/norm.py": WRONG_NORM + "\nimport sys\nsys.addaudithook(lambda *a: None)\n"},
                       {"tampered"}, "addaudithook"),
    # fooling the comparisons: judged with tensor subclasses' __torch_function__ switched off
    "tensor_subclass_mirror": ({"workbook/model/norm.py": MIRROR}, {"fail"}, "不一致"),
    # leaving the process
    "ctypes_memory": ({"workbook/model/norm.py": WRONG_NORM + "\nimport ctypes\nctypes.string_at(id(1), 8)\n"},
                      {"tampered"}, "ctypes"),
    "start_a_process": ({"workbook/model/norm.py": COURSE + "import subprocess, sys\nsrc = subprocess.run("
                         "['cat', _ref() + '/model/norm.py'], capture_output=True, text=True).stdout\n"
                         "exec(src)\n"}, {"tampered"}, "subprocess.Popen"),
    "forge_the_verdict": ({"workbook/model/norm.py": "import os\nfor fd in range(3, 40):\n    try:\n"
                           "        os.write(fd, b'\\n' + b'0' * 32 + b'\\tpass\\t0.1\\t' + 'ok'.encode().hex().encode() + b'\\n')\n"
                           "    except OSError:\n        pass\nos._exit(0)\n"}, {"fail"}, "退出"),
}


def _write_submission(dest: Path, files: dict) -> Path:
    for rel, content in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            path.symlink_to(content, target_is_directory=content.is_dir())
        else:
            path.write_text(content, encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """One gradebook run: every attack in its own submission, plus one honest learner."""
    root = tmp_path_factory.mktemp("attacks")
    folder = root / "class"
    for name, (files, _, _) in ATTACKS.items():
        _write_submission(folder / name, files)
    _write_submission(folder / "zz_honest", {"workbook/model/norm.py": NORM})
    out = run_py(["-m", "workbook", "grade", "--stages", "01", "--submissions", str(folder),
                  f"--json={root / 'book.json'}", f"--csv={root / 'book.csv'}", f"--markdown={root / 'book.md'}",
                  f"--junit={root / 'book.xml'}"], timeout=3600)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    book = json.loads((root / "book.json").read_text(encoding="utf-8"))
    return {s["learner"]: s for s in book["submissions"]}, root, out


def test_there_are_at_least_twenty_attacks():
    assert len(ATTACKS) >= 20


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_ends_tampered_or_failed(attacked, name):
    reports, _, _ = attacked
    (entry,) = reports[name]["stages"]
    _, statuses, fragment = ATTACKS[name]
    assert entry["status"] in statuses and entry["status"] != "pass", entry
    assert fragment in entry["message"], entry["message"]
    if entry["status"] == "tampered":  # the report names the learner's line (or what was changed)
        assert "workbook/model/norm.py" in entry["message"] or "改动的有" in entry["message"] \
            or "文件没有被收下" in entry["message"] or "tamper evidence" in entry["message"], entry["message"]


@pytest.mark.slow
def test_the_honest_learner_passes_in_the_same_run(attacked):
    reports, _, _ = attacked
    (entry,) = reports["zz_honest"]["stages"]
    assert entry["status"] == "pass", entry
    files = reports["zz_honest"]["files"]
    assert files["workbook/model/norm.py"]["status"] == "ok"
    import hashlib
    assert files["workbook/model/norm.py"]["sha256"] == hashlib.sha256(NORM.encode()).hexdigest()
    assert files["workbook/model/rope.py"]["status"] == "missing"


def _reference_lines():
    lines = set()
    for p in (ROOT / "solutions").rglob("*.py"):
        lines.update(s for s in (ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()) if len(s) >= 30)
    return lines


@pytest.mark.slow
def test_no_report_carries_a_line_of_the_reference(attacked):
    _, root, out = attacked
    texts = [out.stdout, out.stderr] + [(root / f).read_text(encoding="utf-8")
                                        for f in ("book.json", "book.csv", "book.md", "book.xml")]
    for line in _reference_lines():
        for text in texts:
            assert line not in text and json.dumps(line)[1:-1] not in text, line


@pytest.mark.slow
def test_the_gradebook_files(attacked):
    reports, root, out = attacked
    rows = list(csv.reader((root / "book.csv").open(encoding="utf-8")))
    assert rows[0] == ["learner", "01", "passed", "total"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["zz_honest"][1:] == ["pass", "1", "1"]
    assert by_name["gc_objects"][1:] == ["tampered", "0", "1"]
    assert rows[-1] == ["passes", "1", "1", str(len(ATTACKS) + 1)]
    md = (root / "book.md").read_text(encoding="utf-8")
    assert f"{len(ATTACKS) + 1} 位学员" in md and "| zz_honest | ✓ | 1/1 |" in md
    suites = ET.parse(root / "book.xml").getroot().findall("testsuite")
    assert len(suites) == len(ATTACKS) + 1
    assert "zz_honest" in out.stdout and "gradebook" in out.stdout


# --- a learner who starts at Part 2 --------------------------------------------------------------

@pytest.mark.slow
def test_a_part_two_learner_is_graded_with_the_reference_below(tmp_path):
    sub = tmp_path / "part2"
    from workbook import stages
    for sid in ("14", "15", "16", "17"):
        for f in stages.get(sid).files():
            dest = sub / f
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / "solutions" / f.removeprefix("workbook/"), dest)
    report = tmp_path / "g.json"
    out = run_py(["-m", "workbook", "grade", "--stages", "14-17", "--submission", str(sub), f"--json={report}"],
                 timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    assert [s["status"] for s in data["stages"]] == ["pass"] * 4
    assert data["stages"][0]["served_by_reference"] == ["10"]
    assert set(data["stages"][1]["served_by_reference"]) >= {"00", "01", "02", "03", "08"}
    assert "前置阶段由参考实现提供" in out.stdout


def test_a_fresh_clone_reports_every_stage_unwritten_without_running_it(tmp_path):
    out = run_py(["-m", "workbook", "grade", "--submission", str(tmp_path), f"--json={tmp_path / 'g.json'}"])
    assert out.returncode == 1, out.stderr
    data = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert {s["status"] for s in data["stages"]} == {"todo"}
    assert data["schema"] == "minimind-workbook-grade/2" and data["mode"] == "sealed"
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", data["grading_commit"]), data["grading_commit"]
    assert all(f["status"] == "missing" and f["sha256"] is None for f in data["files"].values())


def test_a_missing_submission_folder_is_a_clear_error(tmp_path):
    out = run_py(["-m", "workbook", "grade", "--submission", str(tmp_path / "nope")])
    assert out.returncode == 2 and "不是目录" in out.stderr


def test_report_text_caps_and_redacts():
    from workbook.grade import MESSAGE_CHARS, REDACTED, report_text
    ref = sorted(_reference_lines())[:50]
    text = report_text("\n".join(["前面", *ref, "x" * 5000]), set(ref))
    assert len(text) <= MESSAGE_CHARS and not any(r in text for r in ref) and REDACTED in text


def test_learner_exception_text_is_cut_to_its_last_lines():
    from workbook.checks.harness import FAIL, outcome

    def call():
        raise ValueError("\n".join(f"line {i}" for i in range(1000)))

    status, message = outcome(call)
    assert status == FAIL and "line 999" in message and "line 900" not in message and len(message) < 800


def test_the_guard_tells_library_calls_from_learner_calls(tmp_path):
    # logging and namedtuple use sys._getframe; torch-like code opens files: none of it is the learner's
    code = (
        "import sys, collections, logging, os\n"
        "from workbook.sealed.guard import Guard\n"
        f"learner = {str(tmp_path / 'learner.py')!r}\n"
        "open(learner, 'w').write('import collections, logging\\n'\n"
        "    'def ok():\\n    logging.getLogger(\"x\").warning(\"w\")\\n    return collections.namedtuple(\"P\", \"a\")\\n'\n"
        "    'def bad():\\n    return sys._getframe()\\n'\n"
        "    'import sys\\n')\n"
        "sys.path.insert(0, os.path.dirname(learner))\n"
        "g = Guard(learner_files=[learner], protected=[], served_files=[], tree=os.path.dirname(learner),"
        " forbidden_modules=('solutions',))\n"
        "g.install()\n"
        "import learner as L\n"
        "L.ok()\n"
        "assert not g.refusals, g.refusals\n"
        "try:\n    L.bad()\nexcept RuntimeError as e:\n    print('refused:', e)\n"
        "assert len(g.refusals) == 1 and 'learner.py' in g.refusals[0].where, g.refusals\n"
    )
    out = run_py(["-c", code])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "refused" in out.stdout


def test_a_stub_never_reaches_the_notebooks_whatever_the_submission_holds(tmp_path):
    # the three ways nbval once passed a stub: a conftest.py, a cell that sets WORKBOOK_IMPL, a deleted
    # check cell.  The course's notebooks run, and only for stages the sealed check passed.
    nb = json.loads((ROOT / "notebooks" / "01_rmsnorm.ipynb").read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if "check" not in c.get("metadata", {}).get("tags", [])]
    nb["cells"].insert(0, {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                           "source": "import os\nos.environ['WORKBOOK_IMPL'] = 'solutions'\n"})
    sub = _write_submission(tmp_path / "sub", {
        "conftest.py": "def pytest_collection_modifyitems(items):\n    items.clear()\n",
        "notebooks/01_rmsnorm.ipynb": json.dumps(nb),
        "workbook/model/norm.py": STUB_NORM + "\n# started\n"})
    out = run_py(["-m", "workbook", "grade", "--stages", "01", "--notebooks", "--submission", str(sub),
                  f"--json={tmp_path / 'g.json'}"], timeout=900)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    (entry,) = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))["stages"]
    assert entry["status"] == "todo" and entry["notebook"] is None, entry
