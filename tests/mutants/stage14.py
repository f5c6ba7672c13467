"""Wrong chat renderings, span searches and SFTDatasets a learner really writes, and what the
check must say about each.

Each mutant is a fresh copy of the reference module with one piece replaced, so the rest of the
module (SFTDataset calls the module's own render_chat and assistant_spans) uses the wrong piece.
"""
import importlib.util
import itertools
import json

import torch

from workbook import _modes

_ref = _modes.reference_module("data.sft")
_count = itertools.count()


def _variant(methods=None, **functions):
    """A copy of the reference module with module-level functions and SFTDataset methods replaced."""
    spec = importlib.util.spec_from_file_location(f"_sft_mutant_{next(_count)}", _ref.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, value in functions.items():
        setattr(mod, name, value)
    for name, value in (methods or {}).items():
        setattr(mod.SFTDataset, name, value)
    return mod


def _render(per_message, prefix="", prompt="<|im_start|>assistant\n", sep=""):
    def render_chat(messages, add_generation_prompt=False):
        text = prefix(messages) if callable(prefix) else prefix
        text += sep.join(per_message(m) for m in messages)
        return text + (prompt if add_generation_prompt else "")
    return render_chat


def _chatml(m):
    return f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"


def _auto_generation_prompt(messages, add_generation_prompt=False):
    """The generation prompt added whenever the last message is the user's, asked for or not."""
    text = "".join(_chatml(m) for m in messages)
    if add_generation_prompt or messages[-1]["role"] == "user":
        text += "<|im_start|>assistant\n"
    return text


def _default_system(messages):
    if messages and messages[0]["role"] == "system":
        return ""
    return "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"


# ---- span searches: (input_ids, start_ids, end_ids) -> [(begin, end)]

def _spans(begin_shift=0, end_shift=0, end_len=None, drop_cut=False, first_only=False, closed=False,
           with_marker=False):
    """The reference search with one thing changed."""
    def assistant_spans(input_ids, start_ids, end_ids):
        end_ids = end_ids[:end_len] if end_len is not None else end_ids
        out, n, i = [], len(input_ids), 0
        while i + len(start_ids) <= n:
            if input_ids[i:i + len(start_ids)] != start_ids:
                i += 1
                continue
            begin = end = i + len(start_ids)
            while end < n and input_ids[end:end + len(end_ids)] != end_ids:
                end += 1
            found = end < n
            end = min(end + len(end_ids), n)
            i = end
            if drop_cut and not found:
                continue
            b, e = (begin - len(start_ids) if with_marker else begin + begin_shift), min(end + end_shift, n)
            if b < e:
                out.append((b, e - 1) if closed else (b, e))
            if first_only:
                break
        return out
    return assistant_spans


def _end_not_clamped(input_ids, start_ids, end_ids):
    """A reply cut before its end marker: end + len(end_ids) runs past the sequence."""
    out, n, i = [], len(input_ids), 0
    while i + len(start_ids) <= n:
        if input_ids[i:i + len(start_ids)] != start_ids:
            i += 1
            continue
        begin = end = i + len(start_ids)
        while end < n and input_ids[end:end + len(end_ids)] != end_ids:
            end += 1
        end += len(end_ids)  # the mistake: no min(..., n)
        i = end
        out.append((begin, end))
    return out


def _markers(start="<|im_start|>assistant\n", end="<|im_end|>\n", eos_only=False):
    """An SFTDataset whose constructor sets other marker ids."""
    class SFTDataset(_ref.SFTDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.start_ids = self.tokenizer(start, add_special_tokens=False)["input_ids"]
            self.end_ids = ([self.tokenizer.eos_token_id] if eos_only
                            else self.tokenizer(end, add_special_tokens=False)["input_ids"])
    return SFTDataset


def _from_first_reply(input_ids, start_ids, end_ids):
    """Everything from the first reply to the end of the text."""
    spans = _ref.assistant_spans(input_ids, start_ids, end_ids)
    return [(spans[0][0], len(input_ids))] if spans else []


def _every_message(input_ids, start_ids, end_ids):
    """Spans after every <|im_start|>: the start marker taken as the bos token alone, so every
    message (system, user, assistant) is learned from its role name on."""
    return _ref.assistant_spans(input_ids, start_ids[:1], end_ids)


# ---- __getitem__ variants

def _getitem(build):
    def __getitem__(self, index):
        ids = self.tokenizer(_ref.render_chat(self.conversation(index)), add_special_tokens=False)["input_ids"]
        x, y = build(self, ids)
        return torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)
    return __getitem__


def _labels(self, ids):
    y = [-100] * self.max_length
    for b, e in _ref.assistant_spans(ids, self.start_ids, self.end_ids):
        y[b:e] = ids[b:e]
    return y


def _pad(self, ids, pad=None):
    return ids + [self.pad_id if pad is None else pad] * (self.max_length - len(ids))


def _pretrain_labels(self, ids):
    ids = ids[:self.max_length]
    x = _pad(self, ids)
    return x, ids + [-100] * (self.max_length - len(ids))


def _only_first_turn(self, ids):
    ids = ids[:self.max_length]
    y = [-100] * self.max_length
    spans = _ref.assistant_spans(ids, self.start_ids, self.end_ids)
    if spans:
        b, e = spans[0]
        y[b:e] = ids[b:e]
    return _pad(self, ids), y


def _mask_by_value(self, ids):
    ids = ids[:self.max_length]
    x = _pad(self, ids)
    return x, [-100 if t == self.pad_id else t for t in _labels(self, ids)]


def _pad_with_eos(self, ids):
    ids = ids[:self.max_length]
    return _pad(self, ids, self.tokenizer.eos_token_id), _labels(self, ids)


def _getitem_with_generation_prompt(self, index):
    """The training text rendered with the generation prompt appended."""
    text = _ref.render_chat(self.conversation(index), add_generation_prompt=True)
    ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:self.max_length]
    return (torch.tensor(_pad(self, ids), dtype=torch.long), torch.tensor(_labels(self, ids), dtype=torch.long))


