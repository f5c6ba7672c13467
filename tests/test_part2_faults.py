"""Faults in every trainer kind: nothing non-finite is ever saved, a full disk is named, and the
weights and the resume file stay one pair.

One tiny pretrained model (reference code) starts every trainer; each run is one optimizer step.
"""
import errno

import pytest
import torch

from tests.helpers import ROOT, pretrain_tiny, run_py

DATA = ROOT / "data"
SMALL = ["--max_seq_len", "128", "--batch_size", "4", "--num_workers", "0", "--dtype", "float32",
         "--no_progress", "--val_path", "", "--samples", "0", "--accumulation_steps", "1"]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return pretrain_tiny(tmp_path_factory.mktemp("start"))


def trainer_args(kind: str, save_dir, start) -> tuple[list[str], str]:
    """The arguments of a one-step run of `kind` from `start`, and the stem of what it saves."""
    per_kind = {
        "pretrain": (["--data_path", str(DATA / "pretrain_poetry_val.jsonl.gz")], "pretrain_64"),
        "full_sft": (["--data_path", str(DATA / "sft_poetry_val.jsonl.gz")], "full_sft_64"),
        "lora": (["--data_path", str(DATA / "lora_identity_val.jsonl.gz")], "lora_identity_64"),
        "dpo": (["--data_path", str(DATA / "dpo_val.jsonl.gz")], "dpo_64"),
        "distillation": (["--data_path", str(DATA / "sft_poetry_val.jsonl.gz"),
                          "--from_teacher_weight", str(start)], "full_dist_64"),
    }
    extra, stem = per_kind[kind]
    return (["-m", f"workbook.train.{kind}", "--save_dir", str(save_dir), "--from_weight", str(start),
             *SMALL, *extra], stem)


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("kind", ["pretrain", "full_sft", "lora", "dpo", "distillation"])
def test_weights_that_overflow_fp16_are_never_saved(kind, start, tmp_path):
    """lr 1e8: after one step the fp32 weights are finite but far above 65504, the largest fp16
    value; the run stops with exit 1 before either file of the last good pair is replaced."""
    args, stem = trainer_args(kind, tmp_path, start)
    # the last good pair (any bytes: the run must not touch them)
    (tmp_path / f"{stem}.pth").write_bytes(b"last good weights")
    (tmp_path / f"{stem}_resume.pth").write_bytes(b"last good resume file")
    before = snapshot(tmp_path)
    out = run_py([*args, "--learning_rate", "1e8", "--max_steps", "1", "--save_interval", "1"],
                 mode="solutions")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "超过了 float16 能表示的最大值 65504" in out.stderr and "溢出 overflow" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "完成" not in out.stdout
    assert snapshot(tmp_path) == before  # the pair as it was, no temporary file left


def test_a_written_file_with_inf_is_refused_before_it_replaces_anything(tmp_path):
    """The check of what was actually written: a writer that stores fp16 (e.g. a learner's
    save_lora with .half()) turns 1e5 into inf, and the pair is not replaced."""
    from workbook.train import guards
    from workbook.train.checkpoint import save_pair

    weights, resume = tmp_path / "w.pth", tmp_path / "w_resume.pth"
    weights.write_bytes(b"old weights")
    resume.write_bytes(b"old resume")
    with pytest.raises(guards.NonFiniteError, match="lora.B.weight 有 1 个 NaN/inf（存成 float16）"):
        save_pair(weights, lambda tmp: torch.save({"lora.B.weight": torch.tensor([1e5]).half()}, tmp),
                  resume, {"step": 1}, verify_weights=lambda tmp: guards.check_finite_file(tmp, "存档前"))
    assert weights.read_bytes() == b"old weights" and resume.read_bytes() == b"old resume"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth", "w_resume.pth"]


def _enospc_as_context(tmp):
    """What torch.save can raise on a full disk: its RuntimeError, the OSError only as __context__."""
    with open(tmp, "wb") as f:
        f.write(b"partial")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:  # raised here, the OSError becomes the RuntimeError's __context__
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_a_full_disk_is_named_when_enospc_is_only_the_context(tmp_path):
    from workbook.train.checkpoint import SaveError, save_pair

    weights, resume = tmp_path / "w.pth", tmp_path / "w_resume.pth"
    weights.write_bytes(b"old weights")
    resume.write_bytes(b"old resume")
    with pytest.raises(SaveError) as caught:
        save_pair(weights, _enospc_as_context, resume, {"model": {"x": torch.zeros(1000)}})
    message = str(caught.value)
    assert f"保存到 {tmp_path} 时磁盘空间不足 (No space left on device)" in message
    assert "需要约" in message and "只剩" in message and "MB" in message
    assert "之前的存档保持原样" in message and "inline_container" not in message
    assert weights.read_bytes() == b"old weights" and resume.read_bytes() == b"old resume"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth", "w_resume.pth"]


