"""Instruction data: from poems to the chat tasks SFT learns from (stage 19).

Stage 14 trained on conversations; this stage makes them.  ``data/build_sft.py`` turns the
poems of the corpus into six chat tasks and calls the functions below for the parts that decide
what the model learns and what the grader may still call "unseen":

1. **templates** (``task_messages``): one poem (two for multi-turn) becomes a user request drawn
   from TEMPLATES and the assistant's answer; the request must never contain the answer;
2. **the chat shape** (``chat_problem``, ``to_chat_record``): an optional system message first,
   then user / assistant alternating, ending with the assistant (SFTDataset learns only from
   the assistant's turns, and from nothing after the last one);
3. **split by poem** (``line_keys``, ``straddling_poems``): the corpus was split per record, so
   one poem filed twice (another title, another punctuation, one character read differently) can
   sit on both sides; a training record that shares a long line with a held-out one is the
   same poem and leaves training;
4. **the mix** (``mix_counts``): how many conversations of each task, exactly, from weights;
5. **decontamination** (``contaminated_by_requests``): no training poem shares an n-gram with
   anything the grader shows or expects.

Every random choice comes from the ``random.Random`` passed in, so a seed rebuilds the same data.
Lesson: notebooks/19_instruction_data.ipynb.  Check: ``python -m workbook check 19``.
"""
from __future__ import annotations

import random
import re

# CJK ideographs: URO, Ext A, compatibility, and the supplementary planes (Ext B and later).
HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
HAN_RE = re.compile(f"[{HAN}]")  # one Han character (provided)

TASKS = ("form_poem", "ci", "continue", "name_form", "give_title", "multi_turn")
CHAT_ROLES = ("system", "user", "assistant")
# What chat_problem returns, in the order it looks for them.
PROBLEMS = ("empty", "bad_message", "unknown_role", "system_not_first", "not_alternating",
            "no_final_answer")
