"""Exports for the graduate: the finished package, and trained weights.

- ``python -m workbook export DIR``: an installable copy of the learner's own code (or the
  reference with ``--reference``) plus the provided training infrastructure, a torchrun launch
  script and a README.  No solutions, notebooks, checks or tests.  Refuses while a stage's
  check fails, unless ``--force``.
- ``python -m workbook export-hf WEIGHTS.pth OUT``: a Hugging Face folder (safetensors, config
  with ``auto_map``, the modelling code, the tokenizer) that loads with
  ``AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True)``, and optionally a
  MiniMind-layout ``.pth`` (fp16, every key, the tied pair twice).  With ``--llama``: a native
  ``LlamaForCausalLM`` folder instead, no remote code (export_llama.py).  The model's shape comes
  from ``{weights stem}_config.json`` beside the weights when it exists (flags override it);
  ``--dtype`` sets the stored precision (float16 by default).
"""
from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

from . import _modes, stages
# reading a weights file's config belongs to the checkpoint code (the trainers read it too)
from .train.checkpoint import CONFIG_SUFFIX, config_beside, model_config_kwargs  # noqa: F401

REPO = _modes.PACKAGE_DIR.parent
PACKAGES = ["", "model", "data", "train", "eval"]  # eval: the rule-based grader of Part 2


def infrastructure() -> list[str]:
    """Provided (non-exercise) modules of the model/data/train packages: the exported package
    needs them beside the exercises (pretrain command, checkpoints, packing, fast path …)."""
    exercise = {m.replace(".", "/") + ".py" for s in stages.STAGES for m in s.modules}
    return sorted(p.relative_to(_modes.PACKAGE_DIR).as_posix()
                  for sub in PACKAGES[1:] for p in (_modes.PACKAGE_DIR / sub).glob("*.py")
                  if p.name != "__init__.py"
                  and p.relative_to(_modes.PACKAGE_DIR).as_posix() not in exercise)
# The model's modules in dependency order (for the single-file remote code).
MODEL_MODULES = ["model.norm", "model.rope", "model.attention", "model.feedforward", "model.moe",
                 "model.block", "model.minimind", "model.causal_lm"]
_INTERNAL_IMPORT = re.compile(r"^from (\.+[\w.]*|workbook(\.[\w.]+)?) import .*$", re.MULTILINE)


STATUS_FILE = "export_status.json"  # inside the exported package: what was checked, what failed


class ExportRefused(RuntimeError):
    """Some stage checks fail; the message lists them."""


def judge_learner_files(timeout: float | None = None) -> list:
    """Every stage's Result on the learner's *own* files.

    Always WORKBOOK_IMPL=learner, whatever this process runs in: a stage served by the
    reference is not the learner's work, so it cannot make an export of the learner's code pass.
    """
    from .progress import results

    return results(mode="learner", timeout=timeout)


def failing(results: list) -> list:
    return [r for r in results if not r.done and r.status != "soon"]


def describe_failures(bad: list) -> str:
    """One line per failing stage: id, slug, title and the first line of its diagnostic."""
    return "\n".join(f"  {r.stage.id} {r.stage.slug}（{r.stage.title}）：{r.message.splitlines()[0]}"
                     for r in bad)


def _source_of(rel: str, reference: bool) -> Path:
    """File of exercise module `rel`: the learner's, or the reference."""
    base = _modes.SOLUTIONS_DIR if reference else _modes.PACKAGE_DIR
    return base / (rel.replace(".", "/") + ".py")


# The exported package's __init__: it warns at start-up when it was exported with failing stages.
_EXPORTED_INIT = '''"""MiniMind, as written in the MiniMind Workbook (exported).

export_status.json beside this file records which stages passed their checks at export time.
"""
import json as _json
import sys as _sys
from pathlib import Path as _Path

try:
    STATUS = _json.loads(_Path(__file__).with_name("export_status.json").read_text(encoding="utf-8"))
except (OSError, ValueError):
    STATUS = {}
if STATUS.get("failing"):
    print("警告 (warning)：这个包是用 --force 导出的，导出时这些阶段的检查没有通过："
          + "、".join(STATUS["failing"]) + "。训练结果可能是错的；详见 "
          + str(_Path(__file__).with_name("export_status.json")), file=_sys.stderr)
'''


