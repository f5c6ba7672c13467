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
        #   1. self.rank = rank
        #   2. self.A = nn.Linear(in_features, rank, bias=False)   (in -> rank: the names are the
        #      saved keys "...lora.A.weight")
        #   3. self.B = nn.Linear(rank, out_features, bias=False)  (rank -> out)
        #   4. nn.init.normal_(self.A.weight, mean=0.0, std=0.02); nn.init.zeros_(self.B.weight):
        #      B = 0 makes B·A = 0, so the model starts unchanged; A must NOT be zero too (then
        #      no gradient ever reaches A or B — the notebook shows why)
        #   5. no other parameters: no alpha, no scaling
        raise NotImplementedError(
            "TODO(15 lora): 在 workbook/model/lora.py 里写 LoRA.__init__，见 notebooks/15_lora.ipynb")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TODO(learner): return self.B(self.A(x)) — (..., in) -> (..., rank) -> (..., out);
        #   no scaling factor (PEFT multiplies by lora_alpha / r, MiniMind does not)
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
    #   1. for name, module in list(model.named_modules()):  (a list first: you add modules
    #      while walking, and each LoRA holds two nn.Linear of its own)
    #   2. only isinstance(module, nn.Linear) with module.weight.shape[0] == module.weight.shape[1]
    #      — chosen by shape, not by name (weight is (out, in))
    #   3. lora = LoRA(in, out, rank).to(device=module.weight.device, dtype=module.weight.dtype);
    #      module.lora = lora  (nn.Module registers it: its keys become "{name}.lora.A.weight")
    #   4. replace the module's forward:
    #          def forward_with_lora(x, original=module.forward, adapter=lora):
    #              return original(x) + adapter(x)
    #          module.forward = forward_with_lora
    #      the default arguments bind THIS layer's forward and LoRA now; without them every
    #      layer would call the loop's last ones (a closure looks names up when it runs)
    #   5. freeze: every parameter that is not a LoRA parameter gets requires_grad = False,
    #      every LoRA parameter keeps requires_grad = True (MiniMind does this in its trainer)
    #   6. return sum(p.numel() for p in model.parameters() if p.requires_grad)
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
    #   1. state = {}; for name, module in model.named_modules(): skip modules without a
    #      .lora (getattr(module, "lora", None))
    #   2. for key, value in module.lora.state_dict().items()  (key is "A.weight" / "B.weight"):
    #          state[f"{clean_name(name)}.lora.{key}"] = value.detach().cpu()
    #      clean_name (given, above) strips "module." and "_orig_mod."
    #   3. torch.save(state, path) — the adapters only, never model.state_dict()
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
    #   1. state = torch.load(path, map_location="cpu", weights_only=True);
    #      state = {clean_name(k): v for k, v in state.items()}
    #   2. own = {f"{clean_name(name)}.lora.{key}": p} for every module with a .lora and every
    #      (key, p) in module.lora.named_parameters()
    #   3. missing = keys of own not in state; unexpected = keys of state not in own; a shape
    #      that differs (another rank): raise ValueError(...) naming those keys
    #   4. with torch.no_grad(): p.copy_(state[key]) for every key — copy_ keeps p's dtype and
    #      device, and p stays the same Parameter (an optimizer holding it still sees it)
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
    #   1. with torch.no_grad(): for name, module in list(model.named_modules()), the modules
    #      with a .lora
    #   2. W (out, in) += B (out, r) @ A (r, in): delta = lora.B.weight.float() @ lora.A.weight.float();
    #      module.weight += delta.to(module.weight.dtype) — once, and not transposed
    #   3. del module.lora, and remove the patched forward: vars(module).pop("forward", None)
    #      (then nn.Linear's own forward is used again; leave either one behind and B·A is
    #      added a second time on top of the merged W)
    raise NotImplementedError(
        "TODO(15 lora): 在 workbook/model/lora.py 里写 merge_lora，见 notebooks/15_lora.ipynb")
