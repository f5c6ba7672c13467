"""Check for stage 14: render_chat, assistant_spans and SFTDataset.

1. render_chat must equal the shipped tokenizer's own chat template (``apply_chat_template``), with
   and without the generation prompt; a known wrong rendering is named (a default system message,
   no newline after ``<|im_end|>``, the generation prompt ignored or always added, content stripped).
2. assistant_spans, on the token ids of rendered conversations, whole and cut at chosen places
   (inside a reply, between ``<|im_end|>`` and its newline, inside a prompt, inside the assistant
   marker, right after it, before the first reply).
3. SFTDataset on .jsonl and .jsonl.gz files: input_ids and labels equal the reference, padded and
   cut.  A wrong label is named by the part of the conversation it falls on: every token is tagged
   (message, role, header | content | end), so "the user's text is learned", "the closing
   ``<|im_end|>`` is not", "the span starts one early" are read off the tags.
   input_ids and labels returned the other way round, and labels longer than max_length (spans
   found on the uncut ids), are named.
4. Bad lines (not UTF-8, malformed JSON, no "conversations", a bad message, no assistant reply)
   must raise ValueError naming the file and the 1-based line, in .jsonl and .jsonl.gz files; a
   UnicodeDecodeError that leaks out is named.
"""
from __future__ import annotations

import copy
import gzip
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import _modes
from .tools import expect, fail

TOKENIZER_DIR = _modes.PACKAGE_DIR.parent / "data" / "tokenizer"
START, END = "<|im_start|>assistant\n", "<|im_end|>\n"
ML = 112  # max_length of the padded samples: the longest conversation below is 109 tokens
SYSTEM = "你是一位诗人，回答只用诗句。"
# the ids of START and END in the shipped tokenizer, filled in by check()
_START_IDS: list[int] = []
_END_IDS: list[int] = []


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _u(c: str) -> dict:
    return _msg("user", c)


def _a(c: str) -> dict:
    return _msg("assistant", c)


def _s(c: str) -> dict:
    return _msg("system", c)


# (what the conversation tests, messages); MULTI (two turns) is also cut at chosen places
CONVS: list[tuple[str, list[dict]]] = [
    ("单轮对话", [_u("写一首关于春天的诗。"), _a("《春晓》孟浩然\n春眠不觉晓，处处闻啼鸟。")]),
    ("带系统提示 (system) 的对话", [_s(SYSTEM), _u("写两句关于月亮的诗。"), _a("床前明月光，疑是地上霜。")]),
    ("两轮对话", [_u("《静夜思》是谁写的？"), _a("李白。"), _u("再背两句。"), _a("举头望明月，低头思故乡。")]),
    ("带系统提示的三轮对话", [_s(SYSTEM), _u("春"), _a("春眠不觉晓。"), _u("夏"), _a("小荷才露尖尖角。"),
                             _u("秋"), _a("停车坐爱枫林晚。")]),
    ("回答里有 <|endoftext|> 字样（和 pad 同一个 id 0）", [_u("把结束记号原样写一遍。"), _a("好：<|endoftext|>。")]),
]
MULTI = 2

_TOKENIZERS: dict = {}


def _tokenizer(who: str):
    """One AutoTokenizer per side (a HF tokenizer keeps state from its last call)."""
    if who not in _TOKENIZERS:
        from transformers import AutoTokenizer
        _TOKENIZERS[who] = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    return _TOKENIZERS[who]


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _piece(tok, token_id: int) -> str:
    """A token as the learner reads it: `\\n`, `<|im_end|>`, `春`."""
    return "`" + tok.decode([token_id]).replace("\n", "\\n") + "`"


# ---------------------------------------------------------------- 1. render_chat

