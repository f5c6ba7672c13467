"""Check for stage 19: instruction data (workbook/data/instruct.py).

Everything on a handful of famous poems written into the check (no corpus, well under a second),
compared with the reference; a wrong answer is named by looking for each known mistake:

1. ask_for / task_messages: every task on shi and ci, several seeds: the chat shape (roles,
   alternation, the assistant last), no answer inside the request (continue, name_form,
   give_title, the poems of form_poem and multi_turn), the same seed giving the same conversation
   (only the rng passed in), one rng.choice per user message (equal to the reference), an
   unknown task refused.
2. chat_problem: each problem on its conversation, in order; to_chat_record: MiniMind's
   "conversations" key, a copy, a malformed conversation refused.
3. line_keys and straddling_poems: Han only, long lines only (min_chars itself included); the same
   poem under another title, with other punctuation, or with one line read differently, is
   caught; a shared short phrase is not.
4. mix_counts: proportional to the weights, exactly n in all, the largest remainders, ties to the
   first task.
5. contaminated_by_requests: what a request shows (messages) and what it expects (reference), Han
   only, runs of exactly n characters.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .tools import expect, fail

FUNCTIONS = {
    "ask_for": "(poem, rng)", "task_messages": "(task, poems, rng)", "chat_problem": "(messages)",
    "to_chat_record": "(messages, task)", "line_keys": "(body, min_chars=8)",
    "straddling_poems": "(train_bodies, held_out_bodies, min_chars=8)", "mix_counts": "(weights, n)",
    "contaminated_by_requests": "(bodies, requests, n=10)",
}
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _key(text: str) -> str:
    return "".join(_HAN.findall(text))


@dataclass(frozen=True)
class Poem:
    title: str
    author: str
    body: str
    kind: str
    form: str | None


JINGYESI = Poem("静夜思", "李白", "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。", "shi", "五言绝句")
GUANQUE = Poem("登鹳雀楼", "王之涣", "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。", "shi", "五言绝句")
BAIDI = Poem("早发白帝城", "李白", "朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。", "shi", "七言绝句")
CHUNWANG = Poem("春望", "杜甫", "国破山河在，城春草木深。\n感时花溅泪，恨别鸟惊心。\n烽火连三月，家书抵万金。\n"
                "白头搔更短，浑欲不胜簪。", "shi", "五言律诗")
DENGGAO = Poem("登高", "杜甫", "风急天高猿啸哀，渚清沙白鸟飞回。\n无边落木萧萧下，不尽长江滚滚来。\n"
               "万里悲秋常作客，百年多病独登台。\n艰难苦恨繁霜鬓，潦倒新停浊酒杯。", "shi", "七言律诗")
HUANXISHA = Poem("浣溪沙", "晏殊", "一曲新词酒一杯。\n去年天气旧亭台。\n夕阳西下几时回。\n无可奈何花落去，\n"
                 "似曾相识燕归来。\n小园香径独徘徊。", "ci", None)
HUANXISHA2 = Poem("浣溪沙", "苏轼", "山下兰芽短浸溪。\n松间沙路净无泥。\n萧萧暮雨子规啼。\n谁道人生无再少？\n"
                  "门前流水尚能西。\n休将白发唱黄鸡。", "ci", None)

# (task, poems): every task on a shi and, where it has one, a ci
CASES = (
    ("form_poem", (JINGYESI,)), ("form_poem", (DENGGAO,)), ("ci", (HUANXISHA,)),
    ("continue", (CHUNWANG,)), ("continue", (BAIDI,)),
    ("name_form", (BAIDI,)), ("name_form", (CHUNWANG,)), ("name_form", (HUANXISHA,)),
    ("give_title", (BAIDI,)), ("give_title", (DENGGAO,)),
    ("multi_turn", (JINGYESI, GUANQUE)), ("multi_turn", (BAIDI, DENGGAO)), ("multi_turn", (HUANXISHA, HUANXISHA2)),
)
SEEDS = range(12)


def _signatures(impl) -> None:
    for name, args in FUNCTIONS.items():
        expect(callable(getattr(impl, name, None)), f"workbook/data/instruct.py 里要有函数 {name}{args}。")
    for name in ("TEMPLATES", "SYSTEM_PROMPTS", "SHI_SHAPES", "CN", "CHAT_ROLES"):
        expect(hasattr(impl, name), f"workbook/data/instruct.py 里的常量 {name} 不见了：它是提供的，不要删掉。")


# ---------------------------------------------------------------- 1. templates

def _show(messages) -> str:
    return " | ".join(f"{m.get('role')}: {str(m.get('content'))[:30]!r}" if isinstance(m, dict) else repr(m)[:30]
                      for m in messages)


def _shape(task: str, got, ref) -> None:
    """The conversation is a list of {"role", "content"}: user first, alternating, assistant last."""
    expect(isinstance(got, list) and all(isinstance(m, dict) for m in got),
           f"task_messages 应该返回由 {{\"role\", \"content\"}} 字典组成的 list，你的 {task} 返回了 {type(got).__name__}"
           f"{'' if not isinstance(got, list) else '，里面有不是字典的元素'}。")
    roles = [m.get("role") for m in got]
    if any(r not in ("system", "user", "assistant") for r in roles):
        bad = next(r for r in roles if r not in ("system", "user", "assistant"))
        fail(f"对话形状 (chat shape) 不对：角色 {bad!r} 不认识。MiniMind 的聊天模板只有 system、user、assistant 三种角色，"
             f"SFTDataset 只在 assistant 的回答上算 loss：{bad!r} 的回答一个 token 也学不到。你的 {task}：{_show(got)}")
    if "system" in roles:
        fail(f"task_messages 不加 system 消息：要不要 system、放在哪里由 data/build_sft.py 决定（约 1/8 的对话，而且只能在第一条）。"
             f"你的 {task} 有 system 消息：{_show(got)}")
    want_len = 4 if task == "multi_turn" else 2
    if roles and roles[-1] != "assistant":
        fail(f"对话形状 (chat shape) 不对：最后一条是 {roles[-1]}，不是 assistant——"
             + ("多轮对话 (multi_turn) 少了最后的助手回答（第二首诗）：" if task == "multi_turn" else "")
             + f"最后的提问没有回答，SFT 学不到东西。你的 {task}：{_show(got)}")
    if len(got) != want_len or roles != ["user", "assistant"] * (want_len // 2):
        if task == "multi_turn" and len(got) < 4:
            fail(f"多轮对话 (multi_turn) 要四条消息：user（第一首的请求）、assistant（第一首）、user（“再写一首……”）、"
                 f"assistant（第二首）。你的只有 {len(got)} 条：{_show(got)}")
        fail(f"对话形状 (chat shape) 不对：{task} 应该是 {want_len} 条消息，user、assistant 轮流，user 开头、assistant 结尾；"
             f"你的是 {roles}。")
    for m in got:
        expect(isinstance(m.get("content"), str) and m["content"].strip(),
               f"{task} 的每条消息都要有非空的字符串 content，你的有 {m.get('role')}: {m.get('content')!r}。")


def _leaks(task: str, poems: tuple, got) -> None:
    """No answer inside the request."""
    p = poems[0]
    asks = [m["content"] for m in got if m["role"] == "user"]
    answers = [m["content"] for m in got if m["role"] == "assistant"]
    ask_key = _key("".join(asks))
    if task == "continue":
        first = p.body.split("\n")[0]
        if _key(first) in _key(answers[0]):
            fail(f"续写 (continue) 的答案里又写了一遍请求给出的第一联“{first}”：答案是**后面的**行，"
                 f"\"\\n\".join(lines[1:])，模型要学的是接着写，不是抄一遍开头。")
        given = [ln for ln in p.body.split("\n")[1:] if _key(ln) in ask_key]
        if given:
            fail(f"模板把答案泄露进了请求 (answer leaked into the prompt)：续写的请求里已经有答案的一行“{given[0]}”。"
                 f"请求只给第一行 lines[0]（一联），答案是其余的行；否则模型学会的是抄写，评分器的续写题也成了送分题。")
    elif task == "name_form":
        name = p.form if p.kind == "shi" else p.title
        if name in "".join(asks):
            fail(f"模板把答案泄露进了请求 (answer leaked into the prompt)：说出体裁 (name_form) 的请求里写着“{name}”，"
                 f"这正是要模型回答的。用 TEMPLATES[\"name_form\"]，只填 body。你的请求：{asks[0][:40]!r}")
    elif task == "give_title":
        if _key(p.title) in ask_key:
            fail(f"模板把答案泄露进了请求 (answer leaked into the prompt)：起题目 (give_title) 的请求里已经有题目“{p.title}”。"
                 f"用 TEMPLATES[\"give_title\"]（它只有 {{body}} 和 {{form}}），不要用写诗的模板。你的请求：{asks[0][:40]!r}")
    for q in poems:
        for line in q.body.split("\n"):
            if task not in ("name_form", "give_title", "continue") and len(_key(line)) >= 5 and _key(line) in ask_key:
                fail(f"模板把答案泄露进了请求 (answer leaked into the prompt)：{task} 的请求里出现了要写的诗句“{line}”。")


def _check_messages(impl, ref) -> None:
    for task, poems in CASES:
        for seed in SEEDS:
            random.seed(1000 + seed)  # a learner's module-level random.choice sees one state …
            got = impl.task_messages(task, poems, random.Random(seed))
            _shape(task, got, ref)
            _leaks(task, poems, got)
            random.seed(2000 + seed)  # … and another one here: only the rng passed in may matter
            again = impl.task_messages(task, poems, random.Random(seed))
            if again != got:
                fail(f"同一个种子 (seed) 两次得到的对话不一样 (non-deterministic)：task_messages({task!r}, …, random.Random({seed})) "
                     f"第一次 {_show(got)}，第二次 {_show(again)}。只用传进来的 rng（rng.choice），不要用模块级的 random.choice "
                     f"或 set 的顺序：同一个种子必须重建出同样的数据。")
            want = ref.task_messages(task, poems, random.Random(seed))
            if got == want:
                continue
            got_answers = [m["content"] for m in got if m["role"] == "assistant"]
            want_answers = [m["content"] for m in want if m["role"] == "assistant"]
            if got_answers != want_answers:
                fail(f"{task} 的回答 (assistant) 不对：应该是 {want_answers!r}，你的是 {got_answers!r}。"
                     f"见 task_messages 的文档字符串里的表。")
            if [m["content"] for m in got] != [m["content"] for m in want]:
                templates = ref.TEMPLATES
                pool = [t for k in ("form_poem", "ci", "continue", "name_form", "give_title", "again_shi", "again_ci")
                        for t in templates[k]]
                fits = all(any(_fits(t, m["content"]) for t in pool) for m in got if m["role"] == "user")
                if fits:
                    fail(f"请求用的是 TEMPLATES 里的模板，但和参考选的不一样（种子 {seed}，{task}）：应该是 {want[0]['content'][:30]!r}，"
                         f"你的是 {got[0]['content'][:30]!r}。约定：每条 user 消息正好一次 rng.choice(模板列表)，按消息的顺序，"
                         f"不多不少（不要 rng.shuffle、rng.randrange 或多抽一次）；这样参考实现才能逐字节重建发布的数据。")
                fail(f"{task} 的请求不对（种子 {seed}）：应该是 {want[0]['content'][:40]!r}，你的是 {got[0]['content'][:40]!r}。"
                     f"从 TEMPLATES 里对应的列表 rng.choice 一个模板，用 str.format 填字段（见 ask_for 和 task_messages 的文档字符串）。")
            fail(f"{task} 的消息和参考实现不一样：应该是 {want!r}，你的是 {got!r}（键只有 \"role\" 和 \"content\"）。")
    try:
        impl.task_messages("write_novel", (JINGYESI,), random.Random(0))
    except ValueError:
        pass
    else:
        fail("不认识的任务 (unknown task，例如 'write_novel') 要 raise ValueError，不要悄悄返回一个对话。")


def _fits(template: str, text: str) -> bool:
    """Could `text` be `template` with its fields filled in?"""
    pattern = re.escape(template)
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "(?s:.+)", pattern)
    return re.fullmatch(pattern, text) is not None


# ---------------------------------------------------------------- 2. chat shape

U, A, S = ({"role": "user", "content": "写一首诗。"}, {"role": "assistant", "content": "床前明月光。"},
           {"role": "system", "content": "你是诗人。"})
PROBLEM_CASES = (
    ([U, A], None, "一问一答是合格的对话，返回 None。"),
    ([S, U, A, U, A], None, "system 开头、再 user/assistant 轮流两轮，是合格的对话（多轮），返回 None。"),
    ([], "empty", "空列表：\"empty\"。"),
    ("写一首诗", "empty", "不是 list（一个字符串）：\"empty\"。"),
    ([U, "床前明月光"], "bad_message", "消息不是字典：\"bad_message\"。"),
    ([U, {"role": "assistant", "content": "  "}], "bad_message", "内容只有空白的消息：\"bad_message\"（学不到东西）。"),
    ([U, {"role": "assistant"}], "bad_message", "没有 content 的消息：\"bad_message\"。"),
    ([U, {"role": "bot", "content": "床前明月光。"}], "unknown_role",
     "角色 'bot' 不在 CHAT_ROLES 里：\"unknown_role\"（SFTDataset 只认 assistant 的回答）。"),
    ([U, A, S], "system_not_first", "system 消息只能是第一条：放在后面是 \"system_not_first\"。"),
    ([U, S, A], "system_not_first", "system 消息夹在中间：\"system_not_first\"。"),
    ([U, U, A], "not_alternating", "两条 user 连在一起：\"not_alternating\"（除了开头的 system，必须 user、assistant 轮流）。"),
    ([A, U, A], "not_alternating", "对话要由 user 开头（system 之后）：assistant 开头是 \"not_alternating\"。"),
    ([S, A], "not_alternating", "system 之后直接是 assistant：\"not_alternating\"。"),
    ([U, A, U], "no_final_answer", "最后一条是 user：最后的提问没有回答，\"no_final_answer\"。"),
    ([S, U], "no_final_answer", "只有 system 和 user，没有回答：\"no_final_answer\"。"),
    ([U, A, {"role": "bot", "content": "x"}, U], "unknown_role",
     "同时有几个问题时，返回 PROBLEMS 顺序里的**第一个**：unknown_role 在 no_final_answer 之前。"),
)


def _check_chat(impl) -> None:
    for messages, want, message in PROBLEM_CASES:
        got = impl.chat_problem(messages)
        if got != want:
            fail(f"{message}\nchat_problem({_show(messages) if isinstance(messages, list) else repr(messages)}) "
                 f"应该是 {want!r}，你的是 {got!r}。")
    msgs = [dict(U), dict(A)]
    rec = impl.to_chat_record(msgs, "form_poem")
    expect(isinstance(rec, dict), f"to_chat_record 应该返回 dict，你的返回了 {type(rec).__name__}。")
    if "conversations" not in rec:
        fail(f"to_chat_record 的键要是 \"conversations\"（MiniMind 的 SFTDataset 读它，stage 14），你的键是 {list(rec)}。")
    expect(list(rec) == ["conversations", "task"] and rec["task"] == "form_poem",
           f"to_chat_record 应该返回 {{\"conversations\": messages, \"task\": task}}（这个键的顺序：写出的文件才和发布的逐字节相同），"
           f"你的是 {rec!r}。")
    expect(rec["conversations"] == msgs, f"to_chat_record 的 \"conversations\" 应该就是传入的消息，你的是 {rec['conversations']!r}。")
    expect(rec["conversations"] is not msgs,
           "to_chat_record 要复制一份列表 (list(messages))：直接放进调用者的列表，之后调用者改它，写好的记录也跟着变。")
    for bad, why in (([U, A, U], "最后一条是 user"), ([U, {"role": "bot", "content": "x"}], "角色 'bot'"),
                     ([A, S], "system 不在第一条")):
        try:
            impl.to_chat_record(bad, "form_poem")
        except ValueError:
            continue
        fail(f"to_chat_record 收下了形状不对的对话 (malformed conversation)（{why}）：先用 chat_problem 检查，不是 None 就 raise "
             f"ValueError，坏的对话不能写进训练文件。")


# ---------------------------------------------------------------- 3. split by poem

def _check_line_keys(impl) -> None:
    got = impl.line_keys(JINGYESI.body)
    want = {"床前明月光疑是地上霜", "举头望明月低头思故乡"}
    expect(isinstance(got, set), f"line_keys 应该返回 set，你的返回了 {type(got).__name__}。")
    if got != want:
        if any("，" in k or "。" in k for k in got):
            fail(f"line_keys 只保留每行的汉字：标点不算，这样标点不同的同一行是同一个键。你的是 {sorted(got)}。")
        fail(f"line_keys(静夜思) 应该是 {sorted(want)}（每行一个键），你的是 {sorted(got)}。")
    got = impl.line_keys("明月几时有？\n把酒问青天。\n不知天上宫阙，今夕是何年。", 8)
    if got != {"不知天上宫阙今夕是何年"}:
        fail(f"少于 min_chars = 8 个汉字的行（“明月几时有？”）不算：这种短句许多不同的诗都有，不能凭它说是同一首诗。"
             f"line_keys(…, 8) 应该是 ['不知天上宫阙今夕是何年']，你的是 {sorted(got)}。")
    got = impl.line_keys("床前明月光疑是\n举头望明月低头思", 8)
    if got != {"举头望明月低头思"}:
        fail(f"正好 min_chars 个汉字的行要保留：len(key) >= min_chars，不是 >。line_keys('…\\n举头望明月低头思', 8) "
             f"应该是 ['举头望明月低头思']，你的是 {sorted(got)}。")
    got = impl.line_keys(JINGYESI.body, min_chars=11)
    expect(got == set(), f"min_chars 参数没有用上：min_chars=11 时静夜思没有一行够长，应该是 set()，你的是 {sorted(got)}。")


# held-out (validation) poems, and training records: which are the same poem as a held-out one
HELD_OUT = [JINGYESI.body, DENGGAO.body, "明月几时有？\n把酒问青天。\n不知天上宫阙，今夕是何年。"]
TRAIN = [
    (GUANQUE.body, False, ""),
    # the same poem as 静夜思, under another title in the corpus: the body is identical
    (JINGYESI.body, True, "同一首诗换了题目或作者（正文一字不差）"),
    # 登高 with one character read differently (萧萧 -> 潇潇) and the punctuation changed
    ("风急天高猿啸哀。渚清沙白鸟飞回。\n无边落木潇潇下，不尽长江滚滚来。\n万里悲秋常作客，百年多病独登台。\n"
     "艰难苦恨繁霜鬓，潦倒新停浊酒杯。", True, "近似重复 (near-duplicate)：登高有一个字不同（一作“潇潇”）、标点也不同"),
    # 静夜思 with other punctuation only
    ("床前明月光　疑是地上霜\n举头望明月　低头思故乡", True, "同一首诗只是标点不同"),
    # shares only a short stock phrase with the third held-out poem
    ("明月几时有？\n清风入我怀。\n山高月更小，水落石方出。", False, ""),
    (BAIDI.body, False, ""),
]


def _straddle_mistake(impl_out: list[int], want: list[int]) -> str:
    missed = [i for i in want if i not in impl_out]
    extra = [i for i in impl_out if i not in want]
    if not impl_out:
        return ("你按记录 (record) 划分：每条记录留在语料原来的那一边，于是同一首诗的两份副本一份在训练、一份在验证——"
                "评分器考的诗模型在训练时见过。按诗 (by poem) 划分：和任何留出 (held-out) 的诗共有一个长句的训练记录要离开训练集。")
    if 2 in missed:
        return ("近似重复 (near-duplicate) 跨越了划分 (straddling the split)：登高的一个副本只有一个字不同（一作“潇潇”）、"
                "标点也不同，你的比较（整首诗相同吗？）认不出它"
                + ("，只是标点不同的静夜思也没认出来" if 3 in missed else "")
                + "。比较的是**行**：和留出的诗共有任何一个 line_keys（只留汉字的长句）就是同一首诗。")
    if missed == [3]:
        return ("只是标点不同的同一首诗跨越了划分：比较要用 line_keys（只留汉字），不是原样的行。")
    if missed == [1]:
        return ("正文一字不差、只是题目不同的同一首诗跨越了划分：只看正文 (body)，不看题目和作者。")
    if extra == [4]:
        return ("只共有一个短句（“明月几时有”，不到 min_chars 个汉字）的两首不同的诗被当成了同一首：短句要忽略（line_keys 的 min_chars）。")
    return f"应该是 {want}，你的是 {impl_out}。"


def _check_straddling(impl, ref) -> None:
    bodies = [b for b, _, _ in TRAIN]
    want = [i for i, (_, same, _) in enumerate(TRAIN) if same]
    assert ref.straddling_poems(bodies, HELD_OUT) == want
    got = impl.straddling_poems(list(bodies), list(HELD_OUT))
    expect(isinstance(got, list), f"straddling_poems 应该返回下标的 list，你的返回了 {type(got).__name__}。")
    got = list(got)
    if got != want:
        if sorted(got) == want:
            fail("straddling_poems 返回的下标要从小到大排 (ascending)。")
        fail("按诗划分 (split by poem) 不对：" + _straddle_mistake(got, want)
             + "\n这些训练记录和留出的诗是同一首："
             + "；".join(f"[{i}] {TRAIN[i][2]}" for i in want))
    got = list(impl.straddling_poems(bodies, HELD_OUT, min_chars=11))
    want = ref.straddling_poems(bodies, HELD_OUT, min_chars=11)
    expect(got == want, f"straddling_poems 的 min_chars 要传给 line_keys：min_chars=11 时应该是 {want}，你的是 {got}。")
    got = list(impl.straddling_poems(bodies[:1], []))
    expect(got == [], f"没有留出的诗时，没有训练记录要离开：应该是 []，你的是 {got}。")


# ---------------------------------------------------------------- 4. the mix

MIX_CASES = (
    ({"a": 2, "b": 1}, 20, "两个任务 2:1 分 20 段"),
    ({"form_poem": 30, "ci": 15, "continue": 15, "name_form": 15, "give_title": 15, "multi_turn": 10}, 20_000,
     "data/build_sft.py 的训练配比"),
    ({"a": 1, "b": 1, "c": 1}, 10, "三个相同的权重分 10 段"),
    ({"a": 1, "b": 2, "c": 3}, 7, "1:2:3 分 7 段"),
    ({"x": 0, "y": 5}, 9, "权重为 0 的任务"),
    ({"shi": 2, "ci": 1}, 3000, "name_form 的诗/词之分"),
)


def _check_mix(impl, ref) -> None:
    for weights, n, what in MIX_CASES:
        want = ref.mix_counts(weights, n)
        got = impl.mix_counts(dict(weights), n)
        expect(isinstance(got, dict), f"mix_counts 应该返回 dict，你的返回了 {type(got).__name__}。")
        if got == want and list(got) == list(weights):
            continue
        if got == want:
            fail(f"mix_counts 的键要和 weights 同样的顺序：应该是 {list(weights)}，你的是 {list(got)}。")
        if set(got) != set(weights):
            fail(f"mix_counts 要给 weights 里的每个任务一个数（键相同）：应该是 {list(weights)}，你的是 {list(got)}。")
        total = sum(got.values())
        equal = n // len(weights)
        if len(set(weights.values())) > 1 and max(got.values()) - min(got.values()) <= 1 and equal in got.values():
            fail(f"任务配比 (task mix) 没按权重：{what}，权重 {weights}，每个任务分到的差不多一样多 ({got})。"
                 f"配比是一个决定：任务 t 得到 n · w_t / W 段，应该是 {want}。")
        if total != n:
            fail(f"mix_counts 的结果加起来要正好等于 n = {n}（{what}），你的是 {total}：{got}。"
                 f"先各取下整 n · w // W，再把剩下的 n − Σ 个一个一个分给余数最大的任务（最大余数法 largest remainder）；"
                 f"各自 round() 会多出或少掉。")
        fail(f"mix_counts({weights}, {n}) 应该是 {want}，你的是 {got}（{what}）：剩下的名额给余数 n · w % W **最大**的任务，"
             f"余数相同时给 weights 里靠前的任务，不是按顺序给前几个。")


# ---------------------------------------------------------------- 5. decontamination

REQUESTS = [
    {"messages": [{"role": "user", "content": "请以《登鹳雀楼》为题，写一首五言绝句。"}],
     "reference": "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。"},
    {"messages": [{"role": "system", "content": "你是古典诗词助手：只写诗词正文，不加解释。"},
                  {"role": "user", "content": "下面这首诗是什么体裁？\n朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。"}],
     "reference": "七言绝句"},
]
BODIES = [
    (JINGYESI.body, False, ""),
    ("白日依山尽\n黄河入海流\n欲穷千里目\n更上一层楼", True, "是第 1 条请求的参考答案 (reference)，只是换了标点和分行"),
    ("朝辞白帝彩云间\n千里江陵一日还\n两岸猿声啼不住\n轻舟已过万重山", True, "是第 2 条请求展示给模型的诗 (messages)，只是换了标点和分行"),
    ("白日依山尽，海阔天空远。\n", False, ""),  # shares 5 characters: fewer than n
    (CHUNWANG.body, False, ""),
]


def _check_contamination(impl, ref) -> None:
    bodies = [b for b, _, _ in BODIES]
    want = [i for i, (_, bad, _) in enumerate(BODIES) if bad]
    assert ref.contaminated_by_requests(bodies, REQUESTS, 10) == want
    got = impl.contaminated_by_requests(list(bodies), [dict(r) for r in REQUESTS], 10)
    expect(isinstance(got, list), f"contaminated_by_requests 应该返回下标的 list，你的返回了 {type(got).__name__}。")
    got = list(got)
    if got == want:
        got5 = list(impl.contaminated_by_requests(bodies, REQUESTS, 5))
        want5 = ref.contaminated_by_requests(bodies, REQUESTS, 5)
        expect(got5 == want5, f"参数 n 没有用上：n = 5 时“白日依山尽”五个字就算重合，应该是 {want5}，你的是 {got5}。")
        return
    if sorted(got) == want:
        fail("contaminated_by_requests 返回的下标要从小到大排 (ascending)。")
    if 2 in got and 1 not in got:
        fail("去污染 (decontamination) 漏掉了一条评分请求：请求的参考答案 (\"reference\") 也要比——训练数据里有评分器期望的答案，"
             "评分器的分数就不再是“没见过的请求”上的分数。[1] " + BODIES[1][2] + "。")
    if 1 in got and 2 not in got:
        fail("去污染 (decontamination) 漏掉了一条评分请求：请求的每条消息 (\"messages\") 都要比（包括 system 之后的 user 消息），"
             "不只是参考答案——说出体裁题把整首诗展示给了模型。[2] " + BODIES[2][2] + "。")
    if not got:
        fail("去污染 (decontamination) 一首也没找到：比较前两边都只留汉字（去掉标点和换行），"
             "“白日依山尽，黄河入海流。”和“白日依山尽\\n黄河入海流”才有相同的 10-gram。应该是 " + str(want) + "。")
    if 3 in got:
        fail(f"只共有 5 个字（少于 n = 10）的诗被判为污染：要共有一段**连续 n 个**汉字。应该是 {want}，你的是 {got}。")
    fail(f"contaminated_by_requests(bodies, requests, 10) 应该是 {want}，你的是 {got}。")


def check(impl, ref) -> str:
    _signatures(impl)
    _check_messages(impl, ref)
    _check_chat(impl)
    _check_line_keys(impl)
    _check_straddling(impl, ref)
    _check_mix(impl, ref)
    _check_contamination(impl, ref)
    return ("task_messages（六种任务、答案不进请求、同一种子同一结果）、chat_problem、to_chat_record、line_keys、"
            "straddling_poems（按诗划分）、mix_counts（最大余数）、contaminated_by_requests：全部正确。")
