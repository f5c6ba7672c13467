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
_NONHAN_RE = re.compile(f"[^{HAN}]+")
_NOTE_RE = re.compile(r"（[^（）]*）")  # an innermost note, may span lines
_FOOTNOTE_RE = re.compile(r"〖[0-9一二三四五六七八九十○]*〗|\[[0-9一二三四五六七八九十]+\]")
_SUPPLIED_RE = re.compile(r"\[([^\[\]]+)\]")  # [X]: a character the editor restored; keep X
_RUN_RE = re.compile(r"([%s])\1{%d,}" % (HAN, MAX_RUN - 1))  # Han characters only
_OUTSIDE_RE = re.compile(f"[^{HAN}{PUNCT}\n]")  # any character a clean poem may not contain

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
    text = unicodedata.normalize("NFKC", text)
    # after NFKC: "..." back to "…", ASCII punctuation back to the Chinese form, "・" to "·"
    text = text.replace("...", "…")
    text = text.translate(_PUNCT_TABLE)  # str.maketrans(PUNCT_VARIANTS): one pass, fast
    return _t2s().convert(text)


def strip_notes(text: str) -> str:
    """Remove the editors' notes from normalised text; keep everything else as it is.

    - ``（…）`` notes (variant readings, "下缺"), innermost first until none is left, so nested
      notes and notes across lines go too;
    - footnote marks ``〖1〗``, ``〖一〗``, ``[1]``, ``[一]``;
    - ``[X]`` (a character the editor supplied) becomes ``X``;
    - then lines with no Han character left (a lone "。") are removed; other lines are stripped
      of surrounding spaces.
    """
    while True:
        # innermost first: "（甲（乙）丙）" -> "（甲丙）" -> ""
        shorter = _NOTE_RE.sub("", text)
        if shorter == text:
            break
        text = shorter
    text = _SUPPLIED_RE.sub(r"\1", _FOOTNOTE_RE.sub("", text))
    lines = (line.strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if HAN_RE.search(line))


def char_kind(ch: str) -> str | None:
    """The rule one character breaks, or None if it may stand in a clean poem (Han, PUNCT, "\n").

    - "lost_char":    a mark of LOST_MARKS, "{" (a described glyph "{𥫗/戢}"), U+2FF0-U+2FFF (⿰ …)
    - "mojibake":     U+FFFD, unicodedata category Co (private use), Cc (control), Cs (surrogate),
                      box drawing U+2500-U+257F, CJK radicals U+2E80-U+2EFF
    - "wrong_script": any other letter or digit (category L* or N*): kana, Latin, Cyrillic, "1"
    - "broken_form":  anything else ("/", "=", "|", a stray "[" or "（")
    """
    if HAN_RE.match(ch) or ch in PUNCT or ch == "\n":
        return None
    o = ord(ch)
    if ch in LOST_MARKS or ch == "{" or 0x2FF0 <= o <= 0x2FFF:  # also {𥫗/戢}, ⿰…: a glyph described
        return "lost_char"
    cat = unicodedata.category(ch)
    if ch == "\ufffd" or cat in ("Co", "Cc", "Cs") or 0x2500 <= o <= 0x257F or 0x2E80 <= o <= 0x2EFF:
        return "mojibake"  # replacement char, private use, controls, box drawing, radicals
    if cat[0] in "LN":
        return "wrong_script"  # kana, bopomofo, Latin, Cyrillic, Greek, digits
    return "broken_form"  # any other symbol: "/", "=", "|", a stray ASCII bracket


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
    if not title or not author or not body:
        return "empty"
    # only the characters outside Han + PUNCT + "\n" need a closer look (fast on clean text)
    outside = _OUTSIDE_RE.findall(title.replace(" ", "") + author.replace(" ", "") + body)
    kinds = {char_kind(ch) for ch in outside}
    for reason in ("lost_char", "mojibake", "wrong_script"):
        if reason in kinds:
            return reason
    if len(HAN_RE.findall(body)) < MIN_HAN:
        return "too_short"
    if _RUN_RE.search(body):
        return "repetition"
    if "broken_form" in kinds:
        return "broken_form"
    for left, right in PAIRS:
        depth = 0
        for ch in body:
            depth += (ch == left) - (ch == right)
            if depth < 0:
                return "broken_form"
        if depth:
            return "broken_form"
    return None


