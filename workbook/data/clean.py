"""Cleaning and deduplication: from raw poems to a corpus a model should learn from (stage 18).

The poems of the npm package ``chinese-poetry`` are Traditional Chinese with the editors' notes
inside the text (``（一作「东风」）``), characters lost from the source (``□``), mojibake, and the
same poem several times, under other titles or other poets.  A corpus is made in four steps:

1. **normalise** each field (Unicode NFKC, one form per punctuation mark, Traditional → Simplified
   with OpenCC) and **strip the editorial notes**;
2. **filter**: each rule returns the *reason* a record is dropped, so a funnel can say what went where;
3. **deduplicate**: exactly (the same characters, whatever the title, author or punctuation), then
   nearly, with **MinHash + LSH** over character shingles, equal to ``datasketch`` on the same
   permutations;
4. **decontaminate**: no training text shares an n-gram with anything we evaluate on.

Lesson: notebooks/18_clean_dedup.ipynb.  Check: ``python -m workbook check 18``.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import numpy as np

# CJK ideographs: URO, Ext A, compatibility, and the supplementary planes (Ext B and later).
HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
# The punctuation a clean poem may contain, besides "\n" (and a space in titles and authors).
PUNCT = "，。、：；？！「」『』〈〉《》…·—“”‘’"
# NFKC turns full-width punctuation into ASCII ("，" -> ",", "…" -> "..."): map it back to the
# Chinese form ("..." first, then one character at a time).
PUNCT_VARIANTS = {",": "，", ":": "：", ";": "；", "?": "？", "!": "！", "(": "（", ")": "）", "・": "·"}
_PUNCT_TABLE = str.maketrans(PUNCT_VARIANTS)
LOST_MARKS = "□○●■"  # how the editions mark a lost character
MIN_HAN = 10  # fewer Han characters in the body: a fragment, too short
MAX_RUN = 4  # this many equal characters in a row: degenerate repetition
REASONS = ("empty", "lost_char", "mojibake", "wrong_script", "too_short", "repetition", "broken_form")
PAIRS = ("（）", "「」", "『』", "《》", "〈〉", "“”", "‘’")

HAN_RE = re.compile(f"[{HAN}]")  # one Han character (provided)

MAX_HASH = np.uint32(2 ** 32 - 1)  # the empty signature, as datasketch's affine32 scheme


@lru_cache(maxsize=1)
def _t2s():
    import opencc  # the library, not a table of our own

    return opencc.OpenCC("t2s")


def normalize(text: str) -> str:
    """One spelling per character: NFKC, then PUNCT_VARIANTS, then Traditional -> Simplified.

        normalize("床前明月光，疑是地上霜（一作「霜」）") keeps its form, and
        normalize("Ｈ，於是") == "H，于是"  (full-width -> ASCII, "," -> "，", 於 -> 于)

    The order matters: NFKC itself turns "，" into "," and "…" into "..."; the table must come
    after it, and "..." becomes "…" again before the one-character replacements.
    OpenCC config "t2s" (``opencc.OpenCC("t2s").convert``).
    """
    # TODO(learner):
    #   1. text = unicodedata.normalize("NFKC", text): full-width letters and digits become ASCII,
    #      compatibility ideographs become the unified ones — and "，" becomes ",", "…" becomes "..."
    #   2. AFTER NFKC (before it, NFKC would undo your work): text.replace("...", "…"), then each
    #      character through PUNCT_VARIANTS (text.translate(str.maketrans(PUNCT_VARIANTS)) is fast)
    #   3. Traditional -> Simplified with the library: return _t2s().convert(text)  (config "t2s";
    #      not "s2t", not a table of your own)
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 normalize，见 notebooks/18_clean_dedup.ipynb")


def strip_notes(text: str) -> str:
    """Remove the editors' notes from normalised text; keep everything else as it is.

    - ``（…）`` notes (variant readings, "下缺"), innermost first until none is left, so nested
      notes and notes across lines go too;
    - footnote marks ``〖1〗``, ``〖一〗``, ``[1]``, ``[一]``;
    - ``[X]`` (a character the editor supplied) becomes ``X``;
    - then lines with no Han character left (a lone "。") are removed; other lines are stripped
      of surrounding spaces.
    """
    # TODO(learner):
    #   1. notes: re.sub(r"（[^（）]*）", "", text) removes the INNERMOST notes; repeat until nothing
    #      changes (a note inside a note; [^（）] also matches "\n", so a note may span lines).
    #      A greedy "（.*）" would eat the poem between two notes
    #   2. footnote marks: 〖 〗 around digits / 一二三…十 / ○ (also empty 〖〗), and [ ] around digits
    #      or 一…十 go entirely
    #   3. any other [X]: keep X, drop the brackets (re.sub(r"\[([^\[\]]+)\]", r"\1", text)):
    #      the editor restored a character; do step 2 first or [一] would become 一
    #   4. split on "\n", strip each line, keep the lines that still have a Han character
    #      (HAN_RE.search), join with "\n"
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 strip_notes，见 notebooks/18_clean_dedup.ipynb")


def char_kind(ch: str) -> str | None:
    """The rule one character breaks, or None if it may stand in a clean poem (Han, PUNCT, "\n").

    - "lost_char":    a mark of LOST_MARKS, "{" (a described glyph "{𥫗/戢}"), U+2FF0-U+2FFF (⿰ …)
    - "mojibake":     U+FFFD, unicodedata category Co (private use), Cc (control), Cs (surrogate),
                      box drawing U+2500-U+257F, CJK radicals U+2E80-U+2EFF
    - "wrong_script": any other letter or digit (category L* or N*): kana, Latin, Cyrillic, "1"
    - "broken_form":  anything else ("/", "=", "|", a stray "[" or "（")
    """
    # TODO(learner):
    #   1. Han (HAN_RE.match(ch)), a PUNCT character or "\n": None
    #   2. then the kinds in the order of the docstring: lost_char, mojibake, wrong_script,
    #      broken_form; unicodedata.category(ch) gives "Co", "Cc", "Lo", "Nd" …
    #      (careful: many kana and Han are both "Lo": test Han first, in step 1)
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 char_kind，见 notebooks/18_clean_dedup.ipynb")


def drop_reason(title: str, author: str, body: str) -> str | None:
    """Why a cleaned record must go, or None to keep it.  The FIRST rule that applies, in order:

    1. "empty":        title, author or body is "" (after the notes were stripped)
    2. "lost_char":    any field has a lost-character mark (LOST_MARKS), "{" or an ideographic
                       description character (U+2FF0-U+2FFF)
    3. "mojibake":     U+FFFD, a private-use, control or box-drawing character, a CJK radical
    4. "wrong_script": a letter or digit that is not Han (kana, Latin, Cyrillic, "1")
    5. "too_short":    the body has fewer than MIN_HAN Han characters (punctuation does not count)
    6. "repetition":   MAX_RUN equal Han characters in a row in the body ("啊啊啊啊"; "……" is fine)
    7. "broken_form":  any other character outside Han + PUNCT + "\\n" (a space is allowed in
                       title and author only), or an unbalanced pair of PAIRS in the body
    Rules 2-4 and 7 read every character of the three fields; 5 and 6 only the body.
    """
    # TODO(learner):
    #   1. "empty" if any of the three is ""
    #   2. kinds = {char_kind(ch) for every character of title, author (spaces removed) and body};
    #      return the first of "lost_char", "mojibake", "wrong_script" found
    #   3. "too_short": count the Han characters of the body only (HAN_RE.findall), not len(body)
    #   4. "repetition": a Han character MAX_RUN times in a row (re: r"([HAN])\1{3,}"); "……" is fine
    #   5. "broken_form": "broken_form" in kinds, or for a pair (left, right) of PAIRS the running
    #      count left − right goes below 0 or does not end at 0 (a note left open "（一作")
    #   6. otherwise None
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 drop_reason，见 notebooks/18_clean_dedup.ipynb")


def dedup_key(body: str) -> str:
    """What "the same poem" means here: the body's Han characters only, in order.

    Punctuation, line breaks, title and author do not count, so one poem filed twice (under two
    titles, two poets, or punctuated differently) has one key.
    """
    # TODO(learner):
    #   keep only the Han characters: re.sub(f"[^{HAN}]+", "", body) (or "".join(HAN_RE.findall(body)))
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 dedup_key，见 notebooks/18_clean_dedup.ipynb")


def shingles(key: str, k: int = 3) -> set[str]:
    """The set of character k-grams (shingles) of a dedup key: key[i:i+k] for every i.

    A key shorter than k is one shingle, itself; "" has none.
    """
    # TODO(learner):
    #   1. len(key) < k: {key} if key else set()
    #   2. otherwise {key[i:i + k] for i in range(len(key) - k + 1)}: overlapping windows, the last
    #      one included (range(len(key) - k) would miss it)
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 shingles，见 notebooks/18_clean_dedup.ipynb")


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, element-wise on uint32 (provided; datasketch mixes with it)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def make_permutations(num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """(2, num_perm) uint32: the a (odd) and b of h -> a·h + b mod 2^32, drawn exactly as
    ``datasketch.MinHash(num_perm, seed)`` draws them (scheme "affine32"; provided)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


