"""The fast data path: a corpus tokenised once into a flat file of uint16 token ids.

``PretrainDataset`` tokenises every sample on every epoch and pads short documents, so with short
poems most of each 512-token row is padding.  Packing fixes both: :func:`pack_jsonl` tokenises the
corpus once (batched, in the tokenizer's Rust threads) into ``OUT.bin``, every document written as
``[bos] + ids + [eos]`` back to back; :class:`PackedDataset` then cuts that stream through
``numpy.memmap`` into windows of ``max_length`` tokens — no padding, no tokenising, no RAM.
The bos before each document is kept so a sample looks the same as in ``PretrainDataset``
(``<|im_start|>《题》…<|im_end|>``) and the model learns where a poem starts.
Format: ``OUT.bin`` = raw little-endian uint16 ids (vocab ≤ 65535); ``OUT.bin.json`` = sidecar with
dtype, vocab size, token and document counts, bos/eos ids and the tokenizer name.
Infrastructure, not an exercise: it imports only numpy, torch and the standard library.
"""
from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

FORMAT = "minimind-packed-v1"
DTYPE = np.dtype("<u2")  # uint16, little-endian on disk whatever the machine


def meta_path(bin_path: str | os.PathLike) -> Path:
    """The sidecar of ``x.bin`` is ``x.bin.json``."""
    return Path(str(bin_path) + ".json")


def iter_jsonl_texts(path: str | os.PathLike) -> Iterator[str]:
    """Stream the "text" of every non-blank line of a .jsonl / .jsonl.gz file.

    Raises ValueError "file:line: …" (1-based) for a line that is not JSON or lacks a string "text".
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: 不是合法的 JSON (malformed JSON): {e}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f'{path}:{lineno}: 没有字符串字段 "text" (missing "text")')
            yield record["text"]


def _backend(tokenizer):
    """A private copy of the ``tokenizers.Tokenizer`` behind `tokenizer`: no truncation/padding.

    A copy, because a Hugging Face tokenizer leaves its last call's truncation setting on its
    backend: after ``tok(text, truncation=True, max_length=30)`` every later encode_batch would
    silently cut documents to 30 tokens.
    """
    backend = tokenizer if hasattr(tokenizer, "encode_batch") else getattr(
        tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(tokenizer).__name__} 不是 fast tokenizer：打包需要 tokenizers 的 "
                        "encode_batch (load it with AutoTokenizer, or pass a tokenizers.Tokenizer)")
    backend = type(backend).from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def pack_jsonl(jsonl_path: str | os.PathLike, tokenizer, out_path: str | os.PathLike,
               batch_size: int = 4096, bos_token: str = "<|im_start|>",
               eos_token: str = "<|im_end|>") -> dict:
    """Tokenise a .jsonl / .jsonl.gz corpus into ``out_path`` (uint16) and its sidecar.

    Streams the input and writes each batch as soon as it is encoded, so memory stays at one
    batch.  Writes to ``out_path.tmp`` and renames at the end, then writes the sidecar: a .bin
    with a sidecar is always complete.  Returns the sidecar dict.
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
    tmp = out_path.with_name(out_path.name + ".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def flush(batch: list[str], f) -> None:
        nonlocal n_tokens, n_docs
        encodings = backend.encode_batch(batch, add_special_tokens=False)
        ids = []
        for enc in encodings:
            ids.append(bos)
            ids.extend(enc.ids)
            ids.append(eos)
        arr = np.asarray(ids, dtype=DTYPE)
        arr.tofile(f)
        n_tokens += arr.size
        n_docs += len(batch)

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
        tmp.unlink()
        raise ValueError(f"{jsonl_path}: 文件里没有样本 (no samples): 文件是空的或只有空行")
    os.replace(tmp, out_path)
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
        "source": jsonl_path.name,
    }
    with open(meta_path(out_path), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return meta


def read_meta(bin_path: str | os.PathLike) -> dict:
    """Load and check the sidecar of a packed file."""
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FileNotFoundError(f"找不到打包文件 (packed file not found): {bin_path}")
    mp = meta_path(bin_path)
    if not mp.is_file():
        raise FileNotFoundError(f"找不到 {mp}：打包没有完成？用 python -m workbook.data.pack 重新生成")
    with open(mp, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("dtype") != "uint16":
        raise ValueError(f"{mp}: 不认识的格式 (unknown format) {meta.get('format')!r}")
    size = bin_path.stat().st_size
    if size != meta["num_tokens"] * DTYPE.itemsize:
        raise ValueError(f"{bin_path}: 大小 {size} bytes ≠ num_tokens {meta['num_tokens']} × 2："
                         "文件不完整 (truncated file)？")
    return meta


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
