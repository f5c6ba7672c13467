"""``python -m workbook.train.lora``: MiniMind's LoRA fine-tuning, on the learner's package.

Same flags as MiniMind's ``train_lora.py`` (``--lora_name``, ``--from_weight full_sft``, 50 epochs,
batch 32, learning rate 1e-4, …) plus ``--lora_rank``; the run harness is the one every trainer
shares (``workbook.train.trainer``).  What LoRA changes:

- the model: after the starting weights are loaded, the learner's ``apply_lora`` (stage 15)
  attaches a low-rank adapter to every square ``nn.Linear`` and freezes everything else, so the
  optimizer and the gradient clipping see only the adapters;
- what is saved: the adapter only (``save_lora``), as ``{save_dir}/{lora_name}_{hidden}.pth``;
  the resume file still holds the whole state, so a resume is exact;
- no torch.compile: the adapted layers' forward is patched (MiniMind disables it too).

The data are conversations, as for SFT.  The default task is MiniMind's own first adapter,
``lora_identity``: the model learns to say who it is (``data/lora_identity_*.jsonl.gz``, 64
conversations), which the SFT model never learnt.  A harder one ships beside it: the acrostic poem
(藏头诗, ``data/lora_acrostic_*.jsonl.gz``), for ``--data_path`` / ``--val_path``.
"""
from __future__ import annotations

import sys

from . import trainer
from .chat import check_data, describe_data, make_dataset, sample_answers  # noqa: F401 (Task hooks)
from .trainer import IN_REPO, ROOT, ConfigError, Task

DEFAULT_DATA = ROOT / "data" / "lora_identity_train.jsonl.gz" if IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "lora_identity_val.jsonl.gz" if IN_REPO else ""
# two questions the data never asks, and two ordinary requests: does it still write poems?
REQUESTS = ["请问你是谁？", "你叫啥？", "写一首五言绝句，题目是《山中秋夜》。", "以《浣溪沙》为词牌写一首词。",
            "以《春江花月》为题，写一首五言绝句藏头诗。"]


def extra_arguments(p) -> None:
    p.add_argument("--lora_name", default="lora_identity",
                   help="适配器的名字：保存成 {save_dir}/{lora_name}_{hidden}.pth")
    p.add_argument("--lora_rank", type=int, default=8, help="低秩矩阵的秩 r：每层新增 r·(in+out) 个参数")


def prepare_model(model, args):
    """Attach the adapters (stage 15) and freeze the base: only LoRA parameters train."""
    from ..model.lora import apply_lora

    if args.use_compile:
        raise ConfigError("--use_compile：LoRA 替换了被适配层的 forward，不能和 torch.compile 一起用"
                          "（MiniMind 的 train_lora.py 也关掉了它）")
    if args.lora_rank <= 0:
        raise ConfigError(f"--lora_rank 必须是正整数，现在是 {args.lora_rank}")
    apply_lora(model, rank=args.lora_rank)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("apply_lora 之后没有可训练的参数：模型里没有方阵 (square) 的 nn.Linear？")
    return model


def weight_stem(args, config) -> str:
    return f"{args.lora_name}_{config.hidden_size}"


def save_weights(model, path) -> None:
    """The adapter only (MiniMind's keys), written by the learner's save_lora."""
    from ..model.lora import save_lora

    save_lora(model, path)


sample = sample_answers(REQUESTS)


TASK = Task.of_module(
    __name__,
    name="lora",
    title="MiniMind LoRA",
    description="MiniMind 的 LoRA 微调：冻结模型，只训练方阵线性层上新加的低秩适配器 (adapter)。",
    run_name="MiniMind-LoRA",
    defaults=dict(save_weight="lora", from_weight="full_sft", wandb_project="MiniMind-LoRA",
                  epochs=50, batch_size=32, learning_rate=1e-4, accumulation_steps=1, max_seq_len=340,
                  trim_padding=1,
                  data_path=str(DEFAULT_DATA), val_path=str(DEFAULT_VAL)),
)

run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
