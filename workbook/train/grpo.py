"""``python -m workbook.train.grpo``: MiniMind's GRPO, on the learner's package, with a reward that can be checked.

Same flags as MiniMind's ``train_grpo.py`` (``--num_generations 8``, ``--beta 0.02``,
``--max_gen_len``, ``--from_weight full_sft``, ``--save_weight grpo``, learning rate 8e-8, batch 2,
…).  MiniMind scores the samples with a 1.8B reward model; here the reward is a set of rules a
learner can check by eye (``workbook.eval.reward``): the form the request asks for, the stop at
``<|im_end|>``, the rhyme of the even lines and (``--reward_tones 1``) the tones.  The run
harness is the one every trainer shares (``workbook.train.trainer``).  What GRPO changes:

- data: prompts, not answers — ``data/grpo_prompts.jsonl.gz`` (``data/build_grpo.py``): each line
  a request (the messages, the last one the user's) and the clause pattern its answer must fit;
- every micro-step samples first: each prompt ``--num_generations`` times (the learner's
  ``repeat_prompts``), at ``--temperature``, up to ``--max_gen_len`` new tokens, batched and
  KV-cached (``workbook.model.generate``); the reward scores every completion;
- then the learner's stage-20 code: the completion mask, per-token log-probs of the policy (with
  gradient) and of the frozen reference (the starting weights), group-relative advantages and
  ``grpo_loss``; the loop sees that loss as the model's ``.loss`` (``workbook.train.paired``);
- the log: mean reward and each part, completion length, KL, the share of degenerate
  (repetitive) samples and of samples in form whose even lines end on one character twice
  (repeated_end: the hole ``--reward_distinct_rhymes 0`` leaves open), every ``--log_interval``;
  a group's best and worst completion every ``--sample_interval``; at the end, greedy answers to
  held-out requests with their rewards.

Start from an SFT model: ``--from_weight data/base/full_sft_320.pth`` (the shipped stage-14 model).
"""
from __future__ import annotations

import sys

import torch
from torch.utils.data import Dataset

from . import trainer
from .paired import Paired, PairedOutput, save_trained_weights
from .trainer import IN_REPO, ROOT, ConfigError, Task

DEFAULT_DATA = ROOT / "data" / "grpo_prompts.jsonl.gz" if IN_REPO else ""
HELD_OUT = ROOT / "data" / "sft_eval_prompts.jsonl" if IN_REPO else None
PARTS = ("form", "stop", "rhyme", "tones")


def extra_arguments(p) -> None:
    p.add_argument("--num_generations", type=int, default=8, help="每个提示采样几个回答（一组 group）")
    p.add_argument("--beta", type=float, default=0.02, help="β：KL 惩罚的系数，把策略拉在参考模型附近")
    p.add_argument("--max_gen_len", type=int, default=128, help="每个回答最多生成多少个新 token")
    p.add_argument("--temperature", type=float, default=0.8, help="采样温度（GRPO 要多样的回答，必须 > 0）")
    p.add_argument("--reward_tones", type=int, default=1, choices=[0, 1],
                   help="1 = 奖励里算上平仄 (tones)；0 = 只算体裁、停止和押韵")
    p.add_argument("--reward_distinct_rhymes", type=int, default=1, choices=[0, 1],
                   help="1 = 同一个韵脚字用两次不算押韵（不重韵）；0 = 算（可以被钻空子的旧规则，见第 20 课）")
    p.add_argument("--sample_interval", type=int, default=0,
                   help="每多少个 micro-step 打印一组里最好和最差的回答；0 = 和 --log_interval 一样")


