"""Wrong LoRAs, apply_loras, save/load_loras and merge_loras a learner really writes, and what the
check must say about each.

Each mutant is a fresh copy of the reference module with one piece replaced, so the rest of the
module (apply_lora builds the module's own LoRA; save/load/merge walk the module's adapters)
uses the wrong piece.
"""
import importlib.util
import itertools

import torch
from torch import nn

from workbook import _modes

_ref = _modes.reference_module("model.lora")
_count = itertools.count()


def _variant(lora_methods=None, **functions):
    """A copy of the reference module with module-level functions and LoRA methods replaced."""
    spec = importlib.util.spec_from_file_location(f"_lora_mutant_{next(_count)}", _ref.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, value in functions.items():
        setattr(mod, name, value)
    if lora_methods:
        mod.LoRA = type("LoRA", (mod.LoRA,), lora_methods)
    return mod


# ---- LoRA

def _init(a="normal", b="zeros"):
    def __init__(self, in_features, out_features, rank):
        nn.Module.__init__(self)
        self.rank = rank
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        if a == "normal":
            nn.init.normal_(self.A.weight, std=0.02)
        elif a == "zeros":
            nn.init.zeros_(self.A.weight)
        if b == "zeros":
            nn.init.zeros_(self.B.weight)
        elif b == "normal":
            nn.init.normal_(self.B.weight, std=0.02)
    return __init__


def _alpha_scaled(self, x):
    return self.B(self.A(x)) * (16 / self.rank)  # PEFT's lora_alpha / r with lora_alpha = 16


# ---- apply_lora: (name, module) -> adapt it?

def _apply(select=lambda name, m: isinstance(m, nn.Linear) and m.weight.shape[0] == m.weight.shape[1],
           freeze="others", count="trainable", cast=("device", "dtype"), late_binding=False, lora_only=False):
    def apply_lora(model, rank=8):
        for name, module in list(model.named_modules()):
            if not select(name, module):
                continue
            w = module.weight
            lora = _ref.LoRA(w.shape[1], w.shape[0], rank).to(
                **{k: getattr(w, k) for k in cast})
            module.lora = lora
            if late_binding:
                original_forward = module.forward
                last_lora = lora

                def forward_with_lora(x):  # the mistake: looked up when called, after the loop
                    return original_forward(x) + last_lora(x)
            elif lora_only:
                def forward_with_lora(x, adapter=lora):
                    return adapter(x)
            else:
                def forward_with_lora(x, original=module.forward, adapter=lora):
                    return original(x) + adapter(x)
            module.forward = forward_with_lora
        if freeze == "others":
            for n, p in model.named_parameters():
                p.requires_grad_(".lora." in n)
        elif freeze == "everything":
            for p in model.parameters():
                p.requires_grad_(False)
        if count == "all":
            return sum(p.numel() for p in model.parameters())
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    return apply_lora


def _with_apply(**opts):
    return _variant(apply_lora=_apply(**opts))


def _square(name, m):
    return isinstance(m, nn.Linear) and m.weight.shape[0] == m.weight.shape[1]


# ---- save_lora

def _save_whole_model(model, path):
    torch.save(model.state_dict(), path)


def _save_with_prefix(model, path):
    state = {f"{name}.lora.{k}": v.detach().cpu() for name, module in model.named_modules()
             if isinstance(getattr(module, "lora", None), nn.Module)
             for k, v in module.lora.state_dict().items()}  # the mistake: name kept as it is
    torch.save(state, path)


def _save_peft_names(model, path):
    state = {f"{_ref.clean_name(name)}.lora_{k}": v.detach().cpu() for name, module in model.named_modules()
             if isinstance(getattr(module, "lora", None), nn.Module)
             for k, v in module.lora.state_dict().items()}
    torch.save(state, path)


def _save_cast(dtype):
    def save_lora(model, path):
        state = {f"{_ref.clean_name(name)}.lora.{k}": v.detach().cpu().to(dtype) for name, module in model.named_modules()
                 if isinstance(getattr(module, "lora", None), nn.Module)
                 for k, v in module.lora.state_dict().items()}
        torch.save(state, path)
    return save_lora


def _apply_recursive(model, rank=8):
    """The new forward calls module.forward, which by then is itself."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module.weight.shape[0] == module.weight.shape[1]:
            lora = _ref.LoRA(module.in_features, module.out_features, rank).to(module.weight.device, module.weight.dtype)
            module.lora = lora
            module.forward = lambda x, module=module, lora=lora: module.forward(x) + lora(x)
    for n, p in model.named_parameters():
        p.requires_grad = ".lora." in n
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _apply_counting(what):
    def apply_lora(model, rank=8):
        _ref.apply_lora(model, rank)
        loras = [m.lora for m in model.modules() if isinstance(getattr(m, "lora", None), nn.Module)]
        return len(loras) if what == "layers" else sum(lora.A.weight.numel() for lora in loras)
    return apply_lora


# ---- load_lora

def _load_state_dict(model, path):
    model.load_state_dict(torch.load(path, weights_only=True))  # the mistake: strict, the whole model expected


def _merge_new_parameter(model):
    with torch.no_grad():
        for name, module in list(model.named_modules()):
            lora = getattr(module, "lora", None)
            if not isinstance(lora, nn.Module):
                continue
            delta = (lora.B.weight.float() @ lora.A.weight.float()).to(module.weight.dtype)
            module.weight = nn.Parameter(module.weight + delta)  # the mistake: a new, trainable Parameter
            del module.lora
            vars(module).pop("forward", None)


def _load_keys_only(model, path):
    """Missing and unexpected keys refused, shapes never compared: copy_ decides."""
    state = {_ref.clean_name(k): v for k, v in torch.load(path, weights_only=True).items()}
    own = {f"{_ref.clean_name(name)}.lora.{k}": p for name, module in model.named_modules()
           if isinstance(getattr(module, "lora", None), nn.Module) for k, p in module.lora.named_parameters()}
    bad = sorted(set(own) ^ set(state))
    if bad:
        raise ValueError(f"{path}: 键对不上: {', '.join(bad)}")
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(state[k])


def _load_broadcasts(model, path):
    """Keys checked, and copy_ made to "work" whatever the shapes (the error silenced)."""
    state = {_ref.clean_name(k): v for k, v in torch.load(path, weights_only=True).items()}
    own = {f"{_ref.clean_name(name)}.lora.{k}": p for name, module in model.named_modules()
           if isinstance(getattr(module, "lora", None), nn.Module) for k, p in module.lora.named_parameters()}
    bad = sorted(set(own) ^ set(state))
    if bad:
        raise ValueError(f"{path}: 键对不上: {', '.join(bad)}")
    with torch.no_grad():
        for k, p in own.items():
            try:
                p.copy_(state[k])
            except RuntimeError:
                pass

def _load_not_strict(model, path):
    state = {_ref.clean_name(k): v for k, v in torch.load(path, weights_only=True).items()}
    with torch.no_grad():
        for name, module in model.named_modules():
            lora = getattr(module, "lora", None)
            if not isinstance(lora, nn.Module):
                continue
            for k, p in lora.named_parameters():
                key = f"{_ref.clean_name(name)}.lora.{k}"
                if key in state:  # the mistake: a missing key is skipped, an extra one ignored
                    p.copy_(state[key])


def _load_code_too(model, path):
    torch.load(path, weights_only=False)  # the mistake: unpickles whatever the file holds
    return _ref.load_lora(model, path)


def _load_keeps_prefix(model, path):
    state = torch.load(path, weights_only=True)
    with torch.no_grad():
        for name, module in model.named_modules():
            lora = getattr(module, "lora", None)
            if isinstance(lora, nn.Module):
                for k, p in lora.named_parameters():
                    key = f"{name}.lora.{k}"
                    if key not in state:
                        raise ValueError(f"missing {key}")
                    p.copy_(state[key])


def _load_replaces_params(model, path):
    state = {_ref.clean_name(k): v for k, v in torch.load(path, weights_only=True).items()}
    _ref.load_lora(model, path)  # validates the keys
    for name, module in model.named_modules():
        lora = getattr(module, "lora", None)
        if isinstance(lora, nn.Module):
            # the mistake: new Parameters from the file, in the file's dtype
            lora.A.weight = nn.Parameter(state[f"{_ref.clean_name(name)}.lora.A.weight"])
            lora.B.weight = nn.Parameter(state[f"{_ref.clean_name(name)}.lora.B.weight"])


# ---- merge_lora

def _merge(times=1, transpose=False, detach=True, restore=True, dtype_kept=True):
    def merge_lora(model):
        with torch.no_grad():
            for _, module in list(model.named_modules()):
                lora = getattr(module, "lora", None)
                if not isinstance(lora, nn.Module):
                    continue
                delta = lora.B.weight.float() @ lora.A.weight.float()
                if transpose:
                    delta = delta.T
                if dtype_kept:
                    module.weight += times * delta.to(module.weight.dtype)
                else:
                    module.weight.data = module.weight.float() + times * delta
                if detach:
                    del module.lora
                if restore:
                    vars(module).pop("forward", None)
    return merge_lora


MUTANTS = {
    # LoRA
    "b_random_init": (_variant({"__init__": _init(b="normal")}), "B 要初始化为零"),
    "a_zero_init": (_variant({"__init__": _init(a="zeros")}), "一步都学不动"),
    "a_default_init": (_variant({"__init__": _init(a="default")}), "nn.Linear 的默认初始化"),
    "alpha_over_rank_scaling": (_variant({"forward": _alpha_scaled}), "lora_alpha / r"),
    # apply_lora: which layers
    "every_linear": (_with_apply(select=lambda n, m: isinstance(m, nn.Linear)), "每个 nn.Linear 都挂了"),
    "lm_head_too": (_with_apply(select=lambda n, m: _square(n, m) or n == "lm_head"), "lm_head 也挂了"),
    "only_q_proj": (_with_apply(select=lambda n, m: n.endswith("q_proj")), "只挂在了 q_proj 上"),
    "peft_q_and_v_by_name": (_with_apply(select=lambda n, m: n.endswith(("q_proj", "v_proj"))), "不是方阵"),
    "q_and_o_by_name": (_with_apply(select=lambda n, m: n.endswith(("q_proj", "o_proj"))), "按名字 (by name)"),
    # apply_lora: forward, freezing, count, dtype/device
    "late_binding_closure": (_with_apply(late_binding=True), "晚绑定 (late binding)"),
    "forward_is_lora_only": (_with_apply(lora_only=True), "忘了加上原来的输出"),
    "base_not_frozen": (_with_apply(freeze="none"), "没有冻结 (freeze)"),
    "lora_frozen_too": (_with_apply(freeze="everything"), "LoRA 自己的参数也被冻结了"),
    "returns_all_parameters": (_with_apply(count="all"), "全部参数的个数"),
    "adapter_float32": (_with_apply(cast=("device",)), "一样的 dtype"),
    "adapter_on_cpu": (_with_apply(cast=("dtype",)), "设备 (device)"),
    # save_lora
    "save_whole_model": (_variant(save_lora=_save_whole_model), "把整个模型都存进去了"),
    "save_keeps_ddp_prefix": (_variant(save_lora=_save_with_prefix), "`module.` 前缀"),
    "save_peft_key_names": (_variant(save_lora=_save_peft_names), "键名 (keys) 和 MiniMind 的不一样"),
    # load_lora
    "save_as_float32": (_variant(save_lora=_save_cast(torch.float32)), "是 torch.float32，模型里的这个参数是 torch.bfloat16"),
    "save_as_half": (_variant(save_lora=_save_cast(torch.float16)), "是 torch.float16"),
    "load_shapes_not_compared": (_variant(load_lora=_load_keys_only), "copy_ 在形状对不上时自己报的错"),
    "load_shape_error_swallowed": (_variant(load_lora=_load_broadcasts), "形状不同却没有报错"),
    "forward_calls_itself": (_variant(apply_lora=_apply_recursive), "无限递归 (RecursionError)"),
    "returns_number_of_layers": (_variant(apply_lora=_apply_counting("layers")), "挂上 LoRA 的层数"),
    "returns_a_parameters_only": (_variant(apply_lora=_apply_counting("A")), "只数了 A 的参数"),
    "lora_output_detached": (_variant({"forward": lambda self, x: self.B(self.A(x)).detach()}), "loss 不带梯度"),
    "load_with_load_state_dict": (_variant(load_lora=_load_state_dict), "Missing key(s) in state_dict"),
    "merge_new_parameter": (_variant(merge_lora=_merge_new_parameter), "新的 nn.Parameter"),
    "forward_a_and_b_swapped": (_variant({"forward": lambda self, x: self.A(self.B(x))}), "先 A 再 B"),
    "load_not_strict": (_variant(load_lora=_load_not_strict), "load_lora 没有报错"),
    "load_weights_only_false": (_variant(load_lora=_load_code_too), "weights_only=True"),
    "load_keeps_prefix": (_variant(load_lora=_load_keeps_prefix), "拒绝了一个正确的文件"),
    "load_replaces_parameters": (_variant(load_lora=_load_replaces_params), "copy_ 进原来的参数"),
    # merge_lora
    "merge_adds_twice": (_variant(merge_lora=_merge(times=2)), "加了两次"),
    "merge_transposed": (_variant(merge_lora=_merge(transpose=True)), "转置 (transpose)"),
    "merge_keeps_adapter": (_variant(merge_lora=_merge(detach=False, restore=False)), "还挂着 lora"),
    "merge_forward_not_restored": (_variant(merge_lora=_merge(restore=False)), "forward 没有恢复"),
    "merge_in_float32": (_variant(merge_lora=_merge(dtype_kept=False)), "变成了 torch.float32"),
}