def _template(tok, messages: list[dict], gen: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _render_cases() -> list[tuple[str, list[dict], bool]]:
    cases = [(what, msgs, False) for what, msgs in CONVS]
    cases += [
        ("只有用户提问，add_generation_prompt=True", [_u("写一首诗。")], True),
        ("只有用户提问，add_generation_prompt=False（不要自己补上生成提示）", [_u("写一首诗。")], False),
        ("系统提示 + 用户提问，add_generation_prompt=True", [_s(SYSTEM), _u("春")], True),
        ("两轮对话停在第二个提问，add_generation_prompt=True", CONVS[MULTI][1][:3], True),
        ("首尾带空格和换行的内容", [_u("  写一首诗\n"), _a("\n春眠不觉晓，\n处处闻啼鸟。\n")], False),
    ]
    return cases


def _render_mistakes(messages: list[dict], gen: bool, want: str) -> list[tuple[str, str]]:
    """(what a known wrong rendering gives, the diagnostic)."""
    def plain(msgs, end="<|im_end|>\n", head="\n"):
        return "".join(f"<|im_start|>{m['role']}{head}{m['content']}{end}" for m in msgs)

    prompt = "<|im_start|>assistant\n" if gen else ""
    stripped = [dict(m, content=m["content"].strip()) for m in messages]
    return [
        (plain(messages, end="<|im_end|>") + prompt,
         "每条消息都要以 `<|im_end|>` 加一个换行 `\\n` 结尾：<|im_start|>{role}\\n{content}<|im_end|>\\n。"
         "你的 `<|im_end|>` 后面没有换行。"),
        (want[:-1] if not gen else None,
         "少了最后一个换行：最后一条消息也以 `<|im_end|>\\n` 结尾（不要用 \"\\n\".join 把消息连起来，"
         "那样最后一条后面就没有换行了）。"),
        (plain(messages, head="") + (prompt.rstrip("\n") if gen else ""),
         "role 后面要有一个换行：<|im_start|>{role}\\n{content}…，你的 role 和 content 连在了一起。"),
        (plain(messages) + ("" if gen else "<|im_start|>assistant\n"),
         "add_generation_prompt 没有起作用：为 True 时在最后加上 `<|im_start|>assistant\\n`"
         "（让模型从这里开始写回答），为 False 时什么都不加。"),
        (plain(messages) + "<|im_start|>assistant" if gen else None,
         "生成提示 (generation prompt) 是 `<|im_start|>assistant\\n`，最后的换行不能少：训练时回答前面都有它。"),
        (plain(stripped) + prompt,
         "消息内容 (content) 要原样放进去：不要 strip()，开头结尾的空格和换行也是训练文本的一部分。"),
        (want + "<think>\n\n</think>\n\n",
         "不要加 MiniMind 模板里的 `<think>\\n\\n</think>\\n\\n`：我们的分词器模板是朴素的 ChatML。"),
    ]


def _check_render(impl, tok) -> None:
    for what, messages, gen in _render_cases():
        want = _template(tok, messages, gen)
        before = copy.deepcopy(messages)
        call = f"render_chat(…, add_generation_prompt={gen})"
        got = impl.render_chat(messages, add_generation_prompt=gen)
        expect(messages == before, f"{what}：{call} 改动了传进来的 messages。渲染只读消息，不要修改它们。")
        expect(isinstance(got, str), f"{what}：{call} 应该返回字符串 (str)，你的返回了 {type(got).__name__}。")
        if got == want:
            continue
        if messages[0]["role"] != "system" and got.startswith("<|im_start|>system\n"):
            fail(f"{what}：你在前面加了一条默认系统消息 (default system message)："
                 f"{got.split('<|im_end|>')[0][:60]!r}…。MiniMind 自己的模板会加 "
                 f"“You are a helpful assistant”，我们的分词器模板不加：没有 system 消息时什么都不加。"
                 f"加了的话每个训练样本都多出一段一样的文字。")
        for variant, message in _render_mistakes(messages, gen, want):
            if variant is not None and got == variant:
                fail(f"{what}：{message}")
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        fail(f"{what}：{call} 和分词器自己的模板 tokenizer.apply_chat_template(messages, tokenize=False, "
             f"add_generation_prompt={gen}) 不一样，从第 {first} 个字符开始："
             f"应为 …{want[max(0, first - 12):first + 20]!r}，你的是 …{got[max(0, first - 12):first + 20]!r}。")


# ---------------------------------------------------------------- tags and label diagnosis

@dataclass(frozen=True)
class Tag:
    msg: int  # index of the message
    role: str
    part: str  # "header" (<|im_start|>{role}\n), "content", or "end" (<|im_end|>\n)


def _tags(tok, messages: list[dict]) -> list[Tag]:
    """The tag of every token of the rendered conversation (this tokenizer never merges a token
    across a message boundary: the special tokens are split off and "\\n" merges with nothing)."""
    tags, ids = [], []
    for k, m in enumerate(messages):
        for part, text in (("header", f"<|im_start|>{m['role']}\n"), ("content", m["content"]), ("end", END)):
            piece = _ids(tok, text)
            ids += piece
            tags += [Tag(k, m["role"], part)] * len(piece)
    assert ids == _ids(tok, _template(tok, messages, False)), "tokens of the parts differ from the whole"
    return tags


def _span_is_cut(ids: list[int], end: int, end_ids: list[int]) -> bool:
    return ids[max(0, end - len(end_ids)):end] != end_ids


def _diagnose_labelled(got: set[int], want: set[int], ids: list[int], n: int, tags: list[Tag],
                       spans: list[tuple[int, int]], end_ids: list[int], tok, what: str) -> None:
    """Name the mistake that labels the positions `got` instead of `want`.

    ids: the (reference) token ids, n of them real and the rest padding; spans: the reference's.
    """
    extra, missing = got - want, want - got
    real = set(range(n))

    def at(j: int) -> str:
        return f"位置 {j} 的 {_piece(tok, ids[j])}" if j < len(ids) else f"位置 {j}（序列之外）"

    # what is learned that should not be
    if n and real <= got and want != real:
        fail(f"{what}：整段对话都算进了 loss（像预训练那样 labels = input_ids）。SFT 只在助手 (assistant) 的回答上"
             f"算 loss：系统提示、用户的提问、`<|im_start|>assistant\\n` 这些位置的 label 都是 -100。")
    for role, why in (("user", "用户 (user) 的提问也算进了 loss。模型不需要学会“预测用户会问什么”，它要学的是怎么"
                               "回答：user 消息的 token 的 label 都是 -100"),
                      ("system", "系统提示 (system prompt) 也算进了 loss。系统提示是给模型的条件，不是要它生成的"
                                 "内容：它的 label 也是 -100")):
        bad = sorted(j for j in extra if j < n and tags[j].role == role and tags[j].part == "content")
        if bad:
            fail(f"{what}：{why}。例如{at(bad[0])}（第 {tags[bad[0]].msg + 1} 条消息，role={role}）。"
                 f"只有 assistant 回答里的 token（和它结尾的 `<|im_end|>\\n`）保留 label。")
    pads = sorted(j for j in extra if j >= n)
    if len(pads) > 1:
        fail(f"{what}：padding 的位置（从 {n} 开始）也有 label（例如位置 {pads[0]}、{pads[1]}）。补上去的 pad 的 "
             f"label 必须是 -100：labels 先全设 -100，只在 span 里填上 token。")
    for begin, end in spans:
        head = set(range(begin - len(_START_IDS), begin))
        if head <= got:
            fail(f"{what}：`<|im_start|>assistant\\n` 本身也算进了 loss（位置 {min(head)}–{begin - 1}）。"
                 f"这几个 token 在生成时由 add_generation_prompt 直接给出，不用模型学；span 从它后面的"
                 f"第一个 token（回答的第一个字）开始。")
        if begin - 1 in extra:
            fail(f"{what}：span 的开头早了一个：`<|im_start|>assistant\\n` 最后的换行（{at(begin - 1)}）"
                 f"也算进了 loss。回答从 start 标记之后的第一个位置开始：begin = i + len(start_ids)。")
        if end in extra:
            where = "padding" if end >= n else "下一轮的开头"
            fail(f"{what}：span 的结尾多了一个：{at(end)} 已经在 `<|im_end|>\\n` 之后（{where}），不该算 loss。"
                 f"span 到结束标记 `<|im_end|>\\n` 的最后一个 token 为止（含），用左闭右开 [begin, end)。")
    if extra:
        j = min(extra)
        if j >= n:
            fail(f"{what}：{at(j)} 已经在对话的 token 之后（padding 或序列之外），不该有 label：labels 先全设 -100，"
                 f"只在 span 里填上 token。")
        fail(f"{what}：{at(j)} 不在任何助手回答里（它属于第 {tags[j].msg + 1} 条消息 role={tags[j].role} 的"
             f"{'开头标记' if tags[j].part == 'header' else '结束标记'}），不该算 loss。")

    # what should be learned but is not
    done = [any(j in got for j in range(b, e)) for b, e in spans]
    for i, (begin, end) in enumerate(spans):
        if done[i]:
            continue
        if end == n and _span_is_cut(ids, end, end_ids):
            fail(f"{what}：被 max_length 截断的回答整段没有算 loss（位置 {begin}–{end - 1}）。这个回答在 max_length "
                 f"处被截断了，找不到结尾的 `<|im_end|>\\n`：这时 span 要一直算到序列末尾，不能整段丢掉"
                 f"（end = min(end + len(end_ids), len(input_ids))）。")
        if any(done[:i]):
            fail(f"{what}：只标了第一个助手回答：第 {tags[begin].msg + 1} 条消息（也是 assistant，位置 "
                 f"{begin}–{end - 1}）完全没有算 loss。多轮对话里每一个 assistant 回答都有自己的 span："
                 f"找到一个之后，从它的结尾接着往后找。")
        fail(f"{what}：第 {tags[begin].msg + 1} 条消息（assistant 的回答，位置 {begin}–{end - 1}）完全没有算 loss。"
             f"span 从 `<|im_start|>assistant\\n` 的 token 之后开始，到 `<|im_end|>\\n` 为止。")
    for begin, end in spans:
        if begin in missing and (end - begin == 1 or begin + 1 in got):
            fail(f"{what}：span 的开头晚了一个：回答的第一个 token（{at(begin)}）没有算 loss。"
                 f"begin 就是 start 标记之后的第一个位置（i + len(start_ids)），不要再 +1。")
    for begin, end in spans:
        cut = end == n and _span_is_cut(ids, end, end_ids)
        if cut:
            tail = sorted(j for j in range(begin, end) if j in missing)
            if tail:
                fail(f"{what}：被 max_length 截断的回答只标了一部分：span 要一直算到序列末尾（位置 {end - 1}），"
                     f"你的从位置 {tail[0]} 起就是 -100。截断时找不到 `<|im_end|>\\n`，end 就是 len(input_ids)。")
            continue
        im_end, newline = end - len(end_ids), end - 1
        if im_end in missing:
            fail(f"{what}：结尾的 `<|im_end|>`（位置 {im_end}）没有算进 loss：模型学不会在回答完以后输出 "
                 f"`<|im_end|>`，生成时就停不下来，会接着编下一轮对话。span 要包含结束标记 `<|im_end|>\\n`。")
        if newline in missing:
            fail(f"{what}：`<|im_end|>` 后面的换行（{at(newline)}）没有算进 loss（span 的结尾差了一个）。"
                 f"结束标记是 `<|im_end|>\\n`，在这个分词器里是两个 token {end_ids}，span 要把两个都包括进去"
                 f"（end + len(end_ids)）；SFTDataset 里 end_ids 要用 tokenizer(\"<|im_end|>\\n\") 的结果，"
                 f"不能只用 eos_token_id。")
    by_value = sorted(j for j in missing if ids[j] == tok.pad_token_id)
    if by_value and by_value == sorted(missing):
        fail(f"{what}：回答里{at(by_value[0])}（id {tok.pad_token_id}，和 pad 是同一个 id）被设成了 -100："
             f"你像是按值 (by value) 把所有等于 pad_token_id 的位置都 mask 了。要按位置 (by position)："
             f"padding 只是 len(ids) 之后补上的那些位置，它们的 label 本来就是 -100。")
    j = min(missing)
    fail(f"{what}：{at(j)} 在助手的回答里，应该算 loss，你的 label 是 -100。")


# ---------------------------------------------------------------- 2. assistant_spans

def _cuts(ids: list[int], spans: list[tuple[int, int]]) -> list[tuple[str, int]]:
    """(where the two-turn conversation is cut, length kept)."""
    (_, e1), (b2, e2) = spans
    return [
        ("在第二个回答中间截断", b2 + 3),
        ("截在第二个回答的 `<|im_end|>` 和换行之间", e2 - 1),
        ("截在第二轮用户提问中间", e1 + 8),
        ("截在第二个 `<|im_start|>assistant\\n` 中间", b2 - 4),
        ("正好截在第二个 `<|im_start|>assistant\\n` 之后", b2),
        ("截在第一个回答之前（没有一个要学的 token）", 12),
        ("max_length 正好等于对话长度（不截断也不补齐）", len(ids)),
    ]


def _as_spans(got, what: str) -> list[tuple[int, int]]:
    try:
        spans = [(int(b), int(e)) for b, e in got]
    except (TypeError, ValueError):
        fail(f"{what}：assistant_spans 应该返回 [(begin, end), …] 这样的列表，你的返回了 {got!r:.120}。")
    return [(b, e) for b, e in spans if e > b]  # empty spans may be kept or left out


def _closed_intervals(impl, ref, tok) -> bool:
    """Every end one short: closed intervals, or an end marker without its newline?  A reply cut
    by max_length tells them apart: its span ends at the cut either way, unless ends are closed."""
    full = _ids(tok, _template(tok, CONVS[MULTI][1], False))
    ids = full[:_cuts(full, ref.assistant_spans(full, _START_IDS, _END_IDS))[0][1]]
    want = ref.assistant_spans(ids, _START_IDS, _END_IDS)
    got = _as_spans(impl.assistant_spans(list(ids), list(_START_IDS), list(_END_IDS)), "assistant_spans")
    return got == [(b, e - 1) for b, e in want]


def _check_spans(impl, ref, tok) -> None:
    for k, (name, messages) in enumerate(CONVS):
        full = _ids(tok, _template(tok, messages, False))
        tags = _tags(tok, messages)
        cases = [(f"{name}（完整）", len(full))]
        if k == MULTI:
            cuts = _cuts(full, ref.assistant_spans(full, _START_IDS, _END_IDS))
            cases += [(f"{name}，{where}", n) for where, n in cuts if n < len(full)]
        for what, n in cases:
            what = f"assistant_spans：{what}"
            ids = full[:n]
            want = ref.assistant_spans(ids, _START_IDS, _END_IDS)
            got = _as_spans(impl.assistant_spans(list(ids), list(_START_IDS), list(_END_IDS)), what)
            if got == want:
                continue
            over = [(b, e) for b, e in got if e > n]
            if over:
                fail(f"{what}：你的 span {over[0]} 的结尾超出了序列：input_ids 只有 {n} 个 token（位置 0–{n - 1}）。"
                     f"回答被截断、找不到 `<|im_end|>\\n` 时，end 停在 len(input_ids)，再加 len(end_ids) 就越界了："
                     f"end = min(end + len(end_ids), len(input_ids))。应为 {want}，你的是 {got}。")
            if got == [(b, e - 1) for b, e in want] and _closed_intervals(impl, ref, tok):
                fail(f"{what}：span 是左闭右开的 [begin, end)：end 是 span 之后的第一个位置（和 Python 切片 "
                     f"ids[begin:end] 一样）。你的 end 都小了 1，像是用了闭区间。")
            got_set = {j for b, e in got for j in range(b, e)}
            want_set = {j for b, e in want for j in range(b, e)}
            if got_set != want_set:
                _diagnose_labelled(got_set, want_set, ids, n, tags, want, _END_IDS, tok,
                                   f"{what}，你的 spans={got}，应为 {want}")
            fail(f"{what}：覆盖的位置对了，但 spans 应为 {want}，你的是 {got}：每个助手回答一个 (begin, end)，"
                 f"按出现的顺序。")


# ---------------------------------------------------------------- 3. SFTDataset

def _write(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _write_bytes(path: Path, lines: list[bytes]) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _line(messages: list[dict]) -> str:
    return json.dumps({"conversations": messages}, ensure_ascii=False)


def _check_markers(ds, tok) -> None:
    """ds.start_ids and ds.end_ids: the ids of the two whole markers, newline included."""
    for attr, text, want in (("start_ids", START, _START_IDS), ("end_ids", END, _END_IDS)):
        got = getattr(ds, attr, None)
        try:
            got = [int(t) for t in got]
        except (TypeError, ValueError):
            fail(f"SFTDataset 的 self.{attr} 应该是 {text!r} 的 token id 列表 {want}，你的是 {got!r:.80}。")
        if got == want:
            continue
        bare = _ids(tok, text.rstrip("\n"))
        if got == bare:
            fail(f"SFTDataset 的 self.{attr} 是 {text.rstrip(chr(10))!r} 的 id {got}，少了最后的换行：应为 "
                 f"tokenizer({text!r}) 的 {want}。"
                 + ("少了换行，找到的 span 就从换行开始，`\\n` 被当成回答的第一个 token 学。" if attr == "start_ids" else
                    "少了换行，span 在 `<|im_end|>` 就结束了，后面的 `\\n` 不算 loss（只用 [eos_token_id] 也是这样）。"))
        if attr == "end_ids" and got == [tok.eos_token_id]:
            fail(f"SFTDataset 的 self.end_ids 是 [eos_token_id] = {got}：只有 `<|im_end|>`，没有后面的换行。"
                 f"结束标记是 tokenizer({text!r}) 的 {want}，两个 token 都算进 span。")
        fail(f"SFTDataset 的 self.{attr} 应该是 tokenizer({text!r}, add_special_tokens=False)[\"input_ids\"] = {want}，"
             f"你的是 {got}。")


def _build(impl, path: Path, tok, max_length: int):
    try:
        return impl.SFTDataset(path, tok, max_length=max_length)
    except TypeError as e:
        fail(f"SFTDataset(jsonl_path, tokenizer, max_length=...) 构造失败：{e}。"
             f"签名应该是 SFTDataset(jsonl_path, tokenizer, max_length=1024)。")


def _get(ds, i: int, what: str) -> tuple[list[int], list[int]]:
    item = ds[i]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        n = len(item) if isinstance(item, (tuple, list)) else type(item).__name__
        fail(f"{what}：ds[i] 应该返回 (input_ids, labels) 两个张量，你的返回了 {n}"
             f"{'（像是旧版 MiniMind 的 X, Y, loss_mask：现在只返回 input_ids 和 labels，错位交给模型）' if n == 3 else ''}。")
    for name, t in zip(("input_ids", "labels"), item):
        expect(isinstance(t, torch.Tensor), f"{what}：{name} 应该是 torch.Tensor，你的是 {type(t).__name__}。")
        expect(t.dtype == torch.long, f"{what}：{name} 的 dtype 应该是 torch.long，你的是 {t.dtype}。")
        expect(t.dim() == 1, f"{what}：{name} 应该是一维的 (max_length,)，你的形状是 {tuple(t.shape)}。")
    return item[0].tolist(), item[1].tolist()


def _padded(ids: list[int], ml: int, pad: int) -> list[int]:
    return ids + [pad] * (ml - len(ids))


def _diagnose_input(x: list[int], want: list[int], full: list[int], ml: int, tok, what: str) -> None:
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    n = min(len(full), ml)
    if len(x) != ml:
        if len(x) > ml:
            fail(f"{what}：input_ids 长 {len(x)}，应该正好是 max_length={ml}：截断成 ids[:max_length]。")
        fail(f"{what}：input_ids 长 {len(x)}，应该补齐 (pad) 到 max_length={ml}：在右边补 pad_token_id，"
             f"一个 batch 才是整齐的矩形。")
    if x[:2] == [bos, bos] or x == _padded(([bos] + full + [eos])[:ml], ml, pad):
        fail(f"{what}：不要像预训练那样再加 bos/eos：渲染出的文本本来就以 <|im_start|> 开头、以 <|im_end|>\\n 结尾，"
             f"input_ids 就是 tokenizer(render_chat(conversation), add_special_tokens=False) 的结果。")
    for k in (1, 2):
        if len(full) > ml - k and x == _padded(full[:ml - k], ml, pad):
            fail(f"{what}：截断多截了 {k} 个：SFT 样本截到 max_length 个 token（ids[:max_length]），"
                 f"不用像预训练那样给 bos/eos 留位置。")
    if x == [pad] * (ml - n) + full[:n] and x != want:
        fail(f"{what}：你把 padding 补在了左边 (left padding)。训练样本要右填充 (right padding)。")
    tail = x[n:]
    if tail and x[:n] == want[:n] and tail[:len(_START_IDS)] == _START_IDS[:len(tail)]:
        fail(f"{what}：对话的 token 之后多了 `<|im_start|>assistant\\n`（位置 {n} 起）：像是渲染时用了 "
             f"add_generation_prompt=True。生成提示只在推理时加（让模型从那里开始写）；训练样本里的对话已经有完整的回答，"
             f"render_chat(conversation) 用默认的 add_generation_prompt=False。")
    if tail and tail != [pad] * len(tail) and x[:n] == want[:n]:
        if all(t == -100 for t in tail):
            fail(f"{what}：input_ids 的 padding 用了 -100。-100 只放在 labels 里；input_ids 要用 pad_token_id（{pad}）。")
        if all(t == eos for t in tail):
            fail(f"{what}：padding 用了 eos（id {eos}）。用 tokenizer.pad_token_id（{pad}，<|endoftext|>）。")
        fail(f"{what}：对话的 token 之后应该全是 pad（id {pad}），你的是 {tail}。")
    first = next(i for i, (a, b) in enumerate(zip(x, want)) if a != b)
    fail(f"{what}：input_ids 和参考实现从位置 {first} 开始不同：应为 {_piece(tok, want[first])}（id {want[first]}），"
         f"你的是 id {x[first]}。input_ids = tokenizer(render_chat(conversation), add_special_tokens=False)"
         f"[\"input_ids\"][:max_length]，再在右边补 pad。")


def _diagnose_labels(y: list[int], want_y: list[int], x: list[int], n: int, tags: list[Tag],
                     spans: list[tuple[int, int]], tok, what: str) -> None:
    if y[:-1] == want_y[1:] or y[1:] == want_y[:-1]:
        fail(f"{what}：labels 错位了一格 (shifted)。这里不用 shift：labels[j] 就是位置 j 的 token（或 -100），"
             f"错位在模型的 loss 里做（logits[:, :-1] 对 labels[:, 1:]）。")
    got = {j for j, t in enumerate(y) if t != -100}
    want = {j for j, t in enumerate(want_y) if t != -100}
    fill = {y[j] for j in range(len(y)) if j not in want}
    if len(fill) == 1 and fill != {-100} and len(y) - len(want) > 1:
        fail(f"{what}：不算 loss 的位置要填 -100（cross_entropy 的 ignore_index），你的填的是 {fill.pop()}："
             f"labels = [-100] * max_length，再只在 span 里填上 token。")
    if got != want:
        _diagnose_labelled(got, want, x, n, tags, spans, _END_IDS, tok, what)
    j = next(j for j in sorted(got) if y[j] != x[j])
    fail(f"{what}：位置 {j} 的 label 应该是这个位置的 token 本身（{x[j]}），你的是 {y[j]}：labels[begin:end] = "
         f"ids[begin:end]。")


def _check_dataset(impl, ref, tmp: Path, tok_impl, tok) -> None:
    lines = [_line(m) for _, m in CONVS]
    lines = lines[:1] + [""] + lines[1:]  # a blank line: skipped
    fulls = [_ids(tok, _template(tok, m, False)) for _, m in CONVS]
    tags = [_tags(tok, m) for _, m in CONVS]
    cases = [(name, k, ML) for k, (name, _) in enumerate(CONVS)]  # every sample, padded
    multi_spans = ref.assistant_spans(fulls[MULTI], _START_IDS, _END_IDS)
    cases += [(f"{CONVS[MULTI][0]}，{where}", MULTI, n) for where, n in _cuts(fulls[MULTI], multi_spans)]
    for name in ("chat.jsonl", "chat.jsonl.gz"):
        path = _write(tmp / name, lines)
        built: dict[int, tuple] = {}
        for case, k, ml in cases:
            what = f"{name} ds[{k}]（{case}，max_length={ml}）"
            if ml not in built:
                ds = _build(impl, path, tok_impl, ml)
                _check_markers(ds, tok)
                ref_ds = ref.SFTDataset(path, tok, max_length=ml)
                expect(len(ds) == len(ref_ds), f"{name}：len(ds) 应该是 {len(ref_ds)}（每个非空行一个样本，空行跳过），"
                                               f"你的是 {len(ds)}。")
                built[ml] = (ds, ref_ds)
            ds, ref_ds = built[ml]
            x, y = _get(ds, k, what)
            want_x, want_y = (t.tolist() for t in ref_ds[k])
            if x == want_y and y == want_x:
                fail(f"{what}：input_ids 和 labels 的顺序反了：ds[i] 返回 (input_ids, labels)，你的第一个是 labels"
                     f"（里面有 -100），第二个是 input_ids。训练脚本按位置取 x, y = batch：反了的话模型读的是 -100，"
                     f"Embedding 会因为负的 id 直接报错。")
            if len(y) > ml and len(x) == ml:
                fail(f"{what}：labels 长 {len(y)}，比 max_length={ml} 还长，而 input_ids 的长度是对的：像是在没有截断的 ids 上"
                     f"找的 span。被截断的回答的 span 伸到 max_length 之后，labels[begin:end] = ids[begin:end] 就把列表撑长了。"
                     f"先截断 ids = ids[:max_length]，再在截断后的 ids 上找 span，被截断的回答就正好算到截断处。")
            if x != want_x:
                _diagnose_input(x, want_x, fulls[k], ml, tok, what)
            if y != want_y:
                n = min(len(fulls[k]), ml)
                spans = ref.assistant_spans(want_x[:n], _START_IDS, _END_IDS)
                _diagnose_labels(y, want_y, want_x, n, tags[k], spans, tok, what)
        ds = built[ML][0]
        batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
        expect(tuple(batch[0].shape) == (len(ds), ML),
               f"{name}：DataLoader 拼出的 batch 形状应为 {(len(ds), ML)}，你的是 {tuple(batch[0].shape)}。")


# ---------------------------------------------------------------- 4. bad lines

def _error_of(impl, path: Path, tok) -> BaseException | None:
    """The exception building the dataset and reading every sample raises (None: no error)."""
    try:
        ds = impl.SFTDataset(path, tok, max_length=ML)
        for i in range(len(ds)):
            ds[i]
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - any error is inspected below
        return e
    return None


def _numbers(message: str, path: Path) -> set[int]:
    rest = message.replace(str(path), " ").replace(path.name, " ")
    return {int(m) for m in re.findall(r"(?<![\d.])\d+(?![\d.])", rest)}


def _expect_line_error(impl, path: Path, tok, lineno: int, what: str, cause: str) -> None:
    err = _error_of(impl, path, tok)
    if err is None:
        fail(f"{what}：没有报错。坏行不能悄悄放过：{cause}要抛 ValueError，写明文件和行号，"
             f"例如 ValueError(f\"{{path}}:{{lineno}}: ...\")。")
    msg = str(err)
    if isinstance(err, UnicodeDecodeError):
        fail(f"{what}：漏出来的是 UnicodeDecodeError: {msg[:80]}，没有文件名和行号。json.loads 收到的是 bytes，"
             f"它先按 UTF-8 解码，解码失败抛的是 UnicodeDecodeError（ValueError 的子类，却不是 JSONDecodeError），"
             f"只接 json.JSONDecodeError 就接不住它。写 except (json.JSONDecodeError, UnicodeDecodeError)，"
             f"再 raise ValueError(f\"{{path}}:{{lineno}}: ...\")：几百万行的语料里混进一行 GBK，没有行号根本找不到。")
    if not isinstance(err, ValueError):
        fail(f"{what}：抛出的是 {type(err).__name__}: {msg[:80]}。要检查这一行，改抛 ValueError 并写明文件和行号 "
             f"(file:line)：大语料里，没有行号根本找不到坏行。{cause}")
    if path.name not in msg:
        fail(f"{what}：报错里没有文件名 {path.name}。你的报错是：{msg[:120]}")
    if lineno not in _numbers(msg, path):
        fail(f"{what}：报错里没有行号 {lineno}（从 1 开始，空行也算）。你的报错是：{msg[:120]}")


def _check_bad_lines(impl, tmp: Path, tok) -> None:
    ok = [_line(m) for _, m in CONVS[:3]]
    bad_json = '{"conversations": [{"role": "user", "content": 春眠不觉晓}]}'
    for name in ("bad_json.jsonl", "bad_json.jsonl.gz"):
        path = _write(tmp / name, [ok[0], "", ok[1], "", ok[2], bad_json, ok[0]])
        _expect_line_error(impl, path, tok, 6, f"{name} 第 6 行不是合法 JSON", "")
    bad = [
        ("pretrain_line.jsonl", [ok[0], "", ok[1], json.dumps({"text": "春眠不觉晓"}, ensure_ascii=False)], 4,
         '第 4 行没有 "conversations"（是预训练格式的 {"text": …}）',
         '"conversations" 必须是非空的列表；'),
        ("empty_conversation.jsonl", [ok[0], "", '{"conversations": []}', ok[1]], 3,
         '第 3 行的 "conversations" 是空列表', '"conversations" 必须是非空的列表；'),
        ("bad_role.jsonl", [ok[0], ok[1], "", "", _line([_msg("bot", "春眠不觉晓"), _a("好")])], 5,
         '第 5 行有一条消息的 role 是 "bot"', 'role 只能是 system、user、assistant 之一；'),
        ("content_null.jsonl", [ok[0], "", ok[1], _line([_u("写诗"), {"role": "assistant", "content": None}])], 4,
         '第 4 行有一条消息的 content 是 null', 'content 必须是字符串 (str)；'),
        ("not_a_message.jsonl", [ok[0], "", ok[1], ok[2], "", "", _line(["春眠不觉晓", _a("好")])], 7,
         "第 7 行有一条消息不是对象 {\"role\": …, \"content\": …}", "每条消息都必须是带 role 和 content 的对象 (dict)；"),
        ("no_assistant.jsonl", [ok[0], "", ok[1], "", "", _line([_s(SYSTEM), _u("写一首诗")])], 6,
         "第 6 行没有助手 (assistant) 的回答", "没有 assistant 消息的对话没有一个要学的 token（labels 全是 -100）；"),
    ]
    for name, lines, lineno, what, cause in bad:
        path = _write(tmp / name, lines)
        _expect_line_error(impl, path, tok, lineno, f"{name} {what}", cause)
    gbk = _line(CONVS[0][1]).encode("gbk")  # a whole, well-formed line, but in GBK: not UTF-8
    for name in ("gbk_line.jsonl", "gbk_line.jsonl.gz"):
        path = _write_bytes(tmp / name, [ok[0].encode(), b"", ok[1].encode(), gbk, ok[2].encode()])
        _expect_line_error(impl, path, tok, 4, f"{name} 第 4 行不是合法的 UTF-8（是 GBK 编码的）",
                           "不是合法 UTF-8 的行也是坏行（解码失败，不能用 errors=\"ignore\" 或 \"replace\" 悄悄改掉字）；")


def check(impl, ref) -> str:
    tok_impl, tok_ref = _tokenizer("impl"), _tokenizer("ref")
    _START_IDS[:] = _ids(tok_ref, START)
    _END_IDS[:] = _ids(tok_ref, END)
    _check_render(impl, tok_ref)
    _check_spans(impl, ref, tok_ref)
    with tempfile.TemporaryDirectory(prefix="workbook14_") as tmp:
        tmp = Path(tmp)
        _check_dataset(impl, ref, tmp, tok_impl, tok_ref)
        _check_bad_lines(impl, tmp, tok_impl)
    return ("render_chat 和分词器的模板一致；每个助手回答（连同结尾的 <|im_end|>\\n）都算 loss，提示、系统消息和 "
            "<|im_start|>assistant\\n 不算；截断、右填充、.jsonl 与 .jsonl.gz、坏行的 file:line 报错：全部正确。")
