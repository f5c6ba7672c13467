"""The set-up files agree with each other: environment.yml's pip part installs this project with
extras that pyproject.toml defines, the torch range admits the local 2.13 CPU wheel, and
transformers is pinned exactly."""
import re
import tomllib

import yaml

from tests.helpers import ROOT


def test_environment_yml_pip_part_installs_the_project():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(meta["project"]["optional-dependencies"])
    (line,) = pip
    m = re.fullmatch(r"-e \.\[([\w,]+)\]", line)
    assert m and set(m.group(1).split(",")) <= extras and {"lab", "dev"} <= set(m.group(1).split(","))


def test_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    torch_spec = next(d for d in deps if d.startswith("torch"))
    assert torch_spec == "torch>=2.6,<2.14"
    assert "transformers==5.23.0" in deps
    import transformers
    assert transformers.__version__ == "5.23.0"
