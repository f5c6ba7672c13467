"""Check for stage 09: training the byte-level BPE tokenizer.

Trains the learner's tokenizer and the reference on the same small slice of the corpus with a
small vocabulary (under a second), then tests what the spec fixes: the special tokens at ids 0-2,
the vocabulary size, every one of the 256 bytes in the vocabulary (no unknown characters), exact
round-trip on held-out poems and on text the corpus never contains, no automatic bos/eos, the
characters per token against the reference, and that the saved folder loads with AutoTokenizer.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .. import _modes
from .tools import expect, fail

VOCAB = 600  # 3 specials + 256 bytes + 341 merges: enough to see merges, trains in ~0.1 s
N_TRAIN, N_HELD_OUT = 600, 200
CORPUS = _modes.PACKAGE_DIR.parent / "data" / "pretrain_poetry_val.jsonl.gz"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
UNSEEN = "Hello, world! Ünïcödé 🙂 ∑ x² 𠀀\t末尾"  # characters the poetry corpus never contains


def _texts(ref) -> tuple[list[str], list[str]]:
    texts = list(ref.iter_texts(CORPUS))
    return texts[:N_TRAIN], texts[-N_HELD_OUT:]


def _config(tok) -> dict:
    try:
        return json.loads(tok.to_str())
    except Exception:  # noqa: BLE001 - diagnostics only
        return {}


def _train(impl, texts: list[str], vocab_size: int):
    try:
        tok = impl.train_tokenizer(iter(texts), vocab_size=vocab_size)
    except TypeError as e:
        fail(f"train_tokenizer(texts, vocab_size=...) 调用失败：{e}。签名应该是 "
             f"train_tokenizer(texts: Iterable[str], vocab_size: int = 6400) -> Tokenizer。")
    if tok is None:
        fail("train_tokenizer 返回了 None：训练完要 return tokenizer。")
    if not all(hasattr(tok, a) for a in ("encode", "decode", "token_to_id", "get_vocab_size", "to_str")):
        fail(f"train_tokenizer 应该返回 tokenizers.Tokenizer，你返回的是 {type(tok).__name__}。"
             f"（转成 Hugging Face 的文件夹是 save_tokenizer 的事。）")
    return tok


def _check_specials(tok) -> None:
    ids = [tok.token_to_id(t) for t in SPECIALS]
    if ids == [0, 1, 2]:
        return
    table = "，".join(f"{t}={i}" for t, i in zip(SPECIALS, ids))
    if None in ids:
        fail(f"词表里缺少特殊 token (special tokens)：{table}。把 special_tokens=SPECIAL_TOKENS 传给 "
             f"BpeTrainer。")
    if sorted(ids) == [0, 1, 2]:
        fail(f"特殊 token 的顺序不对：{table}。id 由列表顺序决定，应为 <|endoftext|>=0（pad/unk）、"
             f"<|im_start|>=1（bos）、<|im_end|>=2（eos）——MiniMindConfig 的 bos_token_id=1、"
             f"eos_token_id=2 和真实 checkpoint 的 embedding 都按这个顺序。")
    if min(ids) >= 3:
        fail(f"特殊 token 的 id 是 {table}：像是训练完才用 add_special_tokens 加上的，排到了词表末尾。"
             f"要在训练前交给 BpeTrainer(special_tokens=SPECIAL_TOKENS)，它们才会是 0、1、2。")
    fail(f"特殊 token 的 id 应为 0、1、2，你的是：{table}。")


def _check_no_auto_specials(tok) -> None:
    ids = tok.encode("春眠不觉晓").ids
    if ids and (ids[0] in (0, 1, 2) or ids[-1] in (0, 1, 2)):
        fail(f"encode('春眠不觉晓') 自动加了特殊 token：{ids}。不要设 post_processor（TemplateProcessing）："
             f"bos/eos 由数据集自己加（10 课），分词器自动再加一次就重复了。")


def _check_alphabet(tok) -> None:
    from tokenizers import pre_tokenizers

    missing = [c for c in pre_tokenizers.ByteLevel.alphabet() if tok.token_to_id(c) is None]
    if missing:
        decoded = tok.decode(tok.encode(UNSEEN).ids)
        fail(f"256 个字节里有 {len(missing)} 个不在词表里（没有 initial_alphabet）。语料里没出现过的字节"
             f"就编码不了，会被悄悄丢掉：{UNSEEN!r} 解码回来成了 {decoded!r}。"
             f"给 BpeTrainer 传 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()。")


def _roundtrip_failure(tok, text: str, what: str) -> None:
    ids = tok.encode(text).ids
    back = tok.decode(ids)
    if back == text:
        return
    cfg = _config(tok)
    pre, dec = cfg.get("pre_tokenizer") or {}, cfg.get("decoder") or {}
    if not dec:
        fail(f"{what}：解码 (decode) 不回原文，得到的是 {back[:30]!r}……：这些 'æĺ¥' 样的字符是 ByteLevel "
             f"给每个字节的替身。没有设 decoder：加上 tokenizer.decoder = decoders.ByteLevel()。")
    if dec.get("type") != "ByteLevel":
        fail(f"{what}：decode 得到 {back[:30]!r}……。decoder 是 {dec.get('type')}，应该是 "
             f"decoders.ByteLevel()，和 ByteLevel 预分词器配对。")
    if pre.get("type") != "ByteLevel":
        fail(f"{what}：decode 得到 {back[:30]!r}……。预分词器 (pre_tokenizer) 是 {pre.get('type')}，"
             f"应该是 pre_tokenizers.ByteLevel(add_prefix_space=False)：先把文本变成字节。")
    if back == " " + text or pre.get("add_prefix_space"):
        fail(f"{what}：解码结果前面多了一个空格：{back[:20]!r}。ByteLevel 要设 add_prefix_space=False："
             f"中文没有空格，加前缀空格会改变第一个 token，也让 decode 不回原文。")
    first = next((i for i, (a, b) in enumerate(zip(back, text)) if a != b), min(len(back), len(text)))
    fail(f"{what}：decode(encode(text)) 不等于原文，从第 {first} 个字符开始不同："
         f"原文 {text[first:first + 10]!r}，你的 {back[first:first + 10]!r}。")


def _chars_per_token(tok, texts: list[str]) -> float:
    return sum(len(t) for t in texts) / sum(len(tok.encode(t).ids) for t in texts)


def check(impl, ref) -> str:
    train, held_out = _texts(ref)
    tok = _train(impl, train, VOCAB)
    ref_tok = ref.train_tokenizer(iter(train), vocab_size=VOCAB)

    # 1. Special tokens first: every later stage hard-codes bos=1, eos=2, pad=0.
    _check_specials(tok)
    _check_no_auto_specials(tok)

    # 2. Vocabulary size.
    size = tok.get_vocab_size()
    if size != VOCAB:
        if size == 6400:
            fail(f"vocab_size={VOCAB} 训练出的词表有 6400 个 token：你写死了 6400，要用参数 vocab_size。")
        pre = (_config(tok).get("pre_tokenizer") or {}).get("type")
        if pre != "ByteLevel":
            fail(f"vocab_size={VOCAB} 时词表有 {size} 个 token，而且预分词器 (pre_tokenizer) 是 {pre}："
                 f"应该是 pre_tokenizers.ByteLevel(add_prefix_space=False)。byte-level BPE 从 256 个字节出发；"
                 f"不先变成字节，每个汉字都是一个初始符号，词表装不下（语料有 9000 多种字）。")
        if size < VOCAB:
            fail(f"vocab_size={VOCAB}，你的词表只有 {size} 个 token：训练提前停了。是不是设了 min_frequency "
                 f"（出现次数不够的组合不合并）？只要 vocab_size、special_tokens、initial_alphabet。")
        fail(f"vocab_size={VOCAB} 时词表应该正好 {VOCAB} 个 token（3 个特殊 token + 256 个字节 + 合并），"
             f"你的有 {size} 个。把 vocab_size 传给 BpeTrainer。")

    # 3. Round trip: held-out poems, the 256 bytes, text the corpus never contains.
    _check_alphabet(tok)
    for i, text in enumerate(held_out[:50]):
        _roundtrip_failure(tok, text, f"留出的第 {i} 首诗")
    _roundtrip_failure(tok, UNSEEN, f"语料里没有的字符 {UNSEEN!r}")

    # 4. Same corpus, same settings, same merges: BPE training is deterministic.
    vocab, ref_vocab = tok.get_vocab(), ref_tok.get_vocab()
    cpt, ref_cpt = _chars_per_token(tok, held_out), _chars_per_token(ref_tok, held_out)
    if vocab != ref_vocab:
        diff = len(set(vocab) ^ set(ref_vocab))
        extra = sorted(set(vocab) - set(ref_vocab))[:5]
        fail(f"同样的语料、同样的 vocab_size，你的词表和参考实现有 {diff} 个 token 不同（例如你多了 {extra}）；"
             f"留出语料上 {cpt:.3f} 字符/token，参考是 {ref_cpt:.3f}。检查 BpeTrainer 的参数："
             f"只要 vocab_size、special_tokens、initial_alphabet（不要设 min_frequency 等别的）。")
    expect(abs(cpt / ref_cpt - 1) < 0.02,
           f"压缩率 (compression) 不对：留出语料上 {cpt:.3f} 字符/token，参考是 {ref_cpt:.3f}。")

    # 5. The saved folder loads with AutoTokenizer and encodes the same ids.
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="workbook09_") as tmp:
        impl.save_tokenizer(tok, Path(tmp))
        hf = AutoTokenizer.from_pretrained(tmp)
        expect((hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2),
               f"保存后用 AutoTokenizer 读回来，pad/bos/eos 的 id 应为 (0, 1, 2)，你的是 "
               f"{(hf.pad_token_id, hf.bos_token_id, hf.eos_token_id)}。")
        text = held_out[0]
        expect(hf(text)["input_ids"] == tok.encode(text).ids,
               "保存后用 AutoTokenizer 读回来，编码结果和训练出的分词器不同。")
    return (f"特殊 token 0/1/2、vocab {VOCAB}、256 个字节都在词表里、留出语料和生僻字符 round-trip、"
            f"不自动加 bos/eos、与参考相同的合并（{cpt:.2f} 字符/token）、AutoTokenizer 能读：全部正确。")
