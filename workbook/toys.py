"""Tiny models and data for the lessons' experiments and the checks.

A stand-in that behaves like ``MiniMindForCausalLM`` where a training loop can tell (it returns
``.loss``, ``.aux_loss`` and ``.logits``), small enough that a whole training run takes
milliseconds on a CPU, so a lesson can run the learner's loop on it and a check can run the
learner's loop and the reference's side by side.  Everything here is provided infrastructure:
the learner does not write it, and it needs no stage to be finished.

    from workbook.toys import TinyLM, toy_batches
    model = TinyLM()
    batches = toy_batches(18)           # 18 micro-batches of (input_ids, labels), each (3, 5)
    out = model(*batches[0])            # out.loss, out.aux_loss: 0-d float32
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

# vocabulary, width, tokens per sequence, sequences per batch of the toy language model
VOCAB, HIDDEN, SEQ, BATCH = 11, 6, 5, 3


class TinyLM(nn.Module):
    """Stands in for MiniMindForCausalLM: an embedding, a linear head and a fake MoE router.

    forward(input_ids, labels) with input_ids, labels: (batch, seq) int64, labels -100 where
    ignored; returns a namespace with
      logits: (batch, seq, VOCAB) float32;
      loss: 0-d, the next-token cross entropy, logits[:, :-1] against labels[:, 1:]
        (about 2.5 - 2.7 before training, a little above ln VOCAB ≈ 2.4);
      aux_loss: 0-d, aux_weight * (mean over batch and seq of the embeddings) · router.
    Only aux_loss depends on `router`, so a loop that leaves aux_loss out of the backward pass
    leaves router without a gradient.  aux_loss is linear in the batch mean, so N accumulated
    micro-batches give the gradient of one batch N times as big, as for the cross entropy.
    """

    def __init__(self, aux_weight: float = 0.5):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB)
        self.router = nn.Parameter(torch.ones(HIDDEN))  # only the aux loss depends on it
        self.aux_weight = aux_weight

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> SimpleNamespace:
        h = self.embed(input_ids)  # (batch, seq, HIDDEN)
        logits = self.head(h).float()  # (batch, seq, VOCAB)
        loss = None
        if labels is not None:
            # position t predicts token t + 1
            loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                                               ignore_index=-100)
        aux = self.aux_weight * (h.detach().mean(dim=(0, 1)) * self.router).sum()
        return SimpleNamespace(loss=loss, aux_loss=aux, logits=logits)


def toy_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` micro-batches (input_ids, labels) for TinyLM, each (BATCH, SEQ) int64.

    Tokens are uniform in [0, VOCAB); labels = input_ids except the last position, which is
    -100 (as a padded position), so each batch has BATCH * (SEQ - 1) counted tokens.
    Drawn from a generator of their own: the same `seed` gives the same batches, and the global
    RNG is left alone.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
        y = x.clone()
        y[:, -1] = -100  # a padded position
        out.append((x, y))
    return out