def _bos_eos_room(self, ids):
    ids = ids[:self.max_length - 2]  # the pretraining habit: room for bos and eos
    return _pad(self, ids), _labels(self, ids)


def _extra_bos_eos(self, ids):
    ids = ([self.tokenizer.bos_token_id] + ids + [self.tokenizer.eos_token_id])[:self.max_length]
    return _pad(self, ids), _labels(self, ids)


def _shifted(self, ids):
    ids = ids[:self.max_length]
    y = _labels(self, ids)
    return _pad(self, ids), y[1:] + [-100]


def _cut_after_labels(self, ids):
    """Spans found on the whole text, and a cut reply's labels then filled only if the
    reply's closing marker survived the cut."""
    y_full = [-100] * len(ids)
    for b, e in _ref.assistant_spans(ids, self.start_ids, self.end_ids):
        if e <= self.max_length:
            y_full[b:e] = ids[b:e]
    ids, y = ids[:self.max_length], y_full[:self.max_length]
    return _pad(self, ids), y + [-100] * (self.max_length - len(y))


def _spans_on_uncut(self, index):
    """Spans searched on the whole text, labels filled from it, the ids cut afterwards."""
    full = self.tokenizer(_ref.render_chat(self.conversation(index)), add_special_tokens=False)["input_ids"]
    y = [-100] * self.max_length
    for b, e in _ref.assistant_spans(full, self.start_ids, self.end_ids):
        y[b:e] = full[b:e]
    ids = full[:self.max_length]
    return (torch.tensor(_pad(self, ids), dtype=torch.long), torch.tensor(y, dtype=torch.long))


def _returns_swapped(self, index):
    x, y = _ref.SFTDataset.__getitem__(self, index)
    return y, x


def _getitem_all_but_user(self, index):
    """Built message by message: every reply and the system prompt learned, only the user's turns
    masked (the mistake: the system prompt is a condition too)."""
    ids, y = [], []
    for m in self.conversation(index):
        head = self.tokenizer(f"<|im_start|>{m['role']}\n", add_special_tokens=False)["input_ids"]
        rest = self.tokenizer(f"{m['content']}<|im_end|>\n", add_special_tokens=False)["input_ids"]
        ids += head + rest
        y += [-100] * len(head) + ([-100] * len(rest) if m["role"] == "user" else rest)
    ids, y = ids[:self.max_length], y[:self.max_length]
    n_pad = self.max_length - len(ids)
    return (torch.tensor(ids + [self.pad_id] * n_pad, dtype=torch.long),
            torch.tensor(y + [-100] * n_pad, dtype=torch.long))


# ---- _parse_conversation variants

def _bare_key(line, path, lineno):
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{path}:{lineno}: 不是 JSON") from None
    return record["conversations"]  # the mistake: a missing key leaks out as KeyError


def _utf8_not_caught(line, path, lineno):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:  # the mistake: UnicodeDecodeError is not a JSONDecodeError
        raise ValueError(f"{path}:{lineno}: 不是 JSON: {e}") from None
    return _ref._parse_conversation(json.dumps(record), path, lineno)


def _utf8_replaced(line, path, lineno):
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")  # the mistake: a bad line silently "repaired"
    return _ref._parse_conversation(line, path, lineno)


def _no_line_number(line, path, lineno):
    try:
        return _ref._parse_conversation(line, path, lineno)
    except ValueError:
        raise ValueError(f"{path}: 坏行 (bad line)") from None


def _roles_not_checked(line, path, lineno):
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: 不是 JSON: {e}") from None
    conv = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(conv, list) or not conv:
        raise ValueError(f'{path}:{lineno}: 没有 "conversations"')
    return conv  # the mistake: any message gets through


def _no_assistant_accepted(line, path, lineno):
    conv = _roles_not_checked(line, path, lineno)
    for m in conv:
        if not isinstance(m, dict) or m.get("role") not in _ref.ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{path}:{lineno}: 消息不对")
    return conv  # the mistake: a conversation without an assistant reply gets through


