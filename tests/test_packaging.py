"""The set-up files agree with each other: environment.yml's pip part installs this project with
extras that pyproject.toml defines, the torch range admits the local 2.13 CPU wheel, and
transformers is pinned exactly.

Repeatable installs: constraints.txt (written by `make lock`) pins every package of the set-up,
`make setup` installs with it (the build backend too), this environment is what it pins, and the
editable build of the project prints no setuptools warning."""
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

CONSTRAINTS = ROOT / "constraints.txt"
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _pins():
    """{canonical name: version} from constraints.txt; every other line is a comment."""
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN.fullmatch(line.strip())
        assert m, f"constraints.txt: not a `name==version` pin: {line!r}"
        name = canonicalize_name(m["name"])
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = m["version"]
    return pins


def test_environment_yml_pip_part_installs_the_project():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    extras = set(_pyproject()["project"]["optional-dependencies"])
    # the same constraints as `make setup` (conda writes these lines to a requirements file
    # beside environment.yml, so the path is relative to the repository root)
    assert pip[0] == "-c constraints.txt"
    (line,) = pip[1:]
    m = re.fullmatch(r"-e \.\[([\w,]+)\]", line)
    assert m and set(m.group(1).split(",")) <= extras and {"lab", "dev"} <= set(m.group(1).split(","))


def test_pins():
    deps = _pyproject()["project"]["dependencies"]
    torch_spec = next(d for d in deps if d.startswith("torch"))
    assert torch_spec == "torch>=2.6,<2.14"
    assert "transformers==5.23.0" in deps
    import transformers
    assert transformers.__version__ == "5.23.0"


def test_constraints_file_is_made_by_make_lock():
    text = CONSTRAINTS.read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "make lock" in header and "pip freeze" in header
    pins = _pins()
    # torch without its local label: torch==2.13.0 is met by the CPU wheel here and by a CUDA build
    # of the same release on a GPU machine; torch==2.13.0+cpu would refuse the CUDA build
    assert "+" not in "".join(pins.values()), "a local version label (+cpu, +cu128) in constraints.txt"
    assert pins["torch"] == "2.13.0"
    # the set-up's own tools are pinned: pip (it installs everything) and setuptools (the build backend)
    assert {"pip", "setuptools", "ipykernel", "ipywidgets", "jupyterlab"} <= set(pins)


def test_constraints_admitted_by_pyproject():
    """A stale lock (pyproject.toml changed, `make lock` not run) would make `make setup` fail."""
    meta = _pyproject()
    pins = _pins()
    reqs = [*meta["project"]["dependencies"], *meta["project"]["optional-dependencies"]["lab"],
            *meta["project"]["optional-dependencies"]["dev"], *meta["build-system"]["requires"]]
    for text in reqs:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({text}) is not pinned in constraints.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, pyproject.toml asks for {text!r}: run `make lock`"


_ENV_MARKERS = re.compile(r"\b(python_version|python_full_version|sys_platform|platform_\w+|os_name|implementation_\w+)\b")


def _closure(root: str, extras: set[str]) -> dict[str, tuple[str, bool]]:
    """{canonical name: (installed version, conditional)} of `root[extras]` and everything it
    requires here.  conditional: every chain of requirements that brings the package in has a
    platform or Python-version marker (appnope on macOS, the CUDA build's nvidia-* and triton)."""
    seen: dict[str, tuple[str, bool]] = {}
    todo = [(root, frozenset(extras), False)]
    done = set()
    while todo:
        name, want, conditional = todo.pop()
        key = (canonicalize_name(name), want, conditional)
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if conditional:
                continue
            pytest.fail(f"{name} is required by the set-up but not installed: run `make setup`")
        cname = canonicalize_name(dist.metadata["Name"])
        seen[cname] = (dist.version, conditional and seen.get(cname, (None, True))[1])
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (want | {""})):
                continue
            todo.append((req.name, frozenset(req.extras),
                         conditional or bool(req.marker and _ENV_MARKERS.search(str(req.marker)))))
    return seen


def test_constraints_pin_every_installed_package_of_the_setup():
    """This environment is the locked one: every distribution that minimind-workbook[lab,dev] pulls
    in (plus pip and setuptools, which `make setup` installs first) is in constraints.txt, at the
    version installed here (local labels aside: torch 2.13.0+cpu is pinned as 2.13.0).  Packages
    that only another platform or the CUDA build of torch brings in need no pin."""
    pins = _pins()
    installed = _closure("minimind-workbook", {"lab", "dev"})
    installed.pop("minimind-workbook")
    for name in ("pip", "setuptools"):
        installed[name] = (metadata.version(name), False)
    missing = sorted(n for n, (_, conditional) in installed.items() if n not in pins and not conditional)
    assert not missing, f"installed by the set-up but not pinned in constraints.txt: {missing} (run `make lock`)"
    differ = {n: (v, pins[n]) for n, (v, _) in installed.items()
              if n in pins and Version(v).public != Version(pins[n]).public}
    assert not differ, f"installed version vs constraints.txt: {differ} (run `make setup`)"


def test_pip_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_make_setup_installs_with_the_constraints():
    out = subprocess.run(["make", "-n", "-B", "--no-print-directory", "setup"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(re.search(r"-m pip install .*-c constraints\.txt .*--upgrade pip setuptools", ln) for ln in lines)
    install = [ln for ln in lines if "-e " in ln and "pip install" in ln]
    assert len(install) == 1 and "-c constraints.txt" in install[0] \
        and "--build-constraint constraints.txt" in install[0] and '".[lab,dev]"' in install[0], install
    assert any("tools/lab.py --install" in ln for ln in lines)


@pytest.mark.slow
def test_the_editable_build_prints_no_setuptools_warning(tmp_path):
    """`make setup`'s own pip command, for the project alone (--no-deps), on a copy of it, into a
    throwaway venv: what the build backend says is what `make setup` shows.  (It used to print
    setuptools' warnings about `project.license` as a table and about the editable finder.)"""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(ROOT / name, proj / name)
    shutil.copytree(ROOT / "workbook", proj / "workbook", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    target = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target), "install", "--quiet", "--no-deps",
         "-c", "constraints.txt", "--build-constraint", "constraints.txt", "-e", "."],
        cwd=proj, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    # pip's own notes about this machine's extra indexes ("WARNING: Location ... is ignored") aside
    said = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Location ")]
    assert not [ln for ln in said if re.search(r"(?i)warning|deprecat|setuptools|!!", ln)], "\n".join(said)
