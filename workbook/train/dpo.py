"""``python -m workbook.train.dpo``: MiniMind's Direct Preference Optimization, on the learner's package.

Same flags as MiniMind's ``train_dpo.py`` (``--beta 0.1``, ``--from_weight full_sft``,
``--save_weight dpo``, learning rate 4e-8, batch 4, max_seq_len 1024, …) plus
``--length_normalize``: 1 = MiniMind's sequence log-prob (the masked *mean* over the answer's
tokens), 0 = the DPO paper's and TRL's masked *sum*.  The run harness is the one every trainer
shares (``workbook.train.trainer``).  What DPO changes:

- data: preference pairs, ``{"chosen": [messages], "rejected": [messages]}`` per line, checked
  before step 1 and read with the learner's ``DPODataset`` (stage 16);
- the model: the policy trains; a frozen copy of the starting weights is the reference
  (``make_ref_model``, stage 16).  Both sit behind the loop's ``model(input_ids, labels)`` call
  (``workbook.train.paired``): a batch is (B, 2, T), chosen then rejected, and the "loss" the
  loop sees is the learner's ``dpo_loss``;
- the end of a run: reward accuracy on the validation pairs (how often the implicit reward
  β·(log π − log π_ref) ranks chosen above rejected) and the answers to a few requests.

Start from an SFT model: ``--from_weight data/base/full_sft_320.pth`` (the shipped stage-14 model).
"""
from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, Dataset

from . import trainer
from .batching import TrimPadding
from .chat import sample_answers
from .paired import Paired, PairedOutput, save_trained_weights
from .trainer import IN_REPO, ROOT, ConfigError, Task

DEFAULT_DATA = ROOT / "data" / "dpo_train.jsonl.gz" if IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "dpo_val.jsonl.gz" if IN_REPO else ""
PAD_ID = 0  # the tokenizer's pad (<|endoftext|>) that DPODataset pads with; see batching.TrimPadding
REQUESTS = ["写一首五言绝句，题目是《山中秋夜》。", "以《浣溪沙》为词牌写一首词。",
            "写一首七言律诗，题目是《登楼》。", "接着这一句往下写：孤舟泊远浦，"]


def extra_arguments(p) -> None:
    p.add_argument("--beta", type=float, default=0.1,
                   help="β：隐式奖励 β·(log π − log π_ref) 的温度；越大越不许偏离参考模型")
    p.add_argument("--length_normalize", type=int, default=1, choices=[0, 1],
                   help="1 = MiniMind：序列对数概率取回答 token 的平均；0 = DPO 论文和 TRL：取总和")
    p.add_argument("--val_pairs", type=int, default=64,
                   help="训练结束时在验证集的前多少对上算奖励准确率（0 = 全部；不算就 --samples 0 或 --val_path ''）")


class PairTensors(Dataset):
    """DPODataset's six tensors as the loop's (input_ids, labels): each (2, T), chosen first;
    labels are the shifted targets with -100 where the mask is 0 (prompt, padding)."""

    def __init__(self, pairs: Dataset):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):
        s = self.pairs[i]
        x = torch.stack([s["x_chosen"], s["x_rejected"]]).long()
        y = torch.stack([s["y_chosen"].long().masked_fill(s["mask_chosen"] == 0, -100),
                         s["y_rejected"].long().masked_fill(s["mask_rejected"] == 0, -100)])
        return x, y


def make_dataset(path: str, tokenizer, max_length: int):
    from ..data.dpo import DPODataset  # stage 16: the learner's (or the reference, by mode)

    return PairTensors(DPODataset(path, tokenizer, max_length))


def check_data(path: str, tokenizer, vocab_size: int, max_length: int | None = None) -> dict:
    from ..data.validate import check_pair_data

    # max_length: --max_seq_len; a run whose every reply is cut away is refused before step 1
    return check_pair_data(path, tokenizer=tokenizer, vocab_size=vocab_size, max_length=max_length)


def describe_data(summary: dict) -> str:
    from ..data.validate import describe_pairs

    return describe_pairs(summary)


def _halves(input_ids: torch.Tensor, labels: torch.Tensor):
    """(B, 2, T) pairs -> (2B, T) input ids, targets and mask, chosen rows first (MiniMind's cat)."""
    x = torch.cat([input_ids[:, 0], input_ids[:, 1]])
    y = torch.cat([labels[:, 0], labels[:, 1]])
    mask = y != -100
    return x, y.masked_fill(~mask, 0), mask.float()


class DPOObjective(Paired):
    """The policy (trained) and the reference (frozen); forward = the learner's dpo_loss."""

    def __init__(self, policy, ref, beta: float, length_normalize: bool):
        super().__init__(policy, ref)
        self.beta, self.length_normalize = beta, length_normalize

    def log_probs(self, input_ids, labels):
        """Per-token log-probs of the policy (with grad) and of the reference, (2B, T) each."""
        from .dpo_loss import logits_to_log_probs

        # padding is cut (or not) by the batches themselves: --trim_padding 1 (the default)
        # collates with batching.TrimPadding, --trim_padding 0 keeps MiniMind's full width
        x, y, mask = _halves(input_ids, labels)
        out = self.model(x)
        policy = logits_to_log_probs(out.logits, y)
        ref = logits_to_log_probs(self.frozen_logits(x), y)
        return policy, ref, mask, out.aux_loss

    def forward(self, input_ids, labels=None):
        from .dpo_loss import dpo_loss

        policy, ref, mask, aux = self.log_probs(input_ids, labels)
        loss = dpo_loss(ref, policy, mask, self.beta, length_normalize=self.length_normalize)
        return PairedOutput(loss=loss, aux_loss=aux)


