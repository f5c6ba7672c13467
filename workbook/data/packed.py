"""The fast data path: a corpus tokenised once into a flat file of uint16 token ids.

``PretrainDataset`` tokenises every sample on every epoch and pads short documents, so with short
poems most of each 512-token row is padding.  Packing fixes both: :func:`pack_jsonl` tokenises the
corpus once (batched, in the tokenizer's Rust threads) into ``OUT.bin``, every document written as
``[bos] + ids + [eos]`` back to back; :class:`PackedDataset` then cuts that stream through
``numpy.memmap`` into windows of ``max_length`` tokens — no padding, no tokenising, no RAM.
The bos before each document is kept so a sample looks the same as in ``PretrainDataset``
(``<|im_start|>《题》…<|im_end|>``) and the model learns where a poem starts.
Format: ``OUT.bin`` = raw little-endian uint16 ids (vocab ≤ 65535); ``OUT.bin.json`` = sidecar with
dtype, vocab size, token and document counts, bos/eos ids, the tokenizer name and its fingerprint
(``workbook.data.validate`` checks a .bin against the tokenizer with it before training).
Infrastructure, not an exercise: it imports only numpy, torch and the standard library.
"""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

# the format itself (FORMAT, DTYPE, the sidecar's path) is defined beside its checker
from .validate import (DTYPE, FINGERPRINT_FIELD, FORMAT, DataError, backend_of, iter_jsonl,  # noqa: F401
                       load_sidecar, meta_path, tokenizer_fingerprint)


def iter_jsonl_texts(path: str | os.PathLike) -> Iterator[str]:
    """Stream the "text" of every non-blank line of a .jsonl / .jsonl.gz file.

    Raises DataError (a ValueError) "file:line: …" (1-based) for a line that is not UTF-8, not
    JSON or lacks a string "text", and for a truncated or corrupt gzip; the checks are
    ``workbook.data.validate``'s, the same that run before training.
    """
    for _, text in iter_jsonl(path):
        yield text


def _backend(tokenizer):
    """A private copy of the ``tokenizers.Tokenizer`` behind `tokenizer`: no truncation/padding.

    A copy, because a Hugging Face tokenizer leaves its last call's truncation setting on its
    backend: after ``tok(text, truncation=True, max_length=30)`` every later encode_batch would
    silently cut documents to 30 tokens.
    """
    backend = backend_of(tokenizer)
    backend = type(backend).from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def pack_jsonl(jsonl_path: str | os.PathLike, tokenizer, out_path: str | os.PathLike,
               batch_size: int = 4096, bos_token: str = "<|im_start|>",
               eos_token: str = "<|im_end|>") -> dict:
    """Tokenise a .jsonl / .jsonl.gz corpus into ``out_path`` (uint16) and its sidecar.

    Streams the input and writes each batch as soon as it is encoded, so memory stays at one
    batch.  Writes ``out_path.tmp`` and ``out_path.json.tmp`` and renames both only at the end:
    on any failure (a bad line, a full disk, Ctrl-C) both are removed and a previous output is
    left as it was, so a .bin with a sidecar is always complete.  Returns the sidecar dict.
    Raises DataError naming file:line for bad input, OSError(ENOSPC) "磁盘空间不足 …" for a full disk.
    """
    jsonl_path, out_path = Path(jsonl_path), Path(out_path)
    backend = _backend(tokenizer)
    bos, eos = backend.token_to_id(bos_token), backend.token_to_id(eos_token)
    vocab_size = backend.get_vocab_size()
    if bos is None or eos is None:
        raise ValueError(f"tokenizer 里没有 {bos_token} / {eos_token} (bos/eos token missing)")
    if vocab_size > np.iinfo(DTYPE).max + 1:
        raise ValueError(f"vocab_size={vocab_size} 超过 uint16 能存的 65536 (does not fit uint16)")

    n_tokens = n_docs = 0
    meta_out = meta_path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    meta_tmp = meta_out.with_name(meta_out.name + ".tmp")

    def flush(batch: list[str], f) -> None:
        nonlocal n_tokens, n_docs
        encodings = backend.encode_batch(batch, add_special_tokens=False)
        ids = []
        for enc in encodings:
            ids.append(bos)
            ids.extend(enc.ids)
            ids.append(eos)
        arr = np.asarray(ids, dtype=DTYPE)
        # f.write, not arr.tofile(f): tofile loses the error of its last buffered write (ENOSPC)
        f.write(arr.data)
        n_tokens += arr.size
        n_docs += len(batch)

    done = False
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            batch: list[str] = []
            for text in iter_jsonl_texts(jsonl_path):
                batch.append(text)
                if len(batch) == batch_size:
                    flush(batch, f)
                    batch = []
            if batch:
                flush(batch, f)
        if n_docs == 0:
            raise DataError(jsonl_path, "文件里没有样本 (no samples)：文件是空的或只有空行")
        meta = {
            "format": FORMAT,
            "dtype": "uint16",
            "vocab_size": vocab_size,
            "num_tokens": n_tokens,
            "num_docs": n_docs,
            "bos_id": bos,
            "eos_id": eos,
            "layout": "per document: bos + ids + eos, concatenated",
            "tokenizer": str(getattr(tokenizer, "name_or_path", "") or ""),
            FINGERPRINT_FIELD: tokenizer_fingerprint(backend),
            "source": jsonl_path.name,
        }
        with open(meta_tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=2)
            f.write("\n")
        # old sidecar first: a crash between the renames leaves a .bin without a sidecar
        # ("打包没有完成"), never a new .bin described by the old sidecar
        meta_out.unlink(missing_ok=True)
        os.replace(tmp, out_path)
        os.replace(meta_tmp, meta_out)
        done = True
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        kept = f"原来的 {out_path.name} 没有改动" if out_path.exists() else "没有写出任何文件"
        raise OSError(errno.ENOSPC, f"磁盘空间不足 (No space left on device)：写 {out_path} 时"
                                    f"磁盘满了；{kept}。腾出空间后重新打包") from None
    finally:
        if not done:
            for p in (tmp, meta_tmp):
                p.unlink(missing_ok=True)
    return meta