class PromptDataset(Dataset):
    """Prompt records as the loop's (input_ids, labels), both (max_length,) int64.

    input_ids: the chat template with the generation prompt, left-padded with `pad_id` (MiniMind's
    RLAIFDataset pads on the left and keeps the *last* max_length tokens when a prompt is longer);
    labels: the clause pattern the answer must fit in the first slots, -100 after it (the reward
    reads it; no token of a prompt is ever a target).
    """

    def __init__(self, records: list[dict], tokenizer, max_length: int):
        self.records, self.max_length = records, max_length
        self.pad_id = tokenizer.pad_token_id or 0
        self.ids = []
        for rec in records:
            text = tokenizer.apply_chat_template(rec["messages"], tokenize=False, add_generation_prompt=True)
            self.ids.append(tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        ids = self.ids[i]
        x = torch.full((self.max_length,), self.pad_id, dtype=torch.long)
        x[self.max_length - len(ids):] = torch.tensor(ids, dtype=torch.long)
        pattern = self.records[i]["form"]["pattern"]  # check_data refused one longer than max_length
        y = torch.full((self.max_length,), -100, dtype=torch.long)
        y[:len(pattern)] = torch.tensor(pattern, dtype=torch.long)
        return x, y


def load_records(path: str, max_length: int | None = None) -> list[dict]:
    """The prompt records; DataError (file:line) for a line that is not one, has no pattern, or
    has more clauses than max_length (the dataset's labels row carries the pattern)."""
    from ..data.validate import DataError, read_jsonl_lines
    from ..eval.runner import load_prompts

    records = load_prompts(path)
    for (lineno, _), rec in zip(((n, r) for n, r in read_jsonl_lines(path) if r.strip()), records):
        form = rec.get("form")
        pattern = form.get("pattern") if isinstance(form, dict) else None
        if not (isinstance(pattern, list) and len(pattern) >= 2
                and all(isinstance(n, int) and 0 < n < 100 for n in pattern)):
            raise DataError(path, 'GRPO 的奖励按体裁打分：每条提示都要有 "form": {"pattern": [每句字数, …]}'
                                  '（至少两句，每句 1–99 个字）', lineno)
        if max_length is not None and len(pattern) > max_length:
            raise DataError(path, f"体裁有 {len(pattern)} 句，放不进 --max_seq_len {max_length}：把 --max_seq_len 调大",
                            lineno)
    return records


def make_dataset(path: str, tokenizer, max_length: int):
    return PromptDataset(load_records(path, max_length), tokenizer, max_length)


def check_data(path: str, tokenizer, vocab_size: int, max_length: int | None = None) -> dict:
    from collections import Counter

    records = load_records(path, max_length)
    cut = 0
    if max_length is not None:
        for rec in records:
            text = tokenizer.apply_chat_template(rec["messages"], tokenize=False, add_generation_prompt=True)
            cut += len(tokenizer(text, add_special_tokens=False)["input_ids"]) > max_length
    return {"path": path, "prompts": len(records), "tasks": dict(Counter(r["task"] for r in records)),
            "cut": cut, "max_length": max_length}


def describe_data(summary: dict) -> str:
    tasks = "，".join(f"{k} {v}" for k, v in summary["tasks"].items())
    line = f"{summary['path']}：{summary['prompts']} 个提示（{tasks}）"
    if summary["cut"]:
        line += (f"；其中 {summary['cut']} 个长于 --max_seq_len {summary['max_length']}，只保留最后 "
                 f"{summary['max_length']} 个 token（MiniMind 的做法）")
    return line


def left_trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row (prompts are left-padded to max_seq_len)."""
    keep = mask.any(dim=0).nonzero()
    start = int(keep[0]) if len(keep) else ids.shape[1] - 1
    return ids[:, start:], mask[:, start:]


class GRPOObjective(Paired):
    """The policy (trained) and the reference (frozen starting weights); forward = sample, score,
    and the learner's GRPO loss on the samples."""

    def __init__(self, policy, ref, tokenizer, args):
        super().__init__(policy, ref)
        self.tokenizer = tokenizer
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id or 0
        self.G, self.beta, self.max_gen_len = args.num_generations, args.beta, args.max_gen_len
        self.temperature, self.tones, self.seed = args.temperature, bool(args.reward_tones), args.seed
        self.distinct_rhymes = bool(args.reward_distinct_rhymes)
        self.sample_interval = args.sample_interval or args.log_interval
        self.rank = 0
        self.show = True
        # micro-steps taken: part of every sampling seed, kept in the resume file (a resumed run
        # draws the samples the uninterrupted run would have drawn)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self._sums: dict[str, float] = {}
        self._n = 0

    # --- one micro-step ------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> list[list[int]]:
        """One completion per row (rows already repeated G times), up to and including eos."""
        from ..model.generate import Sampling, generate

        rows = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids, prompt_mask)]
        seed = hash((self.seed, self.rank, int(self.calls))) & (2**31 - 1)
        return generate(self.model, rows, self.max_gen_len, self.eos, pad_token_id=self.pad,
                        sampling=Sampling(temperature=self.temperature, seed=seed), batch_size=len(rows),
                        device=prompt_ids.device, num_threads=1)  # one token per step: tiny matrices

    def rewards(self, completions: list[list[int]], patterns: list[list[int]]) -> tuple[torch.Tensor, list]:
        from ..eval.reward import score

        scored = []
        for row, pattern in zip(completions, patterns):
            text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
            scored.append((text, score(text, pattern, stopped=self.eos in row, tones=self.tones,
                                       distinct_rhymes=self.distinct_rhymes)))
        return torch.tensor([r.total for _, r in scored], dtype=torch.float32), scored

    def forward(self, input_ids, labels=None):
        from .grpo_loss import (completion_log_probs, completion_mask, group_advantages, grpo_loss,
                                k3_kl, repeat_prompts)

        if labels is None:
            raise ValueError("GRPO needs each prompt's pattern (the dataset's labels)")
        prompt_ids, prompt_mask = left_trim(input_ids, (input_ids != self.pad).long())
        patterns = [[int(n) for n in row if n != -100] for row in labels.tolist()]
        prompt_ids, prompt_mask = repeat_prompts(prompt_ids, prompt_mask, self.G)  # (N, P), N = B·G
        patterns = [p for p in patterns for _ in range(self.G)]
        completions = self.sample(prompt_ids, prompt_mask)
        rewards, scored = self.rewards(completions, patterns)

        width = max(len(c) for c in completions)
        completion_ids = torch.full((len(completions), width), self.pad, dtype=torch.long, device=input_ids.device)
        for i, c in enumerate(completions):
            completion_ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask = completion_mask(completion_ids, self.eos)
        advantages = group_advantages(rewards, self.G).to(input_ids.device)

        full = torch.cat([prompt_ids, completion_ids], dim=1)
        attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], dim=1)
        out = self.model(full, attention_mask=attention, logits_to_keep=width + 1)
        policy = completion_log_probs(out.logits, completion_ids)
        with torch.no_grad():
            ref = completion_log_probs(self.frozen(full, attention_mask=attention, logits_to_keep=width + 1).logits,
                                       completion_ids)
        loss = grpo_loss(policy, ref, advantages, mask, self.beta)

        with torch.no_grad():
            m = mask.float()
            kl = ((k3_kl(policy, ref) * m).sum(1) / m.sum(1).clamp(min=1)).mean()
        self._record(rewards, scored, m.sum(1), kl)
        if self.training:
            self.calls += 1
            if self.show and int(self.calls) % self.sample_interval == 0:
                self._show(prompt_ids[0], prompt_mask[0], scored[:self.G])
        return PairedOutput(loss=loss, aux_loss=out.aux_loss)

    # --- what the log shows ----------------------------------------------------------------------

    def _record(self, rewards, scored, lengths, kl) -> None:
        figures = {"reward": rewards.mean().item(), "kl": kl.item(), "length": lengths.mean().item(),
                   "repetitive": sum(r.repetitive for _, r in scored) / len(scored),
                   "repeated_end": sum(r.repeated_end for _, r in scored) / len(scored)}
        for part in PARTS:
            figures[part] = sum(getattr(r, part) for _, r in scored) / len(scored)
        for k, v in figures.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1

    def log_figures(self) -> dict:
        """Means over the micro-steps since the previous call (then reset); the same keys always."""
        keys = ("reward", *PARTS, "length", "kl", "repetitive", "repeated_end")
        out = {k: self._sums.get(k, 0.0) / max(self._n, 1) for k in keys}
        self._sums, self._n = {}, 0
        return out

    def _show(self, prompt_ids, prompt_mask, group) -> None:
        from tqdm.auto import tqdm

        request = self.tokenizer.decode(prompt_ids[prompt_mask.bool()], skip_special_tokens=True)
        request = request.replace("\n", " ").strip()[-60:]
        best = max(group, key=lambda s: s[1].total)
        worst = min(group, key=lambda s: s[1].total)
        tqdm.write(f"—— micro-step {int(self.calls)} 的一组（{self.G} 个回答）：…{request}")
        if best[1].total == worst[1].total:
            tqdm.write(f"  {self.G} 个回答的 reward 都是 {best[1].total:.2f}：优势全是 0，这一组不推动模型。例如："
                       f"{best[0].replace(chr(10), ' / ')[:80]}")
            return
        for label, (text, r) in (("最好", best), ("最差", worst)):
            flat = text.replace("\n", " / ")
            tqdm.write(f"  {label} reward {r.total:.2f}（form {r.form:.0f} stop {r.stop:.0f} rhyme {r.rhyme:.2f} "
                       f"tones {r.tones:.2f}{' 重复' if r.repetitive else ''}）：{flat[:80]}")


