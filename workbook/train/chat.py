"""The Task hooks every trainer on conversations shares (SFT, LoRA, and later DPO, distillation).

- data: ``{"conversations": [...]}`` lines, checked before step 1 (``check_chat_data``) and read
  with the learner's ``SFTDataset`` (stage 14: labels only on the assistant's replies);
- the end of a run: greedy answers to requests the data never contains, and the share that
  stopped at ``<|im_end|>``, written in one batched, KV-cached call (``workbook.model.generate``).
  Generation uses the tokenizer's ChatML template (provided infrastructure), not the learner's
  render_chat.
A trainer module imports ``make_dataset``, ``check_data`` and ``describe_data`` from here and
sets ``sample = sample_answers([...])``; ``Task.of_module`` picks them up.
"""
from __future__ import annotations

from .checkpoint import unwrap


def make_dataset(path: str, tokenizer, max_length: int):
    from ..data.sft import SFTDataset  # stage 14: the learner's (or the reference, by mode)

    return SFTDataset(path, tokenizer, max_length)


def check_data(path: str, tokenizer, vocab_size: int, max_length: int | None = None) -> dict:
    from ..data.validate import check_chat_data

    # max_length: --max_seq_len; a run whose every reply is cut away is refused before step 1
    return check_chat_data(path, tokenizer=tokenizer, vocab_size=vocab_size, max_length=max_length)


def describe_data(summary: dict) -> str:
    from ..data.validate import describe_chat

    return describe_chat(summary)


def answers(model, tokenizer, requests: list[str], device, max_new_tokens: int = 96) -> list[tuple[str, bool]]:
    """The model's greedy answer to each request, and whether it stopped by itself (<|im_end|>).

    One batched, KV-cached call (workbook.model.generate); `model` may be wrapped (DDP, compile) or a
    DPO/distillation pair (its trained model answers).
    """
    from ..model.generate import generate
    from .paired import Paired

    net = unwrap(model)
    net = net.model if isinstance(net, Paired) else net
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": r}], tokenize=False,
                                           add_generation_prompt=True) for r in requests]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = tokenizer.eos_token_id
    rows = generate(net, ids, max_new_tokens, eos, pad_token_id=tokenizer.pad_token_id or 0, device=device)
    return [(tokenizer.decode(row, skip_special_tokens=True).strip(), eos in row) for row in rows]


def sample_answers(requests: list[str]):
    """A Task.sample that asks `requests` (the first n) and reports the share that stopped."""
    def sample(model, tokenizer, device, n: int) -> dict:
        asked = requests[:n]
        got = answers(model, tokenizer, asked, device)  # eval mode inside, the mode restored after
        stopped = sum(s for _, s in got) / max(len(got), 1)
        return {"prompts": asked,
                "samples": [f"问：{r}\n答：{a}" + ("" if s else "（没有停下）") for r, (a, s) in zip(asked, got)],
                "metrics": {"stopped_share": round(stopped, 3)},
                "notes": [f"自己停下（以 <|im_end|> 结束）的回答占 {stopped:.0%}"]}

    return sample
