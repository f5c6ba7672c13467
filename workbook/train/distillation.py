"""``python -m workbook.train.distillation``: MiniMind's knowledge distillation, on the learner's package.

Same flags as MiniMind's ``train_distillation.py``: the student's shape (``--student_hidden_size``,
``--student_num_layers``) and starting weights (``--from_student_weight``), the teacher's
(``--teacher_hidden_size``, ``--teacher_num_layers``, ``--from_teacher_weight``), ``--alpha 0.5``,
``--temperature 1.5``, 6 epochs, batch 32, learning rate 5e-6, max_seq_len 340.  The run harness
is the one every trainer shares (``workbook.train.trainer``).  What distillation changes:

- the model: the student trains; the teacher is loaded once from its own weights (its shape from
  the flags, else the config JSON beside its weights), frozen, in eval mode, never saved.  Both sit
  behind the loop's ``model(input_ids, labels)`` call (``workbook.train.paired``);
- the loss: the learner's ``distill_objective`` (stage 17), α·CE + (1−α)·T²·KL(teacher ‖ student)
  over the positions that carry a label.  α = 1 is the same student trained on CE alone;
- the validation loss is the student's cross-entropy alone (eval mode), the number that compares
  students trained with different α and T.

The data are conversations, as for SFT (``SFTDataset``, stage 14).  The student's weights are
saved as ``{save_weight}_{student hidden}.pth`` (MiniMind's ``full_dist``).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import trainer
from .chat import check_data, describe_data, make_dataset, sample_answers  # noqa: F401 (Task hooks)
from .paired import Paired, PairedOutput, frozen_from_weights, save_trained_weights
from .trainer import IN_REPO, ROOT, ConfigError, Task

DEFAULT_DATA = ROOT / "data" / "sft_poetry_train.jsonl.gz" if IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "sft_poetry_val.jsonl.gz" if IN_REPO else ""
REQUESTS = ["写一首五言绝句，题目是《山中秋夜》。", "以《浣溪沙》为词牌写一首词。",
            "接着这一句往下写：孤舟泊远浦，", "再写一首七言绝句，写江上送别。"]


def extra_arguments(p) -> None:
    # MiniMind's student flags are the harness's shape and --from_weight under other names
    p.add_argument("--student_hidden_size", dest="hidden_size", type=int, default=argparse.SUPPRESS,
                   help="学生模型的宽度（= --hidden_size；默认：--from_student_weight 旁边的 config，否则 512）")
    p.add_argument("--student_num_layers", dest="num_hidden_layers", type=int, default=argparse.SUPPRESS,
                   help="学生模型的层数（= --num_hidden_layers）")
    p.add_argument("--from_student_weight", dest="from_weight", default=argparse.SUPPRESS,
                   help="学生从这个权重开始（= --from_weight；none = 随机初始化）")
    p.add_argument("--teacher_hidden_size", type=int, default=None,
                   help="老师模型的宽度（默认：--from_teacher_weight 旁边的 config，否则 768）")
    p.add_argument("--teacher_num_layers", type=int, default=None, help="老师模型的层数（默认：同上，否则 16）")
    p.add_argument("--from_teacher_weight", default="full_sft",
                   help="老师的权重：save_dir 里的权重名（如 full_sft → full_sft_768.pth）或一个 .pth 路径")
    p.add_argument("--alpha", type=float, default=0.5, help="α：loss = α·CE + (1−α)·KD；1 = 不用老师")
    p.add_argument("--temperature", type=float, default=1.5, help="T：软化两边分布的温度")


def teacher_config(args):
    """The teacher's MiniMindConfig and weights path: every field from the config JSON beside its
    weights, the teacher flags over it, and MiniMind's 768 wide, 16 layers where neither says."""
    from ..config import MiniMindConfig
    from .checkpoint import model_config_kwargs, weight_name

    flags = {"hidden_size": args.teacher_hidden_size, "num_hidden_layers": args.teacher_num_layers}
    if args.from_teacher_weight.endswith(".pth"):
        path = Path(args.from_teacher_weight)
    else:  # a name in save_dir: its file name carries the hidden size
        hidden = args.teacher_hidden_size or 768
        path = Path(args.save_dir) / f"{weight_name(args.from_teacher_weight, hidden, False)}.pth"
    try:
        kwargs, _ = model_config_kwargs(path, flags, infer=path.is_file())
    except ValueError as e:
        raise ConfigError(str(e)) from None
    kwargs.setdefault("hidden_size", 768)
    kwargs.setdefault("num_hidden_layers", 16)
    return MiniMindConfig(**kwargs), path


