"""A byte-level BPE tokenizer: text → bytes → merges learned from the corpus (stage 09).

Byte-level BPE starts from the 256 byte values, so it can encode *any* string with no unknown
token; training then merges the most frequent adjacent pairs until the vocabulary is full.  A
Chinese character is 3 UTF-8 bytes, and with a vocabulary of 6400 the frequent characters (and some
frequent pairs such as 春风) become single tokens, the rare ones stay as 2–3 byte tokens.  The
``ByteLevel`` pre-tokenizer first maps each byte to a printable stand-in character (that is why
vocab entries look like "æĺ¥"), and its decoder maps them back.  ``save_tokenizer`` writes the
Hugging Face folder that ``AutoTokenizer.from_pretrained`` loads, in MiniMind's layout.
Lesson: notebooks/09_tokenizer.ipynb.  Check: ``python -m workbook check 09``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# The order fixes the ids: <|endoftext|>=0 (pad, unk), <|im_start|>=1 (bos), <|im_end|>=2 (eos).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML: every message is <|im_start|>{role}\n{content}<|im_end|>\n
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# Provided: stream the "text" of every line of a .jsonl / .jsonl.gz file (file:line on bad input).
from workbook.data.packed import iter_jsonl_texts as iter_texts  # noqa: F401


def train_tokenizer(texts: Iterable[str], vocab_size: int = 6400) -> Tokenizer:
    """Train a byte-level BPE tokenizer on `texts`.

    Args:
        texts: the training documents (any iterable of str; it is consumed once).
        vocab_size: final size = 3 special tokens + 256 byte tokens + learned merges.
    Returns: a ``tokenizers.Tokenizer`` with ids 0, 1, 2 = <|endoftext|>, <|im_start|>, <|im_end|>,
        a ByteLevel(add_prefix_space=False) pre-tokenizer and decoder, and no post-processor (no
        automatic bos/eos: the datasets add them where they are wanted).
    """
    # TODO(learner):
    #   1. a tokenizers.Tokenizer around an empty models.BPE()
    #   2. pre_tokenizer: pre_tokenizers.ByteLevel with add_prefix_space=False (text → bytes → the
    #      256 printable stand-ins, split by GPT-2's regex); decoder: decoders.ByteLevel() (back)
    #   3. a trainers.BpeTrainer with vocab_size, special_tokens=SPECIAL_TOKENS (they get ids 0, 1,
    #      2 in this order), initial_alphabet=pre_tokenizers.ByteLevel.alphabet() (all 256 bytes,
    #      even the ones the corpus never uses), show_progress=False
    #   4. tokenizer.train_from_iterator(texts, trainer=...) and return the tokenizer
    #   No post-processor: the datasets add bos/eos themselves.
    raise NotImplementedError(
        "TODO(09 tokenizer): 在 workbook/data/tokenizer.py 里写 train_tokenizer，"
        "见 notebooks/09_tokenizer.ipynb")


def save_tokenizer(tokenizer: Tokenizer, out_dir: str | Path,
                   model_max_length: int = 32768) -> Path:
    """Write a Hugging Face tokenizer folder: tokenizer.json + tokenizer_config.json.

    ``transformers.AutoTokenizer.from_pretrained(out_dir)`` then gives a fast tokenizer with
    bos <|im_start|>, eos <|im_end|>, pad and unk <|endoftext|>, and the ChatML chat template.
    ``model_max_length`` is only a default for truncation warnings (MiniMind's RoPE table: 32768).
    Returns the folder.  Given: it only writes files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        # the datasets add bos/eos themselves; encoding must not add them a second time
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": tok, "special": True, "lstrip": False, "rstrip": False,
                     "normalized": False, "single_word": False}
            for i, tok in enumerate(SPECIAL_TOKENS)
        },
    }
    with open(out_dir / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return out_dir