def export_package(dest: str | Path, *, reference: bool = False, force: bool = False,
                   results: list | None = None, timeout: float | None = None) -> Path:
    """Write an installable package to `dest` (must not exist or be empty).

    The learner's files are judged first (see judge_learner_files; `results` = a judgement
    already made).  A failing stage refuses the export, unless `force`: then the package
    records the failures (export_status.json, its README) and warns whenever it is imported.
    """
    import datetime

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} 已存在且不是空目录：换一个目录，免得覆盖别的文件。")
    judged = [] if reference else (judge_learner_files(timeout) if results is None else results)
    bad = failing(judged)
    if bad and not force:
        raise ExportRefused("这些阶段的检查没有通过（按你自己的文件检查，不看 WORKBOOK_IMPL），"
                            "先不导出（加 --force 强制导出）：\n" + describe_failures(bad))
    status = {
        "format": "minimind-workbook-export-v1",
        "workbook_version": _workbook_version(),
        "source": "reference" if reference else "learner",
        "forced": bool(bad),
        "failing": [f"{r.stage.id} {r.stage.slug}" for r in bad],
        "stages": [r.to_dict() for r in judged],
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    pkg = dest / "workbook"
    for sub in PACKAGES:
        (pkg / sub).mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(_EXPORTED_INIT, encoding="utf-8")
    (pkg / STATUS_FILE).write_text(json.dumps(status, ensure_ascii=False, indent=1) + "\n",
                                   encoding="utf-8")
    for sub in PACKAGES[1:]:
        shutil.copyfile(_modes.PACKAGE_DIR / sub / "__init__.py", pkg / sub / "__init__.py")
    for stage in stages.STAGES:
        for rel in stage.modules:
            shutil.copyfile(_source_of(rel, reference), pkg / (rel.replace(".", "/") + ".py"))
    for rel in infrastructure():
        shutil.copyfile(_modes.PACKAGE_DIR / rel, pkg / rel)
    shutil.copytree(REPO / "data" / "tokenizer", pkg / "assets" / "tokenizer")

    deps = _runtime_dependencies()
    (dest / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "minimind-workbook-export"
        version = "0.1.0"
        description = "MiniMind written in the MiniMind Workbook ({'reference' if reference else 'learner'} code)"
        requires-python = ">=3.10"
        dependencies = {json.dumps(deps, ensure_ascii=False)}

        [tool.setuptools.packages.find]
        include = ["workbook*"]

        [tool.setuptools.package-data]
        workbook = ["assets/tokenizer/*", "{STATUS_FILE}"]
        """), encoding="utf-8")
    launch = dest / "train.sh"
    launch.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        # Pretrain with torchrun.  One node, all its GPUs:   ./train.sh --data_path pretrain_hq.bin
        # Several nodes: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 ./train.sh ...  (NODE_RANK=1 on the other)
        set -euo pipefail
        NPROC="${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
        exec torchrun --nproc_per_node "$NPROC" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" \\
            --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \\
            -m workbook.train.pretrain "$@"
        """), encoding="utf-8")
    launch.chmod(0o755)
    (dest / "README.md").write_text(textwrap.dedent(f"""\
        # MiniMind（MiniMind Workbook 导出 / exported）

        这是{'参考实现' if reference else '你在 MiniMind Workbook 里亲手写的代码'}，加上训练所需的基础设施，
        可以独立安装、在 GPU 上训练。

        ```bash
        pip install .                       # 在 GPU 机器上先按 pytorch.org 装好 CUDA 版 torch
        python -m workbook.data.pack pretrain_hq.jsonl pretrain_hq.bin --tokenizer workbook/assets/tokenizer
        ./train.sh --data_path pretrain_hq.bin --max_seq_len 512 --batch_size 32 --dtype bfloat16
        ```

        - 单机多卡：`./train.sh ...`（默认用本机全部 GPU，即 `torchrun --nproc_per_node N`）。
        - 多机：每台机器上 `NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<主节点 IP> ./train.sh ...`。
        - 有效 batch = `batch_size × GPU 总数 × accumulation_steps`。
        - 参数与 MiniMind 的 `train_pretrain.py` 相同；`python -m workbook.train.pretrain --help` 列出全部。

        English: `pip install .`, pack your jsonl with `python -m workbook.data.pack`, then `./train.sh --data_path X.bin ...`
        (torchrun over all local GPUs; set NNODES/NODE_RANK/MASTER_ADDR for several nodes).
        """) + _failures_section(bad), encoding="utf-8")
    return dest


def _failures_section(bad: list) -> str:
    if not bad:
        return ""
    return ("\n## ⚠ 导出时没有通过检查的阶段 / stages that failed their checks at export\n\n"
            "这个包是用 `--force` 导出的。下面这些阶段的代码没有通过检查，训练出来的模型可能是错的"
            "（例如少了因果掩码时 loss 反而更低，生成的却是乱码）。机器可读的记录在 "
            f"`workbook/{STATUS_FILE}`，每次 `import workbook` 都会提醒。\n\n"
            "This package was exported with `--force`; the stages below failed their checks.\n\n"
            + "".join(f"- **{r.stage.id} {r.stage.slug}**（{r.stage.title}）："
                      f"{r.message.splitlines()[0]}\n" for r in bad))


def _workbook_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("minimind-workbook")
    except metadata.PackageNotFoundError:
        import tomllib

        return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def _runtime_dependencies() -> list[str]:
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [d for d in meta["project"]["dependencies"] if not d.startswith(("matplotlib", "wandb"))] + [
        "matplotlib>=3.8", "wandb>=0.19"]


