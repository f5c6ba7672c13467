"""PretrainDataset: one jsonl line → one fixed-length training sample (stage 10).

Pretraining data is plain text, one document per line: ``{"text": "..."}``.  Each sample is
``[bos] + tokens + [eos]``, cut to ``max_length`` and right-padded with the pad id (0), so a batch
is a rectangle.  The labels are the same ids (the model shifts them by one inside its loss), with
-100 on the padding so that padding never counts in the loss.
Plain ``.jsonl`` is indexed, not loaded: the constructor records the byte offset of every line and
``__getitem__`` reads and parses one line, so a 1.6 GB corpus costs ~16 bytes of RAM per line and
a malformed line is reported when it is read.  ``.jsonl.gz`` cannot be seeked cheaply, so it is
read and checked completely in the constructor (fine for the workbook's few-MB corpus).
Lesson: notebooks/10_pretrain_dataset.ipynb.  Check: ``python -m workbook check 10``.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def _parse_text(line: str | bytes, path: Path, lineno: int) -> str:
    """The "text" field of one jsonl line; ValueError naming file and 1-based line otherwise."""
    # TODO(learner):
    #   1. json.loads(line); on json.JSONDecodeError (or UnicodeDecodeError) raise
    #      ValueError(f"{path}:{lineno}: ...")  — use `raise ... from None` for a short message
    #   2. the record must be a dict with a str "text"; otherwise ValueError(f"{path}:{lineno}: ...")
    #   3. return record["text"]
    raise NotImplementedError(
        "TODO(10 pretrain_dataset): 在 workbook/data/dataset.py 里写 _parse_text，"
        "见 notebooks/10_pretrain_dataset.ipynb")


class PretrainDataset(Dataset):
    """Samples from a .jsonl / .jsonl.gz file of ``{"text": str}`` lines (blank lines skipped).

    Args:
        data_path: the file.
        tokenizer: a Hugging Face tokenizer with bos_token_id, eos_token_id, pad_token_id.
        max_length: length of every sample, ≥ 3 (bos + at least one token + eos).
    ``ds[i]`` returns ``(input_ids, labels)``, each a LongTensor of shape (max_length,):
        input_ids = [bos, t_1, …, t_n, eos, pad, …, pad] with n ≤ max_length - 2;
        labels    = input_ids with -100 at the padding positions.
    Raises FileNotFoundError for a missing file, ValueError for an empty one, and ValueError
    "file:line: …" for a malformed line (when read, for plain jsonl; at once, for .gz).
    """

    def __init__(self, data_path: str | os.PathLike, tokenizer, max_length: int = 512):
        super().__init__()
        self.path = Path(data_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"找不到数据文件 (data file not found): {self.path}")
        if max_length < 3:
            raise ValueError(f"max_length={max_length} 太小：至少 3（bos + 1 个 token + eos）")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bos_id, self.eos_id, self.pad_id = (
            tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        if None in (self.bos_id, self.eos_id, self.pad_id):
            raise ValueError("tokenizer 缺少 bos/eos/pad token (bos_token_id, eos_token_id, "
                             "pad_token_id): 用 data/tokenizer/ 这种 MiniMind 格式的分词器")

        self._texts: list[str] | None = None  # .gz: every text in memory
        self._offsets = self._linenos = None  # .jsonl: int64 arrays, one entry per sample
        self._file = None  # opened on first read, once per process (DataLoader workers fork)
        self._file_pid = None
        # TODO(learner):
        #   1. .gz file (self.path.suffix == ".gz"): open with gzip.open(..., "rt", encoding="utf-8"),
        #      and keep self._texts = [_parse_text(line, self.path, lineno) ...] for every
        #      NON-BLANK line; lineno counts from 1 and counts the blank lines too (as an editor does)
        #   2. otherwise: self._offsets, self._linenos = self._index_lines(self.path)  (given below)
        #   3. no sample at all (empty file, or only blank lines): raise ValueError naming the file
        raise NotImplementedError(
            "TODO(10 pretrain_dataset): 在 workbook/data/dataset.py 里写 PretrainDataset.__init__，"
            "见 notebooks/10_pretrain_dataset.ipynb")

    @staticmethod
    def _index_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Byte offset and 1-based line number of every non-blank line (one pass, no parsing).

        Given (not the point of the lesson).
        """
        offsets, linenos = [], []
        pos = 0
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    offsets.append(pos)
                    linenos.append(lineno)
                pos += len(line)
        # numpy arrays: 16 bytes per line instead of ~60 for two lists of Python ints
        return np.asarray(offsets, dtype=np.int64), np.asarray(linenos, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else len(self._offsets)

    def text(self, index: int) -> str:
        """The raw text of sample `index`.  Given: seeks to the line and calls _parse_text."""
        if self._texts is not None:
            return self._texts[index]
        if self._file is None or self._file_pid != os.getpid():
            # a file object inherited from the parent process would share its read position
            self._file, self._file_pid = open(self.path, "rb"), os.getpid()
        self._file.seek(int(self._offsets[index]))
        return _parse_text(self._file.readline(), self.path, int(self._linenos[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # TODO(learner):
        #   1. ids = self.tokenizer(self.text(index), add_special_tokens=False, truncation=True,
        #      max_length=...)["input_ids"]   — leave room for bos and eos
        #   2. ids = [bos] + ids + [eos]; pad on the RIGHT with self.pad_id up to self.max_length
        #   3. input_ids: LongTensor (max_length,); labels = a copy with -100 at the padding
        #      positions (mask by position, not by value)
        #   4. return (input_ids, labels)
        raise NotImplementedError(
            "TODO(10 pretrain_dataset): 在 workbook/data/dataset.py 里写 PretrainDataset.__getitem__，"
            "见 notebooks/10_pretrain_dataset.ipynb")

    def __getstate__(self):
        state = self.__dict__.copy()  # an open file cannot be pickled (spawned DataLoader workers)
        state["_file"] = state["_file_pid"] = None
        return state
