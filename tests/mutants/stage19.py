"""Wrong instruction-data code a learner really writes, and what the check must say about each.

Each mutant is a fresh copy of the reference module with one function replaced, so the functions
that call it (task_messages calls ask_for, to_chat_record calls chat_problem, straddling_poems
calls line_keys) use the wrong piece.
"""
import importlib.util
import itertools
import random

from workbook import _modes

_ref = _modes.reference_module("data.instruct")
_count = itertools.count()
T = _ref.TEMPLATES


def _variant(**functions):
    spec = importlib.util.spec_from_file_location(f"_instruct_mutant_{next(_count)}", _ref.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, value in functions.items():
        setattr(mod, name, value)
    return mod


def _m(role, content):
    return {"role": role, "content": content}


# ---- templates and the chat shape of task_messages

def _messages(mod, task_override):
    """task_messages of `mod`, with one task done the wrong way."""
    right = mod.task_messages

    def task_messages(task, poems, rng):
        if task in task_override:
            return task_override[task](poems, rng)
        return right(task, poems, rng)
    return task_messages


def _mutant_messages(**overrides):
    mod = _variant()
    mod.task_messages = _messages(mod, overrides)
    return mod


def _give_title_with_title(poems, rng):
    p = poems[0]
    return [_m("user", rng.choice(T["form_poem"]).format(title=p.title, form=p.form, n="四", chars="五")),
            _m("assistant", f"《{p.title}》")]


def _continue_two_lines(poems, rng):
    p = poems[0]
    lines = p.body.split("\n")
    # shows two lines but answers from the second one on
    return [_m("user", rng.choice(T["continue"]).format(form=p.form, first="\n".join(lines[:2]))),
            _m("assistant", "\n".join(lines[1:]))]


def _continue_whole_poem(poems, rng):
    p = poems[0]
    return [_m("user", rng.choice(T["continue"]).format(form=p.form, first=p.body.split("\n")[0])),
            _m("assistant", p.body)]


def _name_form_says_form(poems, rng):
    p = poems[0]
    answer = p.form if p.kind == "shi" else f"词，词牌是《{p.title}》"
    name = p.form if p.kind == "shi" else p.title
    return [_m("user", f"下面这首{name}是什么体裁？\n{p.body}"), _m("assistant", answer)]


def _multi_turn_missing_answer(poems, rng):
    p, q = poems
    again = rng.choice(T["again_ci" if p.kind == "ci" else "again_shi"]).format(title=q.title, form=q.form, tune=q.title)
    return [_m("user", _ref.ask_for(p, rng)), _m("assistant", p.body), _m("user", again)]


def _bot_role(poems, rng):
    return [_m("user", _ref.ask_for(poems[0], rng)), _m("bot", poems[0].body)]


def _system_appended(poems, rng):
    return [_m("user", _ref.ask_for(poems[0], rng)), _m("assistant", poems[0].body),
            _m("system", _ref.SYSTEM_PROMPTS[poems[0].kind][0])]


def _ask_for_global_random(poem, rng):
    # the module-level random, not the rng passed in: another seed every run
    if poem.kind == "ci":
        return random.choice(T["ci"]).format(tune=poem.title)
    n, chars = _ref.SHI_SHAPES[poem.form]
    return random.choice(T["form_poem"]).format(title=poem.title, form=poem.form, n=_ref.CN[n], chars=_ref.CN[chars])


def _ask_for_extra_draw(poem, rng):
    rng.random()  # one draw too many: a deterministic builder, but not the shipped files
    return _ref.ask_for(poem, rng)


def _task_messages_unknown_ok(task, poems, rng):
    if task not in _ref.TASKS:
        return [_m("user", "?"), _m("assistant", poems[0].body)]
    return _ref.task_messages(task, poems, rng)


# ---- chat_problem and to_chat_record

def _problem(last=True, system_anywhere=False, roles=True, alternate=True):
    def chat_problem(messages):
        if not isinstance(messages, list) or not messages:
            return "empty"
        for m in messages:
            if (not isinstance(m, dict) or not isinstance(m.get("role"), str)
                    or not isinstance(m.get("content"), str) or not m["content"].strip()):
                return "bad_message"
        rs = [m["role"] for m in messages]
        if roles and any(r not in _ref.CHAT_ROLES for r in rs):
            return "unknown_role"
        if not system_anywhere and "system" in rs[1:]:
            return "system_not_first"
        turns = [r for r in rs if r != "system"] if system_anywhere else (rs[1:] if rs[0] == "system" else rs)
        if alternate and (not turns or any(r != ("user", "assistant")[k % 2] for k, r in enumerate(turns))):
            return "not_alternating"
        if last and turns and turns[-1] != "assistant":
            return "no_final_answer"
        return None
    return chat_problem


def _record_unchecked(messages, task):
    return {"conversations": list(messages), "task": task}


def _record_messages_key(messages, task):
    _ref.to_chat_record(messages, task)
    return {"messages": list(messages), "task": task}


# ---- split by poem

def _by_record(train_bodies, held_out_bodies, min_chars=8):
    return []  # trusts the corpus's per-record split


def _whole_body_exact(train_bodies, held_out_bodies, min_chars=8):
    held = set(held_out_bodies)
    return [i for i, b in enumerate(train_bodies) if b in held]


def _whole_body_key(train_bodies, held_out_bodies, min_chars=8):
    key = lambda b: "".join(_ref.HAN_RE.findall(b))  # noqa: E731  (stage 18's dedup_key)
    held = {key(b) for b in held_out_bodies}
    return [i for i, b in enumerate(train_bodies) if key(b) in held]


def _raw_lines(body, min_chars=8):
    return {ln for ln in body.split("\n") if len(_ref.HAN_RE.findall(ln)) >= min_chars}


def _keys_no_min(body, min_chars=8):
    return {k for k in ("".join(_ref.HAN_RE.findall(ln)) for ln in body.split("\n")) if k}


def _keys_strict(body, min_chars=8):
    return {k for k in ("".join(_ref.HAN_RE.findall(ln)) for ln in body.split("\n")) if len(k) > min_chars}


# ---- the mix

def _mix_equal(weights, n):
    keys = list(weights)
    out = {k: n // len(keys) for k in keys}
    for k in keys[:n - sum(out.values())]:
        out[k] += 1
    return out


def _mix_round(weights, n):
    total = sum(weights.values())
    return {k: round(n * w / total) for k, w in weights.items()}


def _mix_remainder_to_first(weights, n):
    total = sum(weights.values())
    out = {k: n * w // total for k, w in weights.items()}
    for k in list(weights)[:n - sum(out.values())]:
        out[k] += 1
    return out


# ---- decontamination

def _contaminated(use_messages=True, use_reference=True, han_only=True, first_message_only=False):
    def key(text):
        return "".join(_ref.HAN_RE.findall(text)) if han_only else text

    def contaminated_by_requests(bodies, requests, n=10):
        seen = set()
        for req in requests:
            msgs = req["messages"][:1] if first_message_only else req["messages"]
            texts = ([m["content"] for m in msgs] if use_messages else []) + (
                [req.get("reference") or ""] if use_reference else [])
            for t in texts:
                k = key(t)
                seen.update(k[i:i + n] for i in range(len(k) - n + 1))
        return [i for i, b in enumerate(bodies) if any(key(b)[j:j + n] in seen for j in range(len(key(b)) - n + 1))]
    return contaminated_by_requests


MUTANTS = {
    # templates: the answer leaks into the request
    "give_title_request_names_the_title": (_mutant_messages(give_title=_give_title_with_title), "起题目 (give_title) 的请求里已经有题目"),
    "continue_shows_the_answer": (_mutant_messages(**{"continue": _continue_two_lines}), "续写的请求里已经有答案"),
    "name_form_request_names_the_form": (_mutant_messages(name_form=_name_form_says_form), "说出体裁 (name_form) 的请求里写着"),
    "continue_answer_repeats_first_line": (_mutant_messages(**{"continue": _continue_whole_poem}), "又写了一遍请求给出的第一联"),
    # the chat shape
    "multi_turn_missing_last_answer": (_mutant_messages(multi_turn=_multi_turn_missing_answer), "少了最后的助手回答"),
    "bot_role": (_mutant_messages(form_poem=_bot_role), "角色 'bot' 不认识"),
    "system_message_appended": (_mutant_messages(form_poem=_system_appended), "task_messages 不加 system 消息"),
    "chat_problem_accepts_no_final_answer": (_variant(chat_problem=_problem(last=False)), "\"no_final_answer\""),
    "chat_problem_system_anywhere": (_variant(chat_problem=_problem(system_anywhere=True)), "\"system_not_first\""),
    "chat_problem_any_role": (_variant(chat_problem=_problem(roles=False)), "\"unknown_role\""),
    "chat_problem_no_alternation": (_variant(chat_problem=_problem(alternate=False)), "\"not_alternating\""),
    "to_chat_record_unchecked": (_variant(to_chat_record=_record_unchecked), "收下了形状不对的对话"),
    "to_chat_record_messages_key": (_variant(to_chat_record=_record_messages_key), "\"conversations\"（MiniMind 的 SFTDataset 读它"),
    # determinism and the rng contract
    "module_level_random": (_variant(ask_for=_ask_for_global_random), "non-deterministic"),
    "one_draw_too_many": (_variant(ask_for=_ask_for_extra_draw), "每条 user 消息正好一次 rng.choice"),
    "unknown_task_accepted": (_variant(task_messages=_task_messages_unknown_ok), "raise ValueError"),
    # split by poem
    "split_by_record": (_variant(straddling_poems=_by_record), "你按记录 (record) 划分"),
    "whole_body_compared": (_variant(straddling_poems=_whole_body_exact), "近似重复 (near-duplicate) 跨越了划分"),
    "near_duplicate_straddles": (_variant(straddling_poems=_whole_body_key), "近似重复 (near-duplicate) 跨越了划分"),
    "lines_compared_with_punctuation": (_variant(line_keys=_raw_lines), "line_keys 只保留每行的汉字"),
    "short_lines_count": (_variant(line_keys=_keys_no_min), "少于 min_chars = 8 个汉字的行"),
    "min_chars_strict": (_variant(line_keys=_keys_strict), "len(key) >= min_chars，不是 >"),
    # the mix
    "mix_ignores_weights": (_variant(mix_counts=_mix_equal), "任务配比 (task mix) 没按权重"),
    "mix_rounds_each_share": (_variant(mix_counts=_mix_round), "加起来要正好等于 n"),
    "mix_remainder_to_first_tasks": (_variant(mix_counts=_mix_remainder_to_first), "余数 n · w % W **最大**"),
    # decontamination against the grader's requests
    "decontamination_skips_reference": (_variant(contaminated_by_requests=_contaminated(use_reference=False)),
                                        "请求的参考答案 (\"reference\") 也要比"),
    "decontamination_skips_messages": (_variant(contaminated_by_requests=_contaminated(use_messages=False)),
                                       "请求的每条消息 (\"messages\") 都要比"),
    "decontamination_first_message_only": (_variant(contaminated_by_requests=_contaminated(first_message_only=True)),
                                           "请求的每条消息 (\"messages\") 都要比"),
    "decontamination_keeps_punctuation": (_variant(contaminated_by_requests=_contaminated(han_only=False)), "两边都只留汉字"),
}
