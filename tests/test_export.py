"""python -m workbook export / export-hf."""
import json
import subprocess
import sys
import sysconfig

import pytest
import torch

from tests.helpers import ROOT, run_py

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--num_key_value_heads", "2"]
VAL = str(ROOT / "data" / "pretrain_poetry_val.jsonl.gz")


def test_export_refuses_while_checks_fail(tmp_path):
    out = run_py(["-m", "workbook", "export", str(tmp_path / "x")], mode="solutions:01-13")
    assert out.returncode == 1
    assert "00 welcome" in out.stderr and "--force" in out.stderr
    assert not (tmp_path / "x").exists()


def test_forced_learner_export_holds_the_learner_files_and_nothing_else(tmp_path):
    dest = tmp_path / "exp"
    out = run_py(["-m", "workbook", "export", str(dest), "--force"])
    assert out.returncode == 0, out.stderr
    assert (dest / "workbook" / "model" / "norm.py").read_text() == (ROOT / "workbook" / "model" / "norm.py").read_text()
    names = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert not any(n.startswith(("solutions", "notebooks", "tests", "workbook/checks", "workbook/hints")) for n in names)
    assert {"train.sh", "README.md", "pyproject.toml", "workbook/train/pretrain.py",
            "workbook/assets/tokenizer/tokenizer.json",
            # Part 2: the SFT trainer, the learner's stage-14 dataset, the grader
            "workbook/train/full_sft.py", "workbook/train/trainer.py", "workbook/data/sft.py",
            "workbook/eval/grader.py"} <= names


@pytest.mark.slow
def test_reference_export_installs_in_a_fresh_venv_and_pretrains(tmp_path):
    dest = tmp_path / "exp"
    out = run_py(["-m", "workbook", "export", str(dest), "--reference"])
    assert out.returncode == 0, out.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the heavy dependencies (torch, transformers) come from this environment; the exported
    # package itself is installed from its directory like any other
    fresh_site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    with open(f"{fresh_site}/workbook-deps.pth", "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(dest)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run([py, "-c", "import workbook, json; print(workbook.__file__)"], cwd=work,
                       capture_output=True, text=True)
    assert str(venv) in r.stdout, r.stdout + r.stderr
    r = subprocess.run([py, "-m", "workbook.train.pretrain", "--data_path", VAL, "--save_dir", "out", *TINY,
                        "--max_seq_len", "64", "--batch_size", "8", "--max_steps", "3", "--accumulation_steps", "1",
                        "--save_interval", "3", "--num_workers", "0", "--no_progress", "--samples", "1",
                        "--val_path", ""], cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "out" / "pretrain_64.pth").is_file()


GENERATE = """
import json, sys, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
x = torch.tensor([[1, 100, 200, 300]])
print(json.dumps(m.generate(x, max_new_tokens=12, do_sample=False).tolist()))
"""


@pytest.mark.slow
def test_export_hf_loads_with_trust_remote_code_and_generates_the_same_tokens(tmp_path):
    out = run_py(["-m", "workbook.train.pretrain", "--data_path", VAL, "--save_dir", str(tmp_path), *TINY,
                  "--max_seq_len", "64", "--batch_size", "8", "--max_steps", "20", "--accumulation_steps", "1",
                  "--learning_rate", "3e-3", "--save_interval", "20", "--num_workers", "0", "--no_progress",
                  "--samples", "0", "--val_path", "", "--dtype", "float32"], mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    weights = tmp_path / "pretrain_64.pth"
    hf, pth = tmp_path / "hf", tmp_path / "again.pth"
    out = run_py(["-m", "workbook", "export-hf", str(weights), str(hf), *TINY, "--pth", str(pth)], mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    assert {"model.safetensors", "config.json", "modeling_minimind.py", "configuration_minimind.py",
            "tokenizer.json"} <= {p.name for p in hf.iterdir()}

    # the original: the .pth loaded into the workbook's model, greedy decoding
    probe = ("import json, torch, workbook\n"
             "from workbook.config import MiniMindConfig\n"
             "from workbook.model.causal_lm import MiniMindForCausalLM\n"
             "m = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))\n"
             f"m.load_state_dict({{k: v.float() for k, v in torch.load({str(weights)!r}).items()}})\n"
             "x = torch.tensor([[1, 100, 200, 300]])\n"
             "print(json.dumps(m.generate(x, max_new_tokens=12, do_sample=False).tolist()))\n")
    original = run_py(["-c", probe], mode="solutions")
    assert original.returncode == 0, original.stderr[-2000:]
    remote = subprocess.run([sys.executable, "-c", GENERATE, str(hf)], cwd=tmp_path, capture_output=True,
                            text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert json.loads(remote.stdout.strip().splitlines()[-1]) == json.loads(original.stdout.strip().splitlines()[-1])

    a, b = torch.load(weights), torch.load(pth)
    assert list(a) == list(b) and "lm_head.weight" in b and "model.embed_tokens.weight" in b
    assert all(b[k].dtype == torch.float16 and torch.equal(a[k], b[k]) for k in a)
