"""Check a training data file completely before step 1, and name what is wrong.

Without this, a malformed line in a plain ``.jsonl`` is found only when the DataLoader reads it
(perhaps hours into the run, and again on every ``--from_resume``), a truncated ``.jsonl.gz``
ends in a codec traceback, and a ``.bin`` packed with another tokenizer trains silently on the
wrong ids.  :func:`check_pretrain_data` reads the whole file once, in constant memory, and
raises :class:`DataError` — a ``ValueError`` whose message names the file and the 1-based line
(or the sidecar field) and says what is wrong, in Chinese with the English term.

- ``.jsonl`` / ``.jsonl.gz``: every line is UTF-8, valid JSON, an object with a string "text";
  blank lines are allowed (the datasets skip them); a gzip must be complete; at least one sample.
- ``.bin`` (see ``workbook.data.packed``): the sidecar ``.bin.json`` is complete and well-typed,
  the file size matches ``num_tokens``, vocab_size / bos_id / eos_id / tokenizer_fingerprint
  agree with the tokenizer given, and every token id is below the vocabulary size.
- chat data for SFT (:func:`check_chat_data`, ``.jsonl`` / ``.jsonl.gz``): every line is one
  ``{"conversations": [{"role", "content"}, ...]}`` with known roles, an optional system message
  first, then user / assistant alternating and ending with the assistant.

It also holds the one parser of a jsonl line (:func:`parse_jsonl_line`, used by the packer too)
and :func:`tokenizer_fingerprint`, which the packer records in the sidecar.
Infrastructure, not an exercise: numpy and the standard library only (plus the tokenizer
object passed in).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
SCAN_CHUNK = 1 << 24  # token ids per vectorised max(): 32 MB of uint16 at a time
FINGERPRINT_FIELD = "tokenizer_fingerprint"
# The packed format (workbook.data.packed writes it, this module checks it)
FORMAT = "minimind-packed-v1"
DTYPE = np.dtype("<u2")  # uint16, little-endian on disk whatever the machine


def meta_path(bin_path: str | os.PathLike) -> Path:
    """The sidecar of ``x.bin`` is ``x.bin.json``."""
    return Path(str(bin_path) + ".json")

REPACK = "用 python -m workbook.data.pack 重新打包"


class DataError(ValueError):
    """A data file is unusable: ``"{path}:{line}: {problem}"`` (or ``"{path}: {problem}"``).

    Attributes: path (str), problem (the text after the location), line (1-based or None),
    field (the sidecar field concerned, or None).
    """

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None,
                 field: str | None = None):
        self.path, self.problem, self.line, self.field = str(path), problem, line, field
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # picklable (DataLoader workers, multiprocessing) despite the signature
        return type(self), (self.path, self.problem, self.line, self.field)


# ---- jsonl --------------------------------------------------------------------------------------

def parse_jsonl_line(raw: bytes, path: str | os.PathLike, lineno: int) -> str | None:
    """The "text" of one raw jsonl line, or None for a blank line; DataError naming the line."""
    if not raw.strip():  # bytes.strip, as the dataset's line index does
        return None
    record = decode_json_line(raw, path, lineno)
    if not isinstance(record, dict):
        raise DataError(path, f'不是 JSON 对象 (object)，而是 {type(record).__name__}：'
                              f'每行应该是 {{"text": "..."}}', lineno)
    if "text" not in record:
        keys = ", ".join(map(repr, list(record)[:5]))
        raise DataError(path, f'缺少字段 "text" (missing "text")：这一行的字段是 {keys or "（没有字段）"}',
                        lineno, field="text")
    text = record["text"]
    if not isinstance(text, str):
        raise DataError(path, f'字段 "text" 不是字符串 (not a string)，而是 {type(text).__name__} '
                              f"{str(text)[:40]}", lineno, field="text")
    return text


def decode_json_line(raw: bytes, path: str | os.PathLike, lineno: int):
    """The JSON value of one non-blank raw line; DataError for non-UTF-8 bytes or bad JSON."""
    try:
        # without the line end: a line cut inside a string then reads "Unterminated string"
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(path, _not_utf8(raw, e), lineno) from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        if line.startswith("\ufeff"):
            problem = ("行首有 BOM (byte order mark, U+FEFF)：用不带 BOM 的 UTF-8 重新保存"
                       "（例如 iconv -f UTF-8 -t UTF-8，或编辑器里选 UTF-8 而不是 UTF-8 with BOM）")
        else:
            problem = (f"不是合法的 JSON (malformed JSON)，第 {e.colno} 个字符："
                       f"{e.msg.removesuffix(' at')}；这一行开头是 {line[:40]!r}")
        raise DataError(path, problem, lineno) from None
    return record


def _not_utf8(raw: bytes, e: UnicodeDecodeError) -> str:
    problem = (f"不是 UTF-8 编码 (not UTF-8)：这一行第 {e.start + 1} 个字节 "
               f"0x{raw[e.start]:02x} 解不出来")
    try:  # a common cause in Chinese text: a file saved as GBK
        raw.decode("gb18030")
        problem += "；看起来像 GBK/GB18030 编码，先转成 UTF-8（iconv -f GB18030 -t UTF-8）"
    except UnicodeDecodeError:
        problem += "；用 UTF-8 重新保存这个文件"
    return problem


def read_jsonl_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of every line of a .jsonl / .jsonl.gz file, streamed.

    A missing file, a gzip that is truncated or corrupt, or a gzip named without ``.gz`` raise
    DataError instead of the codec's own exception (EOFError, BadGzipFile, zlib.error).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "找不到数据文件 (file not found)" if not path.exists()
                        else "不是普通文件 (not a regular file)")
    is_gz = path.suffix == ".gz"
    lineno = 0
    try:
        with open(path, "rb") as probe:
            head = probe.read(2)
        if is_gz and head and head != GZIP_MAGIC:
            hint = "；它像是没压缩的 jsonl：去掉文件名里的 .gz" if head[:1] in b"{[ \n" else ""
            raise DataError(path, f"不是 gzip 文件 (not a gzip file)：开头两个字节是 {head!r}{hint}")
        if not is_gz and head == GZIP_MAGIC:
            # the datasets choose gzip by the suffix: a compressed file without .gz cannot be read
            raise DataError(path, "这是 gzip 压缩的文件 (gzip-compressed)，但文件名不以 .gz 结尾："
                                  f"改名为 {path.name}.gz")
        with (gzip.open(path, "rb") if is_gz else open(path, "rb", buffering=1 << 20)) as f:
            for lineno, raw in enumerate(f, start=1):
                yield lineno, raw
    except EOFError:
        raise DataError(path, f"文件被截断 (truncated gzip)：压缩数据在结束标记之前就断了，"
                              f"已读到第 {lineno} 行；重新下载或重新压缩这个文件") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(path, f"gzip 数据损坏 (corrupt gzip)：{e}，已读到第 {lineno} 行；"
                              "重新下载或重新压缩这个文件") from None
    except OSError as e:
        raise DataError(path, f"读文件出错 (read error)：{e.strerror or e}，已读到第 {lineno} 行") from None


def _parsed_lines(path: str | os.PathLike, parse=None) -> Iterator[tuple[int, bytes, object]]:
    """(line number, raw line, parsed value or None if blank); DataError at the first bad line.

    parse(raw, path, lineno): parse_jsonl_line (the default: "text") or parse_chat_line.
    """
    parse = parse or parse_jsonl_line
    for lineno, raw in read_jsonl_lines(path):
        try:
            text = parse(raw, path, lineno)
        except DataError:
            if Path(path).suffix == ".gz":
                _raise_if_gzip_damaged(path, lineno)
            raise
        yield lineno, raw, text


def _raise_if_gzip_damaged(path: str | os.PathLike, lineno: int) -> None:
    """A bad line in a .gz may be damage in the compressed stream: its CRC, at the end, tells."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        what = ("文件被截断 (truncated gzip)" if isinstance(e, EOFError)
                else f"gzip 数据损坏 (corrupt gzip)：{e}")
        raise DataError(path, f"{what}；从第 {lineno} 行起解压出来的内容已经不对；"
                              "重新下载或重新压缩这个文件", lineno) from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, "text") of every non-blank line; DataError at the first bad one."""
    for lineno, _, text in _parsed_lines(path):
        if text is not None:
            yield lineno, text


def check_jsonl(path: str | os.PathLike) -> dict:
    """Read a .jsonl / .jsonl.gz file once and check every line; returns the summary."""
    start = time.perf_counter()
    n_lines = n_docs = n_bytes = 0
    for n_lines, raw, text in _parsed_lines(path):
        n_bytes += len(raw)
        n_docs += text is not None
    if n_docs == 0:
        raise DataError(path, "文件里没有样本 (no samples)：文件是空的或只有空行")
    return {"path": str(path), "format": "jsonl.gz" if Path(path).suffix == ".gz" else "jsonl",
            "lines": n_lines, "documents": n_docs, "tokens": None, "bytes": n_bytes,
            "seconds": time.perf_counter() - start}


# ---- the tokenizer ----------------------------------------------------------------------------

def backend_of(tokenizer):
    """The ``tokenizers.Tokenizer`` of a Hugging Face fast tokenizer (or the object itself)."""
    backend = tokenizer if hasattr(tokenizer, "encode_batch") else getattr(
        tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(tokenizer).__name__} 不是 fast tokenizer：需要 tokenizers 的 "
                        "Tokenizer (load it with AutoTokenizer, or pass a tokenizers.Tokenizer)")
    return backend


def tokenizer_fingerprint(tokenizer) -> str:
    """``"sha256:<hex>"`` of what fixes the ids: model type, vocab, merges and added tokens.

    Not a hash of ``to_str()`` as a whole: that also holds the truncation/padding a Hugging Face
    tokenizer leaves behind after a call, and its layout changes between ``tokenizers`` versions
    (merges became [a, b] pairs in 0.20), which would flag a file packed before an upgrade.
    """
    config = json.loads(backend_of(tokenizer).to_str())
    model = config.get("model") or {}
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges") or []]
    added = sorted((t["id"], t["content"], bool(t.get("special")))
                   for t in config.get("added_tokens") or [])
    canonical = json.dumps([model.get("type"), model.get("vocab"), merges, added],
                           ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def tokenizer_ids(tokenizer, bos_token: str = "<|im_start|>", eos_token: str = "<|im_end|>") -> dict:
    """vocab_size, bos_id, eos_id and tokenizer_fingerprint, as the packer records them."""
    backend = backend_of(tokenizer)
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    return {"vocab_size": backend.get_vocab_size(),
            "bos_id": backend.token_to_id(bos_token) if bos is None else bos,
            "eos_id": backend.token_to_id(eos_token) if eos is None else eos,
            FINGERPRINT_FIELD: tokenizer_fingerprint(tokenizer)}


# ---- packed .bin ------------------------------------------------------------------------------

_REQUIRED = {"format": str, "dtype": str, "vocab_size": int, "num_tokens": int, "num_docs": int,
             "bos_id": int, "eos_id": int}
_OPTIONAL = {FINGERPRINT_FIELD: str, "tokenizer": str, "source": str, "layout": str}
_TYPE_NAMES = {int: "整数 (int)", str: "字符串 (str)"}


def load_sidecar(bin_path: str | os.PathLike) -> dict:
    """The sidecar of ``x.bin`` with every field checked, and the file size against it.

    Raises FileNotFoundError when the .bin or its sidecar is missing, DataError naming the field
    for anything else.
    """
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FileNotFoundError(f"找不到打包文件 (packed file not found): {bin_path}")
    mp = meta_path(bin_path)
    if not mp.is_file():
        raise FileNotFoundError(f"找不到 {mp}：打包没有完成？{REPACK}")
    try:
        meta = json.loads(mp.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(mp, f"说明文件 (sidecar) 不是合法的 JSON (malformed JSON)：{e.msg}，"
                            f"第 {e.colno} 个字符；{REPACK}", e.lineno) from None
    except UnicodeDecodeError:
        raise DataError(mp, f"说明文件 (sidecar) 不是 UTF-8 编码 (not UTF-8)；{REPACK}") from None
    if not isinstance(meta, dict):
        raise DataError(mp, f"说明文件 (sidecar) 应该是 JSON 对象 (object)，而是 {type(meta).__name__}")
    if meta.get("format", FORMAT) != FORMAT:  # another format's sidecar: say that, not its fields
        raise DataError(mp, f'不认识的格式 (unknown format) "format" = {meta["format"]!r:.40}，'
                            f"应该是 {FORMAT!r}", field="format")
    for fields, required in ((_REQUIRED, True), (_OPTIONAL, False)):
        for name, typ in fields.items():
            if name not in meta:
                if required:
                    raise DataError(mp, f'缺少字段 (missing field) "{name}"：说明文件不完整；{REPACK}',
                                    field=name)
                continue
            value = meta[name]
            if not isinstance(value, typ) or isinstance(value, bool):  # bool is an int in Python
                raise DataError(mp, f'字段 "{name}" 应该是{_TYPE_NAMES[typ]}，现在是 '
                                    f"{type(value).__name__} {value!r:.40}", field=name)
    if meta["dtype"] != "uint16":
        raise DataError(mp, f'字段 "dtype" 是 {meta["dtype"]!r}，这个格式只用 "uint16"', field="dtype")
    vocab = meta["vocab_size"]
    if not 0 < vocab <= np.iinfo(DTYPE).max + 1:
        raise DataError(mp, f'字段 "vocab_size" = {vocab}：应该在 1…65536 之间 (uint16)',
                        field="vocab_size")
    for name in ("num_tokens", "num_docs"):
        if meta[name] < 0:
            raise DataError(mp, f'字段 "{name}" = {meta[name]} 是负数', field=name)
    for name in ("bos_id", "eos_id"):
        if not 0 <= meta[name] < vocab:
            raise DataError(mp, f'字段 "{name}" = {meta[name]} 不在词表范围 0…{vocab - 1} 里', field=name)
    size, expected = bin_path.stat().st_size, meta["num_tokens"] * DTYPE.itemsize
    if size != expected:
        raise DataError(bin_path, f"大小 {size:,} bytes，但说明文件 (sidecar) 的 num_tokens = "
                                  f"{meta['num_tokens']:,}，应该是 {expected:,} bytes：文件不完整 "
                                  f"(truncated file)，或者说明文件属于另一次打包；{REPACK}",
                        field="num_tokens")
    return meta


def check_packed(bin_path: str | os.PathLike, tokenizer=None, vocab_size: int | None = None) -> dict:
    """Sidecar, size, agreement with `tokenizer`, and every token id < the vocabulary size."""
    start = time.perf_counter()
    bin_path = Path(bin_path)
    try:
        meta = load_sidecar(bin_path)
    except FileNotFoundError as e:
        raise DataError(bin_path, str(e)) from None
    mp = meta_path(bin_path)
    bound = meta["vocab_size"]
    if tokenizer is not None:
        have = tokenizer_ids(tokenizer)
        for name, what in (("vocab_size", "词表大小 (vocab_size)"), ("bos_id", "bos id"),
                           ("eos_id", "eos id")):
            if meta[name] != have[name]:
                raise DataError(mp, f'字段 "{name}" 是 {meta[name]}，但分词器 (tokenizer) 的 {what} 是 '
                                    f"{have[name]}：这个 .bin 是用另一个分词器打包的；用现在的分词器"
                                    f"{REPACK}", field=name)
        # older sidecars have no fingerprint: the fields above are all that can be compared
        if FINGERPRINT_FIELD in meta and meta[FINGERPRINT_FIELD] != have[FINGERPRINT_FIELD]:
            raise DataError(mp, f'字段 "{FINGERPRINT_FIELD}" 与分词器不一致 (tokenizer mismatch)：'
                                f"打包时 {meta[FINGERPRINT_FIELD][:19]}…，现在 "
                                f"{have[FINGERPRINT_FIELD][:19]}…；词表大小相同，但词表或合并规则 "
                                f"(merges) 不同，同一个 id 是另一个 token；用现在的分词器{REPACK}",
                            field=FINGERPRINT_FIELD)
    if vocab_size is not None:
        if meta["vocab_size"] > vocab_size:
            raise DataError(mp, f'字段 "vocab_size" 是 {meta["vocab_size"]}，比模型的 vocab_size '
                                f"{vocab_size} 大：嵌入层 (embedding) 放不下这些 id", field="vocab_size")
        bound = min(bound, vocab_size)
    n = meta["num_tokens"]
    if n == 0:
        raise DataError(bin_path, f"没有 token (empty file)；{REPACK}", field="num_tokens")
    tokens = np.memmap(bin_path, dtype=DTYPE, mode="r", shape=(n,))
    max_id = 0
    for lo in range(0, n, SCAN_CHUNK):
        chunk = tokens[lo:lo + SCAN_CHUNK]
        top = int(chunk.max())
        if top >= bound:
            i = int(np.argmax(chunk >= bound))  # first offending position in this chunk
            raise DataError(bin_path, f"位置 (position) {lo + i:,}（从 0 数）的 token id 是 "
                                      f"{int(chunk[i])}，不小于词表大小 (vocab_size) {bound}："
                                      "模型的嵌入层 (embedding) 没有这一行；文件损坏，或者不是用这个"
                                      f"分词器打包的；{REPACK}")
        max_id = max(max_id, top)
    del tokens  # unmap now, not at garbage collection (Windows cannot delete a mapped file)
    return {"path": str(bin_path), "format": "packed", "lines": None, "documents": meta["num_docs"],
            "tokens": n, "max_token_id": max_id, "bytes": n * DTYPE.itemsize,
            "seconds": time.perf_counter() - start}


# ---- chat (SFT) data --------------------------------------------------------------------------

CHAT_ROLES = ("system", "user", "assistant")
# Text that the chat template turns into special tokens: inside a message it would cut the
# conversation in the wrong place (and the labels with it).
CHAT_MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
_CHAT_SHAPE = '每行应该是 {"conversations": [{"role": "user", "content": "..."}, ...]}'


def parse_chat_line(raw: bytes, path: str | os.PathLike, lineno: int) -> list[dict] | None:
    """The "conversations" list of one raw jsonl line, or None for a blank line.

    DataError naming the line (and the message, 1-based) when the line is not UTF-8 or not JSON,
    has no "conversations" list or an empty one, a message is not an object with a string "role"
    and "content", a role is not system / user / assistant, a system message is not the first,
    the roles do not alternate user / assistant, or the last message is not the assistant's.
    """
    if not raw.strip():
        return None
    record = decode_json_line(raw, path, lineno)
    if not isinstance(record, dict):
        raise DataError(path, f"不是 JSON 对象 (object)，而是 {type(record).__name__}：{_CHAT_SHAPE}",
                        lineno)
    if "conversations" not in record:
        keys = ", ".join(map(repr, list(record)[:5]))
        raise DataError(path, f'缺少字段 "conversations" (missing "conversations")：这一行的字段是 '
                              f'{keys or "（没有字段）"}；{_CHAT_SHAPE}', lineno, field="conversations")
    return check_conversation(record["conversations"], path, lineno)


def check_conversation(conv, path: str | os.PathLike, lineno: int, field: str = "conversations") -> list[dict]:
    """`conv` (the value of `field` on line `lineno`) if it is a well-formed conversation, else
    DataError: a non-empty list of {"role", "content"} messages, an optional system message first,
    then user / assistant alternating, ending with the assistant."""
    if not isinstance(conv, list):
        raise DataError(path, f'字段 "{field}" 不是列表 (not a list)，而是 {type(conv).__name__}'
                              f"：{_CHAT_SHAPE}", lineno, field=field)
    if not conv:
        raise DataError(path, f'"{field}" 是空列表 (empty conversation)：至少要有一条 user 和一条 '
                              "assistant 消息", lineno, field=field)
    expected = "user"
    for k, message in enumerate(conv, start=1):
        where = ("" if field == "conversations" else f'"{field}" 的') + f"第 {k} 条消息 (message {k})"
        if not isinstance(message, dict):
            raise DataError(path, f"{where}不是 JSON 对象 (object)，而是 {type(message).__name__}："
                                  '应该是 {"role": ..., "content": ...}', lineno)
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str):
            raise DataError(path, f'{where}没有字符串 "role" (role must be a string)：现在是 '
                                  f"{type(role).__name__} {str(role)[:20]}", lineno)
        if role not in CHAT_ROLES:
            raise DataError(path, f"{where}的角色 {role[:20]!r} 不认识 (unknown role)：只能是 system、"
                                  "user、assistant", lineno)
        if not isinstance(content, str):
            raise DataError(path, f'{where}（{role}）没有字符串 "content" (content must be a string)：'
                                  f"现在是 {type(content).__name__} {str(content)[:20]}", lineno)
        marker = next((m for m in CHAT_MARKERS if m in content), None)
        if marker is not None:
            raise DataError(path, f"{where}（{role}）的内容里有 {marker}：这是特殊 token (special token) "
                                  "的文字，套用聊天模板后会把对话从中间切开；把它从内容里去掉", lineno)
        if role == "system":
            if k != 1:
                raise DataError(path, f"{where}是 system：system 消息只能是第 1 条 "
                                      "(system message must come first)", lineno)
            continue
        if role != expected:
            raise DataError(path, f"角色没有交替 (roles not alternating)：{where}应该是 {expected}，"
                                  f"却是 {role}；除了开头的 system，必须 user、assistant 轮流", lineno)
        expected = "assistant" if role == "user" else "user"
    last = conv[-1]["role"]
    if last != "assistant":
        raise DataError(path, f"最后一条消息是 {last}，不是 assistant (must end with an assistant "
                              "turn)：最后的提问没有回答，训练时学不到东西；删掉它或补上回答", lineno)
    return conv


def _prompt_text(conv: list[dict]) -> str:
    """The ChatML text before the first reply's first token: every message before the first
    assistant message, then the generation prompt ``<|im_start|>assistant\\n`` (the shipped
    tokenizer's chat template; stage 14's render_chat)."""
    k = next(i for i, m in enumerate(conv) if m["role"] == "assistant")
    return ("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conv[:k])
            + "<|im_start|>assistant\n")


def _prompt_lengths(texts: list[str], tokenizer) -> np.ndarray:
    """Token counts of `texts` (a private copy of the backend: no truncation left over from an
    earlier call), batched in the tokenizer's Rust threads."""
    backend = backend_of(tokenizer)
    backend = type(backend).from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    lengths = [len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False)]
    return np.asarray(lengths, dtype=np.int64)