def remote_code(module_files: dict[str, Path]) -> tuple[str, str]:
    """(configuration_minimind.py, modeling_minimind.py) built from the implementation's files."""
    def body(path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        text = text.replace("from __future__ import annotations\n", "")
        return _INTERNAL_IMPORT.sub("", text)

    header = "from __future__ import annotations\n# Generated by `python -m workbook export-hf`.\n"
    config = header + body(module_files["config"])
    parts = [header, "from .configuration_minimind import MiniMindConfig\n"]
    for rel in MODEL_MODULES:
        parts.append(f"\n# ---- {rel} ----\n" + body(module_files[rel]))
    return config, "".join(parts)


TOKENIZER_DIR = REPO / "data" / "tokenizer"
# Every exported tokenizer_config.json says this, whatever the source folder holds: a class both
# transformers 4.x and 5.x know (5.x's own save_pretrained writes "TokenizersBackend", unknown to
# 4.x), and only the inputs generate() accepts (4.x would add token_type_ids by default).
TOKENIZER_SETTINGS = {"tokenizer_class": "PreTrainedTokenizerFast",
                      "model_input_names": ["input_ids", "attention_mask"]}
def write_tokenizer(out: str | Path, source: str | Path = TOKENIZER_DIR) -> Path:
    """Copy the tokenizer into `out` so that it loads in transformers 4.x and 5.x alike.

    The files are copied, not re-saved through transformers (see TOKENIZER_SETTINGS); the
    config keeps its chat template and special tokens, gets TOKENIZER_SETTINGS and loses any
    ``auto_map`` (a tokenizer needs no remote code).
    """
    out, source = Path(out), Path(source)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")
    config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("auto_map", None)
    config.update(TOKENIZER_SETTINGS)
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                                               encoding="utf-8")
    return out


def export_hf(weights: str | Path, out: str | Path, *, config_kwargs: dict | None = None,
              pth: str | Path | None = None, llama: bool = False, dtype: str = "float16",
              report: dict | None = None, gguf: bool = False, lora: bool = False) -> Path:
    """Load MiniMind-layout weights into the current implementation and write a HF folder.

    config_kwargs: MiniMindConfig fields; None values mean "not given" (see model_config_kwargs:
        the config JSON beside the weights fills them).
    llama: a native LlamaForCausalLM folder (export_llama) instead of the remote-code one.
    gguf: also write ``out/model.gguf`` for llama.cpp (export_gguf; dense, float16 or float32).
    lora: the caller adds a PEFT adapter in ``out/adapter`` (the model card says how to load it).
    dtype: "float16" | "bfloat16" | "float32", the stored precision of the safetensors.
    report: filled with what was done (config JSON used, the Llama check's figures).
    """
    from .config import MiniMindConfig
    from .export_llama import DTYPES, export_llama, llama_config
    from .model.causal_lm import MiniMindForCausalLM
    from .train.checkpoint import load_weights, save_weights

    if dtype not in DTYPES:
        raise ValueError(f"--dtype 只能是 {'/'.join(DTYPES)}，不是 {dtype!r}")
    report = {} if report is None else report
    out = Path(out)
    kwargs, report["config_json"] = model_config_kwargs(weights, config_kwargs, infer=True)
    config = MiniMindConfig(**kwargs)
    if llama:
        llama_config(config)  # a MoE config raises NotALlama here, before the weights are read
    if gguf:
        from .export_gguf import check_gguf
        check_gguf(config, dtype)  # the same, for --gguf
    model = MiniMindForCausalLM(config)
    # weights_only load, wrapper prefixes stripped, strict: names any key that does not fit
    load_weights(model, weights)
    model.eval()
    if pth is not None:
        save_weights(model, pth)
    if llama:
        report["figures"] = export_llama(model, out, dtype)
    else:
        config.auto_map = {"AutoConfig": "configuration_minimind.MiniMindConfig",
                           "AutoModelForCausalLM": "modeling_minimind.MiniMindForCausalLM"}
        model.to(DTYPES[dtype]).save_pretrained(out, safe_serialization=True)
        files = {"config": Path(__import__("workbook.config", fromlist=["x"]).__file__)}
        for rel in MODEL_MODULES:
            files[rel] = Path(_modes.impl_module(rel).__file__)
        conf_src, model_src = remote_code(files)
        (out / "configuration_minimind.py").write_text(conf_src, encoding="utf-8")
        (out / "modeling_minimind.py").write_text(model_src, encoding="utf-8")
    write_tokenizer(out)
    if gguf:  # one file for llama.cpp, beside the folder
        from .export_gguf import export_gguf
        report["gguf"] = export_gguf(model, out / "model.gguf", TOKENIZER_DIR, dtype)
    from .model_card import write_generation_config, write_model_card
    write_generation_config(out)
    write_model_card(out, config, weights, llama=llama, gguf=gguf, lora=lora, dtype=dtype)
    return out