def log_extra(model) -> dict:
    return model.log_figures() if isinstance(model, GRPOObjective) else {}


def prepare_model(model, args):
    """The reference: a frozen copy of the starting weights; then the sampling objective."""
    import copy
    import os

    if args.from_weight == "none":
        raise ConfigError("--from_weight none：GRPO 要从一个会对话的模型（SFT 之后）开始，参考模型就是它的拷贝")
    if args.num_generations < 2:
        raise ConfigError(f"--num_generations 至少是 2（一组回答之间才能比较），现在是 {args.num_generations}")
    if not (0 <= args.beta < float("inf")):
        raise ConfigError(f"--beta 必须是有限的非负数，现在是 {args.beta}")
    if args.max_gen_len < 1:
        raise ConfigError(f"--max_gen_len 必须是正整数，现在是 {args.max_gen_len}")
    if not (0 < args.temperature < float("inf")):
        raise ConfigError(f"--temperature 必须是正数（GRPO 靠采样得到不同的回答），现在是 {args.temperature}")
    if args.sample_interval < 0:
        raise ConfigError(f"--sample_interval 不能是负数，现在是 {args.sample_interval}")
    if args.val_path:
        raise ConfigError("--val_path：GRPO 没有验证 loss（它的 loss 不是预测下一个 token）；训练前后用 "
                          "python -m workbook eval 在留出的请求上评分")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_path, local_files_only=True)
    ref = copy.deepcopy(model)
    objective = GRPOObjective(model, ref, tokenizer, args)
    objective.rank = int(os.environ.get("RANK", 0))
    objective.show = objective.rank == 0  # one rank prints the groups
    return objective


