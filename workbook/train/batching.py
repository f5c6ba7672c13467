"""No compute on padding: batches cut to their longest row, and an optional length-grouped order.

MiniMind's post-training datasets pad every sample on the right to ``max_seq_len`` (SFT,
LoRA, distillation: 340–1024 tokens), while a poetry conversation is about 90 tokens long: most
of every batch is padding, and the model still runs over it.  Two provided tools fix that
without touching the learner's dataset, loop or loss:

- :class:`TrimPadding`, the DataLoader's ``collate_fn``: stacks the samples as the default does,
  then drops the trailing columns where **every** row is padding (input = pad id and label =
  -100).  Causal attention means no earlier position ever sees a later one, and those columns
  carry no label, so the loss is the same (up to float rounding of the shorter sums) — only the
  compute on padding is gone.  Works for ``(B, T)`` batches (SFT, LoRA, distillation) and for
  DPO's ``(B, 2, T)`` pairs.  (A MoE model's load-balancing loss no longer counts pad tokens.)
- :class:`LengthGroupedSampler` (``--group_by_length 1``): within each window of
  ``batch_size × 50`` samples of the usual shuffled order, the samples are sorted by length, so
  one batch holds similar lengths and trimming saves more.  Off by default: MiniMind's order
  stays the default, and a run then sees MiniMind's data order.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.dataloader import default_collate

IGNORE = -100


def real_lengths(input_ids: torch.Tensor, labels: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Per sample, 1 + the last column that is not padding (input != pad or label != -100).

    input_ids, labels: (..., T) int64 -> (...) int64 (0 for an all-padding row).
    """
    real = (input_ids != pad_id) | (labels != IGNORE)  # (..., T) bool
    cols = torch.arange(1, real.shape[-1] + 1, device=real.device)
    return (real * cols).amax(dim=-1)


class TrimPadding:
    """``collate_fn``: default_collate, then cut the columns after the longest row's last real one.

    A batch ``(input_ids, labels)`` of shape (B, T) or (B, 2, T) becomes (B, T') or (B, 2, T')
    with T' = max real length in the batch (at least 1).  Picklable (DataLoader workers).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, samples: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate(samples)
        width = max(int(real_lengths(x, y, self.pad_id).max()), 1)
        return x[..., :width].contiguous(), y[..., :width].contiguous()


def sample_lengths(dataset: Dataset, pad_id: int) -> list[int]:
    """The real length of every sample (one pass over the dataset: it tokenises each once)."""
    out = []
    for i in range(len(dataset)):
        x, y = dataset[i]
        out.append(int(real_lengths(x, y, pad_id).max()))
    return out


class LengthGroupedSampler(Sampler):
    """Another sampler's order, sorted by length within windows of `window` samples.

    The window is ``batch_size × 50`` consecutive indices of the inner (shuffled, per-rank)
    order; inside it the indices go longest first.  Deterministic given the inner order, so
    ``SkipSampler``'s exact resume still holds; the same samples are seen each epoch.
    """

    def __init__(self, inner: Sampler, lengths: Sequence[int], batch_size: int, windows_of: int = 50):
        self.inner, self.lengths = inner, lengths
        self.window = max(1, batch_size * windows_of)

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)
        for k in range(0, len(order), self.window):
            # stable sort: equal lengths keep the inner (shuffled) order
            yield from sorted(order[k:k + self.window], key=lambda i: -self.lengths[i])

    def __len__(self) -> int:
        return len(self.inner)


__all__ = ["TrimPadding", "LengthGroupedSampler", "real_lengths", "sample_lengths"]