def prepare_model(model, args):
    """The reference: a frozen copy of the starting weights (stage 16's make_ref_model)."""
    from .dpo_loss import make_ref_model

    if not (args.beta > 0 and args.beta < float("inf")):
        raise ConfigError(f"--beta 必须是有限的正数，现在是 {args.beta}")
    if args.from_weight == "none":
        raise ConfigError("--from_weight none：DPO 要从一个会对话的模型（SFT 之后）开始，参考模型就是它的拷贝")
    if args.val_pairs < 0:
        raise ConfigError(f"--val_pairs 不能是负数，现在是 {args.val_pairs}")
    objective = DPOObjective(model, make_ref_model(model), args.beta, bool(args.length_normalize))
    objective.val_path, objective.max_seq_len = args.val_path, args.max_seq_len
    objective.val_pairs, objective.show_progress = args.val_pairs or None, not args.no_progress
    return objective


save_weights = save_trained_weights


@torch.no_grad()
def evaluate_pairs(objective: DPOObjective, dataset: Dataset, device, batch_size: int = 8,
                   limit: int | None = None, show: bool = False, trim_padding: bool = True) -> dict:
    """On held-out pairs (the first `limit`, or all): DPO loss, reward accuracy (share with
    r_chosen > r_rejected), mean margin, and the mean implicit rewards r = β·(log π − log π_ref)
    of chosen and rejected.  show: a progress bar.  trim_padding: cut each batch to its longest
    pair (the same figures; False runs MiniMind's full width, bench/dpo_val_speed.py)."""
    import itertools
    import math
    import sys

    from tqdm.auto import tqdm

    from .dpo_loss import dpo_loss, sequence_log_probs

    was_training = objective.model.training
    objective.model.eval()
    n = total_loss = correct = 0
    sums = {"chosen": 0.0, "rejected": 0.0}
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    batches = math.ceil(len(dataset) / batch_size)
    # batches cut to their longest pair: the log-probs of the real tokens do not change
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=TrimPadding(PAD_ID) if trim_padding else None)
    for x, y in tqdm(itertools.islice(loader, batches), total=batches, desc="验证偏好对 (validation pairs)",
                     unit="batch", leave=False, disable=not show, file=sys.stdout, dynamic_ncols=True):
        policy, ref, mask, _ = objective.log_probs(x.to(device), y.to(device))
        b = x.shape[0]
        total_loss += dpo_loss(ref, policy, mask, objective.beta,
                               length_normalize=objective.length_normalize).item() * b
        reward = objective.beta * (sequence_log_probs(policy, mask, objective.length_normalize)
                                   - sequence_log_probs(ref, mask, objective.length_normalize))
        chosen, rejected = reward[:b], reward[b:]
        correct += (chosen > rejected).sum().item()
        sums["chosen"] += chosen.sum().item()
        sums["rejected"] += rejected.sum().item()
        n += b
    objective.model.train(was_training)
    return {"pairs": n, "loss": round(total_loss / max(n, 1), 4), "reward_accuracy": round(correct / max(n, 1), 4),
            "chosen_reward": round(sums["chosen"] / max(n, 1), 4),
            "rejected_reward": round(sums["rejected"] / max(n, 1), 4),
            "margin": round((sums["chosen"] - sums["rejected"]) / max(n, 1), 4)}


_answers = sample_answers(REQUESTS)


def sample(model, tokenizer, device, n: int) -> dict:
    """The answers to a few requests, and the reward accuracy on the validation pairs."""
    from .checkpoint import unwrap

    shown = _answers(model, tokenizer, device, n)
    objective = unwrap(model)
    if getattr(objective, "val_path", ""):
        limit = getattr(objective, "val_pairs", None)
        print(f"在验证集的{f'前 {limit} 对' if limit else '全部偏好对'}上算奖励准确率（--val_pairs）……", flush=True)
        pairs = evaluate_pairs(objective, make_dataset(objective.val_path, tokenizer, objective.max_seq_len), device,
                               limit=limit, show=getattr(objective, "show_progress", False))
        shown["metrics"].update({f"val_{k}": v for k, v in pairs.items()})
        shown["notes"].append(f"验证集 {pairs['pairs']} 对上的奖励准确率 (reward accuracy) {pairs['reward_accuracy']:.1%}："
                              f"chosen 的隐式奖励 {pairs['chosen_reward']:+.4f}，rejected 的 {pairs['rejected_reward']:+.4f}")
    return shown


TASK = Task.of_module(
    __name__,
    name="dpo",
    title="MiniMind DPO",
    description="MiniMind 的 DPO（直接偏好优化）：对同一个请求的两个回答，让模型比冻结的参考模型更偏好 chosen、"
                "更不偏好 rejected。",
    run_name="MiniMind-DPO",
    defaults=dict(save_weight="dpo", from_weight="full_sft", wandb_project="MiniMind-DPO",
                  epochs=1, batch_size=4, learning_rate=4e-8, accumulation_steps=1, max_seq_len=1024,
                  save_interval=100, trim_padding=1,
                  data_path=str(DEFAULT_DATA), val_path=str(DEFAULT_VAL)),
)

run, main = trainer.entry_points(TASK)


if __name__ == "__main__":
    sys.exit(main())