def check_replies_fit(path, prompts: list[str], tokenizer, max_length: int, flag: str = "--max_seq_len") -> dict:
    """Does any reply survive the cut at `max_length` tokens?

    A sample is cut to its first `max_length` tokens; its labels are the reply's tokens, so one
    whose prompt (up to ``<|im_start|>assistant\\n``) already fills `max_length` has nothing to
    learn.  When that is every sample there is nothing to learn at all (SFT's loss is 0 / 0 = NaN
    from step 1, DPO compares two empty answers): DataError naming the flag and the length
    needed.  Returns ``{"replies_cut": the samples without a reply token, "max_length"}``.
    Only prompts of at least `max_length` bytes are tokenised: a byte-level BPE token covers at
    least one byte, so a shorter prompt always fits.
    """
    long = [t for t in prompts if len(t.encode("utf-8")) >= max_length]
    lengths = _prompt_lengths(long, tokenizer) if long else np.zeros(0, dtype=np.int64)
    cut = int((lengths >= max_length).sum())
    if cut and cut == len(prompts):
        shortest, longest = int(lengths.min()), int(lengths.max())
        raise DataError(path, f"{flag} {max_length} 把每一个回答都截掉了：每个样本的提示（到 "
                              f"<|im_start|>assistant\\n 为止）就有 {shortest}–{longest} 个 token，截断之后"
                              f"没有一个回答 token 留下，没有东西可学（SFT 的 loss 从第 1 步起就是 0/0 = NaN，"
                              f"DPO 比较的是两个空回答）。至少用 {flag} {shortest + 1} 才有回答留下，"
                              f"{flag} {longest + 1} 让每个样本都留下回答；回答本身还要更多 token。")
    return {"replies_cut": cut, "max_length": max_length}


