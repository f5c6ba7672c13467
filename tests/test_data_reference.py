"""The data side: the shipped corpus and tokenizer, the reference tokenizer and dataset, packing.

Fast (< 30 s on 2 cores): the tokenizer trained here is tiny (vocab 600 on 3000 poems).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from workbook import _modes
from workbook.data import pack as pack_cli
from workbook.data.packed import PackedDataset, meta_path, pack_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
TRAIN, VAL = DATA / "pretrain_poetry_train.jsonl.gz", DATA / "pretrain_poetry_val.jsonl.gz"
TOKENIZER_DIR = DATA / "tokenizer"
POEM = re.compile(r"《[^《》\n]+》[^\n《》]+\n[^\n].*", re.DOTALL)  # 《题目》作者\n正文

ds_ref = _modes.reference_module("data.dataset")
tok_ref = _modes.reference_module("data.tokenizer")


def _read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    return {"train": _read(TRAIN), "val": _read(VAL)}


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---- corpus ---------------------------------------------------------------------------------

def test_corpus_files_parse_and_follow_the_format(corpus):
    assert len(corpus["train"]) > 70_000 and len(corpus["val"]) > 1_000
    for split, texts in corpus.items():
        bad = [t for t in texts if not POEM.fullmatch(t)]
        assert not bad, f"{split}: {len(bad)} lines not in 《题目》作者\\n正文 form, e.g. {bad[0]!r}"


def test_corpus_split_rule_and_no_overlap(corpus):
    # the documented rule: sha1(text)[:8] as int, mod 50 == 0 → validation
    def is_val(t: str) -> bool:
        return int(hashlib.sha1(t.encode("utf-8")).hexdigest()[:8], 16) % 50 == 0

    assert all(is_val(t) for t in corpus["val"])
    assert not any(is_val(t) for t in corpus["train"])
    assert not set(corpus["val"]) & set(corpus["train"])


# ---- the shipped tokenizer ------------------------------------------------------------------

def test_shipped_tokenizer_loads_with_specials(tok):
    assert len(tok) == 6400
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("春眠不觉晓")["input_ids"][0] not in (1, 2), "no automatic bos: datasets add it"
    chat = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False)
    assert chat == "<|im_start|>user\n你好<|im_end|>\n"


def test_shipped_tokenizer_round_trips_and_compresses(tok, corpus):
    val = corpus["val"]
    ids = tok(val, add_special_tokens=False)["input_ids"]
    decoded = tok.batch_decode(ids)
    assert decoded == val, "decode(encode(text)) must give the text back"
    chars_per_token = sum(map(len, val)) / sum(map(len, ids))
    # measured 1.105: classical poetry is dense (see data/README.md)
    assert 1.0 < chars_per_token < 1.3, chars_per_token


# ---- the reference tokenizer ----------------------------------------------------------------

def test_train_small_tokenizer_and_save(tmp_path, corpus):
    texts = corpus["train"][:3000]
    trained = tok_ref.train_tokenizer(texts, vocab_size=600)
    assert trained.get_vocab_size() == 600
    assert [trained.token_to_id(t) for t in tok_ref.SPECIAL_TOKENS] == [0, 1, 2]
    assert trained.decode(trained.encode(texts[0]).ids) == texts[0]
    hf = AutoTokenizer.from_pretrained(tok_ref.save_tokenizer(trained, tmp_path / "tok"))
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id, len(hf)) == (0, 1, 2, 600)
    assert hf.decode(hf("《静夜思》李白\n床前明月光，疑是地上霜。")["input_ids"]) == \
        "《静夜思》李白\n床前明月光，疑是地上霜。"
    with pytest.raises(ValueError, match="vocab_size"):
        tok_ref.train_tokenizer(texts[:10], vocab_size=200)


def test_iter_texts_reads_gz_and_reports_line(tmp_path):
    assert next(iter(tok_ref.iter_texts(VAL))).startswith("《")
    bad = _write_jsonl(tmp_path / "bad.jsonl", ['{"text": "a"}', "", '{"txt": "b"}'])
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        list(tok_ref.iter_texts(bad))


# ---- PretrainDataset ------------------------------------------------------------------------

def test_pretrain_dataset_sample_layout(tmp_path, tok):
    path = _write_jsonl(tmp_path / "d.jsonl", [json.dumps({"text": "春眠不觉晓"}, ensure_ascii=False)])
    ds = ds_ref.PretrainDataset(path, tok, max_length=16)
    x, y = ds[0]
    ids = tok("春眠不觉晓", add_special_tokens=False)["input_ids"]
    n = len(ids) + 2
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (16,)
    assert x[:n].tolist() == [1] + ids + [2]
    assert x[n:].tolist() == [0] * (16 - n), "right padding with pad id 0"
    assert y[:n].tolist() == x[:n].tolist() and y[n:].tolist() == [-100] * (16 - n)


def test_pretrain_dataset_truncates_to_exactly_max_length(tmp_path, tok, corpus):
    long_text = "\n".join(corpus["train"][:20])
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": long_text}, ensure_ascii=False) + "\n\n")
    x, y = ds_ref.PretrainDataset(gz, tok, max_length=32)[0]
    ids = tok(long_text, add_special_tokens=False)["input_ids"]
    assert x.tolist() == [1] + ids[:30] + [2] and y.tolist() == x.tolist()
    # a text of exactly max_length - 2 tokens: no padding at all
    exact = tok.decode(ids[:30])
    path = _write_jsonl(tmp_path / "e.jsonl", [json.dumps({"text": exact}, ensure_ascii=False)])
    x, y = ds_ref.PretrainDataset(path, tok, max_length=32)[0]
    assert x[-1].item() == 2 and (y != -100).all()


def test_pretrain_dataset_plain_and_gz_agree(tmp_path, tok, corpus):
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in corpus["val"][:50]]
    plain = _write_jsonl(tmp_path / "v.jsonl", lines[:25] + [""] + lines[25:])  # a blank line
    gz = tmp_path / "v.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    a, b = ds_ref.PretrainDataset(plain, tok, 64), ds_ref.PretrainDataset(gz, tok, 64)
    assert len(a) == len(b) == 50
    batch = torch.utils.data.default_collate([a[i] for i in range(4)])
    assert batch[0].shape == (4, 64)
    for i in (0, 25, 49):
        assert torch.equal(a[i][0], b[i][0])
    clone = pickle.loads(pickle.dumps(a))  # what a spawned DataLoader worker does
    assert torch.equal(clone[3][0], a[3][0])


@pytest.mark.parametrize("bad_line, message", [
    ('{"text": "未完', "malformed JSON"),
    ('{"content": "没有 text"}', "missing \"text\""),
    ('{"text": 42}', "missing \"text\""),
    ('["text"]', "missing \"text\""),
])
def test_pretrain_dataset_bad_line_names_file_and_line(tmp_path, tok, bad_line, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", ['{"text": "一"}', "", '{"text": "二"}', bad_line])
    ds = ds_ref.PretrainDataset(path, tok, 16)  # plain jsonl: indexed, parsed when read
    assert len(ds) == 3
    with pytest.raises(ValueError, match=rf"bad\.jsonl:4: .*{re.escape(message)}"):
        ds[2]
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(ValueError, match=r"bad\.jsonl\.gz:4: "):  # .gz: checked at once
        ds_ref.PretrainDataset(gz, tok, 16)


def test_pretrain_dataset_empty_and_missing_files(tmp_path, tok):
    for name, content in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n")]:
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match="no samples"):
            ds_ref.PretrainDataset(tmp_path / name, tok)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        ds_ref.PretrainDataset(tmp_path / "nope.jsonl", tok)


# ---- packed format --------------------------------------------------------------------------

def test_pack_and_packed_dataset_round_trip(tmp_path, tok, corpus):
    texts = corpus["val"][:40]
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
    src = _write_jsonl(tmp_path / "p.jsonl", lines)
    meta = pack_jsonl(src, tok, tmp_path / "p.bin", batch_size=7)  # several batches
    expected = [i for t in texts for i in [1] + tok(t, add_special_tokens=False)["input_ids"] + [2]]
    assert meta["num_docs"] == 40 and meta["num_tokens"] == len(expected)
    assert json.loads(meta_path(tmp_path / "p.bin").read_text())["dtype"] == "uint16"

    ds = PackedDataset(tmp_path / "p.bin", max_length=32)
    assert len(ds) == len(expected) // 32
    x, y = ds[1]
    assert x.dtype == torch.long and x.shape == (32,) and torch.equal(x, y)
    stream = torch.cat([ds[i][0] for i in range(len(ds))]).tolist()
    assert stream == expected[:len(ds) * 32], "windows are consecutive, non-overlapping"
    full = "".join(f"<|im_start|>{t}<|im_end|>" for t in texts)
    assert full.startswith(tok.decode(stream)), "decoding the windows gives the documents back"
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_pack_cli_on_gz_and_missing_sidecar(tmp_path, capsys):
    out = tmp_path / "val.bin"
    meta = pack_cli.main([str(VAL), str(out), "--tokenizer", str(TOKENIZER_DIR)])
    assert "MB/s" in capsys.readouterr().out
    assert PackedDataset(out, 512).meta == meta and meta["num_docs"] == len(_read(VAL))
    meta_path(out).unlink()
    with pytest.raises(FileNotFoundError, match="val.bin.json"):
        PackedDataset(out, 512)
