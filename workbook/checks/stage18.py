"""Check for stage 18: cleaning and deduplication (workbook/data/clean.py).

Everything on small hand-made inputs (no corpus, under a second), compared with the reference;
a wrong answer is named by recomputing each known mistake:

1. normalize: NFKC, the punctuation table after NFKC ("…" -> "..." -> "…"), OpenCC "t2s";
   a missing step, the table before NFKC, "s2t" are named.
2. strip_notes: innermost notes until none is left (nested, across lines), not greedy between two
   notes; footnote marks go, [X] keeps X; lines left without a Han character go.
3. char_kind and drop_reason: every kind on its characters; the rule order; Han characters
   (not punctuation) counted for too_short, MIN_HAN itself kept; MAX_RUN equal Han characters,
   "……" allowed; unbalanced pairs; a space only in title and author.
4. dedup_key and shingles: Han only; every window, the last one included; short keys.
5. minhash_signature equals the reference (itself equal to datasketch, tests/test_clean_data.py) on
   the same permutations: min not max, SHA-1's first 4 bytes little-endian, fmix32, uint32
   wrap-around, the empty set.
6. lsh_candidates: contiguous bands, one equal band is enough, pairs (i, j) with i < j.
7. jaccard and near_duplicate_clusters: >= threshold, transitive clusters, the smallest index as root,
   candidates below the threshold not joined.
8. ngrams and contaminated: windows of n, short keys, ascending indices.
"""
from __future__ import annotations

import hashlib
import inspect
import unicodedata

import numpy as np

from .tools import expect, fail

FUNCTIONS = {
    "normalize": "(text)", "strip_notes": "(text)", "char_kind": "(ch)",
    "drop_reason": "(title, author, body)", "dedup_key": "(body)", "shingles": "(key, k=3)",
    "minhash_signature": "(shingle_set, permutations)", "lsh_candidates": "(signatures, bands, rows)",
    "jaccard": "(a, b)", "near_duplicate_clusters": "(shingle_sets, candidates, threshold)",
    "ngrams": "(key, n)", "contaminated": "(train_keys, eval_keys, n)",
}


def _signatures(impl) -> None:
    for name, args in FUNCTIONS.items():
        fn = getattr(impl, name, None)
        expect(callable(fn), f"workbook/data/clean.py 里要有函数 {name}{args}。")
    k = inspect.signature(impl.shingles).parameters.get("k")
    expect(k is not None and k.default == 3,
           "shingles 的参数 k 默认值应该是 3（三个字一片 (3-gram shingle)），漏斗和检查都按这个默认值调用它。")


# ---------------------------------------------------------------- 1. normalize

NORM_CASES = (
    "於是乎，春風又綠江南岸……",  # Traditional, full-width comma, ellipsis
    "Ｈ２　千山鳥飛絕！萬徑人蹤滅？（一作「滅」）：；・",  # full-width letters/digits, space, every table entry
    "床前明月光，疑是地上霜。",  # already clean: unchanged
)


def _normalize_mistakes(ref, text: str) -> list[tuple[str, str]]:
    t2s = ref._t2s().convert

    def table(s: str) -> str:
        return s.replace("...", "…").translate(str.maketrans(ref.PUNCT_VARIANTS))

    nfkc = lambda s: unicodedata.normalize("NFKC", s)  # noqa: E731
    import opencc

    return [
        (t2s(nfkc(table(text))), "NFKC 之后没有用 PUNCT_VARIANTS 把半角标点换回中文标点（你的结果里有“,”“!”“?”“...”）："
                                 "也许根本没换，也许标点表用在了 NFKC **之前**——NFKC 自己会把全角的“，！？：；（）”变回半角 ASCII、"
                                 "把“…”变成“...”，先换再 NFKC 等于没换。顺序是 NFKC → \"...\" 换回 \"…\" → 标点表 → 繁转简。"),
        (t2s(table(text)), "没有做 NFKC (unicodedata.normalize(\"NFKC\", text))：全角字母数字（Ｈ２）、全角空格、兼容汉字都还在，"
                           "同一个字就有两种写法，去重时会被当成不同的字。"),
        (t2s(nfkc(text).translate(str.maketrans(ref.PUNCT_VARIANTS))),
         "NFKC 把“……”变成了“......”（六个半角句点），你没有把“...”换回“…”：在逐字替换之前先 text.replace(\"...\", \"…\")。"),
        (table(nfkc(text)), "没有繁转简：用 OpenCC 库，_t2s().convert(text)（配置 \"t2s\"），不要自己写对照表。"),
        (opencc.OpenCC("s2t").convert(table(nfkc(text))), "OpenCC 的配置用反了：\"s2t\" 是简转繁，要的是 \"t2s\"（繁体 → 简体）。"),
    ]


