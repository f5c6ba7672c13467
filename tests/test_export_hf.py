"""python -m workbook export-hf: --llama (a native LlamaForCausalLM folder), --dtype, and the
model config JSON beside the weights.

Random-initialised reference models are saved the way training saves them (save_weights: fp16,
every key; `{stem}_config.json` beside them), exported by the real CLI in one subprocess
(WORKBOOK_IMPL=solutions), and compared here with the reference model.  The slow test repeats
the comparison with transformers 4.x, in a second venv that borrows torch from this one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import run_py
from workbook import _modes
from workbook.train.checkpoint import load_weights, save_weights
from workbook.train.pretrain import write_config

cfg_mod = _modes.reference_module("config")
rope = _modes.reference_module("model.rope")
causal_lm = _modes.reference_module("model.causal_lm")
MiniMindConfig = cfg_mod.MiniMindConfig
MiniMindForCausalLM = causal_lm.MiniMindForCausalLM

SMALL = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
             intermediate_size=256, vocab_size=6400, rope_theta=5e4, max_position_embeddings=4096)
MOE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           use_moe=True)
PAD, BOS, EOS = 0, 1, 2
TF4 = "4.57.6"  # the last transformers 4.x release; its LlamaConfig knows head_dim and YaRN's keys

# Runs the CLI once per argument list in one process (transformers is imported once).
_EXPORT_MANY = """
import contextlib, io, json, sys
from workbook.__main__ import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    results.append({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def make_weights(folder: Path, name: str, seed: int, with_config: bool = True, **kw) -> Path:
    """A random-initialised reference model saved as training saves it; returns the .pth."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = MiniMindConfig(**kw)
    save_weights(MiniMindForCausalLM(config), folder / f"{name}.pth")
    if with_config:
        write_config(config, folder / f"{name}_config.json")
    return folder / f"{name}.pth"


def workbook_model(weights: Path, **kw) -> MiniMindForCausalLM:
    """The reference model holding `weights`, fp32, eval."""
    model = MiniMindForCausalLM(MiniMindConfig(**kw))
    load_weights(model, weights)
    return model.float().eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    base = tmp_path_factory.mktemp("export_hf")
    default = make_weights(base / "default", "pretrain_512", 0, with_config=False)  # like MiniMind's .pth
    small = make_weights(base / "small", "pretrain_96", 1, **SMALL)
    moe = make_weights(base / "moe", "pretrain_64_moe", 2, **MOE)
    jobs = {
        "fp32": [default, "--llama", "--dtype", "float32"],
        "fp16": [default, "--llama"],
        "bf16": [default, "--llama", "--dtype", "bfloat16"],
        "yarn": [default, "--llama", "--dtype", "float32", "--inference_rope_scaling", "1"],
        "small": [small, "--llama", "--dtype", "float32"],  # no shape flags: the config JSON
        "small_yarn": [small, "--llama", "--dtype", "float32", "--inference_rope_scaling", "1"],
        "remote_small": [small],  # the remote-code export, float16 by default
        "moe": [moe, "--llama"],
    }
    argvs = [["export-hf", str(w), str(base / "out" / name), *rest]
             for name, (w, *rest) in jobs.items()]
    proc = run_py(["-c", _EXPORT_MANY, json.dumps(argvs)], mode="solutions", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"base": base, "weights": {"default": default, "small": small, "moe": moe},
            "dir": {name: base / "out" / name for name in jobs},
            "result": dict(zip(jobs, results))}


def folder(exports, name: str) -> Path:
    r = exports["result"][name]
    assert r["rc"] == 0, r["stderr"][-3000:]
    return exports["dir"][name]


def reference(exports, name: str) -> MiniMindForCausalLM:
    """The workbook model an export came from."""
    kw = {"default": {}, "small": SMALL}
    which = "small" if name.startswith(("small", "remote_small")) else "default"
    yarn = {"inference_rope_scaling": True} if name.endswith("yarn") else {}
    return workbook_model(exports["weights"][which], **kw[which], **yarn)


def probe_batch(vocab: int = 6400) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(3, vocab, (2, 40), generator=g)


def left_padded(vocab: int = 6400) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of 9 and 5 tokens, the shorter one left-padded with <|endoftext|>."""
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(3, vocab, (2, 9), generator=g)
    ids[:, 0] = BOS
    ids[1, :4] = PAD
    mask = (torch.arange(9) >= torch.tensor([[0], [4]])).long()
    ids[1, 4] = BOS
    return ids, mask


def load_llama(path: Path):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert type(model) is LlamaForCausalLM
    return model


# ------------------------------------------------------------------------------ the Llama folder

def test_llama_folder_is_a_plain_llama_with_both_rope_spellings(exports):
    out = folder(exports, "fp32")
    assert not list(out.glob("*.py")), "a Llama folder carries no modelling code"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert "auto_map" not in config
    assert {k: config[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                   "num_key_value_heads", "head_dim", "num_hidden_layers",
                                   "vocab_size", "max_position_embeddings")} == dict(
        hidden_size=512, intermediate_size=1408, num_attention_heads=8, num_key_value_heads=2,
        head_dim=64, num_hidden_layers=8, vocab_size=6400, max_position_embeddings=32768)
    assert config["rms_norm_eps"] == 1e-5 and config["hidden_act"] == "silu"
    assert config["tie_word_embeddings"] is True
    assert config["attention_bias"] is False and config["mlp_bias"] is False
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (BOS, EOS, PAD)
    # transformers 5 reads rope_parameters, 4.x the top-level rope_theta
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": 1e6}
    assert config["rope_theta"] == 1e6 and "rope_scaling" not in config

    yarn = json.loads((folder(exports, "yarn") / "config.json").read_text())
    expected = {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 2048,
                "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 1.0}
    assert yarn["rope_parameters"] == {**expected, "rope_theta": 1e6}
    assert yarn["rope_scaling"] == expected and yarn["rope_theta"] == 1e6

    # the state-dict names are Llama's already; the tied lm_head is stored once
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    with safe_open(out / "model.safetensors", "pt") as f:
        stored = set(f.keys())
    llama_keys = set(LlamaForCausalLM(LlamaConfig.from_dict(config)).state_dict())
    assert stored == llama_keys - {"lm_head.weight"}
    ours = set(torch.load(exports["weights"]["default"], weights_only=True))
    assert ours == llama_keys


def test_tokenizer_folder_loads_without_remote_code_and_gives_generate_inputs_only(exports):
    from transformers import AutoTokenizer

    for name in ("fp16", "remote_small"):
        config = json.loads((folder(exports, name) / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
        assert config["model_input_names"] == ["input_ids", "attention_mask"]
        assert "auto_map" not in config and "<|im_start|>" in config["chat_template"]
    tok = AutoTokenizer.from_pretrained(folder(exports, "fp16"))
    enc = tok("床前明月光", return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"}
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, PAD)
    chat = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"


# torch and LlamaConfig first: transformers 5 imports them (2 s on a cold start) for any Llama
# config; what is timed is the tokenizer load itself
_TIME_TOKENIZER = """
import json, sys, time, torch
from transformers import AutoTokenizer, LlamaConfig
t = time.perf_counter(); AutoTokenizer.from_pretrained(sys.argv[1], **json.loads(sys.argv[2]))
print(time.perf_counter() - t)
"""


@pytest.mark.parametrize("name, kwargs", [("fp16", {}), ("remote_small", {"trust_remote_code": True})])
def test_autotokenizer_returns_at_once(exports, name, kwargs, tmp_path):
    # stdin stays open and unanswered: a trust_remote_code prompt would wait 15 s for its alarm
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", _TIME_TOKENIZER, str(folder(exports, name)),
                                 json.dumps(kwargs)], stdin=subprocess.PIPE, stdout=out, stderr=err,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
        try:
            assert proc.wait(timeout=120) == 0
        finally:
            proc.stdin.close()
            proc.kill()
        out.seek(0), err.seek(0)
        printed, errors = out.read(), err.read()
    # a trust_remote_code prompt would print its question and, unanswered, fail after 15 s:
    # judged by that, not by a wall-clock threshold that a loaded machine can miss
    assert "custom code" not in printed + errors
    float(printed.strip().splitlines()[-1])  # the load itself returned (its time is printed)


@pytest.mark.parametrize("name", ["fp32", "yarn", "small", "small_yarn"])
def test_llama_logits_equal_the_workbook_model(exports, name):
    llama, ours = load_llama(folder(exports, name)), reference(exports, name)
    x = probe_batch()
    with torch.no_grad():
        diff = (llama(x).logits - ours(x).logits).abs().max().item()
    assert diff <= 1e-5, f"{name}: max |Δlogits| = {diff:.2e}"
    # left padding: same logits at the real tokens
    ids, mask = left_padded()
    with torch.no_grad():
        a = llama(ids, attention_mask=mask).logits
        b = ours(ids, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max().item() <= 1e-5


def test_config_json_beside_the_weights_describes_the_model(exports):
    config = json.loads((folder(exports, "small") / "config.json").read_text())
    assert {k: config[k] for k in SMALL} == {**SMALL, "rope_theta": 5e4}
    assert config["head_dim"] == 16 and config["rope_parameters"]["rope_theta"] == 5e4
    assert "pretrain_96_config.json" in exports["result"]["small"]["stdout"]
    # the flag overrides the JSON: YaRN on, the shape still from the JSON
    yarn = json.loads((folder(exports, "small_yarn") / "config.json").read_text())
    assert yarn["hidden_size"] == 96 and yarn["rope_scaling"]["rope_type"] == "yarn"
    # the remote-code export reads it too, and still loads with trust_remote_code
    from transformers import AutoModelForCausalLM

    remote = AutoModelForCausalLM.from_pretrained(folder(exports, "remote_small"), trust_remote_code=True,
                                                  dtype=torch.float32).eval()
    assert remote.config.hidden_size == 96 and remote.config.rope_theta == 5e4
    x = probe_batch()
    with torch.no_grad():
        assert torch.allclose(remote(x).logits, reference(exports, "small")(x).logits, atol=1e-5)


@pytest.mark.parametrize("name", ["fp32", "small_yarn"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generate_equals_the_workbook_model(exports, name, use_cache):
    llama, ours = load_llama(folder(exports, name)), reference(exports, name)
    ids, mask = left_padded()
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, use_cache=use_cache,
              pad_token_id=PAD, eos_token_id=EOS)
    with torch.no_grad():
        assert llama.generate(ids, **kw).tolist() == ours.generate(ids, **kw).tolist()


def test_pipeline_text_generation_without_remote_code(exports):
    from transformers import pipeline

    out = folder(exports, "fp16")  # the default export: float16
    generator = pipeline("text-generation", model=str(out))
    assert generator.model.dtype == torch.float16
    text = generator("床前明月光", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("床前明月光") and len(text) > len("床前明月光")
    # the same tokens as the workbook model (float16 weights are stored exactly)
    tok = generator.tokenizer
    ids = tok("床前明月光", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours = reference(exports, "fp16").generate(ids, max_new_tokens=8, do_sample=False,
                                                   pad_token_id=PAD, eos_token_id=EOS)
        theirs = load_llama(out).generate(ids, max_new_tokens=8, do_sample=False,
                                          pad_token_id=PAD, eos_token_id=EOS)
    assert theirs.tolist() == ours.tolist()


def test_dtype_sets_the_stored_precision_and_the_size(exports):
    from safetensors import safe_open

    sizes, originals = {}, torch.load(exports["weights"]["default"], weights_only=True)
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        path = folder(exports, name) / "model.safetensors"
        sizes[name] = path.stat().st_size
        config = json.loads((path.parent / "config.json").read_text())
        assert config["dtype"] == config["torch_dtype"] == str(dtype).removeprefix("torch.")
        with safe_open(path, "pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                assert tensor.dtype == dtype, key
                if name in ("fp32", "fp16"):  # the fp16 .pth goes across exactly
                    assert torch.equal(tensor.to(torch.float16), originals[key]), key
    print(f"\nmodel.safetensors sizes (26M model): {sizes}")
    # same tensors, two bytes each; only the header differs ("BF16" vs "F16")
    assert abs(sizes["fp32"] / sizes["fp16"] - 2) < 0.01 and abs(sizes["bf16"] - sizes["fp16"]) < 1000
    assert sizes["fp16"] < 55e6  # 25.8M parameters, the tied pair once
    remote = folder(exports, "remote_small") / "model.safetensors"
    with safe_open(remote, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_yarn_inverse_frequencies_equal_the_workbook_rope():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from workbook.export_llama import llama_config

    for kw in ({}, SMALL):
        config = MiniMindConfig(**kw, inference_rope_scaling=True)
        llama = LlamaConfig.from_dict(llama_config(config))  # (test-only: mutating it is fine)
        inv_freq, scale = ROPE_INIT_FUNCTIONS["yarn"](llama, "cpu")
        head_dim = config.hidden_size // config.num_attention_heads
        cos, sin = rope.precompute_freqs_cis(head_dim, end=config.max_position_embeddings,
                                             rope_base=config.rope_theta, rope_scaling=config.rope_scaling)
        # the workbook's inv_freq_i is the angle at position 1
        ours = torch.atan2(sin[1, :head_dim // 2].double(), cos[1, :head_dim // 2].double())
        assert torch.allclose(inv_freq.double(), ours, rtol=1e-6, atol=0), kw
        plain = 1.0 / config.rope_theta ** (torch.arange(0, head_dim, 2).double() / head_dim)
        assert not torch.allclose(inv_freq.double(), plain, rtol=1e-3)  # YaRN did change them
        assert scale == 1.0
        # without the explicit attention_factor transformers would scale cos/sin by 0.1·ln(16) + 1
        params = dict(llama.rope_parameters)
        del params["attention_factor"]
        llama.rope_parameters = params
        assert ROPE_INIT_FUNCTIONS["yarn"](llama, "cpu")[1] == pytest.approx(1.2773, abs=1e-4)


def test_moe_is_refused_with_a_pointer_to_the_remote_code_export(exports):
    r = exports["result"]["moe"]
    assert r["rc"] == 2
    assert "MoE" in r["stderr"] and "--llama" in r["stderr"] and "trust_remote_code" in r["stderr"]
    assert not exports["dir"]["moe"].exists()


# ----------------------------------------------------------------------------- transformers 4.x

_TF4_SCRIPT = """
import json, sys, torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
jobs, out = json.loads(sys.argv[1]), {"version": transformers.__version__, "torch": torch.__file__,
                                      "sys_path": sys.path, "folders": {}}
ids, mask, probe = (torch.tensor(t) for t in json.loads(sys.argv[2]))
tensors = {}
for name, path in jobs.items():
    config = AutoConfig.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        tensors[name] = model(probe).logits
        gen = {str(c): model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                      use_cache=c, pad_token_id=0, eos_token_id=2).tolist()
               for c in (True, False)}
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok("床前明月光", return_tensors="pt")
    text = tok.decode(model.generate(**enc, max_new_tokens=8, do_sample=False)[0])
    out["folders"][name] = {"class": type(model).__name__, "rope_theta": config.rope_theta,
                            "rope_scaling": config.rope_scaling, "inv_freq": model.model.rotary_emb.inv_freq.tolist(),
                            "attention_scaling": model.model.rotary_emb.attention_scaling,
                            "generate": gen, "tokenizer": type(tok).__name__, "keys": sorted(enc), "text": text}
torch.save(tensors, sys.argv[3])
print(json.dumps(out))
"""


def _tf4_venv() -> Path:
    """A venv with transformers 4.x (and its tokenizers, hub) that borrows torch from this one.

    Cached in the temp directory, keyed by the versions and this environment; built under a lock
    and marked complete only at the end, so an interrupted build is redone.
    """
    import fcntl
    import hashlib

    here = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{here} {torch.__version__}".encode()).hexdigest()[:10]
    venv = Path(tempfile.gettempdir()) / f"minimind-workbook-transformers{TF4}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    marker = venv / "workbook-ready"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            return venv
        subprocess.run(["rm", "-rf", str(venv)], check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"transformers=={TF4}"], capture_output=True, text=True, timeout=900)
        if r.returncode:
            offline = any(s in r.stdout + r.stderr for s in (
                "No matching distribution", "Could not fetch", "NewConnectionError",
                "Temporary failure in name resolution", "Network is unreachable"))
            if offline:
                pytest.skip(f"PyPI unreachable, cannot install transformers {TF4}: {r.stderr[-500:]}")
            raise AssertionError(r.stdout[-2000:] + r.stderr[-2000:])
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        # torch (and only what pip did not install here) from this environment: a .pth appends
        # its directory after the venv's own site-packages, so transformers 4.x shadows 5.x
        Path(site, "workbook-borrow-torch.pth").write_text(here + "\n")
        marker.write_text(TF4 + "\n")
    return venv


@pytest.mark.slow
def test_llama_folders_in_transformers_4(exports, tmp_path):
    started = time.perf_counter()
    venv = _tf4_venv()
    jobs = {name: str(folder(exports, name)) for name in ("fp32", "fp16", "small_yarn")}
    ids, mask = left_padded()
    probe = probe_batch()
    logits_file = tmp_path / "logits.pt"
    proc = subprocess.run([venv / "bin" / "python", "-c", _TF4_SCRIPT, json.dumps(jobs),
                           json.dumps([ids.tolist(), mask.tolist(), probe.tolist()]), str(logits_file)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == TF4
    assert got["torch"] == torch.__file__  # borrowed, not installed there
    paths = [p for p in got["sys_path"] if p.endswith("site-packages")]
    assert paths[0].startswith(str(venv)) and paths[-1] == sysconfig.get_paths()["purelib"]

    logits = torch.load(logits_file, weights_only=True)
    for name, info in got["folders"].items():
        ours = reference(exports, name)
        assert info["class"] == "LlamaForCausalLM" and info["tokenizer"] == "PreTrainedTokenizerFast"
        assert info["keys"] == ["attention_mask", "input_ids"]  # no token_type_ids
        assert info["text"].startswith("床前明月光")
        with torch.no_grad():
            diff = (logits[name] - ours(probe).logits).abs().max().item()
            expected = ours.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                     pad_token_id=PAD, eos_token_id=EOS).tolist()
        assert diff <= 1e-5, f"{name}: transformers {TF4} max |Δlogits| = {diff:.2e}"
        assert info["generate"] == {"True": expected, "False": expected}
        assert info["attention_scaling"] == 1.0
    assert got["folders"]["fp32"]["rope_theta"] == 1e6
    assert got["folders"]["small_yarn"]["rope_theta"] == 5e4
    assert got["folders"]["small_yarn"]["rope_scaling"]["rope_type"] == "yarn"
    print(f"\ntransformers {TF4} check: {time.perf_counter() - started:.0f} s")
