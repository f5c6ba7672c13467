"""python -m workbook.train.distillation: a student learns from a frozen teacher; exact resume; torchrun.

Two tiny models are pretrained for a few steps: a teacher (hidden 96, 3 layers) and a student
(hidden 64, 2 layers); the distillation runs train on the shipped held-out SFT conversations."""
import pytest
import torch

from tests.helpers import ROOT, kill_and_resume, pretrain_tiny, run_py

SFT_VAL = str(ROOT / "data" / "sft_poetry_val.jsonl.gz")
COMMON = ["--max_seq_len", "128", "--batch_size", "8", "--num_workers", "0", "--dtype", "float32",
          "--no_progress", "--val_path", ""]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    save = tmp_path_factory.mktemp("start")
    return pretrain_tiny(save, 64, 2), pretrain_tiny(save, 96, 3)


def dist_args(save_dir, models, *extra):
    student, teacher = models
    return ["-m", "workbook.train.distillation", "--save_dir", str(save_dir), "--from_student_weight", str(student),
            "--from_teacher_weight", str(teacher), "--data_path", SFT_VAL, *COMMON, *extra]


def first_loss(stdout: str) -> float:
    line = next(s for s in stdout.splitlines() if "micro-step 1/" in s)
    return float(line.split(" loss ")[1].split()[0])


def test_student_trains_and_the_teacher_is_never_saved(models, tmp_path):
    student, teacher = models
    out = run_py(dist_args(tmp_path, models, "--max_steps", "3", "--save_interval", "3", "--log_interval", "1",
                           "--learning_rate", "1e-3", "--alpha", "0.5", "--temperature", "2", "--samples", "1",
                           "--val_path", SFT_VAL, "--eval_batches", "2"), mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "老师 (teacher)" in out.stdout and "冻结" in out.stdout
    weights = torch.load(tmp_path / "full_dist_64.pth", weights_only=True)
    base = torch.load(student, weights_only=True)
    assert set(weights) == set(base) and all(weights[k].shape == base[k].shape for k in base)
    state = torch.load(tmp_path / "full_dist_64_resume.pth", weights_only=True)
    assert set(state["model"]) == {f"model.{k}" for k in base}  # the student alone; no teacher key
    n_opt = sum(len(g["params"]) for g in state["optimizer"]["param_groups"])
    assert n_opt == len({k for k in base if k != "lm_head.weight"})


def test_alpha_one_is_the_sft_loss(models, tmp_path):
    """α = 1: the objective is the student's masked CE, the loss SFT trains on (same data, seed)."""
    student, _ = models
    dist = run_py(dist_args(tmp_path / "d", models, "--max_steps", "1", "--save_interval", "1", "--log_interval", "1",
                            "--alpha", "1", "--samples", "0"), mode="solutions")
    sft = run_py(["-m", "workbook.train.full_sft", "--save_dir", str(tmp_path / "s"), "--from_weight", str(student),
                  "--data_path", SFT_VAL, *COMMON, "--max_steps", "1", "--save_interval", "1", "--log_interval", "1",
                  "--samples", "0"], mode="solutions")
    assert dist.returncode == 0 and sft.returncode == 0, dist.stderr[-2000:] + sft.stderr[-2000:]
    assert abs(first_loss(dist.stdout) - first_loss(sft.stdout)) < 1e-4, (dist.stdout[-800:], sft.stdout[-800:])


def test_bad_teacher_and_flags_are_refused(models, tmp_path):
    student, teacher = models
    for flags, fragment in ((["--alpha", "1.5"], "--alpha"), (["--temperature", "0"], "--temperature"),
                            (["--from_teacher_weight", str(tmp_path / "nope.pth")], "--from_teacher_weight"),
                            # the teacher's file with a shape that does not fit it
                            (["--teacher_hidden_size", "128"], "装不进")):
        out = run_py(dist_args(tmp_path / "bad", models, *flags), mode="solutions")
        assert out.returncode == 2 and fragment in out.stderr, (flags, out.stderr[-1500:])
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").glob("*.pth"))


@pytest.mark.slow
def test_distillation_resumes_exactly_after_kill(models, tmp_path):
    common = ["--max_steps", "10", "--epochs", "1", "--accumulation_steps", "2", "--log_interval", "2",
              "--save_interval", "4", "--learning_rate", "1e-3", "--samples", "0"]
    full, _, saved_at = kill_and_resume(lambda d, *x: dist_args(d, models, *common, *x), "full_dist_64", tmp_path)
    assert len(full["train"]) >= 5 and 0 < saved_at < 20


@pytest.mark.slow
def test_distillation_under_torchrun_with_two_ranks(models, tmp_path):
    out = run_py(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  *dist_args(tmp_path, models, "--max_steps", "2", "--accumulation_steps", "1",
                             "--save_interval", "2", "--log_interval", "1", "--samples", "0")],
                 mode="solutions", timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "2 个进程" in out.stdout
    assert (tmp_path / "full_dist_64.pth").is_file()