def _check_normalize(impl, ref) -> None:
    ambiguous = None  # a mistake that fits, where another one fits as well: a later case tells them apart
    for text in NORM_CASES:
        want = ref.normalize(text)
        got = impl.normalize(text)
        expect(isinstance(got, str), f"normalize 应该返回 str，你的返回了 {type(got).__name__}。")
        if got == want:
            continue
        messages = [m for value, m in _normalize_mistakes(ref, text) if got == value]
        detail = f"\n输入 {text!r}：应该是 {want!r}，你的是 {got!r}。"
        if len(messages) == 1:
            fail(messages[0] + detail)
        if messages and ambiguous is None:
            ambiguous = messages[0] + detail
        if not messages:
            fail(f"normalize({text!r}) 应该是 {want!r}，你的是 {got!r}。"
                 f"顺序：NFKC → \"...\" 换回 \"…\" → PUNCT_VARIANTS → OpenCC t2s。")
    if ambiguous:
        fail(ambiguous)


# ---------------------------------------------------------------- 2. strip_notes

NOTE_CASES = (
    ("春风（一作「东风」）细雨湿衣看不见。", "春风细雨湿衣看不见。", "最简单的括号注（一作…）没有删掉。"),
    ("春（一作春）风细（一作和）雨。", "春风细雨。",
     "两个注之间的正文也被删掉了：你的正则像是贪婪的 （.*），从第一个“（”一直匹配到最后一个“）”。"
     "用 （[^（）]*），一次只删一个最里层的注。"),
    ("甲乙（一作（又作丙）丁）戊己。", "甲乙戊己。",
     "嵌套的注（注里还有注）没有删干净：一次 re.sub 只删掉最里层，外层的“（一作丁）”还在。重复 re.sub，直到文本不再变化。"),
    ("明月光，（一作\n白月）\n疑是霜。", "明月光，\n疑是霜。",
     "跨行的注没有删掉（注里有换行）：[^（）] 本来就能匹配 \\n，先在整段文本上删注，再按行处理；"
     "删完以后只剩空白或标点的行要去掉。"),
    ("春风〖1〗细雨〖一〗湿[一]衣[2]。", "春风细雨湿衣。", "脚注号 〖1〗、〖一〗、[一]、[2] 要整个删掉。"),
    ("春风〖〗细雨湿衣。", "春风细雨湿衣。", "空的脚注号 〖〗 要删掉。"),
    ("春[风]细雨湿衣。", "春风细雨湿衣。",
     "[X] 是编者补上的字：去掉方括号、**保留**里面的字（re.sub(r\"\\[([^\\[\\]]+)\\]\", r\"\\1\", text)），不是整个删掉。"),
    ("床前明月光。\n。\n  疑是地上霜。  ", "床前明月光。\n疑是地上霜。",
     "没有汉字的行（只剩“。”）要删掉，其他行去掉首尾空格。"),
)


def _check_strip_notes(impl) -> None:
    for text, want, message in NOTE_CASES:
        got = impl.strip_notes(text)
        expect(isinstance(got, str), f"strip_notes 应该返回 str，你的返回了 {type(got).__name__}。")
        if got != want:
            fail(f"{message}\nstrip_notes({text!r}) 应该是 {want!r}，你的是 {got!r}。")


# ---------------------------------------------------------------- 3. char_kind, drop_reason

