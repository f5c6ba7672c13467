"""Wrong cleaning and deduplication code a learner really writes, and what the check must say about
each.

Each mutant is a fresh copy of the reference module with one function replaced, so the functions
that call it (drop_reason calls char_kind, near_duplicate_clusters calls jaccard) use the wrong piece.
"""
import hashlib
import importlib.util
import itertools
import re
import unicodedata

import numpy as np

from workbook import _modes

_ref = _modes.reference_module("data.clean")
_count = itertools.count()
_TABLE = str.maketrans(_ref.PUNCT_VARIANTS)


def _variant(**functions):
    spec = importlib.util.spec_from_file_location(f"_clean_mutant_{next(_count)}", _ref.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, value in functions.items():
        setattr(mod, name, value)
    return mod


# ---- normalize

def _normalize(order="right", nfkc=True, table=True, ellipsis=True, config="t2s"):
    import opencc

    cc = opencc.OpenCC(config)

    def tab(s):
        if ellipsis:
            s = s.replace("...", "…")
        return s.translate(_TABLE) if table else s

    def normalize(text):
        if order == "table_first":
            text = tab(text)
            return cc.convert(unicodedata.normalize("NFKC", text))
        if nfkc:
            text = unicodedata.normalize("NFKC", text)
        text = tab(text)
        return cc.convert(text) if config else text
    return normalize


def _no_t2s(text):
    return unicodedata.normalize("NFKC", text).replace("...", "…").translate(_TABLE)


# ---- strip_notes

def _strip(note=r"（[^（）]*）", loop=True, footnotes=True, supplied="keep", drop_empty=True):
    def strip_notes(text):
        while True:
            t = re.sub(note, "", text, flags=re.S)
            if t == text or not loop:
                text = t
                break
            text = t
        if footnotes:
            text = re.sub(r"〖[0-9一二三四五六七八九十○]*〗|\[[0-9一二三四五六七八九十]+\]", "", text)
        text = re.sub(r"\[([^\[\]]+)\]", r"\1" if supplied == "keep" else "", text)
        lines = [ln.strip() for ln in text.split("\n")]
        return "\n".join(ln for ln in lines if (_ref.HAN_RE.search(ln) if drop_empty else ln))
    return strip_notes


# ---- char_kind

def _kind(lo_is_han=False, bmp_only=False, private_mojibake=True):
    def char_kind(ch):
        if bmp_only and ord(ch) > 0xFFFF:
            return "wrong_script"
        if lo_is_han and unicodedata.category(ch) == "Lo":
            return None
        if not private_mojibake and unicodedata.category(ch) == "Co":
            return "broken_form"
        return _ref.char_kind(ch)
    return char_kind


# ---- drop_reason

def _drop(count_all=False, inclusive=False, any_run=False, pair_totals=False, short_first=False,
          body_only=False, reject_name_space=False):
    HAN_RE = _ref.HAN_RE

    def drop_reason(title, author, body):
        if not title or not author or not body:
            return "empty"
        names = "" if body_only else (title + author if reject_name_space else title.replace(" ", "") + author.replace(" ", ""))
        n = len(body) if count_all else len(HAN_RE.findall(body))
        short = n <= _ref.MIN_HAN if inclusive else n < _ref.MIN_HAN
        if short_first and short:
            return "too_short"
        kinds = {_ref.char_kind(ch) for ch in names + body}
        for reason in ("lost_char", "mojibake", "wrong_script"):
            if reason in kinds:
                return reason
        if short:
            return "too_short"
        run = r"(.)\1{3,}" if any_run else r"([%s])\1{3,}" % _ref.HAN
        if re.search(run, body):
            return "repetition"
        if "broken_form" in kinds:
            return "broken_form"
        for left, right in _ref.PAIRS:
            if pair_totals:
                if body.count(left) != body.count(right):
                    return "broken_form"
                continue
            depth = 0
            for ch in body:
                depth += (ch == left) - (ch == right)
                if depth < 0:
                    return "broken_form"
            if depth:
                return "broken_form"
        return None
    return drop_reason


# ---- minhash

def _sig(reduce="min", endian="little", fmix=True, wrap=True, empty=2 ** 32 - 1):
    def minhash_signature(shingle_set, permutations):
        a, b = permutations[0], permutations[1]
        if not shingle_set:
            return np.full(a.shape[0], empty, dtype=np.uint32)
        raw = np.array([int.from_bytes(hashlib.sha1(s.encode()).digest()[:4], endian) for s in shingle_set],
                       dtype=np.uint32)
        h = _ref.fmix32(raw) if fmix else raw
        if wrap:
            phv = h[:, None] * a[None, :] + b[None, :]
        else:
            phv = h.astype(np.uint64)[:, None] * a.astype(np.uint64)[None, :] + b.astype(np.uint64)[None, :]
        return phv.max(axis=0) if reduce == "max" else phv.min(axis=0)
    return minhash_signature


# ---- lsh_candidates

def _lsh(strided=False, mode="or", ordered=True, star=False, last_band=True):
    def lsh_candidates(signatures, bands, rows):
        per_band = []
        for t in range(bands if last_band else bands - 1):
            cols = list(range(t, bands * rows, bands))[:rows] if strided else list(range(t * rows, (t + 1) * rows))
            buckets = {}
            for i in range(signatures.shape[0]):
                buckets.setdefault(signatures[i, cols].tobytes(), []).append(i)
            pairs = set()
            for m in buckets.values():
                if star:
                    pairs |= {(m[0], j) for j in m[1:]}
                else:
                    pairs |= {(x, y) if ordered else (y, x) for x, y in itertools.combinations(m, 2)}
            per_band.append(pairs)
        if mode == "and":
            return set.intersection(*per_band)
        return set().union(*per_band)
    return lsh_candidates


# ---- clusters

def _clusters(transitive=True, strict=False, verify=True, largest_root=False):
    def near_duplicate_clusters(shingle_sets, candidates, threshold):
        n = len(shingle_sets)
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                x = parent[x]
            return x

        for i, j in sorted(candidates):
            s = _ref.jaccard(shingle_sets[i], shingle_sets[j])
            if verify and (s <= threshold if strict else s < threshold):
                continue
            if not transitive:
                parent[j] = i  # each pair linked directly: chains are not followed
                continue
            ri, rj = find(i), find(j)
            if ri != rj:
                if largest_root:
                    parent[min(ri, rj)] = max(ri, rj)
                else:
                    parent[max(ri, rj)] = min(ri, rj)
        if not transitive:
            return parent
        return [find(i) for i in range(n)]
    return near_duplicate_clusters


def _jaccard_divides(a, b):
    return len(a & b) / len(a | b)


def _ngrams_whole_short(key, n):
    return {key[i:i + n] for i in range(len(key) - n + 1)} or ({key} if key else set())


def _contaminated_first_eval(train_keys, eval_keys, n):
    seen = _ref.ngrams(eval_keys[0], n) if eval_keys else set()
    return [i for i, k in enumerate(train_keys) if not _ref.ngrams(k, n).isdisjoint(seen)]


def _contaminated_short_whole(train_keys, eval_keys, n):
    seen = set().union(*(_ngrams_whole_short(k, n) for k in eval_keys))
    return [i for i, k in enumerate(train_keys) if not _ngrams_whole_short(k, n).isdisjoint(seen)]


MUTANTS = {
    # normalize
    "punct_table_before_nfkc": (_variant(normalize=_normalize(order="table_first")), "标点表用在了 NFKC **之前**"),
    "no_nfkc": (_variant(normalize=_normalize(nfkc=False)), "没有做 NFKC"),
    "no_punct_table": (_variant(normalize=_normalize(table=False, ellipsis=False)), "没有用 PUNCT_VARIANTS"),
    "ellipsis_not_restored": (_variant(normalize=_normalize(ellipsis=False)), "没有把“...”换回“…”"),
    "no_t2s": (_variant(normalize=_no_t2s), "没有繁转简"),
    "s2t_config": (_variant(normalize=_normalize(config="s2t")), "\"s2t\" 是简转繁"),
    # strip_notes
    "greedy_note_regex": (_variant(strip_notes=_strip(note=r"（.*）")), "贪婪"),
    "notes_removed_once": (_variant(strip_notes=_strip(loop=False)), "嵌套的注"),
    "supplied_char_dropped": (_variant(strip_notes=_strip(supplied="drop")), "**保留**里面的字"),
    "footnotes_kept": (_variant(strip_notes=_strip(footnotes=False)), "脚注号"),
    "punctuation_lines_kept": (_variant(strip_notes=_strip(drop_empty=False)), "没有汉字的行"),
    # char_kind
    "kana_counted_as_han": (_variant(char_kind=_kind(lo_is_han=True)), "假名 (kana) 的类别也是 Lo"),
    "han_bmp_only": (_variant(char_kind=_kind(bmp_only=True)), "扩展 B 区"),
    "private_use_not_mojibake": (_variant(char_kind=_kind(private_mojibake=False)), "私用区字符"),
    # drop_reason
    "too_short_counts_punctuation": (_variant(drop_reason=_drop(count_all=True)), "标点和换行不算字数"),
    "too_short_inclusive": (_variant(drop_reason=_drop(inclusive=True)), "不是 <="),
    "ellipsis_is_repetition": (_variant(drop_reason=_drop(any_run=True)), "“……”是省略号"),
    "pairs_counted_not_ordered": (_variant(drop_reason=_drop(pair_totals=True)), "右引号出现在左引号之前"),
    "too_short_before_lost_char": (_variant(drop_reason=_drop(short_first=True)), "规则有先后"),
    "title_and_author_not_checked": (_variant(drop_reason=_drop(body_only=True)), "题目里的缺字也算"),
    "space_in_title_rejected": (_variant(drop_reason=_drop(reject_name_space=True)), "题目和作者里的空格是允许的"),
    # keys and shingles
    "dedup_key_keeps_punctuation": (_variant(dedup_key=lambda body: body.replace(" ", "")), "dedup_key 只保留汉字"),
    "last_shingle_missing": (_variant(shingles=lambda key, k=3: {key[i:i + k] for i in range(len(key) - k)}
                                      if len(key) >= k else ({key} if key else set())), "少了最后一片"),
    # minhash
    "signature_max": (_variant(minhash_signature=_sig(reduce="max")), "最小值"),
    "sha1_big_endian": (_variant(minhash_signature=_sig(endian="big")), "小端"),
    "no_fmix32": (_variant(minhash_signature=_sig(fmix=False)), "少了 fmix32"),
    "no_wrap_around": (_variant(minhash_signature=_sig(wrap=False)), "没有在 2^32 处回绕"),
    "empty_signature_zero": (_variant(minhash_signature=_sig(empty=0)), "空集合的签名"),
    # lsh
    "strided_bands": (_variant(lsh_candidates=_lsh(strided=True)), "间隔的列"),
    "all_bands_must_match": (_variant(lsh_candidates=_lsh(mode="and")), "不是所有 band 都相同"),
    "pairs_not_ordered": (_variant(lsh_candidates=_lsh(ordered=False)), "i < j"),
    "bucket_paired_with_first_only": (_variant(lsh_candidates=_lsh(star=True)), "三对都是候选"),
    "last_band_skipped": (_variant(lsh_candidates=_lsh(last_band=False)), "最后一个 band 漏掉了"),
    # jaccard and clusters
    "jaccard_divides_by_zero": (_variant(jaccard=_jaccard_divides), "ZeroDivisionError"),
    "clusters_not_transitive": (_variant(near_duplicate_clusters=_clusters(transitive=False)), "簇要传递"),
    "threshold_strict": (_variant(near_duplicate_clusters=_clusters(strict=True)), ">= threshold，不是 >"),
    "candidates_not_verified": (_variant(near_duplicate_clusters=_clusters(verify=False)), "真实的 jaccard"),
    "largest_index_root": (_variant(near_duplicate_clusters=_clusters(largest_root=True)), "**最小**的下标"),
    # decontamination
    "short_key_is_its_own_ngram": (_variant(ngrams=_ngrams_whole_short), "比 n 短的键没有 n-gram"),
    "only_first_eval_key": (_variant(contaminated=_contaminated_first_eval), "**每一个** eval 键"),
    "short_keys_contaminate": (_variant(contaminated=_contaminated_short_whole), "比 n 短的键"),
}