MUTANTS = {
    # render_chat
    "default_system_message": (_variant(render_chat=_render(_chatml, prefix=_default_system)), "默认系统消息"),
    "no_newline_after_im_end": (_variant(render_chat=_render(
        lambda m: f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>")), "后面没有换行"),
    "messages_joined_with_newline": (_variant(render_chat=_render(
        lambda m: f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>", sep="\n", prompt="\n<|im_start|>assistant\n")),
        "少了最后一个换行"),
    "generation_prompt_ignored": (_variant(render_chat=_render(_chatml, prompt="")), "add_generation_prompt"),
    "generation_prompt_without_newline": (_variant(render_chat=_render(_chatml, prompt="<|im_start|>assistant")),
                                          "最后的换行不能少"),
    "generation_prompt_added_unasked": (_variant(render_chat=_auto_generation_prompt), "add_generation_prompt 没有起作用"),
    "content_stripped": (_variant(render_chat=_render(
        lambda m: f"<|im_start|>{m['role']}\n{m['content'].strip()}<|im_end|>\n")), "strip()"),
    # assistant_spans
    "marker_labelled": (_variant(assistant_spans=_spans(with_marker=True)), "`<|im_start|>assistant\\n` 本身"),
    "span_starts_one_early": (_variant(assistant_spans=_spans(begin_shift=-1)), "开头早了一个"),
    "span_starts_one_late": (_variant(assistant_spans=_spans(begin_shift=+1)), "开头晚了一个"),
    "im_end_not_learned": (_variant(assistant_spans=_spans(end_shift=-2)), "结尾的 `<|im_end|>`"),
    "newline_after_im_end_not_learned": (_variant(assistant_spans=_spans(end_len=1)), "后面的换行"),
    "span_ends_one_late": (_variant(assistant_spans=_spans(end_shift=+1)), "结尾多了一个"),
    "only_the_first_reply": (_variant(assistant_spans=_spans(first_only=True)), "只标了第一个助手回答"),
    "cut_reply_dropped": (_variant(assistant_spans=_spans(drop_cut=True)), "整段没有算 loss"),
    "closed_intervals": (_variant(assistant_spans=_spans(closed=True)), "左闭右开"),
    "cut_end_not_clamped": (_variant(assistant_spans=_end_not_clamped), "结尾超出了序列"),
    "start_ids_without_newline": (_variant(SFTDataset=_markers(start="<|im_start|>assistant")), "少了最后的换行"),
    "end_ids_eos_only": (_variant(SFTDataset=_markers(eos_only=True)), "只用 [eos_token_id] 也是这样"),
    "everything_after_the_first_reply": (_variant(assistant_spans=_from_first_reply), "用户 (user) 的提问"),
    "every_message_learned": (_variant(assistant_spans=_every_message), "用户 (user) 的提问"),
    # SFTDataset.__getitem__
    "pretrain_style_labels": (_variant({"__getitem__": _getitem(_pretrain_labels)}), "整段对话都算进了 loss"),
    "dataset_only_first_reply": (_variant({"__getitem__": _getitem(_only_first_turn)}), "只标了第一个助手回答"),
    "system_prompt_learned": (_variant({"__getitem__": _getitem_all_but_user}), "系统提示 (system prompt)"),
    "mask_by_value": (_variant({"__getitem__": _getitem(_mask_by_value)}), "按值 (by value)"),
    "pad_with_eos": (_variant({"__getitem__": _getitem(_pad_with_eos)}), "padding 用了 eos"),
    "generation_prompt_in_training_text": (_variant({"__getitem__": _getitem_with_generation_prompt}),
                                           "add_generation_prompt=True"),
    "room_for_bos_eos": (_variant({"__getitem__": _getitem(_bos_eos_room)}), "截断多截了 2 个"),
    "extra_bos_eos": (_variant({"__getitem__": _getitem(_extra_bos_eos)}), "不要像预训练那样再加 bos/eos"),
    "labels_shifted": (_variant({"__getitem__": _getitem(_shifted)}), "错位"),
    "cut_reply_labels_lost": (_variant({"__getitem__": _getitem(_cut_after_labels)}), "截断"),
    # _parse_conversation
    "bad_line_keyerror": (_variant(_parse_conversation=_bare_key), "抛出的是 KeyError"),
    "utf8_error_not_caught": (_variant(_parse_conversation=_utf8_not_caught), "漏出来的是 UnicodeDecodeError"),
    "utf8_errors_replaced": (_variant(_parse_conversation=_utf8_replaced), "不是合法 UTF-8 的行也是坏行"),
    "labels_from_spans_on_uncut_ids": (_variant({"__getitem__": _spans_on_uncut}), "没有截断的 ids 上"),
    "returns_labels_first": (_variant({"__getitem__": _returns_swapped}), "顺序反了"),
    "error_without_line_number": (_variant(_parse_conversation=_no_line_number), "没有行号"),
    "bad_messages_accepted": (_variant(_parse_conversation=_roles_not_checked), "没有报错"),
    "reply_less_conversation_accepted": (_variant(_parse_conversation=_no_assistant_accepted), "没有助手"),
}