KIND_CASES = (
    ("春", None), ("𥫗", None), ("豈", None), ("，", None), ("…", None), ("\n", None), ("「", None),
    ("□", "lost_char"), ("○", "lost_char"), ("{", "lost_char"), ("⿰", "lost_char"),
    ("\ufffd", "mojibake"), ("\ue829", "mojibake"), ("┾", "mojibake"), ("⻊", "mojibake"), ("\x07", "mojibake"),
    ("け", "wrong_script"), ("シ", "wrong_script"), ("ㄋ", "wrong_script"), ("B", "wrong_script"),
    ("Н", "wrong_script"), ("1", "wrong_script"),
    ("/", "broken_form"), ("=", "broken_form"), ("(", "broken_form"), ("[", "broken_form"), ("〖", "broken_form"),
)

_KIND_HINTS = {
    ("𥫗", None): "扩展 B 区 (U+2xxxx) 的汉字也是汉字：用 HAN_RE（它包括补充平面），不要只用 \\u4e00-\\u9fff。",
    ("豈", None): "兼容汉字 (U+F900-U+FAFF) 也算汉字，HAN 里有这一段。",
    ("…", None): "PUNCT 里的标点（包括“…”“「」”）是允许的，返回 None。",
    ("\n", None): "换行 \\n 是允许的（诗的行），返回 None。",
    ("⿰", "lost_char"): "⿰ 这类汉字结构描述符 (ideographic description, U+2FF0-U+2FFF) 表示一个字印不出来、只能描述：算 lost_char。",
    ("{", "lost_char"): "“{”是拆字描述（{𥫗/戢}）的开头：算 lost_char。",
    ("\ue829", "mojibake"): "私用区字符 (private use, 类别 Co) 是乱码：算 mojibake。",
    ("け", "wrong_script"): "假名 (kana) 的类别也是 Lo，和汉字一样：先判断是不是汉字（HAN_RE），其余的字母 (L*) 才是 wrong_script。",
    ("1", "wrong_script"): "数字（类别 N*）也算 wrong_script。",
}


def _check_char_kind(impl) -> None:
    for ch, want in KIND_CASES:
        got = impl.char_kind(ch)
        if got != want:
            hint = _KIND_HINTS.get((ch, want), "")
            fail(f"char_kind({ch!r}) (U+{ord(ch):04X}, {unicodedata.name(ch, '?')}) 应该是 {want!r}，你的是 {got!r}。{hint}")