# Regulated shi: form -> (lines, characters per line); CN writes the numbers in a request.
SHI_SHAPES = {"五言绝句": (4, 5), "七言绝句": (4, 7), "五言律诗": (8, 5), "七言律诗": (8, 7)}
CN = {2: "两", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八"}

# The requests (provided).  Fields: {title} {form} {n} {chars} {tune} {first} {body}.
TEMPLATES = {
    "form_poem": [
        "请以《{title}》为题，写一首{form}。",
        "写一首{form}，题目是《{title}》。",
        "以《{title}》为题作一首{form}。",
        "帮我写一首题为《{title}》的{form}。",
        "我想要一首{form}，题目叫《{title}》。",
        "请作{form}一首，题为《{title}》。",
        "题目：《{title}》\n体裁：{form}\n请写出这首诗。",
        "写一首诗，题目《{title}》，{n}句，每句{chars}个字。",
    ],
    "ci": [
        "请按《{tune}》的词牌填一首词。",
        "用《{tune}》这个词牌写一首词。",
        "填一首《{tune}》。",
        "以《{tune}》为调，作词一首。",
        "请写一阕《{tune}》。",
        "词牌：{tune}。请填一首词。",
        "来一首《{tune}》吧。",
    ],
    "continue": [
        "续写这首{form}：\n{first}",
        "这是一首{form}的第一联，请续写完整：\n{first}",
        "下面是一首{form}的开头，请接着写完：\n{first}",
        "以这一联开头，写完一首{form}：\n{first}",
        "{first}\n这是一首{form}的开头两句，请接着往下写。",
        "请把这首{form}补完，开头是：\n{first}",
    ],
    "name_form": [
        "下面这首诗是什么体裁？\n{body}",
        "请判断这首作品的体裁（五言绝句、七言律诗之类；如果是词，说出词牌）：\n{body}",
        "这首诗词属于哪种体裁？\n{body}",
        "{body}\n这是什么体裁？",
        "说出下面作品的体裁：\n{body}",
    ],
    "give_title": [
        "给这首诗起个题目：\n{body}",
        "请为下面这首{form}拟一个题目：\n{body}",
        "{body}\n请给这首诗加一个标题。",
        "这首诗应该叫什么题目？\n{body}",
        "为下面的诗取个题目，用书名号《》括起来：\n{body}",
    ],
    # multi_turn's second request, after a shi or after a ci
    "again_shi": [
        "再写一首同样体裁的。",
        "很好。再来一首同样体裁的，题目是《{title}》。",
        "同样的体裁，换个题目《{title}》再写一首。",
        "再来一首吧，还是这个体裁。",
        "再写一首{form}。",
    ],
    "again_ci": [
        "再填一首同样词牌的。",
        "很好，用同一个词牌再写一首。",
        "再来一首《{tune}》。",
    ],
}
# A few fixed system prompts, chosen to fit the poem (shi or ci); data/build_sft.py puts one in
# front of about 1 conversation in 8.
SYSTEM_PROMPTS = {
    "shi": ["你是一位精通格律的唐代诗人。", "你是古典诗词助手：只写诗词正文，不加解释。",
            "你是一位耐心的中文古典诗词老师。"],
    "ci": ["你是一位熟悉各种词牌的宋代词人。", "你是古典诗词助手：只写诗词正文，不加解释。",
           "你是一位耐心的中文古典诗词老师。"],
}


def _message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# ---- 1. templates -------------------------------------------------------------------------------

def ask_for(poem, rng: random.Random) -> str:
    """The request for `poem`: a 词牌 (ci) or a title and a form (shi).  One rng.choice.

    ci:  rng.choice(TEMPLATES["ci"]).format(tune=poem.title)
    shi: rng.choice(TEMPLATES["form_poem"]).format(title=poem.title, form=poem.form,
                                                   n=CN[lines], chars=CN[characters])
         with (lines, characters) = SHI_SHAPES[poem.form].
    """
    if poem.kind == "ci":
        return rng.choice(TEMPLATES["ci"]).format(tune=poem.title)
    n, chars = SHI_SHAPES[poem.form]
    return rng.choice(TEMPLATES["form_poem"]).format(title=poem.title, form=poem.form, n=CN[n],
                                                     chars=CN[chars])


def task_messages(task: str, poems: tuple, rng: random.Random) -> list[dict]:
    """One conversation of `task`, made from real poems: a list of {"role", "content"} dicts.

    poems: a tuple of one poem (two for "multi_turn"); a poem is any object with ``title``,
    ``body`` (lines joined with "\\n"), ``kind`` ("shi" or "ci") and ``form`` (a SHI_SHAPES key,
    or None for ci), e.g. data/build_sft.py's Poem.  p = poems[0], lines = p.body.split("\\n").

    | task       | user (one rng.choice of the template list)        | assistant              |
    |------------|----------------------------------------------------|------------------------|
    | form_poem  | ask_for(p, rng)                                    | p.body                 |
    | ci         | ask_for(p, rng)                                    | p.body                 |
    | continue   | TEMPLATES["continue"]: form=p.form, first=lines[0] | lines[1:] joined, "\\n" |
    | name_form  | TEMPLATES["name_form"]: body=p.body                | p.form, or for a ci    |
    |            |                                                    | "词，词牌是《{title}》"   |
    | give_title | TEMPLATES["give_title"]: body=p.body, form=p.form  | "《{p.title}》"          |
    | multi_turn | ask_for(p, rng); then, after p.body, the second    | p.body, then q.body    |
    |            | request TEMPLATES["again_ci" if p is a ci else     | (q = poems[1])         |
    |            | "again_shi"]: title=q.title, form=q.form,          |                        |
    |            | tune=q.title                                       |                        |

    Returns [user, assistant] (four messages, alternating, for multi_turn); no system message.
    The rng is used for exactly one rng.choice per user message, in order, and for nothing else:
    the same seed gives the same conversation.  An unknown task: ValueError.
    """
    p = poems[0]
    lines = p.body.split("\n")
    if task in ("form_poem", "ci"):
        return [_message("user", ask_for(p, rng)), _message("assistant", p.body)]
    if task == "continue":
        # the first line (a couplet) is given; the answer is the rest, never the given line again
        request = rng.choice(TEMPLATES["continue"]).format(form=p.form, first=lines[0])
        return [_message("user", request), _message("assistant", "\n".join(lines[1:]))]
    if task == "name_form":
        # the request shows the poem, never its form: that is the answer
        answer = p.form if p.kind == "shi" else f"词，词牌是《{p.title}》"
        return [_message("user", rng.choice(TEMPLATES["name_form"]).format(body=p.body)),
                _message("assistant", answer)]
    if task == "give_title":
        request = rng.choice(TEMPLATES["give_title"]).format(body=p.body, form=p.form)
        return [_message("user", request), _message("assistant", f"《{p.title}》")]
    if task == "multi_turn":
        q = poems[1]
        first = ask_for(p, rng)
        again = rng.choice(TEMPLATES["again_ci" if p.kind == "ci" else "again_shi"])
        again = again.format(title=q.title, form=q.form, tune=q.title)
        return [_message("user", first), _message("assistant", p.body),
                _message("user", again), _message("assistant", q.body)]
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


# ---- 2. the chat shape --------------------------------------------------------------------------

def chat_problem(messages) -> str | None:
    """What is wrong with a conversation's shape, or None when it can be trained on.

    The FIRST problem found, in the order of PROBLEMS:
    1. "empty":            not a list, or an empty one
    2. "bad_message":      a message is not a dict with a str "role" and a str "content", or its
                           content has no non-space character
    3. "unknown_role":     a role other than CHAT_ROLES (system, user, assistant)
    4. "system_not_first": a system message anywhere but first
    5. "not_alternating":  after the optional system message, roles are not user, assistant,
                           user, assistant, … (it must start with the user)
    6. "no_final_answer":  the last message is not the assistant's (nothing to learn after it)
    Problems 2-4 are looked for over all messages before 5 and 6.
    """
    if not isinstance(messages, list) or not messages:
        return "empty"
    for m in messages:
        if (not isinstance(m, dict) or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str) or not m["content"].strip()):
            return "bad_message"
    roles = [m["role"] for m in messages]
    if any(r not in CHAT_ROLES for r in roles):
        return "unknown_role"
    if "system" in roles[1:]:
        return "system_not_first"
    turns = roles[1:] if roles[0] == "system" else roles
    # user at even positions, assistant at odd ones
    if not turns or any(r != ("user", "assistant")[k % 2] for k, r in enumerate(turns)):
        return "not_alternating"
    if turns[-1] != "assistant":
        return "no_final_answer"
    return None


