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
    # TODO(learner):
    #   1. a ci: one rng.choice over TEMPLATES["ci"], filled with tune=poem.title
    #   2. a shi: (n, chars) = SHI_SHAPES[poem.form]; one rng.choice over TEMPLATES["form_poem"],
    #      filled with title=poem.title, form=poem.form, n=CN[n], chars=CN[chars]
    #      (str.format ignores the fields a template does not use)
    #   use only `rng` (never the module-level random.choice): the seed must decide everything
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 ask_for，见 notebooks/19_instruction_data.ipynb")


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
    # TODO(learner):
    #   1. p = poems[0]; lines = p.body.split("\n"); messages are {"role": ..., "content": ...}
    #   2. form_poem, ci: [user ask_for(p, rng), assistant p.body]
    #   3. continue: the request shows first=lines[0] (TEMPLATES["continue"], form=p.form); the
    #      answer is "\n".join(lines[1:]) — the given line must not be in the answer, and no line
    #      of the answer may be in the request
    #   4. name_form: the request shows the body (TEMPLATES["name_form"]); the answer is p.form
    #      for a shi, f"词，词牌是《{p.title}》" for a ci — the form never in the request
    #   5. give_title: TEMPLATES["give_title"] with body=p.body, form=p.form; answer f"《{p.title}》"
    #      — the title never in the request
    #   6. multi_turn: q = poems[1]; user ask_for(p, rng), assistant p.body, then user: one
    #      rng.choice over TEMPLATES["again_ci"] (p is a ci) or ["again_shi"], formatted with
    #      title=q.title, form=q.form, tune=q.title; assistant q.body — four messages
    #   7. any other task: raise ValueError
    #   one rng.choice per user message, in order (the builder rebuilds the shipped files only so)
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 task_messages，见 notebooks/19_instruction_data.ipynb")


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
    # TODO(learner):
    #   1. not a list, or []: "empty"
    #   2. any message that is not a dict with str "role" and str "content", or whose content is
    #      only spaces: "bad_message"
    #   3. any role not in CHAT_ROLES: "unknown_role"
    #   4. "system" anywhere after position 0: "system_not_first"
    #   5. turns = the roles after an optional system message; they must be user, assistant,
    #      user, assistant, … (position k: ("user", "assistant")[k % 2]); else "not_alternating"
    #   6. the last turn is not "assistant": "no_final_answer"
    #   7. None
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 chat_problem，见 notebooks/19_instruction_data.ipynb")


def to_chat_record(messages: list[dict], task: str) -> dict:
    """One line of the SFT data: ``{"conversations": messages, "task": task}`` (this key order),
    MiniMind's chat format (SFTDataset reads "conversations"; "task" names the task).

    The list is copied (not the caller's list); ValueError naming the problem when
    chat_problem(messages) is not None, so a malformed conversation never reaches a file.
    """
    # TODO(learner):
    #   1. problem = chat_problem(messages); not None: raise ValueError naming it
    #   2. return {"conversations": list(messages), "task": task}  (a copy; this key order)
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 to_chat_record，见 notebooks/19_instruction_data.ipynb")


# ---- 3. split by poem ---------------------------------------------------------------------------

def line_keys(body: str, min_chars: int = 8) -> set[str]:
    """The identity of a poem's long lines: for every line of `body` (split on "\\n"), its Han
    characters only, kept when there are at least `min_chars` of them.

        line_keys("床前明月光，疑是地上霜。\\n举头望明月，低头思故乡。") ==
            {"床前明月光疑是地上霜", "举头望明月低头思故乡"}

    Han only, so punctuation never makes two copies of a line differ; long lines only, so short
    stock phrases ("明月几时有") shared by different poems do not make them one poem.
    """
    # TODO(learner):
    #   for each line of body.split("\n"): key = its Han characters only ("".join(HAN_RE.findall(line)));
    #   keep it when len(key) >= min_chars; return the set
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 line_keys，见 notebooks/19_instruction_data.ipynb")


def straddling_poems(train_bodies: list[str], held_out_bodies: list[str], min_chars: int = 8) -> list[int]:
    """Indices (ascending) of the training poems that are the same poem as a held-out one.

    The corpus was split per record (a hash of title + author + body), so one poem filed twice
    can have a copy on each side.  Two records are the same poem when they share a line key
    (line_keys(body, min_chars)): the same long line, whatever the title, author, punctuation
    or the other lines.  The training copy must leave training; the held-out side is kept as it
    is (the grader's requests are made from it).
    """
    # TODO(learner):
    #   1. held = the union of line_keys(body, min_chars) over every held-out body
    #   2. the indices i (ascending) whose line_keys(train_bodies[i], min_chars) meet `held`
    #   not: comparing whole bodies or whole records (title + author + body) — a copy with another
    #   title, other punctuation or one other line would then stay on both sides
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 straddling_poems，见 notebooks/19_instruction_data.ipynb")


# ---- 4. the mix ---------------------------------------------------------------------------------

def mix_counts(weights: dict[str, int], n: int) -> dict[str, int]:
    """How many of `n` conversations each task gets: shares proportional to `weights`
    (non-negative integers), summing to exactly n.

    Largest remainder (Hamilton): task t first gets floor(n · w_t / W), W = Σ w; the units
    left over go one each to the tasks with the largest remainders n · w_t mod W, ties to the
    task that comes first in `weights`.  Same keys, same order as `weights`.

        mix_counts({"a": 2, "b": 1}, 20) == {"a": 13, "b": 7}
    """
    # TODO(learner):
    #   1. W = sum of the weights; counts[t] = n * w_t // W (integers: no float rounding)
    #   2. left = n - sum(counts): give one more to each of the `left` tasks with the largest
    #      remainder n * w_t % W; equal remainders: the task first in `weights` (sorted() is stable)
    #   3. return a dict with the keys in the order of `weights`; the counts sum to n
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 mix_counts，见 notebooks/19_instruction_data.ipynb")


# ---- 5. decontamination -------------------------------------------------------------------------

def contaminated_by_requests(bodies: list[str], requests: list[dict], n: int = 10) -> list[int]:
    """Indices (ascending) of the poems in `bodies` that share a run of n Han characters with
    anything the grader shows or expects.

    requests: the grader's records (data/sft_eval_prompts.jsonl): each has "messages" (a list of
    {"role", "content"}: what the model is shown) and "reference" (the expected answer).  Both
    sides are compared as Han characters only (punctuation and line breaks removed), so
    "白日依山尽，黄河入海流。" and "白日依山尽\\n黄河入海流" share every n-gram.
    """
    # TODO(learner):
    #   1. seen = every run of n Han characters (key[i:i + n]) of every request's texts: the
    #      content of each of its "messages" AND its "reference"; key = the Han characters only
    #   2. the indices (ascending) of the bodies whose Han key has an n-gram in seen
    raise NotImplementedError(
        "TODO(19 instruction_data): 在 workbook/data/instruct.py 里写 contaminated_by_requests，见 notebooks/19_instruction_data.ipynb")