def read_meta(bin_path: str | os.PathLike) -> dict:
    """Load and check the sidecar of a packed file (every field, and the file size).

    FileNotFoundError when the .bin or its sidecar is missing, DataError (a ValueError) naming
    the field otherwise; ``workbook.data.validate.load_sidecar`` does the work.
    """
    return load_sidecar(bin_path)


class PackedDataset(Dataset):
    """Non-overlapping windows of ``max_length`` tokens over a packed file.

    Window i is tokens ``[i·L, (i+1)·L)`` with L = max_length; the last partial window is dropped,
    so ``len(ds) = num_tokens // L``.  ``ds[i]`` returns ``(input_ids, labels)``, each a LongTensor
    of shape (L,), labels == input_ids (the model shifts them inside its loss; no padding, so no
    -100).  Windows cross document boundaries: attention is not blocked at an eos, as in GPT-2.
    The first token of each window is never a target (nothing before it in the window): 1/L lost.
    """

    def __init__(self, bin_path: str | os.PathLike, max_length: int = 512):
        super().__init__()
        self.path = Path(bin_path)
        self.meta = read_meta(self.path)
        self.max_length = max_length
        if max_length < 2:
            raise ValueError(f"max_length={max_length} 太小：至少 2")
        if self.meta["num_tokens"] < max_length:
            raise ValueError(f"{self.path}: 只有 {self.meta['num_tokens']} 个 token，"
                             f"不够一个 max_length={max_length} 的窗口 (window)")
        self._tokens: np.memmap | None = None  # mapped on first use, once per process

    @property
    def tokens(self) -> np.memmap:
        """All token ids, (num_tokens,) uint16, memory-mapped read-only."""
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=DTYPE, mode="r")
        return self._tokens

    def __len__(self) -> int:
        return self.meta["num_tokens"] // self.max_length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.max_length
        # int64 copy: uint16 tensors cannot index an embedding, and the copy detaches from the mmap
        window = torch.from_numpy(self.tokens[start:start + self.max_length].astype(np.int64))
        return window, window.clone()

    def __getstate__(self):
        state = self.__dict__.copy()  # re-map in each worker instead of pickling the array
        state["_tokens"] = None
        return state
