"""``python -m workbook.train.pretrain``: MiniMind's pretraining, on the learner's package.

Same flags as MiniMind's ``train_pretrain.py`` (``--batch_size``, ``--accumulation_steps``,
``--from_resume``, ...), plus ``--max_steps``, ``--eval_interval``, ``--val_path``, ``--seed``
and the GPU fast path.  It runs whatever ``WORKBOOK_IMPL`` selects: the learner's own modules, or
the reference; CPU or GPU; under ``torchrun`` see stage 12.  Everything every trainer shares
lives in ``workbook.train.trainer``; this module says only what pretraining adds:

- data: plain text, ``{"text": ...}`` per line (``PretrainDataset``, stage 10), or a corpus
  packed once into uint16 ids (``.bin``, ``workbook.data.pack``);
- the check of that data before step 1 (``workbook.data.validate``);
- what the trained model shows at the end: poems written from titles, and the share of their
  lines that are shaped like regulated verse.
"""
from __future__ import annotations

import re
import sys

from .checkpoint import unwrap, write_config  # noqa: F401  (write_config: used by callers)
from .trainer import IN_REPO, ROOT, ConfigError, Task  # noqa: F401
from . import trainer

DEFAULT_DATA = ROOT / "data" / "pretrain_poetry_train.jsonl.gz" if IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "pretrain_poetry_val.jsonl.gz" if IN_REPO else ""
TITLES = ["《春晓》", "《秋夜》", "《山居》", "《送友人》", "《江上》"]


def make_dataset(path: str, tokenizer, max_length: int):
    """A packed .bin (fixed windows, no padding) or a jsonl file (PretrainDataset, stage 10)."""
    if str(path).endswith(".bin"):
        from ..data.packed import PackedDataset
        return PackedDataset(path, max_length)
    from ..data.dataset import PretrainDataset
    return PretrainDataset(path, tokenizer, max_length)


def check_data(path: str, tokenizer, vocab_size: int, max_length: int | None = None) -> dict:
    from ..data.validate import check_pretrain_data

    return check_pretrain_data(path, tokenizer=tokenizer, vocab_size=vocab_size)


def describe_data(summary: dict) -> str:
    from ..data.validate import describe

    return describe(summary)


_HAN = "[\u4e00-\u9fff]"
_REGULAR_LINE = re.compile(f"^(?:{_HAN}{{5}}|{_HAN}{{7}})[，、；：](?:{_HAN}{{5}}|{_HAN}{{7}})[。？！]$")


def regular_line_share(poems: list[str]) -> float:
    """Share of body lines shaped like regulated verse: two 5- or 7-character halves with
    punctuation ("床前明月光，疑是地上霜。").  The title line (《…》author) is not counted."""
    lines = [ln.strip() for p in poems for ln in p.split("\n")[1:] if ln.strip()]
    return sum(bool(_REGULAR_LINE.match(ln)) for ln in lines) / max(len(lines), 1)


def generate_samples(model, tokenizer, prompts, device, max_new_tokens: int = 64, seed: int = 0):
    """Continue each prompt (sampling, temperature 0.8, top-p 0.9), all in one batched call.

    workbook.model.generate draws with its own generators seeded from (seed, prompt): the global RNG is
    not touched, and the model's train/eval mode is restored after.
    """
    from ..model.generate import Sampling, generate

    ids = [[tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = generate(unwrap(model), ids, max_new_tokens, tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id or 0, device=device,
                    sampling=Sampling(temperature=0.8, top_p=0.9, seed=seed))
    return [tokenizer.decode(x[1:] + row, skip_special_tokens=True) for x, row in zip(ids, rows)]


def sample(model, tokenizer, device, n: int) -> dict:
    """Poems from titles, and how many of their lines scan."""
    prompts = TITLES[:n]
    poems = generate_samples(model, tokenizer, prompts, device)
    share = round(regular_line_share(poems), 3)
    return {"prompts": prompts, "samples": poems, "metrics": {"regular_line_share": share},
            "notes": [f"五言/七言整齐的诗句占 {share:.0%}"]}


TASK = Task.of_module(
    __name__,
    name="pretrain",
    title="MiniMind pretraining",
    description="MiniMind 预训练 (pretraining)：在纯文本上学“接着写下一个 token”。",
    run_name="MiniMind-Pretrain",
    defaults=dict(save_weight="pretrain", from_weight="none", wandb_project="MiniMind-Pretrain",
                  epochs=1, batch_size=32, learning_rate=5e-4, accumulation_steps=8, max_seq_len=340,
                  data_path=str(DEFAULT_DATA), val_path=str(DEFAULT_VAL)),
)


run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
