"""The Task hooks every trainer on conversations shares (SFT, LoRA, and later DPO, distillation).

- data: ``{"conversations": [...]}`` lines, checked before step 1 (``check_chat_data``) and read
  with the learner's ``SFTDataset`` (stage 14: labels only on the assistant's replies);
- the end of a run: greedy answers to requests the data never contains, and the share that
  stopped at ``<|im_end|>``.  Generation uses the tokenizer's ChatML template (provided
  infrastructure), not the learner's render_chat.
A trainer module imports ``make_dataset``, ``check_data`` and ``describe_data`` from here and
sets ``sample = sample_answers([...])``; ``Task.of_module`` picks them up.
"""
from __future__ import annotations

import torch

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


@torch.no_grad()
def answer(model, tokenizer, request: str, device, max_new_tokens: int = 96) -> tuple[str, bool]:
    """The model's greedy answer to one request, and whether it stopped by itself (<|im_end|>)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                         add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)
    out = unwrap(model).generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    return tokenizer.decode(new, skip_special_tokens=True).strip(), tokenizer.eos_token_id in new


def sample_answers(requests: list[str]):
    """A Task.sample that asks `requests` (the first n) and reports the share that stopped."""
    def sample(model, tokenizer, device, n: int) -> dict:
        model.eval()
        asked = requests[:n]
        answers = [answer(model, tokenizer, r, device) for r in asked]
        model.train()
        stopped = sum(s for _, s in answers) / max(len(answers), 1)
        return {"prompts": asked,
                "samples": [f"问：{r}\n答：{a}" + ("" if s else "（没有停下）") for r, (a, s) in zip(asked, answers)],
                "metrics": {"stopped_share": round(stopped, 3)},
                "notes": [f"自己停下（以 <|im_end|> 结束）的回答占 {stopped:.0%}"]}

    return sample
