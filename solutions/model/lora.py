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
        self.rank = rank
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        # A random, B zero: B·A = 0, so the adapted model starts as the base model, and yet
        # B's gradient (dL/dy)·(A x)ᵀ is not zero, so training can start (A = 0 too would stall)
        nn.init.normal_(self.A.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., rank) -> (..., out)
        return self.B(self.A(x))


def apply_lora(model: nn.Module, rank: int = 8) -> int:
    """Attach a LoRA to every square nn.Linear of `model` and freeze everything else.

    For each ``nn.Linear`` whose weight is square (out == in): ``module.lora = LoRA(in, out,
    rank)`` on the weight's device and dtype, and ``module(x)`` computes ``original(x) +
    module.lora(x)``.  Then every parameter that is not a LoRA parameter gets
    ``requires_grad = False``.  Modifies `model` in place.
    Returns the number of trainable parameters (the LoRA parameters): sum of rank·(in + out).
    """
    # a list first: the loop adds modules (each LoRA holds two nn.Linear) while it walks
    for _, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and module.weight.shape[0] == module.weight.shape[1]):
            continue
        weight = module.weight  # (out, in)
        lora = LoRA(weight.shape[1], weight.shape[0], rank).to(device=weight.device, dtype=weight.dtype)
        module.lora = lora  # a submodule: its keys are "{name}.lora.A.weight", "{name}.lora.B.weight"

        # y = W x + B A x.  Default arguments bind *this* layer's forward and LoRA now; a plain
        # closure would look them up when called and find the loop's last ones (late binding).
        def forward_with_lora(x, original=module.forward, adapter=lora):
            return original(x) + adapter(x)

        module.forward = forward_with_lora  # an instance attribute: nn.Module.__call__ uses it

    lora_params = {id(p) for m in model.modules() if isinstance(getattr(m, "lora", None), nn.Module)
                   for p in m.lora.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in lora_params)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _adapters(model: nn.Module) -> dict[str, nn.Module]:
    """{module name without wrapper prefixes: its LoRA} for every adapted module."""
    return {clean_name(name): module.lora for name, module in model.named_modules()
            if isinstance(getattr(module, "lora", None), nn.Module)}


def save_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Save only the LoRA tensors of `model` (torch.save of a dict of tensors).

    Keys are MiniMind's: ``{module_name}.lora.A.weight`` and ``{module_name}.lora.B.weight``,
    e.g. ``model.layers.0.self_attn.q_proj.lora.A.weight``, with the ``module.`` (DDP) and
    ``_orig_mod.`` (torch.compile) prefixes stripped, so every run saves the same names.
    Values: the tensors as they are (the weight's dtype), moved to the CPU.
    """
    state = {f"{name}.lora.{key}": value.detach().cpu()
             for name, lora in _adapters(model).items()
             for key, value in lora.state_dict().items()}
    torch.save(state, path)


def load_lora(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a save_lora file into `model`, which apply_lora has prepared (same rank).

    ``torch.load(path, weights_only=True)``: a file is data, never code.  Wrapper prefixes are
    stripped from the file's keys and from the model's names.  Every adapter of the model must
    be in the file and every key of the file must be an adapter of the model: otherwise a
    ValueError that names the missing / unexpected keys (or the mismatched shapes).  The values
    are copied into the existing parameters (their dtype and device are kept).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: 不是 save_lora 写的文件（应该是 {{键: 张量}} 的 dict）")
    state = {clean_name(k): v for k, v in state.items()}
    own = {f"{name}.lora.{key}": p for name, lora in _adapters(model).items()
           for key, p in lora.named_parameters()}
    if not own:
        raise ValueError("模型里没有 LoRA：先 apply_lora(model, rank)，再 load_lora")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: 文件 {tuple(state[k].shape)} ≠ 模型 {tuple(p.shape)}"
              for k, p in own.items() if k in state and state[k].shape != p.shape]
    if missing or unexpected or shapes:
        parts = [f"{path} 和模型上的 LoRA 对不上："]
        if missing:
            parts.append(f"缺少 (missing) {', '.join(missing)}")
        if unexpected:
            parts.append(f"多出 (unexpected) {', '.join(unexpected)}")
        if shapes:
            parts.append(f"形状不同 (shape; rank 不一样？) {', '.join(shapes)}")
        raise ValueError("\n  ".join(parts))
    with torch.no_grad():
        for key, p in own.items():
            p.copy_(state[key])


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its weight and remove it: afterwards a plain model.

    For each module with a LoRA: ``W <- W + B·A`` (computed in fp32, stored in W's dtype), then
    ``module.lora`` is deleted and the module's own forward is restored.  The state_dict then has
    exactly the base model's keys and the outputs are those of the adapted model, with no extra
    cost per token.  Parameters keep the requires_grad apply_lora left them.  In place.
    """
    with torch.no_grad():
        for _, module in list(model.named_modules()):
            lora = getattr(module, "lora", None)
            if not isinstance(lora, nn.Module):
                continue
            # W (out, in) += B (out, r) @ A (r, in)
            delta = lora.B.weight.float() @ lora.A.weight.float()
            module.weight += delta.to(module.weight.dtype)
            del module.lora
            # drop the instance attribute: nn.Linear.forward (the class's) is used again
            vars(module).pop("forward", None)