save_weights = save_trained_weights


def sample(model, tokenizer, device, n: int) -> dict:
    """Greedy answers to the first n held-out requests that ask for a poem, with their rewards."""
    from ..eval.reward import score
    from ..eval.runner import generate_answers, load_prompts
    from .checkpoint import unwrap

    net = unwrap(model)
    net = net.model if isinstance(net, Paired) else net
    if HELD_OUT is None or not HELD_OUT.is_file():
        return {"prompts": [], "samples": [], "metrics": {}}
    prompts = [p for p in load_prompts(HELD_OUT) if p.get("form") and p["task"] in ("form_poem", "continue")][:n]
    got = generate_answers(net, tokenizer, prompts, device=device)
    shown, total = [], 0.0
    for p, g in zip(prompts, got):
        r = score(g["answer"], p["form"]["pattern"], g["stopped"])
        total += r.total
        shown.append(f"问：{p['messages'][-1]['content']}\n答：{g['answer']}\n"
                     f"reward {r.total:.2f}（form {r.form:.0f} stop {r.stop:.0f} rhyme {r.rhyme:.2f} tones {r.tones:.2f}）")
    mean = total / max(len(prompts), 1)
    return {"prompts": [p["messages"][-1]["content"] for p in prompts], "samples": shown,
            "metrics": {"held_out_reward": round(mean, 4)},
            "notes": [f"留出请求上贪心回答的平均 reward：{mean:.3f}（完整评分：python -m workbook eval）"]}


TASK = Task.of_module(
    __name__,
    name="grpo",
    title="MiniMind GRPO",
    description="MiniMind 的 GRPO（组相对策略优化）：每个提示采样一组回答，用能检查的规则打分（体裁、停止、押韵、平仄），"
                "比组内平均好的回答概率调高、差的调低，KL 项把模型拉在参考模型附近。",
    run_name="MiniMind-GRPO",
    count_tokens=False,
    defaults=dict(save_weight="grpo", from_weight="full_sft", wandb_project="MiniMind-GRPO",
                  epochs=1, batch_size=2, learning_rate=8e-8, accumulation_steps=1, max_seq_len=192,
                  save_interval=10, log_interval=1, trim_padding=0, data_path=str(DEFAULT_DATA)),
)

run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