_OK = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
REASON_CASES = (
    ("静夜思", "李白", _OK, None, "一首干净的诗要保留（返回 None）。"),
    ("", "李白", _OK, "empty", "题目为空要丢弃：\"empty\"。"),
    ("静夜思", "李白", "", "empty", "正文为空要丢弃：\"empty\"。"),
    ("静夜思", "", _OK, "empty", "作者为空要丢弃：\"empty\"。"),
    ("静夜思", "李白", "床前□月光，疑是地上霜。\n举头望明月，低头思故乡。", "lost_char", "正文里的 □ 是缺字：\"lost_char\"。"),
    ("静□思", "李白", _OK, "lost_char", "题目里的缺字也算：规则 2-4 和 7 要看题目、作者、正文三个字段的每个字。"),
    ("静夜思", "李白", "床前□月光，疑是地上霜B。\n举头望明月，低头思故乡。", "lost_char",
     "一首诗同时违反几条规则时，返回**第一条**（按 REASONS 的顺序）：这里 lost_char 在 wrong_script 前面。"),
    ("静夜思", "李白", "床前□光，\ufffd", "lost_char",
     "规则有先后：缺字 (lost_char) 在乱码 (mojibake) 和太短 (too_short) 之前判断。"),
    ("静夜思", "李白", "床前明月光，疑是地上霜。\n举头望明\ufffd，低头思故乡。", "mojibake", "\\ufffd 是乱码：\"mojibake\"。"),
    ("静夜思", "李白", "床前明月光，疑是地上霜。\n举头望明け，低头思故乡。", "wrong_script", "假名是别的文字：\"wrong_script\"。"),
    ("静夜思", "李白2", _OK, "wrong_script", "作者里的数字也算 wrong_script（漏斗先去掉作者末尾的编号，这里没有去）。"),
    ("静夜思", "李白", "床前明月光，疑是地上。", "too_short",
     "正文不到 MIN_HAN = 10 个**汉字**要丢弃（\"too_short\"）：这里 9 个汉字加 2 个标点。标点和换行不算字数：数 HAN_RE.findall(body)。"),
    ("静夜思", "李白", "床前明月光，疑是地上霜。", None,
     "正好 MIN_HAN = 10 个汉字的诗要保留：条件是 < MIN_HAN，不是 <=。"),
    ("静夜思", "李白", "床前明月光，疑是地地地地。\n举头望明月，低头思故乡。", "repetition",
     "同一个汉字连续 MAX_RUN = 4 次是退化的重复 (degenerate repetition)：\"repetition\"。"),
    ("静夜思", "李白", "床前明月光，疑是地地地上。\n举头望明月，低头思故乡。", None,
     "同一个字连续 3 次（少于 MAX_RUN = 4）不算重复：诗里有叠字。"),
    ("静夜思", "李白", "床前明月光…………疑是地上霜。\n举头望明月，低头思故乡。", None,
     "“……”是省略号，不算重复：repetition 只看连续的**汉字**。"),
    ("静夜思", "李白", "床前明月光，疑是地上霜/。\n举头望明月，低头思故乡。", "broken_form", "“/”这种不该出现的符号：\"broken_form\"。"),
    ("静夜思", "李白", "床前明月光（一作，疑是地上霜。\n举头望明月，低头思故乡。", "broken_form",
     "没有闭合的括号（删注时留下的“（一作”）：成对的标点 PAIRS 不配对，\"broken_form\"。"),
    ("静夜思", "李白", "床前明月光」疑是地上霜「\n举头望明月，低头思故乡。", "broken_form",
     "右引号出现在左引号之前也是不配对：从左到右数，left − right 一旦小于 0 就是 broken_form，不只是看总数相等。"),
    ("静夜思", "李白", "床前明月光 疑是地上霜。\n举头望明月，低头思故乡。", "broken_form",
     "正文里的空格不允许（broken_form）；只有题目和作者里可以有空格。"),
    ("杂曲歌辞 静夜思", "李白", _OK, None, "题目和作者里的空格是允许的（“杂曲歌辞 忆江南”）：判断字符前先去掉它们的空格。"),
)


def _check_drop_reason(impl) -> None:
    for title, author, body, want, message in REASON_CASES:
        got = impl.drop_reason(title, author, body)
        if got != want:
            if got is not None and got not in REASONS_SET:
                fail(f"drop_reason 要返回 REASONS 里的一个字符串（{', '.join(REASONS_SET)}）或 None，你的返回了 {got!r}。")
            fail(f"{message}\ndrop_reason({title!r}, {author!r}, {body!r}) 应该是 {want!r}，你的是 {got!r}。")


REASONS_SET = ("empty", "lost_char", "mojibake", "wrong_script", "too_short", "repetition", "broken_form")


# ---------------------------------------------------------------- 4. dedup_key, shingles

def _check_keys(impl) -> None:
    got = impl.dedup_key("床前明月光，\n疑是地上霜。")
    if got != "床前明月光疑是地上霜":
        fail("dedup_key 只保留汉字：标点、换行、空格都去掉，这样标点不同的同一首诗是同一个键。"
             f"dedup_key('床前明月光，\\n疑是地上霜。') 应该是 '床前明月光疑是地上霜'，你的是 {got!r}。")
    want = {"床前明", "前明月", "明月光"}
    got = impl.shingles("床前明月光")
    expect(isinstance(got, set), f"shingles 应该返回 set，你的返回了 {type(got).__name__}。")
    if got != want:
        if got == want - {"明月光"}:
            fail("shingles 少了最后一片：range(len(key) - k + 1)，不是 range(len(key) - k)。")
        if got == {"床前", "前明", "明月", "月光"}:
            fail("shingles 的默认 k 应该是 3：你的是两个字一片。")
        fail(f"shingles('床前明月光') 应该是 {sorted(want)}（每三个相邻的字一片，窗口每次移一个字），你的是 {sorted(got)}。")
    expect(impl.shingles("床前明月光", k=4) == {"床前明月", "前明月光"}, "shingles 的参数 k 没有用上：k=4 时应该是四个字一片。")
    got = impl.shingles("明月")
    expect(got == {"明月"}, f"比 k 短的键 ('明月', k=3) 自己就是一片：{{'明月'}}，你的是 {got!r}。")
    got = impl.shingles("")
    expect(got == set(), f"空键没有 shingle：shingles('') 应该是 set()，你的是 {got!r}。")


