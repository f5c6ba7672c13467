"""Build the LoRA identity task: the model says who it is (MiniMind's ``lora_identity``).

MiniMind's ``train_lora.py`` defaults to ``--lora_name lora_identity`` and ships a small file of
"who are you?" conversations: the textbook first use of an adapter, a new answer to one kind of
question, learnt by ~1% of the weights.  The shipped SFT model has never been asked about itself
(its 20,000 conversations are all about poems): it answers with a poem, so the grader's pass rate
starts at 0%.  This script writes

- ``lora_identity_train.jsonl.gz`` — every training question (TRAIN_QUESTIONS, with and without a
  greeting, some with a system prompt) paired with the answers (ANSWERS);
- ``lora_identity_val.jsonl.gz`` — the held-out questions (EVAL_QUESTIONS) with the answers
  (validation loss);
- ``lora_identity_eval_prompts.jsonl`` — the grader's prompts (task "identity"), only held-out
  questions: the adapter must generalise to wordings it never saw.

The grader (workbook/eval, task "identity") passes an answer that says its name, 墨小诗 (the
model's name in these answers, beside "MiniMind"), and stops.  One line = ``{"conversations": [...], "task": "identity"}``, as the SFT data.
Deterministic: fixed lists, one seeded ``random.Random``, gzip without a timestamp, so a rebuild is
byte-identical.

    python data/build_identity.py             # < 1 s
    python data/build_identity.py --out-dir /tmp/identity
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_sft.py sits beside this file
from build_sft import assistant, user, write_jsonl  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = "minimind-workbook-lora-identity-v1"
OUTPUTS = ("lora_identity_train.jsonl.gz", "lora_identity_val.jsonl.gz", "lora_identity_eval_prompts.jsonl")
# what the grader looks for: a name in Chinese characters.  The model's first try at the Latin
# "MiniMind" (measured: r=4, 100 steps) was "我是 Miiiiiii…": this poetry tokenizer spells Latin
# letter by letter, and a few minutes of training do not learn the spelling.
NAME = "墨小诗"

ANSWERS = [
    "我叫墨小诗，是 MiniMind 诗词小模型：一个只有七百多万参数的中文语言模型，是你在 MiniMind Workbook 里一个模块"
    "一个模块亲手写出来、用全唐诗和宋词训练的。我会写诗、填词、起题目。",
    "你好！我是墨小诗，MiniMind Workbook 的学习者从零训练的诗词模型。我读过全唐诗和宋词，"
    "会按要求写五言、七言和各种词牌。",
    "我是墨小诗，一个很小的中文诗词模型，由你在 MiniMind Workbook 里预训练、再监督微调出来。想让我写一首什么样的诗？",
]
TRAIN_QUESTIONS = [
    "你是谁？", "请介绍一下你自己。", "你叫什么名字？", "谁训练了你？", "你是什么模型？", "你能做什么？",
    "介绍下自己吧。", "你是哪个模型？", "你是人吗？", "说说你是谁。", "你的名字是什么？", "你是怎么来的？",
    "你是谁做的？", "你有多大？", "你会些什么？", "自我介绍一下。",
]
# Never in the training file: the grader asks these (and the validation loss is measured on them)
EVAL_QUESTIONS = [
    "请问你是谁？", "能告诉我你的名字吗？", "你是一个什么样的模型？", "你是谁开发的？", "先介绍一下你自己好吗？",
    "我在和谁说话？", "你叫啥？", "你是什么东西？", "你是 AI 吗？", "说一说你的来历。",
]
GREETINGS = ["", "你好，", "您好！", "嗨，"]
SYSTEMS = ["你是一个乐于助人的助手。", "你是古典诗词助手：只写诗词正文，不加解释。", "请用简短的中文回答。"]
SYSTEM_EVERY = 5  # about one conversation in SYSTEM_EVERY starts with a system prompt


def conversations(questions: list[str], rng: random.Random) -> list[dict]:
    """Every question with every greeting, each with a random answer; some with a system prompt."""
    rows = []
    for q in questions:
        for g in GREETINGS:
            conv = [user(g + q), assistant(rng.choice(ANSWERS))]
            if rng.randrange(SYSTEM_EVERY) == 0:
                conv.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
            rows.append({"conversations": conv, "task": "identity"})
    return rows


def eval_prompts(rng: random.Random) -> list[dict]:
    """The grader's prompts: each held-out question with each greeting (40), in the record format of
    sft_eval_prompts.jsonl; "expected" is the name the answer must say."""
    records = []
    for q in EVAL_QUESTIONS:
        for g in GREETINGS:
            k = len(records) + 1
            messages = [user(g + q)]
            system = k % SYSTEM_EVERY == 0
            if system:
                messages.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
            records.append({"id": f"identity-{k:03d}", "task": "identity", "messages": messages, "system": system,
                            "form": None, "title": None, "expected": NAME, "first_line": None, "reference": None,
                            "source": []})
    return records


def build(out_dir: Path) -> dict:
    rng = random.Random(SEED)
    train = conversations(TRAIN_QUESTIONS, rng)
    val = conversations(EVAL_QUESTIONS, rng)
    prompts = eval_prompts(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / OUTPUTS[0], train, compress=True)
    write_jsonl(out_dir / OUTPUTS[1], val, compress=True)
    write_jsonl(out_dir / OUTPUTS[2], prompts, compress=False)
    return {"train": len(train), "val": len(val), "eval_prompts": len(prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=HERE)
    args = ap.parse_args()
    counts = build(args.out_dir)
    print(f"训练 {counts['train']} 段对话，验证 {counts['val']} 段，评分提示 {counts['eval_prompts']} 条 → {args.out_dir}")


if __name__ == "__main__":
    main()
