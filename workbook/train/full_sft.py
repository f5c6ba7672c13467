"""``python -m workbook.train.full_sft``: MiniMind's supervised fine-tuning, on the learner's package.

Same flags as MiniMind's ``train_full_sft.py`` (and its defaults: ``--from_weight pretrain``,
``--save_weight full_sft``, 2 epochs, batch 16, learning rate 1e-6, …); the run harness is the one
pretraining uses (``workbook.train.trainer``).  What SFT changes is only this:

- data: conversations, ``{"conversations": [{"role", "content"}, …]}`` per line, rendered with the
  ChatML template and labelled only on the assistant's replies (``SFTDataset``, stage 14);
- the check of that data before step 1 (``workbook.data.validate.check_chat_data``);
- what the trained model shows at the end: its answers to requests it never saw.

Start from a pretrained model: ``--from_weight data/base/pretrain_256.pth`` (the shipped base; its
shape is read from the config JSON beside it) or a name in ``--save_dir``.
"""
from __future__ import annotations

import sys

from . import trainer
from .chat import check_data, describe_data, make_dataset, sample_answers  # noqa: F401 (Task hooks)
from .trainer import IN_REPO, ROOT, Task

DEFAULT_DATA = ROOT / "data" / "sft_poetry_train.jsonl.gz" if IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "sft_poetry_val.jsonl.gz" if IN_REPO else ""
# requests the data never contains verbatim: what the run shows at the end
REQUESTS = ["写一首五言绝句，题目是《山中秋夜》。", "以《浣溪沙》为词牌写一首词。",
            "接着这一句往下写：孤舟泊远浦，", "给这首诗起个题目：\n春风吹绿岸，细雨湿青苔。\n燕子归来早，花开满院台。",
            "再写一首七言绝句，写江上送别。"]


sample = sample_answers(REQUESTS)


TASK = Task.of_module(
    __name__,
    name="full_sft",
    title="MiniMind SFT",
    description="MiniMind 全参数监督微调 (full SFT)：在对话上学“按要求回答”，只在助手的回答上算 loss。",
    run_name="MiniMind-Full-SFT",
    defaults=dict(save_weight="full_sft", from_weight="pretrain", wandb_project="MiniMind-Full-SFT",
                  epochs=2, batch_size=16, learning_rate=1e-6, accumulation_steps=1, max_seq_len=340,
                  trim_padding=1,
                  data_path=str(DEFAULT_DATA), val_path=str(DEFAULT_VAL)),
)

run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