def _describe_cut(summary: dict) -> str:
    cut = summary.get("replies_cut")
    if not cut:
        return ""
    return (f"；注意：{cut:,} 个样本的回答被 --max_seq_len {summary['max_length']} 整个截掉了"
            f"（它们不贡献 loss；加大 --max_seq_len 可以留下它们）")


def check_chat_data(path: str | os.PathLike, tokenizer=None, vocab_size: int | None = None,
                    max_length: int | None = None) -> dict:
    """Check an SFT chat file (``.jsonl`` / ``.jsonl.gz``) completely, streamed, before step 1.

    Every line is blank or one conversation that :func:`parse_chat_line` accepts; a gzip must be
    complete; at least one conversation.  `tokenizer` and `vocab_size` as in
    :func:`check_pretrain_data` (the tokenizer's vocabulary must fit the model).  With a
    tokenizer and `max_length` (the trainer's --max_seq_len), :func:`check_replies_fit` too.
    Returns: ``{"path", "format", "kind": "chat", "lines", "documents" (= "conversations"),
        "conversations", "messages", "assistant_turns", "with_system", "tokens" (None), "bytes",
        "seconds"}`` (+ "replies_cut", "max_length" with max_length);
        :func:`describe` turns it into one log line.
    """
    start = time.perf_counter()
    if not str(path).endswith((".jsonl", ".jsonl.gz")):
        raise DataError(path, "对话数据 (chat data) 要是 .jsonl 或 .jsonl.gz 文件：每行一段对话")
    if tokenizer is not None and vocab_size is not None:
        have = backend_of(tokenizer).get_vocab_size()
        if have > vocab_size:
            raise DataError(path, f"分词器 (tokenizer) 的词表大小 {have} 比模型的 vocab_size "
                                  f"{vocab_size} 大：有些 id 嵌入层 (embedding) 放不下")
    n_lines = n_conv = n_messages = n_turns = n_system = n_bytes = 0
    prompts: list[str] = []
    fit = tokenizer is not None and max_length is not None
    for n_lines, raw, conv in _parsed_lines(path, parse_chat_line):
        n_bytes += len(raw)
        if conv is None:
            continue
        n_conv += 1
        if fit:
            prompts.append(_prompt_text(conv))
        n_messages += len(conv)
        n_turns += sum(m["role"] == "assistant" for m in conv)
        n_system += conv[0]["role"] == "system"
    if n_conv == 0:
        raise DataError(path, "文件里没有对话 (no conversations)：文件是空的或只有空行")
    reach = check_replies_fit(path, prompts, tokenizer, max_length) if fit else {}
    return {"path": str(path), "format": "jsonl.gz" if str(path).endswith(".gz") else "jsonl",
            "kind": "chat", "lines": n_lines, "documents": n_conv, "conversations": n_conv,
            "messages": n_messages, "assistant_turns": n_turns, "with_system": n_system,
            "tokens": None, "bytes": n_bytes, **reach, "seconds": time.perf_counter() - start}


