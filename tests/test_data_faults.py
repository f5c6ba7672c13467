"""Data faults are found up front and named: workbook.data.validate and the packer's failure paths.

Every test injects a real fault into a real file (cut gzip bytes, a GBK line, a uint16 written
into a copy of a .bin, a temp file that is /dev/full) and runs the real code on it.  Fast: small
files in tmp_path and the shipped validation split (0.36 MB).
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

from tests.helpers import ROOT, run_py
from workbook.data import pack as pack_cli
from workbook.data.packed import PackedDataset, iter_jsonl_texts, meta_path, pack_jsonl
from workbook.data.validate import (FINGERPRINT_FIELD, DataError, check_pretrain_data, describe,
                                    tokenizer_fingerprint)

VAL = ROOT / "data" / "pretrain_poetry_val.jsonl.gz"
TOKENIZER_DIR = ROOT / "data" / "tokenizer"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR, local_files_only=True)


@pytest.fixture(scope="module")
def val_lines() -> list[bytes]:
    """The validation split's raw lines (with their newlines)."""
    return gzip.decompress(VAL.read_bytes()).splitlines(keepends=True)


@pytest.fixture(scope="module")
def val_bin(tmp_path_factory, tok) -> Path:
    """The validation split packed with the shipped tokenizer (copy it before damaging it)."""
    out = tmp_path_factory.mktemp("packed") / "val.bin"
    pack_jsonl(VAL, tok, out)
    return out


def _copy_bin(src: Path, dest_dir: Path, name: str = "copy.bin") -> Path:
    dest = dest_dir / name
    shutil.copyfile(src, dest)
    shutil.copyfile(meta_path(src), meta_path(dest))
    return dest


def _edit_sidecar(bin_path: Path, **changes) -> None:
    meta = json.loads(meta_path(bin_path).read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    meta_path(bin_path).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def _raises(path, *, tokenizer=None, vocab_size=None) -> DataError:
    with pytest.raises(DataError) as info:
        check_pretrain_data(path, tokenizer=tokenizer, vocab_size=vocab_size)
    return info.value


# ---- jsonl ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (b'{"text": "\xe6\x9c\xaa\xe5\xae\x8c\n', "malformed JSON"),       # cut off mid-line
    (b'["text", "not an object"]\n', "object"),
    (b'{"content": "no text field"}\n', 'missing "text"'),
    (b'{"text": 42}\n', "not a string"),
    (b'{"text": "' + "《春晓》孟浩然".encode("gbk") + b'"}\n', "not UTF-8"),
])
def test_bad_line_in_the_middle_of_a_plain_jsonl_is_named_by_file_and_line(tmp_path, val_lines, bad,
                                                                          message):
    lines = val_lines[:100]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines[:60] + [bad] + lines[60:]))
    err = _raises(path)
    assert str(err).startswith(f"{path}:61: ") and message in str(err), str(err)
    assert err.line == 61 and err.path == str(path)
    # the packer reads through the same parser: the same message, before anything is written
    with pytest.raises(DataError) as packing:
        list(iter_jsonl_texts(path))
    assert str(packing.value) == str(err)


def test_gbk_line_gets_the_encoding_hint_and_the_line_not_a_byte_offset(tmp_path, val_lines):
    path = tmp_path / "gbk.jsonl"
    gbk = json.dumps({"text": "《静夜思》李白\n床前明月光"}, ensure_ascii=False).encode("gbk") + b"\n"
    path.write_bytes(b"".join(val_lines[:3]) + gbk)
    message = str(_raises(path))
    assert message.startswith(f"{path}:4: 不是 UTF-8 编码 (not UTF-8)") and "GB18030" in message
    assert "position" not in message and "codec" not in message, "no codec wording"


def test_blank_lines_are_allowed_and_the_summary_counts_documents(tmp_path, val_lines):
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"".join([b"\n", *val_lines[:5], b"   \n", *val_lines[5:10], b"\n"]))
    summary = check_pretrain_data(path)
    assert summary["documents"] == 10 and summary["lines"] == 13 and summary["format"] == "jsonl"
    assert "10 篇文档" in describe(summary)


def test_whole_shipped_validation_split_passes():
    summary = check_pretrain_data(VAL)
    assert (summary["format"], summary["documents"], summary["lines"]) == ("jsonl.gz", 1447, 1447)
    assert summary["bytes"] == len(gzip.decompress(VAL.read_bytes()))


