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

import torch

from . import trainer
from .checkpoint import unwrap
from .trainer import IN_REPO, ROOT, Task

DEFAULT_DATA = ROOT / "data" / "sft_poetry_train.jsonl.gz" if IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "sft_poetry_val.jsonl.gz" if IN_REPO else ""
# requests the data never contains verbatim: what the run shows at the end
REQUESTS = ["写一首五言绝句，题目是《山中秋夜》。", "以《浣溪沙》为词牌写一首词。",
            "接着这一句往下写：孤舟泊远浦，", "给这首诗起个题目：\n春风吹绿岸，细雨湿青苔。\n燕子归来早，花开满院台。",
            "再写一首七言绝句，写江上送别。"]


def make_dataset(path: str, tokenizer, max_length: int):
    from ..data.sft import SFTDataset  # stage 14: the learner's (or the reference, by mode)

    return SFTDataset(path, tokenizer, max_length)


def check_data(path: str, tokenizer, vocab_size: int) -> dict:
    from ..data.validate import check_chat_data

    return check_chat_data(path, tokenizer=tokenizer, vocab_size=vocab_size)


def describe_data(summary: dict) -> str:
    from ..data.validate import describe_chat

    return describe_chat(summary)


@torch.no_grad()
def answer(model, tokenizer, request: str, device, max_new_tokens: int = 96) -> tuple[str, bool]:
    """The model's greedy answer to one request, and whether it stopped by itself (<|im_end|>)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                         add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)
    out = unwrap(model).generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    stopped = tokenizer.eos_token_id in new
    return tokenizer.decode(new, skip_special_tokens=True).strip(), stopped


def sample(model, tokenizer, device, n: int) -> dict:
    """Answers to a few unseen requests; the share that ended with <|im_end|>."""
    model.eval()
    requests = REQUESTS[:n]
    answers = [answer(model, tokenizer, r, device) for r in requests]
    model.train()
    stopped = sum(s for _, s in answers) / max(len(answers), 1)
    return {"prompts": requests,
            "samples": [f"问：{r}\n答：{a}" + ("" if s else "（没有停下）") for r, (a, s) in zip(requests, answers)],
            "metrics": {"stopped_share": round(stopped, 3)},
            "notes": [f"自己停下（以 <|im_end|> 结束）的回答占 {stopped:.0%}"]}


TASK = Task.of_module(
    __name__,
    name="full_sft",
    title="MiniMind SFT",
    description="MiniMind 全参数监督微调 (full SFT)：在对话上学“按要求回答”，只在助手的回答上算 loss。",
    run_name="MiniMind-Full-SFT",
    defaults=dict(save_weight="full_sft", from_weight="pretrain", wandb_project="MiniMind-Full-SFT",
                  epochs=2, batch_size=16, learning_rate=1e-6, accumulation_steps=1, max_seq_len=340,
                  data_path=str(DEFAULT_DATA), val_path=str(DEFAULT_VAL)),
)

run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