def test_weights_and_resume_file_are_one_pair(start, tmp_path):
    """The weights fit, the resume file does not (its temporary file is /dev/full): neither is
    replaced.  After a good save the resume file records the weights' SHA-256, and a resume
    whose weights file is not its partner says so and continues from its own weights."""
    from workbook.train.checkpoint import file_sha256

    args, stem = trainer_args("full_sft", tmp_path, start)
    good = run_py([*args, "--max_steps", "1", "--save_interval", "1", "--learning_rate", "1e-4"], mode="solutions")
    assert good.returncode == 0, good.stderr[-2000:]
    state = torch.load(tmp_path / f"{stem}_resume.pth", weights_only=True)
    assert state["weights_sha256"] == file_sha256(tmp_path / f"{stem}.pth")
    before = snapshot(tmp_path)
    (tmp_path / f"{stem}_resume.pth.tmp").symlink_to("/dev/full")
    out = run_py([*args, "--max_steps", "2", "--save_interval", "1", "--learning_rate", "1e-4", "--from_resume", "1"],
                 mode="solutions")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"保存到 {tmp_path} 时磁盘空间不足" in out.stderr and "需要约" in out.stderr
    assert "之前的存档保持原样" in out.stderr and "Traceback" not in out.stderr
    assert snapshot(tmp_path) == before  # weights unchanged too, the .tmp link removed
    # a weights file that is not the resume file's partner (e.g. replaced by hand)
    (tmp_path / f"{stem}.pth").write_bytes(b"other weights")
    out = run_py([*args, "--max_steps", "2", "--save_interval", "1", "--learning_rate", "1e-4", "--from_resume", "1"],
                 mode="solutions")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "不是和 resume 文件一起存下的那一份" in out.stdout and "续训只用 resume 文件里自己的权重" in out.stdout
    state = torch.load(tmp_path / f"{stem}_resume.pth", weights_only=True)
    assert state["step"] == 2 and state["weights_sha256"] == file_sha256(tmp_path / f"{stem}.pth")


# --- every reply cut away by --max_seq_len ---------------------------------------------------------

def test_a_max_seq_len_that_cuts_every_reply_stops_before_step_one(start, tmp_path):
    args, _ = trainer_args("full_sft", tmp_path / "run", start)
    out = run_py([*args, "--max_seq_len", "20", "--max_steps", "1"], mode="solutions")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "--max_seq_len 20 把每一个回答都截掉了" in out.stderr and "至少用 --max_seq_len 26" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_the_reply_check_counts_what_the_datasets_cut():
    """The check agrees with the reference SFTDataset / DPODataset on how many samples keep no
    reply token, and names the flag and the lengths needed when none keeps one."""
    from transformers import AutoTokenizer

    from solutions.data.dpo import DPODataset
    from solutions.data.sft import SFTDataset
    from workbook.data.validate import DataError, check_chat_data, check_pair_data, describe_chat

    tok = AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))
    sft, dpo = DATA / "sft_poetry_val.jsonl.gz", DATA / "dpo_val.jsonl.gz"
    ds = SFTDataset(sft, tok, 40)
    no_label = sum(bool((ds[i][1] == -100).all()) for i in range(len(ds)))
    summary = check_chat_data(sft, tok, 6400, max_length=40)
    assert 0 < summary["replies_cut"] == no_label < len(ds)
    assert f"{no_label} 个样本的回答被 --max_seq_len 40 整个截掉了" in describe_chat(summary)
    pairs = DPODataset(dpo, tok, 40)
    no_mask = sum(int(pairs[i]["mask_chosen"].sum()) == 0 for i in range(len(pairs)))
    assert check_pair_data(dpo, tok, 6400, max_length=40)["replies_cut"] == no_mask > 0
    with pytest.raises(DataError, match=r"--max_seq_len 16 把每一个回答都截掉了.*--max_seq_len 26 才有回答留下"):
        check_pair_data(dpo, tok, 6400, max_length=16)
    assert check_chat_data(sft, tok, 6400, max_length=340)["replies_cut"] == 0


# --- files that do not fit: named, exit 2 -----------------------------------------------------------

def _fake_adapter(path, hidden=64, rank=8):
    torch.save({"model.layers.0.self_attn.q_proj.lora.A.weight": torch.zeros(rank, hidden),
                "model.layers.0.self_attn.q_proj.lora.B.weight": torch.zeros(hidden, rank)}, path)
    return path