# ---------------------------------------------------------------- 5. minhash_signature

SETS = ({"床前明", "前明月", "明月光", "月光疑"}, {"春眠不", "眠不觉", "不觉晓"}, {"山"})


def _sig_mistakes(ref, s: set[str], perms: np.ndarray) -> list[tuple[np.ndarray, str]]:
    a, b = perms[0].astype(np.uint64), perms[1].astype(np.uint64)
    digests = [hashlib.sha1(x.encode("utf-8")).digest() for x in s]
    little = np.array([int.from_bytes(d[:4], "little") for d in digests], dtype=np.uint32)
    big = np.array([int.from_bytes(d[:4], "big") for d in digests], dtype=np.uint32)
    last = np.array([int.from_bytes(d[-4:], "little") for d in digests], dtype=np.uint32)

    def perm(h: np.ndarray, wrap: bool = True) -> np.ndarray:
        if wrap:
            return h[:, None] * perms[0][None, :] + perms[1][None, :]
        return np.array([[int(x) * int(ai) + int(bi) for ai, bi in zip(a, b)] for x in h], dtype=object)

    mixed = ref.fmix32(little)
    out = [
        (perm(mixed).max(axis=0), "签名取的是最大值：MinHash 每个排列取**最小值** (min)，phv.min(axis=0)。"),
        (perm(ref.fmix32(big)).min(axis=0), "SHA-1 的前 4 个字节要按**小端** (little-endian) 读成整数：int.from_bytes(digest[:4], \"little\")，"
                                             "这是 datasketch 的 sha1_hash32。"),
        (perm(ref.fmix32(last)).min(axis=0), "要取 SHA-1 的**前** 4 个字节 digest[:4]，不是最后 4 个。"),
        (perm(little).min(axis=0), "少了 fmix32：datasketch 先把 32 位哈希用 fmix32 打散，再做 a·h + b。"),
    ]
    nowrap = perm(mixed, wrap=False)
    out.append((np.array([min(col) for col in nowrap.T], dtype=object),
                "a·h + b 没有在 2^32 处回绕 (wrap)：用 Python 整数或 uint64 算，值会超过 2^32 − 1。"
                "全程用 uint32 的 numpy 数组，乘法和加法自动 mod 2^32（或者自己 % 2**32）。"))
    return out


def _as_list(x) -> list[int]:
    return [int(v) for v in np.asarray(x).ravel()]


def _check_minhash(impl, ref) -> None:
    perms = ref.make_permutations(16, seed=3)
    for s in SETS:
        want = ref.minhash_signature(s, perms)
        got = impl.minhash_signature(set(s), perms.copy())
        expect(isinstance(got, np.ndarray), f"minhash_signature 应该返回 numpy 数组，你的返回了 {type(got).__name__}。")
        expect(got.shape == (16,), f"minhash_signature 应该返回 (num_perm,) = (16,) 的数组，你的形状是 {got.shape}。")
        if _as_list(got) != _as_list(want):
            for value, message in _sig_mistakes(ref, s, perms):
                if _as_list(value) == _as_list(got):
                    fail(message)
            fail(f"minhash_signature({sorted(s)}) 和参考实现（也就是 datasketch）不一样：前 4 个值应该是 {_as_list(want)[:4]}，"
                 f"你的是 {_as_list(got)[:4]}。sig[j] = min over s of (a_j · fmix32(sha1_32(s)) + b_j) mod 2^32。")
        expect(got.dtype == np.uint32, f"签名的 dtype 应该是 uint32（和 datasketch 的 affine32 一样），你的是 {got.dtype}。")
    got = impl.minhash_signature(set(), perms)
    if _as_list(got) != [2 ** 32 - 1] * 16:
        fail(f"空集合的签名应该全是 MAX_HASH = 2^32 − 1（datasketch 的初始值，min 的单位元），你的是 {_as_list(got)[:4]}…。")


