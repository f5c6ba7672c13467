"""SFT data: the chat template and SFTDataset, loss only on the assistant's replies (stage 14).

Supervised fine-tuning (SFT) trains the pretrained model on conversations.  The model and its loss
are those of pretraining; what changes is the data.  One jsonl line holds one conversation,
``{"conversations": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``, rendered as
plain ChatML text, exactly the shipped tokenizer's chat template::

    <|im_start|>{role}\\n{content}<|im_end|>\\n        (per message; no default system message)
    <|im_start|>assistant\\n                          (the generation prompt, when asked for)

and the labels are -100 everywhere except on the assistant's replies: each reply's tokens plus the
closing ``<|im_end|>\\n``, so the model learns to answer, and to stop.  Files are read as in
stage 10 (plain ``.jsonl`` indexed by byte offset, ``.jsonl.gz`` read at once; blank lines
skipped; a bad line is a ValueError "file:line: ...").
Lesson: notebooks/14_sft.ipynb.  Check: ``python -m workbook check 14``.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

ROLES = ("system", "user", "assistant")


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The ChatML text of a conversation, equal to the shipped tokenizer's
    ``apply_chat_template(messages, tokenize=False, add_generation_prompt=...)``.

    messages: ``[{"role": str, "content": str}, ...]`` (other keys are ignored; not modified).
    Each message becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``, content verbatim;
    nothing is added in front (no default system message).  add_generation_prompt=True appends
    ``<|im_start|>assistant\\n``: the prompt from which the model writes its reply.
    """
    # TODO(learner):
    #   1. one message -> f"<|im_start|>{role}\n{content}<|im_end|>\n"; join them all with "" (the
    #      newline after <|im_end|> belongs to every message, the last one too)
    #   2. nothing in front: no default system message (MiniMind's own template adds one; ours does not)
    #   3. add_generation_prompt=True: append "<|im_start|>assistant\n"
    #   4. it must equal tokenizer.apply_chat_template(messages, tokenize=False,
    #      add_generation_prompt=...) of data/tokenizer — compare them in the notebook
    raise NotImplementedError(
        "TODO(14 sft): 在 workbook/data/sft.py 里写 render_chat，见 notebooks/14_sft.ipynb")


def _parse_conversation(line: str | bytes, path: Path, lineno: int) -> list[dict]:
    """The "conversations" list of one jsonl line; ValueError "file:line: ..." when it is bad.

    Bad: not valid UTF-8; not JSON; not an object with a non-empty list "conversations"; a message that is not an
    object with "role" in ROLES and a str "content"; no assistant message (nothing to learn).
    """
    # TODO(learner):
    #   1. record = json.loads(line); on json.JSONDecodeError (or UnicodeDecodeError) raise
    #      ValueError(f"{path}:{lineno}: ...") from None  — as _parse_text in stage 10
    #   2. conv = record["conversations"] must be a non-empty list (check that record is a dict
    #      first); otherwise ValueError(f"{path}:{lineno}: ...")
    #   3. every message must be a dict with m["role"] in ROLES and a str m["content"];
    #      otherwise ValueError(f"{path}:{lineno}: ...")
    #   4. at least one message with role "assistant" (or the sample has nothing to learn);
    #      otherwise ValueError(f"{path}:{lineno}: ...")
    #   5. return conv
    raise NotImplementedError(
        "TODO(14 sft): 在 workbook/data/sft.py 里写 _parse_conversation，见 notebooks/14_sft.ipynb")


def assistant_spans(input_ids: list[int], start_ids: list[int], end_ids: list[int]) -> list[tuple[int, int]]:
    """Where the assistant's replies are: half-open ``[begin, end)`` position ranges, in order.

    input_ids: the token ids of a rendered conversation, possibly cut at max_length (no padding).
    start_ids: the ids of ``"<|im_start|>assistant\\n"``; end_ids: the ids of ``"<|im_end|>\\n"``.
    A span begins right after each occurrence of start_ids and ends after the first end_ids that
    follows (the closing marker belongs to the span), or at len(input_ids) when the sequence was
    cut first.  Empty spans are left out.
    """
    # TODO(learner):
    #   1. scan i = 0, 1, ...: where input_ids[i:i + len(start_ids)] == start_ids, the reply
    #      begins at begin = i + len(start_ids) (the marker itself is not part of it)
    #   2. from begin, move end forward until input_ids[end:end + len(end_ids)] == end_ids, or
    #      until end == len(input_ids) (the sequence was cut inside the reply)
    #   3. end = min(end + len(end_ids), len(input_ids)): the closing <|im_end|>\n is learned too,
    #      and a cut reply ends at the cut
    #   4. keep (begin, end) if begin < end; go on scanning from end: every assistant turn
    #      gets its own span
    #   5. return the list of (begin, end) tuples
    raise NotImplementedError(
        "TODO(14 sft): 在 workbook/data/sft.py 里写 assistant_spans，见 notebooks/14_sft.ipynb")