def dedup_key(body: str) -> str:
    """What "the same poem" means here: the body's Han characters only, in order.

    Punctuation, line breaks, title and author do not count, so one poem filed twice (under two
    titles, two poets, or punctuated differently) has one key.
    """
    return _NONHAN_RE.sub("", body)


def shingles(key: str, k: int = 3) -> set[str]:
    """The set of character k-grams (shingles) of a dedup key: key[i:i+k] for every i.

    A key shorter than k is one shingle, itself; "" has none.
    """
    if len(key) < k:
        return {key} if key else set()
    return {key[i:i + k] for i in range(len(key) - k + 1)}


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
    a, b = permutations[0].astype(np.uint32), permutations[1].astype(np.uint32)
    if not shingle_set:
        return np.full(a.shape[0], MAX_HASH, dtype=np.uint32)
    # datasketch's sha1_hash32: the first 4 bytes of SHA-1, read as a little-endian uint32
    raw = [int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little") for s in shingle_set]
    h = fmix32(np.array(raw, dtype=np.uint32))  # (S,)
    # (S, 1) * (num_perm,) + (num_perm,): uint32 arithmetic wraps, which is the "mod 2^32"
    phv = h[:, None] * a[None, :] + b[None, :]  # (S, num_perm)
    return phv.min(axis=0)


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Candidate pairs by LSH banding: (i, j), i < j, whose signatures agree on every value of at
    least one band.

    signatures: (N, num_perm) uint32, one row per record; bands * rows <= num_perm.
    Band t is the columns [t·rows, (t+1)·rows) (as datasketch's MinHashLSH(params=(bands, rows))).
    Two sets with Jaccard s become candidates with probability 1 − (1 − s^rows)^bands.
    """
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"bands * rows = {bands * rows} > num_perm = {signatures.shape[1]}")
    pairs: set[tuple[int, int]] = set()
    width = rows * signatures.dtype.itemsize
    for t in range(bands):
        buckets: dict[bytes, list[int]] = {}
        # the band's values of record i, as one bytes key: buf[i·width : (i+1)·width]
        buf = np.ascontiguousarray(signatures[:, t * rows:(t + 1) * rows]).tobytes()
        for i in range(signatures.shape[0]):
            buckets.setdefault(buf[i * width:(i + 1) * width], []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def near_duplicate_clusters(shingle_sets: list[set[str]], candidates: set[tuple[int, int]],
                            threshold: float) -> list[int]:
    """Group records into clusters of near-duplicates; return root[i], the smallest index of i's cluster.

    A candidate pair (i, j) is a true near-duplicate when jaccard(shingle_sets[i],
    shingle_sets[j]) >= threshold (LSH only proposes; the exact Jaccard decides).  Clusters are
    the connected components of the true pairs (union-find): if a~b and b~c, all three are one
    cluster even when a and c are not similar.  A record in no pair is its own root.
    """
    parent = list(range(len(shingle_sets)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for i, j in candidates:
        if jaccard(shingle_sets[i], shingle_sets[j]) >= threshold:
            ri, rj = find(i), find(j)
            if ri != rj:
                # the smaller index becomes the root: the first record of a cluster is kept
                parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(len(parent))]


def ngrams(key: str, n: int) -> set[str]:
    """The set of character n-grams of a dedup key (Han characters only); shorter than n: none."""
    return {key[i:i + n] for i in range(len(key) - n + 1)}


def contaminated(train_keys: list[str], eval_keys: list[str], n: int) -> list[int]:
    """Indices (ascending) of the training keys that share at least one n-gram with any eval key.

    Both sides are dedup keys (Han only), so punctuation and line breaks never hide an overlap.
    """
    seen: set[str] = set()
    for key in eval_keys:
        seen |= ngrams(key, n)
    return [i for i, key in enumerate(train_keys) if not ngrams(key, n).isdisjoint(seen)]