# ---------------------------------------------------------------- 6. lsh_candidates

def _lsh_input() -> np.ndarray:
    rng = np.random.RandomState(7)
    sig = rng.randint(0, 2 ** 32, size=(7, 12), dtype=np.uint32)
    sig[3, 0:3] = sig[0, 0:3]  # 0 and 3 agree on band 0 (rows 3)
    sig[5, 6:9] = sig[2, 6:9]  # 2 and 5 agree on band 2
    sig[6, 6:9] = sig[2, 6:9]  # ... and 6 too: a bucket of three
    sig[4, [0, 4, 8]] = sig[1, [0, 4, 8]]  # 1 and 4 agree on a strided "band": not a candidate
    sig[1, 9:12] = sig[0, 9:12]  # 0 and 1 agree on band 3 (the last one)
    return sig


def _check_lsh(impl, ref) -> None:
    sig = _lsh_input()
    bands, rows = 4, 3
    want = ref.lsh_candidates(sig, bands, rows)
    got = impl.lsh_candidates(sig.copy(), bands, rows)
    expect(isinstance(got, set), f"lsh_candidates 应该返回 set，你的返回了 {type(got).__name__}。")
    if got == want:
        return
    flat = {tuple(sorted(p)) for p in got if len(p) == 2}
    if any(len(p) == 2 and p[0] == p[1] for p in got):
        fail("候选对里有 (i, i)：一个记录不和自己配对，同一个桶里两两配对时 j 从 i + 1 开始。")
    if flat == want:
        fail("候选对要写成 (i, j) 且 i < j，每对只出现一次：你的结果里有 (j, i)。")
    if (1, 4) in flat:
        fail("band 取成了间隔的列（第 t 个 band 用了第 t, t+bands, … 列）：band t 是**连续**的 rows 列 "
             "signatures[:, t*rows:(t+1)*rows]，和 datasketch 的 MinHashLSH(params=(bands, rows)) 一样。")
    if not flat:
        fail("一个候选对都没有：只要**有一个** band 的值全部相同就是候选（OR），不是所有 band 都相同（AND）。")
    if (0, 1) not in flat and (0, 3) in flat:
        fail("最后一个 band 漏掉了：range(bands)，band t 用第 t*rows 到 (t+1)*rows - 1 列。")
    if (5, 6) not in flat and (2, 5) in flat:
        fail("同一个桶里有三个记录 (2, 5, 6) 时，三对都是候选：(2, 5)、(2, 6)、(5, 6)，不只是和第一个配对。")
    fail(f"lsh_candidates 应该得到 {sorted(want)}，你的是 {sorted(got)}。")


# ---------------------------------------------------------------- 7. jaccard, clusters

