"""LoRA: low-rank adapters on MiniMind's square linear layers (stage 15).

Fine-tuning every weight of a model to teach it one new skill is wasteful: the change a task
needs is small and, measured as a matrix, of low rank.  LoRA (Low-Rank Adaptation) keeps each
adapted weight W (out, in) frozen and learns the change as a product of two thin matrices,
``W' = W + B·A`` with A (rank, in) and B (out, rank), rank r ≪ in, out: r·(in + out) new
parameters instead of in·out.  B starts at zero, so the adapted model starts exactly as the
base model.  MiniMind adapts every ``nn.Linear`` whose weight is square (in MiniMind2-Small:
``q_proj`` and ``o_proj`` of every layer), without PEFT's alpha/r scaling.  Only the adapters are
saved (a few hundred KB); ``merge_lora`` folds them into W for inference.
Lesson: notebooks/15_lora.ipynb.  Check: ``python -m workbook check 15``.
"""
from __future__ import annotations

import os

import torch
from torch import nn

# name prefixes that wrappers add: DistributedDataParallel (.module), torch.compile (._orig_mod)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """`name` without the wrapper prefixes: "module.model.layers.0" -> "model.layers.0"."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


class LoRA(nn.Module):
    """delta(x) = B(A(x)):  x (..., in_features) -> (..., out_features)

    Submodules: ``A`` = nn.Linear(in_features, rank, bias=False), weight (rank, in) ~ N(0, 0.02);
    ``B`` = nn.Linear(rank, out_features, bias=False), weight (out, rank) = 0.  ``self.rank``.
    No alpha / rank scaling (MiniMind's).  Parameters: rank·(in_features + out_features).
    """

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        # TODO(learner):
        #   What: self.rank and two bias-free linear maps, self.A (in_features -> rank) and
        #   self.B (rank -> out_features); A drawn from N(0, 0.02), B all zeros.
        #   Why: B = 0 makes B·A = 0, so the adapted model starts exactly as the base model.  The names
        #   A and B are the saved keys ("...lora.A.weight").
        #   Pitfall: A must not be zero too (then no gradient ever reaches A or B: the notebook shows
        #   why); nn.Linear's default init is not N(0, 0.02); no alpha, no scaling parameter.
        raise NotImplementedError(
            "TODO(15 lora): 在 workbook/model/lora.py 里写 LoRA.__init__，见 notebooks/15_lora.ipynb")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO(learner):
        #   What: the low-rank change B·A applied to x: (..., in) -> (..., rank) -> (..., out).
        #   Pitfall: A first, then B; no scaling factor (PEFT multiplies by lora_alpha / r, MiniMind
        #   does not).
        raise NotImplementedError(
            "TODO(15 lora): 在 workbook/model/lora.py 里写 LoRA.forward，见 notebooks/15_lora.ipynb")


def apply_lora(model: nn.Module, rank: int = 8) -> int:
    """Attach a LoRA to every square nn.Linear of `model` and freeze everything else.

    For each ``nn.Linear`` whose weight is square (out == in): ``module.lora = LoRA(in, out,
    rank)`` on the weight's device and dtype, and ``module(x)`` computes ``original(x) +
    module.lora(x)``.  Then every parameter that is not a LoRA parameter gets
    ``requires_grad = False``.  Modifies `model` in place.
    Returns the number of trainable parameters (the LoRA parameters): sum of rank·(in + out).
    """
    # TODO(learner):
    #   What: every nn.Linear whose weight is square gets `module.lora` (a LoRA on the weight's
    #   device and dtype) and computes original(x) + lora(x); then everything but the LoRA
    #   parameters is frozen; return the number of trainable parameters.
    #   Why: the rule is MiniMind's: by shape, not by name (in MiniMind2-Small: q_proj and o_proj).
    #   Replacing the forward on the module instance keeps every state_dict key unchanged.
    #   Pitfall: walk a list of the modules (you add modules while walking); a function defined in a
    #   loop looks up loop variables when it runs (late binding): bind this layer's forward and
    #   LoRA when you define it, or every layer calls the last one's.
    raise NotImplementedError(
        "TODO(15 lora): 在 workbook/model/lora.py 里写 apply_lora，见 notebooks/15_lora.ipynb")


def save_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Save only the LoRA tensors of `model` (torch.save of a dict of tensors).

    Keys are MiniMind's: ``{module_name}.lora.A.weight`` and ``{module_name}.lora.B.weight``,
    e.g. ``model.layers.0.self_attn.q_proj.lora.A.weight``, with the ``module.`` (DDP) and
    ``_orig_mod.`` (torch.compile) prefixes stripped, so every run saves the same names.
    Values: the tensors as they are (the weight's dtype), moved to the CPU.
    """
    # TODO(learner):
    #   What: torch.save a dict {key: tensor} of the LoRA tensors only, under MiniMind's keys
    #   "{module name}.lora.A.weight" / ".lora.B.weight", values detached and on the CPU.
    #   Why: an adapter file is a few hundred KB, loadable into any copy of the base model.
    #   Pitfall: never model.state_dict() (the whole model); strip the DDP / torch.compile prefixes
    #   (clean_name, given above) so every run saves the same names; keep the tensors' own dtype.
    raise NotImplementedError(
        "TODO(15 lora): 在 workbook/model/lora.py 里写 save_lora，见 notebooks/15_lora.ipynb")


def load_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a save_lora file into `model`, which apply_lora has prepared (same rank).

    ``torch.load(path, weights_only=True)``: a file is data, never code.  Wrapper prefixes are
    stripped from the file's keys and from the model's names.  Every adapter of the model must
    be in the file and every key of the file must be an adapter of the model: otherwise a
    ValueError that names the missing / unexpected keys (or the mismatched shapes).  The values
    are copied into the existing parameters (their dtype and device are kept).
    """
    # TODO(learner):
    #   What: read the file safely, match its keys with the model's adapters (both sides through
    #   clean_name), refuse any mismatch, then copy the values into the existing parameters.
    #   Why: a silently partial load leaves some adapters at B = 0: training lost without a word.
    #   Pitfall: weights_only=True (a file is data, never code); missing keys, unexpected keys and
    #   shapes of another rank are all a ValueError naming them (copy_ would broadcast a rank-1 file
    #   into a rank-4 adapter without complaint); copy into the Parameters, never replace them.
    raise NotImplementedError(
        "TODO(15 lora): 在 workbook/model/lora.py 里写 load_lora，见 notebooks/15_lora.ipynb")


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its weight and remove it: afterwards a plain model.

    For each module with a LoRA: ``W <- W + B·A`` (computed in fp32, stored in W's dtype), then
    ``module.lora`` is deleted and the module's own forward is restored.  The state_dict then has
    exactly the base model's keys and the outputs are those of the adapted model, with no extra
    cost per token.  Parameters keep the requires_grad apply_lora left them.  In place.
    """
    # TODO(learner):
    #   What: for every adapted module W <- W + B·A (computed in fp32, stored in W's dtype), then
    #   remove the adapter and the patched forward: a plain MiniMindForCausalLM again.
    #   Why: after merging, inference costs what the base model costs.
    #   Pitfall: W is (out, in): B (out, r) @ A (r, in), not transposed, added once; leave either the
    #   adapter or the patched forward behind and B·A is added a second time; change W in place
    #   (a new nn.Parameter would make it trainable again).
    raise NotImplementedError(
        "TODO(15 lora): 在 workbook/model/lora.py 里写 merge_lora，见 notebooks/15_lora.ipynb")