def describe_chat(summary: dict) -> str:
    """One log line for a summary of :func:`check_chat_data`."""
    return (f"对话数据检查通过 (chat data check passed)：{summary['path']}，"
            f"{summary['conversations']:,} 段对话 (conversations)，{summary['assistant_turns']:,} 个 "
            f"assistant 回答，{summary['with_system']:,} 段以 system 消息开头，"
            f"{summary['bytes'] / 1e6:.1f} MB，{summary['seconds']:.2f} 秒{_describe_cut(summary)}")


_PAIR_SHAPE = ('每行应该是 {"chosen": [{"role": "user", ...}, {"role": "assistant", ...}], '
               '"rejected": [{"role": "user", ...}, {"role": "assistant", ...}]}')


def parse_pair_line(raw: bytes, path: str | os.PathLike, lineno: int) -> tuple[list, list] | None:
    """(chosen, rejected) conversations of one preference (DPO) line, or None for a blank line.

    DataError naming the line when it is not a JSON object, lacks "chosen" or "rejected", either
    is not a well-formed conversation (:func:`check_conversation`), or the two do not share the
    same messages before the last reply (a preference compares two answers to one request).
    """
    if not raw.strip():
        return None
    record = decode_json_line(raw, path, lineno)
    if not isinstance(record, dict):
        raise DataError(path, f"不是 JSON 对象 (object)，而是 {type(record).__name__}：{_PAIR_SHAPE}", lineno)
    for key in ("chosen", "rejected"):
        if key not in record:
            keys = ", ".join(map(repr, list(record)[:5]))
            raise DataError(path, f'缺少字段 "{key}" (missing "{key}")：这一行的字段是 '
                                  f'{keys or "（没有字段）"}；{_PAIR_SHAPE}', lineno, field=key)
    chosen = check_conversation(record["chosen"], path, lineno, "chosen")
    rejected = check_conversation(record["rejected"], path, lineno, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise DataError(path, '"chosen" 和 "rejected" 最后一个回答之前的消息不一样：偏好数据比较的是对'
                              "同一个请求的两个回答，前面的对话必须相同", lineno)
    return chosen, rejected


def check_pair_data(path: str | os.PathLike, tokenizer=None, vocab_size: int | None = None,
                    max_length: int | None = None) -> dict:
    """Check a preference (DPO) file completely before step 1, as :func:`check_chat_data` does a
    chat file (max_length too); every line blank or a pair :func:`parse_pair_line` accepts.  Returns
    ``{"path", "format", "kind": "pairs", "lines", "documents" (= "pairs"), "pairs", "bytes", "seconds"}``."""
    start = time.perf_counter()
    if not str(path).endswith((".jsonl", ".jsonl.gz")):
        raise DataError(path, "偏好数据 (preference data) 要是 .jsonl 或 .jsonl.gz 文件：每行一对回答")
    if tokenizer is not None and vocab_size is not None and backend_of(tokenizer).get_vocab_size() > vocab_size:
        raise DataError(path, f"分词器 (tokenizer) 的词表比模型的 vocab_size {vocab_size} 大")
    n_lines = n_pairs = n_bytes = 0
    prompts: list[str] = []
    fit = tokenizer is not None and max_length is not None
    for n_lines, raw, pair in _parsed_lines(path, parse_pair_line):
        n_bytes += len(raw)
        n_pairs += pair is not None
        if fit and pair is not None:  # chosen and rejected share the prompt
            prompts.append(_prompt_text(pair[0]))
    if n_pairs == 0:
        raise DataError(path, "文件里没有偏好对 (no pairs)：文件是空的或只有空行")
    reach = check_replies_fit(path, prompts, tokenizer, max_length) if fit else {}
    return {"path": str(path), "format": "jsonl.gz" if str(path).endswith(".gz") else "jsonl",
            "kind": "pairs", "lines": n_lines, "documents": n_pairs, "pairs": n_pairs, "bytes": n_bytes,
            **reach, "seconds": time.perf_counter() - start}


def describe_pairs(summary: dict) -> str:
    """One log line for a summary of :func:`check_pair_data`."""
    return (f"偏好数据检查通过 (preference data check passed)：{summary['path']}，"
            f"{summary['pairs']:,} 对 (chosen, rejected)，{summary['bytes'] / 1e6:.1f} MB，"
            f"{summary['seconds']:.2f} 秒{_describe_cut(summary)}")


# ---- entry point ------------------------------------------------------------------------------

def check_pretrain_data(path: str | os.PathLike, tokenizer=None,
                        vocab_size: int | None = None) -> dict:
    """Check a pretraining file completely; DataError (a ValueError) names the first problem.

    Args:
        path: a ``.jsonl`` / ``.jsonl.gz`` corpus, or a packed ``.bin`` (chosen by the name, as
            the pretrain command chooses its dataset).
        tokenizer: the tokenizer training will use (Hugging Face fast tokenizer or
            ``tokenizers.Tokenizer``); a .bin's sidecar must agree with it.
        vocab_size: the model's vocabulary size; every id must be below it.
    Returns: ``{"path", "format" ("jsonl" | "jsonl.gz" | "packed"), "lines", "documents",
        "tokens", "bytes", "seconds"}`` (lines None for .bin, tokens None for jsonl; .bin adds
        max_token_id).  :func:`describe` turns it into one line for the log.
    """
    if str(path).endswith(".bin"):
        return check_packed(path, tokenizer, vocab_size)
    if tokenizer is not None and vocab_size is not None:
        have = backend_of(tokenizer).get_vocab_size()
        if have > vocab_size:
            raise DataError(path, f"分词器 (tokenizer) 的词表大小 {have} 比模型的 vocab_size "
                                  f"{vocab_size} 大：有些 id 嵌入层 (embedding) 放不下")
    return check_jsonl(path)


def describe(summary: dict) -> str:
    """One log line for a summary of :func:`check_pretrain_data` (or of :func:`check_chat_data`)."""
    if summary.get("kind") == "chat":
        return describe_chat(summary)
    what = f"{summary['documents']:,} 篇文档"
    if summary["tokens"] is not None:
        what += f"，{summary['tokens']:,} 个 token"
    else:
        what += f"（{summary['lines']:,} 行）"
    mb, s = summary["bytes"] / 1e6, summary["seconds"]
    return (f"数据检查通过 (data check passed)：{summary['path']}，{what}，{mb:.1f} MB，"
            f"{s:.2f} 秒")


__all__ = ["DataError", "check_pretrain_data", "check_jsonl", "check_packed", "describe",
           "check_chat_data", "describe_chat", "parse_chat_line", "decode_json_line", "CHAT_ROLES",
           "iter_jsonl", "load_sidecar", "parse_jsonl_line", "read_jsonl_lines",
           "tokenizer_fingerprint", "tokenizer_ids", "FINGERPRINT_FIELD", "check_pair_data",
           "describe_pairs", "check_replies_fit"]