def _check_clusters(impl, ref) -> None:
    cases = (({"a", "b"}, {"b", "c"}, 1 / 3), ({"a"}, {"a"}, 1.0), (set(), set(), 0.0), ({"a"}, set(), 0.0))
    for a, b, want in cases:
        try:
            got = impl.jaccard(a, b)
        except ZeroDivisionError:
            fail("两个空集合的 jaccard 应该是 0.0，你的除以了 0 (ZeroDivisionError)：并集为空时返回 0.0。")
        if abs(got - want) > 1e-12:
            fail(f"jaccard({sorted(a)}, {sorted(b)}) 应该是 |交集| / |并集| = {want:.4g}，你的是 {got!r}。")

    A = {"床前明", "前明月", "明月光", "月光疑"}
    sets = [
        A,
        A | {"光疑是"},  # J(0, 1) = 4/5
        {"前明月", "明月光", "月光疑", "光疑是", "疑是地"},  # J(1, 2) = 4/6; J(0, 2) = 3/6 = 0.5
        {"春眠不", "眠不觉"},  # with 3: J = 0
        {"春眠不", "眠不觉", "不觉晓", "觉晓处"},  # J(4, 3) = 0.5
        {"山"},
    ]
    cands = {(0, 1), (1, 2), (3, 4), (0, 5)}
    want = ref.near_duplicate_clusters(sets, cands, 0.6)  # 0~1 (0.8), 1~2 (0.67): 0, 0, 0; 3~4 (0.5) no
    got = impl.near_duplicate_clusters([set(s) for s in sets], set(cands), 0.6)
    got = list(got)
    if got != want:
        if got[1] == 0 and got[2] != 0 and got[0] == 0:
            fail("簇要传递 (transitive)：0 和 1 相似、1 和 2 相似，三个就是一簇，即使 0 和 2 的 Jaccard 低于阈值。用并查集 (union-find)。")
        if got[0] == got[1] == got[2] != 0:
            fail("簇的代表 (root) 要是簇里**最小**的下标：合并时让小的当父节点。漏斗保留每簇的第一首（最早出现的）。")
        if got[5] == 0 or got[4] == 3:
            fail("候选对只是 LSH 的猜测：要用真实的 jaccard(shingle_sets[i], shingle_sets[j]) >= threshold 确认，"
                 "低于阈值的候选不合并。")
        fail(f"near_duplicate_clusters 应该得到 {want}，你的是 {got}。")
    got = list(impl.near_duplicate_clusters([set(s) for s in sets], set(cands), 0.5))
    want = ref.near_duplicate_clusters(sets, cands, 0.5)
    if got != want:
        fail(f"Jaccard 正好等于阈值（这里 0.5）也算近似重复：>= threshold，不是 >。应该得到 {want}，你的是 {got}。")


# ---------------------------------------------------------------- 8. ngrams, contaminated

def _check_contamination(impl, ref) -> None:
    got = impl.ngrams("床前明月光", 4)
    if got != {"床前明月", "前明月光"}:
        fail(f"ngrams('床前明月光', 4) 应该是 {{'床前明月', '前明月光'}}，你的是 {got!r}。")
    got = impl.ngrams("明月", 4)
    expect(got == set(), f"比 n 短的键没有 n-gram：ngrams('明月', 4) 应该是 set()，你的是 {got!r}（不要把它自己当一个）。")
    train = ["床前明月光疑是地上霜", "春眠不觉晓处处闻啼鸟", "举头望明月低头思故乡", "明月光"]
    evals = ["白日依山尽床前明月光疑", "处处闻啼鸟夜来", "明月光"]
    want = ref.contaminated(train, evals, 5)
    got = impl.contaminated(list(train), list(evals), 5)
    got = list(got)
    if got != want:
        if sorted(got) == want:
            fail("contaminated 返回的下标要从小到大排 (ascending)。")
        if 3 in got:
            fail("比 n 短的键（'明月光'，n = 5）没有 n-gram，不会被判为污染：短的片段不能凭一两个字就算重合。")
        if got == [0]:
            fail("要和**每一个** eval 键比，不只是第一个。")
        fail(f"contaminated(train, eval, n=5) 应该是 {want}，你的是 {got}：训练键和任何一个 eval 键共有一个 5-gram 就算污染。")


def check(impl, ref) -> str:
    _signatures(impl)
    _check_normalize(impl, ref)
    _check_strip_notes(impl)
    _check_char_kind(impl)
    _check_drop_reason(impl)
    _check_keys(impl)
    _check_minhash(impl, ref)
    _check_lsh(impl, ref)
    _check_clusters(impl, ref)
    _check_contamination(impl, ref)
    return ("normalize（NFKC → 标点 → 繁转简）、strip_notes、char_kind、drop_reason（原因和顺序）、dedup_key、shingles、"
            "minhash_signature（和 datasketch 相同）、lsh_candidates、near_duplicate_clusters、contaminated：全部正确。")