@pytest.mark.parametrize("case", ["missing adapter", "adapter of another width", "missing tokenizer"])
def test_eval_names_a_missing_or_unfitting_file(case, tmp_path):
    base = str(DATA / "base" / "full_sft_320.pth")
    extra, expected = {
        "missing adapter": (["--lora", str(tmp_path / "nope_320.pth")], "--lora：找不到 LoRA 适配器 (adapter)"),
        "adapter of another width": (["--lora", str(_fake_adapter(tmp_path / "a_64.pth"))],
                                     "是给 64 宽的模型训练的，而 " + base + " 是 320 宽"),
        "missing tokenizer": (["--tokenizer", str(tmp_path / "nope")], "--tokenizer：找不到分词器目录"),
    }[case]
    out = run_py(["-m", "workbook", "eval", base, "--limit", "1", *extra], mode="solutions")
    assert out.returncode == 2, out.stderr[-2000:]
    assert expected in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_an_adapter_given_as_from_weight_is_named(start, tmp_path):
    args, _ = trainer_args("full_sft", tmp_path / "run", start)
    args[args.index("--from_weight") + 1] = str(_fake_adapter(tmp_path / "adapter_64.pth"))
    out = run_py([*args, "--max_steps", "1", "--hidden_size", "64", "--num_hidden_layers", "2",
                  "--num_attention_heads", "4"], mode="solutions")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "这是一个 LoRA 适配器 (adapter) 文件，不是完整的模型权重" in out.stderr and "Traceback" not in out.stderr


def test_resuming_lora_with_another_rank_is_named(start, tmp_path):
    args, stem = trainer_args("lora", tmp_path, start)
    first = run_py([*args, "--max_steps", "1", "--save_interval", "1", "--lora_rank", "8"], mode="solutions")
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(tmp_path)
    out = run_py([*args, "--max_steps", "2", "--save_interval", "1", "--lora_rank", "4", "--from_resume", "1"],
                 mode="solutions")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "存档时 --lora_rank 是 8，这次是 4" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert snapshot(tmp_path) == before


# --- the README's commands -------------------------------------------------------------------------

def _readme_commands(module_prefix: str) -> list[list[str]]:
    """Every `python -m MODULE ...` line of the README's bash blocks (continuations joined)."""
    import re
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(f"python -m {module_prefix}"):
                commands.append(shlex.split(line)[2:])
    return commands


def test_every_readme_trainer_command_parses_and_names_existing_files():
    """The README's Part 2 commands use flags the trainers have, and the shipped files they name."""
    import importlib

    from workbook.train.trainer import build_parser

    commands = _readme_commands("workbook.train.")
    assert {c[0] for c in commands} >= {"workbook.train.full_sft", "workbook.train.lora", "workbook.train.dpo",
                                        "workbook.train.distillation"}
    for module, *argv in commands:
        args = build_parser(importlib.import_module(module).TASK).parse_args(argv)
        for flag in ("from_weight", "from_teacher_weight", "data_path", "val_path"):
            value = str(getattr(args, flag, "") or "")
            if value.startswith("data/"):
                assert (ROOT / value).is_file(), f"{module}: --{flag} {value} does not exist"


def test_the_progress_bar_shows_the_loss_between_log_lines():
    """The bar's loss and tok/s come from every training micro-step (a forward hook), not only
    from the log lines; the refresh is at most once a second (here: made due without sleeping)."""
    import io
    from types import SimpleNamespace

    from tqdm import tqdm

    from workbook.train.trainer import _Run

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, input_ids, labels=None):
            return SimpleNamespace(loss=self.w * 2.5, aux_loss=torch.tensor(0.5))

    run = _Run.__new__(_Run)
    run.task = SimpleNamespace(count_tokens=True)  # a trainer whose tok/s means labelled tokens
    run.model = Tiny().train()
    run.optimizer = torch.optim.SGD(run.model.parameters(), lr=0.01)
    run.bar = tqdm(total=10, file=io.StringIO())
    hook = run._watch_steps()
    labels = torch.tensor([[1] * 1000 + [-100] * 24])  # 1000 labelled tokens
    run.model(labels, labels=labels)
    run.model.eval()(labels, labels=labels)  # evaluation does not count
    run._refresh_bar()
    assert run.bar.postfix is None  # less than a second since the start: nothing read yet
    run.live["since"] -= 2.0  # as if two seconds had passed
    run._refresh_bar()
    hook.remove()
    shown = dict(part.split("=") for part in run.bar.postfix.split(", "))
    assert shown["loss"] == "3.000", run.bar.postfix  # loss + aux_loss of the training step only
    assert 0 < float(shown["tok_s"].replace(",", "")) <= 500  # 1000 tokens over two seconds or more
    assert run.live["losses"] == [] and run.live["tokens"] == 0