def to_chat_record(messages: list[dict], task: str) -> dict:
    """One line of the SFT data: ``{"conversations": messages, "task": task}`` (this key order),
    MiniMind's chat format (SFTDataset reads "conversations"; "task" names the task).

    The list is copied (not the caller's list); ValueError naming the problem when
    chat_problem(messages) is not None, so a malformed conversation never reaches a file.
    """
    problem = chat_problem(messages)
    if problem is not None:
        raise ValueError(f"conversation of task {task!r} is malformed: {problem}")
    return {"conversations": list(messages), "task": task}


# ---- 3. split by poem ---------------------------------------------------------------------------

def line_keys(body: str, min_chars: int = 8) -> set[str]:
    """The identity of a poem's long lines: for every line of `body` (split on "\\n"), its Han
    characters only, kept when there are at least `min_chars` of them.

        line_keys("床前明月光，疑是地上霜。\\n举头望明月，低头思故乡。") ==
            {"床前明月光疑是地上霜", "举头望明月低头思故乡"}

    Han only, so punctuation never makes two copies of a line differ; long lines only, so short
    stock phrases ("明月几时有") shared by different poems do not make them one poem.
    """
    keys = set()
    for line in body.split("\n"):
        key = "".join(HAN_RE.findall(line))
        if len(key) >= min_chars:
            keys.add(key)
    return keys


def straddling_poems(train_bodies: list[str], held_out_bodies: list[str], min_chars: int = 8) -> list[int]:
    """Indices (ascending) of the training poems that are the same poem as a held-out one.

    The corpus was split per record (a hash of title + author + body), so one poem filed twice
    can have a copy on each side.  Two records are the same poem when they share a line key
    (line_keys(body, min_chars)): the same long line, whatever the title, author, punctuation
    or the other lines.  The training copy must leave training; the held-out side is kept as it
    is (the grader's requests are made from it).
    """
    held: set[str] = set()
    for body in held_out_bodies:
        held |= line_keys(body, min_chars)
    return [i for i, body in enumerate(train_bodies) if not line_keys(body, min_chars).isdisjoint(held)]


# ---- 4. the mix ---------------------------------------------------------------------------------

def mix_counts(weights: dict[str, int], n: int) -> dict[str, int]:
    """How many of `n` conversations each task gets: shares proportional to `weights`
    (non-negative integers), summing to exactly n.

    Largest remainder (Hamilton): task t first gets floor(n · w_t / W), W = Σ w; the units
    left over go one each to the tasks with the largest remainders n · w_t mod W, ties to the
    task that comes first in `weights`.  Same keys, same order as `weights`.

        mix_counts({"a": 2, "b": 1}, 20) == {"a": 13, "b": 7}
    """
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    counts = {t: n * w // total for t, w in weights.items()}
    left = n - sum(counts.values())
    # largest remainder first; sorted() is stable, so equal remainders keep the weights' order
    for t in sorted(weights, key=lambda t: -(n * weights[t] % total))[:left]:
        counts[t] += 1
    return counts


# ---- 5. decontamination -------------------------------------------------------------------------

def contaminated_by_requests(bodies: list[str], requests: list[dict], n: int = 10) -> list[int]:
    """Indices (ascending) of the poems in `bodies` that share a run of n Han characters with
    anything the grader shows or expects.

    requests: the grader's records (data/sft_eval_prompts.jsonl): each has "messages" (a list of
    {"role", "content"}: what the model is shown) and "reference" (the expected answer).  Both
    sides are compared as Han characters only (punctuation and line breaks removed), so
    "白日依山尽，黄河入海流。" and "白日依山尽\\n黄河入海流" share every n-gram.
    """
    seen: set[str] = set()
    for req in requests:
        texts = [m["content"] for m in req["messages"]] + [req.get("reference") or ""]
        for text in texts:
            key = "".join(HAN_RE.findall(text))
            seen.update(key[i:i + n] for i in range(len(key) - n + 1))
    out = []
    for i, body in enumerate(bodies):
        key = "".join(HAN_RE.findall(body))
        if any(key[j:j + n] in seen for j in range(len(key) - n + 1)):
            out.append(i)
    return out
