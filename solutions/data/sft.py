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
    # one message: <|im_start|>{role}\n{content}<|im_end|>\n
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if add_generation_prompt:
        text += "<|im_start|>assistant\n"
    return text


def _parse_conversation(line: str | bytes, path: Path, lineno: int) -> list[dict]:
    """The "conversations" list of one jsonl line; ValueError "file:line: ..." when it is bad.

    Bad: not valid UTF-8; not JSON; not an object with a non-empty list "conversations"; a message that is not an
    object with "role" in ROLES and a str "content"; no assistant message (nothing to learn).
    """
    try:
        record = json.loads(line)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{lineno}: 这一行不是合法的 UTF-8 (not valid UTF-8)：文件要用 UTF-8 编码：{e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: 这一行不是合法的 JSON (malformed JSON): {e}") from None
    conv = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(conv, list) or not conv:
        raise ValueError(f'{path}:{lineno}: 这一行没有非空的列表 "conversations" '
                         f'(missing "conversations"): {str(record)[:60]}')
    for m in conv:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f'{path}:{lineno}: 有一条消息不对 (bad message)：要有 "role"'
                             f'（system / user / assistant）和字符串 "content"：{str(m)[:60]}')
    if not any(m["role"] == "assistant" for m in conv):
        raise ValueError(f"{path}:{lineno}: 没有助手 (assistant) 的回答：这个样本没有一个要学的 token")
    return conv


def assistant_spans(input_ids: list[int], start_ids: list[int], end_ids: list[int]) -> list[tuple[int, int]]:
    """Where the assistant's replies are: half-open ``[begin, end)`` position ranges, in order.

    input_ids: the token ids of a rendered conversation, possibly cut at max_length (no padding).
    start_ids: the ids of ``"<|im_start|>assistant\\n"``; end_ids: the ids of ``"<|im_end|>\\n"``.
    A span begins right after each occurrence of start_ids and ends after the first end_ids that
    follows (the closing marker belongs to the span), or at len(input_ids) when the sequence was
    cut first.  Empty spans are left out.
    """
    spans = []
    n, n_start, n_end = len(input_ids), len(start_ids), len(end_ids)
    i = 0
    while i + n_start <= n:
        if input_ids[i:i + n_start] != start_ids:
            i += 1
            continue
        begin = end = i + n_start  # the first token of the reply
        while end < n and input_ids[end:end + n_end] != end_ids:
            end += 1
        # include the closing marker; a reply cut by max_length ends at the cut
        end = min(end + n_end, n)
        if begin < end:
            spans.append((begin, end))
        i = end
    return spans


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

        # the two markers, as token ids: the reply starts after one, and ends with the other
        self.start_ids = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        self.end_ids = tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]

    @staticmethod
    def _index_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Byte offset and 1-based line number of every non-blank line (as in stage 10)."""
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
        """The messages of sample `index`, checked by _parse_conversation."""
        if self._conversations is not None:
            return self._conversations[index]
        if self._file is None or self._file_pid != os.getpid():
            # a file object inherited from the parent process would share its read position
            self._file, self._file_pid = open(self.path, "rb"), os.getpid()
        self._file.seek(int(self._offsets[index]))
        return _parse_conversation(self._file.readline(), self.path, int(self._linenos[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        text = render_chat(self.conversation(index))
        # cut at max_length: nothing to reserve, the text already holds its own markers
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:self.max_length]
        labels = [-100] * self.max_length
        # learn only the replies (each with its closing <|im_end|>\n); everything else stays -100
        for begin, end in assistant_spans(ids, self.start_ids, self.end_ids):
            labels[begin:end] = ids[begin:end]
        # right padding; its labels stay -100 by position (no span reaches past len(ids))
        input_ids = ids + [self.pad_id] * (self.max_length - len(ids))
        return torch.tensor(input_ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)

    def __getstate__(self):
        state = self.__dict__.copy()  # an open file cannot be pickled (spawned DataLoader workers)
        state["_file"] = state["_file_pid"] = None
        return state