class DistillObjective(Paired):
    """The student (trained) and the teacher (frozen); forward = the learner's distill_objective."""

    def __init__(self, student, teacher, alpha: float, temperature: float):
        super().__init__(student, teacher)
        self.alpha, self.temperature = alpha, temperature

    def forward(self, input_ids, labels=None):
        from .distill_loss import distill_objective

        out = self.model(input_ids)
        # α = 1: CE alone, and the teacher's forward would be wasted time
        teacher = self.frozen_logits(input_ids) if self.alpha < 1 else out.logits.detach()
        loss, ce, kd = distill_objective(out.logits, teacher, labels, alpha=self.alpha,
                                         temperature=self.temperature)
        # in eval mode the validation loss is the student's CE: comparable across α and T
        return PairedOutput(loss=loss if self.training else ce, aux_loss=out.aux_loss,
                            parts={"ce": ce.detach(), "kd": kd.detach()})


def prepare_model(model, args):
    """Load the teacher once, frozen and in eval; check it can teach this student."""
    for flag in ("alpha", "temperature"):
        if not math.isfinite(getattr(args, flag)):
            raise ConfigError(f"--{flag} 必须是有限的数，现在是 {getattr(args, flag)}")
    if not 0 <= args.alpha <= 1:
        raise ConfigError(f"--alpha 要在 [0, 1] 里（α·CE + (1−α)·KD），现在是 {args.alpha}")
    if args.temperature <= 0:
        raise ConfigError(f"--temperature 必须是正数，现在是 {args.temperature}")
    config, path = teacher_config(args)
    if not path.is_file():
        raise ConfigError(f"--from_teacher_weight {args.from_teacher_weight}：找不到 {path}")
    if config.vocab_size < model.config.vocab_size:
        raise ConfigError(f"老师的词表 ({config.vocab_size}) 比学生的 ({model.config.vocab_size}) 小："
                          "学生的有些 token 老师没有分布")
    device = next(model.parameters()).device
    try:
        teacher = frozen_from_weights(config, path, device)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ConfigError(f"--from_teacher_weight {path} 装不进 {config.hidden_size} 宽、"
                          f"{config.num_hidden_layers} 层的老师：{e}") from None
    objective = DistillObjective(model, teacher, args.alpha, args.temperature)
    objective.teacher_params = sum(p.numel() for p in teacher.parameters())
    print(f"老师 (teacher)：{path}，{objective.teacher_params / 1e6:.2f}M 参数，冻结、eval；"
          f"α = {args.alpha:g}，T = {args.temperature:g}", flush=True)
    return objective


save_weights = save_trained_weights

sample = sample_answers(REQUESTS)


TASK = Task.of_module(
    __name__,
    name="distillation",
    title="MiniMind distillation",
    description="MiniMind 的知识蒸馏 (knowledge distillation)：小的学生模型既学标签（交叉熵），"
                "也学冻结的大老师模型在每个位置给出的整个分布（KL）。",
    run_name="MiniMind-Full-Dist",
    defaults=dict(save_weight="full_dist", from_weight="full_sft", wandb_project="MiniMind-Full-Dist",
                  epochs=6, batch_size=32, learning_rate=5e-6, accumulation_steps=1, max_seq_len=340,
                  trim_padding=1,
                  data_path=str(DEFAULT_DATA), val_path=str(DEFAULT_VAL)),
)

run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
