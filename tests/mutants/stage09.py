"""Wrong tokenizer trainings a learner really writes, and what the check must say about each."""
from types import SimpleNamespace

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from workbook import _modes

_ref = _modes.reference_module("data.tokenizer")
SPECIALS = _ref.SPECIAL_TOKENS


def _trainer_impl(*, specials=SPECIALS, alphabet=True, decoder="bytelevel", prefix_space=False,
                  pre="bytelevel", post=False, fixed_vocab=None, add_specials_after=False,
                  min_frequency=0):
    """A train_tokenizer built from the parts a learner can get wrong."""

    def train_tokenizer(texts, vocab_size=6400):
        tok = Tokenizer(models.BPE())
        if pre == "bytelevel":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        elif pre == "whitespace":
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
        if decoder == "bytelevel":
            tok.decoder = decoders.ByteLevel()
        elif decoder == "bpe":
            tok.decoder = decoders.BPEDecoder()
        kwargs = dict(vocab_size=fixed_vocab or vocab_size, show_progress=False,
                      min_frequency=min_frequency)
        if not add_specials_after:
            kwargs["special_tokens"] = list(specials)
        if alphabet:
            kwargs["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
        tok.train_from_iterator(texts, trainer=trainers.BpeTrainer(**kwargs))
        if add_specials_after:
            tok.add_special_tokens(list(specials))
        if post:
            tok.post_processor = processors.TemplateProcessing(
                single="<|im_start|> $A <|im_end|>",
                special_tokens=[("<|im_start|>", 1), ("<|im_end|>", 2)])
        return tok

    return SimpleNamespace(train_tokenizer=train_tokenizer, save_tokenizer=_ref.save_tokenizer,
                           iter_texts=_ref.iter_texts, SPECIAL_TOKENS=SPECIALS,
                           CHAT_TEMPLATE=_ref.CHAT_TEMPLATE)


MUTANTS = {
    # bos/eos first, pad last: a natural-looking order
    "specials_wrong_order": (_trainer_impl(specials=["<|im_start|>", "<|im_end|>", "<|endoftext|>"]),
                             "特殊 token 的顺序不对"),
    # special tokens added after training: they land at the end of the vocabulary
    "specials_added_after_training": (_trainer_impl(add_specials_after=True), "训练完才用 add_special_tokens"),
    # no initial_alphabet: bytes the corpus never uses cannot be encoded
    "no_initial_alphabet": (_trainer_impl(alphabet=False), "initial_alphabet"),
    # decoder forgotten: decode returns the byte stand-ins
    "no_decoder": (_trainer_impl(decoder=None), "没有设 decoder"),
    # a decoder that does not undo the byte mapping
    "bpe_decoder": (_trainer_impl(decoder="bpe"), "decoders.ByteLevel()"),
    # GPT-2's default add_prefix_space=True
    "add_prefix_space": (_trainer_impl(prefix_space=True), "add_prefix_space=False"),
    # a post-processor that adds bos/eos on every encode
    "auto_bos_eos": (_trainer_impl(post=True), "post_processor"),
    # vocab_size ignored
    "vocab_hardcoded": (_trainer_impl(fixed_vocab=6400), "写死了 6400"),
    # a Whitespace pre-tokenizer instead of ByteLevel
    "whitespace_pre_tokenizer": (_trainer_impl(pre="whitespace"), "pre_tokenizers.ByteLevel(add_prefix_space=False)"),
    # an extra trainer setting changes the merges
    "min_frequency": (_trainer_impl(min_frequency=1000), "min_frequency"),
}