class SFTDataset(Dataset):
    """Samples from a .jsonl / .jsonl.gz file of ``{"conversations": [...]}`` lines (blank lines skipped).

    Args:
        jsonl_path: the file.
        tokenizer: a Hugging Face tokenizer with pad_token_id (MiniMind's: pad 0).
        max_length: length of every sample.
    ``ds[i]`` returns ``(input_ids, labels)``, each a LongTensor of shape (max_length,):
        ids       = tokenizer(render_chat(conversation), add_special_tokens=False).input_ids[:max_length]
        input_ids = ids + [pad] * (max_length - len(ids))
        labels    = ids[j] at the positions j of assistant_spans(ids, ...), -100 everywhere else
                    (prompt, system, the ``<|im_start|>assistant\\n`` markers, padding).
    No shift: the model shifts labels itself (stage 08).
    Attributes set by the constructor, besides the file index: ``start_ids`` and ``end_ids``, the
    token ids of ``"<|im_start|>assistant\\n"`` and ``"<|im_end|>\\n"`` (MiniMind names them bos_id
    and eos_id), and ``pad_id``.
    Raises FileNotFoundError for a missing file, ValueError for an empty one, and ValueError
    "file:line: ..." for a bad line (when read, for plain jsonl; at once, for .gz).
    """

    def __init__(self, jsonl_path: str | os.PathLike, tokenizer, max_length: int = 1024):
        super().__init__()
        self.path = Path(jsonl_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"找不到数据文件 (data file not found): {self.path}")
        if max_length < 1:
            raise ValueError(f"max_length={max_length} 太小：至少 1")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError("tokenizer 没有 pad token (pad_token_id)：用 data/tokenizer/ 这种 MiniMind 格式的分词器")

        self._conversations: list[list[dict]] | None = None  # .gz: every conversation in memory
        self._offsets = self._linenos = None  # .jsonl: int64 arrays, one entry per sample
        self._file = None  # opened on first read, once per process (DataLoader workers fork)
        self._file_pid = None
        if self.path.suffix == ".gz":
            with gzip.open(self.path, "rb") as f:  # bytes, as for .jsonl: one decoding path
                self._conversations = [_parse_conversation(line, self.path, i)
                                       for i, line in enumerate(f, start=1) if line.strip()]
        else:
            self._offsets, self._linenos = self._index_lines(self.path)
        if len(self) == 0:
            raise ValueError(f"{self.path}: 文件里没有样本 (no samples): 文件是空的或只有空行")

        # TODO(learner):
        #   1. self.start_ids = the token ids of "<|im_start|>assistant\n" (tokenizer(...,
        #      add_special_tokens=False)["input_ids"]); the notebook shows what they are
        #   2. self.end_ids = the token ids of "<|im_end|>\n": <|im_end|> AND its newline
        raise NotImplementedError(
            "TODO(14 sft): 在 workbook/data/sft.py 里写 SFTDataset.__init__ 的最后两行，"
            "见 notebooks/14_sft.ipynb")

    @staticmethod
    def _index_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Byte offset and 1-based line number of every non-blank line (as in stage 10).

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
        return np.asarray(offsets, dtype=np.int64), np.asarray(linenos, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._conversations) if self._conversations is not None else len(self._offsets)

    def conversation(self, index: int) -> list[dict]:
        """The messages of sample `index`, checked by _parse_conversation.  Given."""
        if self._conversations is not None:
            return self._conversations[index]
        if self._file is None or self._file_pid != os.getpid():
            # a file object inherited from the parent process would share its read position
            self._file, self._file_pid = open(self.path, "rb"), os.getpid()
        self._file.seek(int(self._offsets[index]))
        return _parse_conversation(self._file.readline(), self.path, int(self._linenos[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # TODO(learner):
        #   1. text = render_chat(self.conversation(index))
        #   2. ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:self.max_length]
        #      — no bos/eos to add and no room to reserve: the text holds its own markers
        #   3. labels = [-100] * self.max_length; for every (begin, end) in
        #      assistant_spans(ids, self.start_ids, self.end_ids): labels[begin:end] = ids[begin:end]
        #   4. input_ids = ids + [self.pad_id] * (self.max_length - len(ids))  (right padding; its
        #      labels stay -100 because of where they are, not because their id is pad)
        #   5. return (input_ids, labels) as torch.long tensors of shape (max_length,); no shift
        raise NotImplementedError(
            "TODO(14 sft): 在 workbook/data/sft.py 里写 SFTDataset.__getitem__，见 notebooks/14_sft.ipynb")

    def __getstate__(self):
        state = self.__dict__.copy()  # an open file cannot be pickled (spawned DataLoader workers)
        state["_file"] = state["_file_pid"] = None
        return state