def test_truncated_gzip_says_truncated_and_how_far_it_got(tmp_path, val_lines):
    data = VAL.read_bytes()
    path = tmp_path / "val.jsonl.gz"
    path.write_bytes(data[:len(data) // 2])  # a download cut in the middle
    err = _raises(path)
    assert "文件被截断 (truncated gzip)" in str(err) and str(err).startswith(f"{path}: ")
    got = int(str(err).split("已读到第 ")[1].split(" 行")[0])
    assert 0 < got < len(val_lines), got
    with pytest.raises(DataError, match="truncated gzip"):  # the packer too, no EOFError
        list(iter_jsonl_texts(path))


def test_corrupt_gzip_is_named_as_such_not_as_a_bad_line(tmp_path):
    data = bytearray(VAL.read_bytes())
    data[len(data) // 4] ^= 0xFF  # one flipped byte in the deflate stream
    path = tmp_path / "val.jsonl.gz"
    path.write_bytes(bytes(data))
    # the damage decodes to garbage lines first; the gzip check (CRC) names the real cause
    assert re.search(r"\((corrupt|truncated) gzip\)", str(_raises(path))), str(_raises(path))


def test_gzip_named_wrongly_either_way(tmp_path, val_lines):
    plain_named_gz = tmp_path / "a.jsonl.gz"
    plain_named_gz.write_bytes(b"".join(val_lines[:5]))
    assert "not a gzip file" in str(_raises(plain_named_gz))
    gz_named_plain = tmp_path / "b.jsonl"
    gz_named_plain.write_bytes(VAL.read_bytes())
    assert "gzip-compressed" in str(_raises(gz_named_plain))


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", b""),
    ("blank.jsonl", b"\n  \n\n"),
    ("empty.jsonl.gz", gzip.compress(b"", mtime=0)),
])
def test_empty_file_has_no_samples(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert "no samples" in str(_raises(path))


def test_missing_file_is_a_data_error(tmp_path):
    assert "file not found" in str(_raises(tmp_path / "nowhere.jsonl"))


def test_data_error_survives_pickling():  # DataLoader workers and multiprocessing pickle errors
    err = DataError("x.jsonl", "不是合法的 JSON (malformed JSON)", 7)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "x.jsonl:7: 不是合法的 JSON (malformed JSON)" and back.line == 7


# ---- packed .bin ------------------------------------------------------------------------------

def test_packed_file_passes_and_records_the_tokenizer_fingerprint(val_bin, tok):
    summary = check_pretrain_data(val_bin, tokenizer=tok, vocab_size=6400)
    meta = json.loads(meta_path(val_bin).read_text(encoding="utf-8"))
    assert summary["tokens"] == meta["num_tokens"] and summary["documents"] == 1447
    assert summary["max_token_id"] < 6400
    assert meta[FINGERPRINT_FIELD] == tokenizer_fingerprint(tok)
    assert meta[FINGERPRINT_FIELD].startswith("sha256:")
    # a call with truncation changes the tokenizer's serialisation, not its fingerprint
    tok("春眠不觉晓", truncation=True, max_length=3)
    assert tokenizer_fingerprint(tok) == meta[FINGERPRINT_FIELD]


def _tiny_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return t


def test_bin_packed_with_another_vocabulary_size_is_refused(tmp_path, tok, val_lines):
    texts = [json.loads(line)["text"] for line in val_lines[:200]]
    other = tmp_path / "other.bin"
    pack_jsonl(VAL, _tiny_tokenizer(texts, 300), other)
    err = _raises(other, tokenizer=tok)
    assert err.field == "vocab_size" and "300" in str(err) and "6400" in str(err), str(err)
    assert str(err).startswith(f"{meta_path(other)}: ")


def test_bin_packed_with_another_tokenizer_of_the_same_size_is_refused(tmp_path, tok, val_bin):
    # the shipped tokenizer with two ordinary tokens' ids swapped: same size, same bos/eos
    config = json.loads(tok.backend_tokenizer.to_str())
    vocab = config["model"]["vocab"]
    a, b = (k for k, v in vocab.items() if v in (500, 501))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    swapped = tmp_path / "swapped.bin"
    pack_jsonl(VAL, Tokenizer.from_str(json.dumps(config)), swapped)
    err = _raises(swapped, tokenizer=tok)
    assert err.field == FINGERPRINT_FIELD and "tokenizer mismatch" in str(err), str(err)
    # an older sidecar without the field: the other fields still agree, so it loads
    old = _copy_bin(val_bin, tmp_path, "old.bin")
    _edit_sidecar(old, **{FINGERPRINT_FIELD: None})
    summary = check_pretrain_data(old, tokenizer=tok)
    assert summary["tokens"] == PackedDataset(old, 64).meta["num_tokens"]


def test_token_id_at_or_above_vocab_is_found_with_its_position(tmp_path, tok, val_bin):
    bad = _copy_bin(val_bin, tmp_path)
    with open(bad, "r+b") as f:  # one uint16 = 6400 written into token 1234
        f.seek(1234 * 2)
        f.write(np.array([6400], dtype="<u2").tobytes())
    for kwargs in ({}, {"tokenizer": tok}, {"vocab_size": 6400}):
        message = str(_raises(bad, **kwargs))
        assert "位置 (position) 1,234" in message and "6400" in message, message
    # a model with a smaller vocabulary than the sidecar's: named before the scan
    assert _raises(val_bin, vocab_size=6000).field == "vocab_size"


def test_bin_size_disagreeing_with_sidecar(tmp_path, val_bin):
    bad = _copy_bin(val_bin, tmp_path)
    bad.write_bytes(bad.read_bytes()[:-6])  # three tokens lost
    err = _raises(bad)
    assert err.field == "num_tokens" and "truncated file" in str(err)
    with pytest.raises(DataError, match="num_tokens"):  # PackedDataset reads the same check
        PackedDataset(bad, 64)


@pytest.mark.parametrize("changes, field, words", [
    ({"num_tokens": None}, "num_tokens", "missing field"),
    ({"vocab_size": "6400"}, "vocab_size", "整数 (int)"),
    ({"eos_id": True}, "eos_id", "整数 (int)"),
    ({"format": "nanogpt"}, "format", "unknown format"),
    ({FINGERPRINT_FIELD: 12}, FINGERPRINT_FIELD, "字符串 (str)"),
])
def test_ill_formed_sidecar_names_the_field(tmp_path, val_bin, changes, field, words):
    bad = _copy_bin(val_bin, tmp_path)
    _edit_sidecar(bad, **changes)
    err = _raises(bad)
    assert err.field == field and f'"{field}"' in str(err) and words in str(err), str(err)


def test_missing_sidecar_and_broken_json(tmp_path, val_bin):
    bad = _copy_bin(val_bin, tmp_path)
    meta_path(bad).write_text('{"format": "minimind-packed-v1",', encoding="utf-8")
    assert "malformed JSON" in str(_raises(bad))
    meta_path(bad).unlink()
    assert "copy.bin.json" in str(_raises(bad))


# ---- the packer's command line ----------------------------------------------------------------

def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("错误："), proc.stderr
    return lines[0]


def test_pack_cli_mistyped_tokenizer_path_fails_at_once_offline(tmp_path, monkeypatch):
    """A mistyped local path must be refused before any download attempt.  The Hub is pointed at
    a local socket that only records connections (no wall-clock measure: it fails under load)."""
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # nothing but the code keeps it off the Hub
    hub = socket.socket()
    hub.bind(("127.0.0.1", 0))
    hub.listen(16)
    hub.setblocking(False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
    out = tmp_path / "val.bin"
    try:
        proc = run_py(["-m", "workbook.data.pack", str(VAL), str(out), "--tokenizer", "data/tokenzier"],
                      timeout=300)
        try:
            hub.accept()
            contacted = True
        except BlockingIOError:  # nothing in the backlog: no connection was ever tried
            contacted = False
    finally:
        hub.close()
    line = _one_line_error(proc)
    assert "data/tokenzier" in line and "tokenizer directory" in line
    assert not contacted, "the path must be refused before any download attempt"
    assert not list(tmp_path.iterdir())


def test_pack_cli_malformed_input_leaves_nothing(tmp_path, val_lines):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"".join(val_lines[:30]) + b'{"text": oops}\n' + b"".join(val_lines[30:40]))
    out = tmp_path / "out" / "bad.bin"
    out.parent.mkdir()
    proc = run_py(["-m", "workbook.data.pack", str(src), str(out), "--tokenizer", str(TOKENIZER_DIR)],
                  timeout=120)
    line = _one_line_error(proc)
    assert f"{src}:31: " in line and "malformed JSON" in line, line
    assert not list(out.parent.iterdir()), "no .bin, no sidecar, no .tmp"


def test_pack_jsonl_bad_line_after_some_batches_removes_its_temporary_file(tmp_path, tok, val_lines):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"".join(val_lines[:30]) + b'{"text": oops}\n')
    out = tmp_path / "bad.bin"
    with pytest.raises(DataError, match=r"bad\.jsonl:31: "):  # batches of 8: 24 docs written first
        pack_jsonl(src, tok, out, batch_size=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full")
def test_pack_full_disk_keeps_the_previous_output(tmp_path, val_bin, capsys):
    out = _copy_bin(val_bin, tmp_path, "val.bin")  # the output of an earlier, good run
    before = out.read_bytes(), meta_path(out).read_bytes()
    tmp = out.with_name(out.name + ".tmp")
    tmp.symlink_to("/dev/full")  # every write to the temporary file fails with ENOSPC
    status = pack_cli.cli([str(VAL), str(out), "--tokenizer", str(TOKENIZER_DIR)])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("错误：磁盘空间不足 (No space left on device)"), err
    assert len(err.strip().splitlines()) == 1 and "Errno" not in err
    assert (out.read_bytes(), meta_path(out).read_bytes()) == before, "previous output kept"
    assert not tmp.is_symlink() and not tmp.exists(), "temporary file removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.bin", "val.bin.json"]


def test_pack_cli_returns_meta_for_callers_and_error_status_for_the_shell(tmp_path):
    out = tmp_path / "v.bin"
    meta = pack_cli.main([str(VAL), str(out), "--tokenizer", str(TOKENIZER_DIR)])
    assert meta["num_docs"] == 1447 and FINGERPRINT_FIELD in meta
    assert pack_cli.cli([str(VAL), str(tmp_path / "v.txt"), "--tokenizer", str(TOKENIZER_DIR)]) == 2
    with pytest.raises(DataError, match="找不到输入文件"):
        pack_cli.main([str(tmp_path / "nope.jsonl"), str(out)])
