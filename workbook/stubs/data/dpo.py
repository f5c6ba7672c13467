"""DPO data: preference pairs, each side rendered like SFT, with a loss mask on the answers (stage 16).

One jsonl line holds one preference pair, two conversations that share the prompt and differ in
the last assistant reply::

    {"chosen": [{"role": ..., "content": ...}, ...], "rejected": [...]}

Each side is rendered with stage 14's ``render_chat``, tokenized, cut at max_length and padded;
its mask is 1 exactly where the SFT labels would not be -100 (the assistant replies with their
closing ``<|im_end|>\\n``, found by stage 14's ``assistant_spans``).  Then the shift for
next-token prediction, done here and not in the model, because DPO needs the log-probability
of every target token, not a loss::

    x = ids[:-1]    y = ids[1:]    mask = mask[1:]     (mask[t] says: is y[t] an answer token?)

Files are read as in stage 14 (plain ``.jsonl`` indexed by byte offset, ``.jsonl.gz`` read at
once; blank lines skipped; a bad line is a ValueError "file:line: ...").
Lesson: notebooks/16_dpo.ipynb.  Check: ``python -m workbook check 16``.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from workbook.data.sft import ROLES, SFTDataset, assistant_spans, render_chat

SIDES = ("chosen", "rejected")


def _parse_pair(line: str | bytes, path: Path, lineno: int) -> tuple[list[dict], list[dict]]:
    """(chosen, rejected) messages of one jsonl line; ValueError "file:line: ..." when it is bad.

    Bad: not valid UTF-8; not JSON; not an object with non-empty lists "chosen" and "rejected"; a message that is
    not an object with "role" in ROLES and a str "content"; a side without an assistant message.
    """
    try:
        record = json.loads(line)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: 这一行不是合法的 UTF-8 (not valid UTF-8)：文件要用 UTF-8 编码：{e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: 这一行不是合法的 JSON (malformed JSON): {e}") from None
    if not isinstance(record, dict):
        raise ValueError(f'{path}:{lineno}: 这一行应该是 {{"chosen": [...], "rejected": [...]}}：{str(record)[:60]}')
    sides = []
    for side in SIDES:
        conv = record.get(side)
        if not isinstance(conv, list) or not conv:
            raise ValueError(f'{path}:{lineno}: 没有非空的列表 "{side}" (missing "{side}")：'
                             f'偏好数据每行要有 "chosen" 和 "rejected" 两段对话：{str(record)[:60]}')
        for m in conv:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f'{path}:{lineno}: "{side}" 里有一条消息不对 (bad message)：要有 "role"'
                                 f'（system / user / assistant）和字符串 "content"：{str(m)[:60]}')
        if not any(m["role"] == "assistant" for m in conv):
            raise ValueError(f'{path}:{lineno}: "{side}" 里没有助手 (assistant) 的回答：没有要比较的回答')
        sides.append(conv)
    return sides[0], sides[1]


class DPODataset(Dataset):
    """Preference pairs from a .jsonl / .jsonl.gz file of ``{"chosen": [...], "rejected": [...]}`` lines.

    Args:
        file_path: the file (blank lines skipped).
        tokenizer: a Hugging Face tokenizer with pad_token_id (MiniMind's: pad 0).
        max_length: length of each side before the shift (at least 2).
    ``ds[i]`` returns a dict of six int64 tensors, each of shape (max_length - 1,)::

        x_chosen, y_chosen, mask_chosen, x_rejected, y_rejected, mask_rejected

    where, for each side, with ``ids, mask = ds._encode(messages)`` (both of length max_length)::

        ids  = tokenizer(render_chat(messages), add_special_tokens=False).input_ids[:max_length]
               + [pad] * (max_length - len(...))
        mask = 1 at the positions of assistant_spans(unpadded ids, ...), 0 elsewhere
        x = ids[:-1]    y = ids[1:]    mask = mask[1:]

    Attributes set by the constructor, besides the file index: ``start_ids`` and ``end_ids`` (the
    token ids of ``"<|im_start|>assistant\\n"`` and ``"<|im_end|>\\n"``, as in SFTDataset), ``pad_id``.
    Raises FileNotFoundError for a missing file, ValueError for an empty one, and ValueError
    "file:line: ..." for a bad line (when read, for plain jsonl; at once, for .gz).
    """

    def __init__(self, file_path: str | os.PathLike, tokenizer, max_length: int = 1024):
        super().__init__()
        self.path = Path(file_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"找不到数据文件 (data file not found): {self.path}")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} 太小：至少 2（错位以后 x 和 y 还各有 max_length - 1 个 token）")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError("tokenizer 没有 pad token (pad_token_id)：用 data/tokenizer/ 这种 MiniMind 格式的分词器")

        self._pairs: list[tuple[list[dict], list[dict]]] | None = None  # .gz: every pair in memory
        self._offsets = self._linenos = None  # .jsonl: int64 arrays, one entry per pair
        self._file = None  # opened on first read, once per process (DataLoader workers fork)
        self._file_pid = None
        if self.path.suffix == ".gz":
            with gzip.open(self.path, "rb") as f:  # bytes, as for .jsonl: one decoding path
                self._pairs = [_parse_pair(line, self.path, i) for i, line in enumerate(f, start=1) if line.strip()]
        else:
            self._offsets, self._linenos = SFTDataset._index_lines(self.path)  # as in stage 14
        if len(self) == 0:
            raise ValueError(f"{self.path}: 文件里没有样本 (no samples): 文件是空的或只有空行")

        # the two markers of an assistant reply, as in SFTDataset
        self.start_ids = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        self.end_ids = tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]

    def __len__(self) -> int:
        return len(self._pairs) if self._pairs is not None else len(self._offsets)

    def pair(self, index: int) -> tuple[list[dict], list[dict]]:
        """(chosen, rejected) messages of pair `index`, checked by _parse_pair."""
        if self._pairs is not None:
            return self._pairs[index]
        if self._file is None or self._file_pid != os.getpid():
            # a file object inherited from the parent process would share its read position
            self._file, self._file_pid = open(self.path, "rb"), os.getpid()
        self._file.seek(int(self._offsets[index]))
        return _parse_pair(self._file.readline(), self.path, int(self._linenos[index]))

    def _encode(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """(ids, mask) of one side, both lists of length max_length, before the shift."""
        # TODO(learner):
        #   What: (ids, mask) of one side, two lists of length max_length, not shifted yet: the ids
        #   exactly as SFTDataset's input_ids, the mask 1 exactly where SFTDataset's labels are not -100.
        #   Why: DPO compares the two answers' log-probabilities; the prompt is the same on both sides.
        #   Pitfall: find the spans on the ids after the cut (a span of a cut reply must end at the cut,
        #   not stretch the mask); the padding's mask is 0.
        raise NotImplementedError(
            "TODO(16 dpo): 在 workbook/data/dpo.py 里写 DPODataset._encode，见 notebooks/16_dpo.ipynb")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # TODO(learner):
        #   What: the six int64 tensors of pair `index`, each of length max_length - 1: for each side,
        #   x (what the model reads), y (the next tokens) and mask (is y[t] an answer token?).
        #   Why: DPO needs the log-probability of every target token, so the shift is done here, not in
        #   the model: logits[:, t] will predict y[t].
        #   Pitfall: shift the mask with y, not with x; shift once (not in _encode too); chosen first.
        raise NotImplementedError(
            "TODO(16 dpo): 在 workbook/data/dpo.py 里写 DPODataset.__getitem__，见 notebooks/16_dpo.ipynb")

    def __getstate__(self):
        state = self.__dict__.copy()  # an open file cannot be pickled (spawned DataLoader workers)
        state["_file"] = state["_file_pid"] = None
        return state