def minhash_signature(shingle_set: set[str], permutations: np.ndarray) -> np.ndarray:
    """The MinHash signature of a set of shingles: (num_perm,) uint32, equal to datasketch's
    ``MinHash(num_perm, seed)`` (its permutations are make_permutations(num_perm, seed)) updated
    with every ``s.encode("utf-8")``.

    Each shingle s is hashed h(s) = fmix32(first 4 bytes of SHA-1(UTF-8 of s), little-endian);
    permutation j maps it to a_j·h + b_j mod 2^32; the signature keeps the minimum per j:

        sig[j] = min over s of (a_j · h(s) + b_j) mod 2^32          (the empty set: 2^32 − 1)

    Two sets agree on sig[j] with probability equal to their Jaccard similarity.
    """
    # TODO(learner):
    #   1. a, b = permutations[0], permutations[1] (uint32); an empty set -> np.full(num_perm, MAX_HASH,
    #      dtype=np.uint32)
    #   2. raw hash of each shingle: int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4],
    #      "little") — little-endian, the FIRST 4 bytes; then h = fmix32(np.array(raws, dtype=np.uint32))
    #   3. phv = h[:, None] * a[None, :] + b[None, :]: (S, num_perm); keep everything uint32 so that
    #      the arithmetic wraps mod 2^32 (Python ints or uint64 would not wrap)
    #   4. return phv.min(axis=0): the MINIMUM over the shingles, one value per permutation
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 minhash_signature，见 notebooks/18_clean_dedup.ipynb")


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Candidate pairs by LSH banding: (i, j), i < j, whose signatures agree on every value of at
    least one band.

    signatures: (N, num_perm) uint32, one row per record; bands * rows <= num_perm.
    Band t is the columns [t·rows, (t+1)·rows) (as datasketch's MinHashLSH(params=(bands, rows))).
    Two sets with Jaccard s become candidates with probability 1 − (1 − s^rows)^bands.
    """
    # TODO(learner):
    #   1. for each band t: the columns t*rows … (t+1)*rows - 1 (contiguous, not every bands-th column)
    #   2. bucket the records by their band values (a dict from bytes / tuple to a list of indices)
    #   3. every two records in the same bucket are a candidate (i, j) with i < j; no (i, i)
    #   4. a pair needs ONE equal band, not all of them: collect over the bands into one set
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 lsh_candidates，见 notebooks/18_clean_dedup.ipynb")


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty."""
    # TODO(learner):
    #   len(a & b) / len(a | b); two empty sets: 0.0 (not a ZeroDivisionError)
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 jaccard，见 notebooks/18_clean_dedup.ipynb")


def near_duplicate_clusters(shingle_sets: list[set[str]], candidates: set[tuple[int, int]],
                            threshold: float) -> list[int]:
    """Group records into clusters of near-duplicates; return root[i], the smallest index of i's cluster.

    A candidate pair (i, j) is a true near-duplicate when jaccard(shingle_sets[i],
    shingle_sets[j]) >= threshold (LSH only proposes; the exact Jaccard decides).  Clusters are
    the connected components of the true pairs (union-find): if a~b and b~c, all three are one
    cluster even when a and c are not similar.  A record in no pair is its own root.
    """
    # TODO(learner):
    #   1. parent = list(range(n)); find(x) follows parent until parent[x] == x
    #   2. for each candidate (i, j) whose jaccard(...) >= threshold (>=, not >): join the two roots,
    #      the smaller root becoming the parent of the larger
    #   3. return [find(i) for i in range(n)]: transitive (a~b, b~c -> one cluster), the root is the
    #      smallest index of the cluster
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 near_duplicate_clusters，见 notebooks/18_clean_dedup.ipynb")


def ngrams(key: str, n: int) -> set[str]:
    """The set of character n-grams of a dedup key (Han characters only); shorter than n: none."""
    # TODO(learner):
    #   {key[i:i + n] for i in range(len(key) - n + 1)}: empty when len(key) < n
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 ngrams，见 notebooks/18_clean_dedup.ipynb")


def contaminated(train_keys: list[str], eval_keys: list[str], n: int) -> list[int]:
    """Indices (ascending) of the training keys that share at least one n-gram with any eval key.

    Both sides are dedup keys (Han only), so punctuation and line breaks never hide an overlap.
    """
    # TODO(learner):
    #   1. one set with the n-grams of every eval key
    #   2. the indices i whose ngrams(train_keys[i], n) meet it (set.isdisjoint is fast), ascending
    raise NotImplementedError(
        "TODO(18 clean_dedup): 在 workbook/data/clean.py 里写 contaminated，见 notebooks/18_clean_dedup.ipynb")
