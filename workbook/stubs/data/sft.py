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
    #   What: the plain ChatML text of the conversation, every message in order, then (only when
    #   asked) the prompt the model answers from.
    #   Why: the text must be exactly the shipped tokenizer's apply_chat_template(...), or the
    #   assistant markers the spans are found by will not be where training and generation expect.
    #   Pitfall: every message ends with <|im_end|> AND a newline, the last one too ("\n".join loses
    #   it); no default system message; content verbatim (no strip); the generation prompt ends with
    #   a newline.  The notebook compares your text with the template's.
    raise NotImplementedError(
        "TODO(14 sft): 在 workbook/data/sft.py 里写 render_chat，见 notebooks/14_sft.ipynb")


def _parse_conversation(line: str | bytes, path: Path, lineno: int) -> list[dict]:
    """The "conversations" list of one jsonl line; ValueError "file:line: ..." when it is bad.

    Bad: not valid UTF-8; not JSON; not an object with a non-empty list "conversations"; a message that is not an
    object with "role" in ROLES and a str "content"; no assistant message (nothing to learn).
    """
    # TODO(learner):
    #   What: the "conversations" list of one line, or a ValueError "{path}:{lineno}: ..." saying
    #   what is wrong with the line (the Bad: list in the docstring, one check each).
    #   Why: a corpus has millions of lines; an error without file and line cannot be fixed.
    #   Pitfall: `line` may be bytes: decoding can fail with UnicodeDecodeError, which is not a
    #   json.JSONDecodeError; check types before indexing (a KeyError or TypeError says nothing
    #   about the line); a conversation without an assistant reply has nothing to learn.
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
    #   What: scan the ids for every start marker; each reply runs from right after it to the end of
    #   the first end marker that follows, as half-open (begin, end) ranges like a Python slice.
    #   Why: these positions, and only these, carry the SFT loss: the model learns to answer, and
    #   to stop (the closing marker is learned too).
    #   Pitfall: the start marker itself is not learned; the end marker is two tokens and both
    #   belong to the span; a sequence cut inside a reply ends its span at the cut, never past it;
    #   a multi-turn conversation has one span per assistant turn.
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
        #   What: self.start_ids and self.end_ids, the token ids of the two markers as the tokenizer
        #   writes them inside a rendered conversation.
        #   Pitfall: each marker includes its newline; <|im_end|> alone (eos_token_id) is not the end
        #   marker.  The notebook prints both lists.
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
        #   What: (input_ids, labels) of sample `index`, two LongTensors of length max_length: the
        #   rendered conversation's ids, cut and right-padded; labels equal to the ids on the assistant
        #   spans and -100 everywhere else.
        #   Why: the loss of stage 08 ignores -100, so only the replies (and their end marker) teach.
        #   Pitfall: no bos/eos to add, no room to reserve; find the spans on the ids AFTER the cut;
        #   padding is -100 because of where it is, not because its id is the pad id (id 0 also occurs
        #   inside replies); no shift here: the model shifts labels itself.
        raise NotImplementedError(
            "TODO(14 sft): 在 workbook/data/sft.py 里写 SFTDataset.__getitem__，见 notebooks/14_sft.ipynb")

    def __getstate__(self):
        state = self.__dict__.copy()  # an open file cannot be pickled (spawned DataLoader workers)
        state["_file"] = state["_file_pid"] = None
        return state
