"""Wrong DPO losses, reference models and DPODatasets a learner really writes, and what the check
must say about each.

Each mutant is a fresh copy of the two reference modules (data.dpo and train.dpo_loss, merged as
the check sees them) with one piece replaced, so the rest of the code (dpo_loss calls the
module's own sequence_log_probs, __getitem__ calls the module's own _encode) uses the wrong piece.
"""
import copy
import importlib.util
import itertools
import types

import torch
import torch.nn.functional as F

from workbook import _modes

_ref_data = _modes.reference_module("data.dpo")
_ref_loss = _modes.reference_module("train.dpo_loss")
_count = itertools.count()


def _fresh(module):
    """A new copy of a reference module, in its own package (so `from .sft import ...` works)."""
    package = module.__name__.rpartition(".")[0]
    spec = importlib.util.spec_from_file_location(f"{package}._mutant16_{next(_count)}", module.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _variant(methods=None, **functions):
    """The merged data.dpo + train.dpo_loss namespace with functions and DPODataset methods replaced."""
    data, loss = _fresh(_ref_data), _fresh(_ref_loss)
    for name, value in functions.items():
        setattr(loss if hasattr(loss, name) else data, name, value)
    for name, value in (methods or {}).items():
        setattr(data.DPODataset, name, value)
    merged = types.ModuleType("stage16_mutant")
    for mod in (data, loss):
        merged.__dict__.update({k: v for k, v in vars(mod).items() if not k.startswith("__")})
    return merged


def _loss_variant(make):
    """A variant whose dpo_loss is `make(parts)`: parts(ref, policy, mask, normalize) -> the
    (ref_c, ref_r, pi_c, pi_r) of the reference's sequence_log_probs."""
    def parts(ref_log_probs, policy_log_probs, mask, normalize):
        r = _ref_loss.sequence_log_probs(ref_log_probs, mask, normalize)
        p = _ref_loss.sequence_log_probs(policy_log_probs, mask, normalize)
        h = r.shape[0] // 2
        return r[:h], r[h:], p[:h], p[h:]

    def dpo_loss(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
        rc, rr, pc, pr = parts(ref_log_probs, policy_log_probs, mask, length_normalize)
        return make(rc, rr, pc, pr, beta)
    return _variant(dpo_loss=dpo_loss)


# ---- logits_to_log_probs

def _log_of_softmax(logits, labels):
    return torch.log(torch.softmax(logits.float(), dim=-1)).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _probs(logits, labels):
    return torch.softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _in_bf16(logits, labels):
    return F.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).float()


def _wrong_dim(logits, labels):
    return F.log_softmax(logits.float(), dim=1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _shifted_again(logits, labels):
    return _ref_loss.logits_to_log_probs(logits[:, :-1], labels[:, 1:])


def _detached(logits, labels):
    return _ref_loss.logits_to_log_probs(logits.detach(), labels)


# ---- sequence_log_probs

def _seq(fn):
    def sequence_log_probs(log_probs, mask, length_normalize=True):
        return fn(log_probs, mask.to(log_probs.dtype), length_normalize)
    return sequence_log_probs


def _reversed_option(lp, m, n):
    total = (lp * m).sum(-1)
    return total if n else total / m.sum(-1).clamp(min=1)


def _mask_ignored(lp, m, n):
    return lp.mean(-1) if n else lp.sum(-1)


def _divided_by_t(lp, m, n):
    total = (lp * m).sum(-1)
    return total / lp.shape[-1] if n else total


def _no_clamp(lp, m, n):
    total = (lp * m).sum(-1)
    return total / m.sum(-1) if n else total


def _mask_shifted_in_loss(lp, m, n):
    lp, m = lp[:, 1:], m[:, :-1]
    total = (lp * m).sum(-1)
    return total / m.sum(-1).clamp(min=1) if n else total


def _mean_over_batch_total(lp, m, n):
    total = (lp * m).sum(-1)
    return total / m.sum() if n else total


def _mask_rolled_two(lp, m, n):
    m = torch.roll(m, 2, dims=-1)  # the mask moved by two positions (a shift applied twice, and wrapped)
    total = (lp * m).sum(-1)
    return total / m.sum(-1).clamp(min=1) if n else total


def _always_mean(lp, m, n):
    return (lp * m).sum(-1) / m.sum(-1).clamp(min=1)


def _option_dropped(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
    """dpo_loss that forgets to pass length_normalize on: always the default (mean)."""
    r = _ref_loss.sequence_log_probs(ref_log_probs, mask)
    p = _ref_loss.sequence_log_probs(policy_log_probs, mask)
    h = r.shape[0] // 2
    return -F.logsigmoid(beta * ((p[:h] - p[h:]) - (r[:h] - r[h:]))).mean()


def _interleaved(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
    r = _ref_loss.sequence_log_probs(ref_log_probs, mask, length_normalize)
    p = _ref_loss.sequence_log_probs(policy_log_probs, mask, length_normalize)
    return -F.logsigmoid(beta * ((p[0::2] - p[1::2]) - (r[0::2] - r[1::2]))).mean()


# ---- implicit_rewards

def _rewards_without_beta(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
    r = (_ref_loss.sequence_log_probs(policy_log_probs, mask, length_normalize)
         - _ref_loss.sequence_log_probs(ref_log_probs, mask, length_normalize))
    h = r.shape[0] // 2
    return r[:h], r[h:]


# ---- make_ref_model

def _ref_not_eval(model):
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref


def _ref_not_frozen(model):
    return copy.deepcopy(model).eval()


def _ref_is_policy(model):
    model.eval()
    model.requires_grad_(False)
    return model


def _ref_shallow(model):
    ref = copy.copy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def _policy_frozen(model):
    model.eval()
    model.requires_grad_(False)
    return copy.deepcopy(model)


# ---- DPODataset

def _getitem(build):
    """A __getitem__ built from the reference _encode and `build(self, side, ids, mask) -> (x, y, m)`."""
    def __getitem__(self, index):
        item = {}
        for side, messages in zip(("chosen", "rejected"), self.pair(index)):
            ids, mask = self._encode(messages)
            x, y, m = build(self, side, ids, mask)
            for key, value in (("x", x), ("y", y), ("mask", m)):
                item[f"{key}_{side}"] = torch.tensor(value, dtype=torch.long)
        return item
    return __getitem__


def _y_padded_with_minus_100(self, side, ids, mask):
    """The SFT habit: the targets' padding written as -100."""
    k = len(ids)
    while k > 0 and ids[k - 1] == self.pad_id:
        k -= 1
    return ids[:-1], ids[1:k] + [-100] * (len(ids) - k), mask[1:]


def _keys_swapped(self, index):
    item = _ref_data.DPODataset.__getitem__(self, index)
    return {k.replace("chosen", "@").replace("rejected", "chosen").replace("@", "rejected"): v for k, v in item.items()}


def _mask_bool(self, index):
    item = _ref_data.DPODataset.__getitem__(self, index)
    return {k: v.bool() if k.startswith("mask") else v for k, v in item.items()}


def _encode_with(mask_of):
    """_encode whose mask is `mask_of(self, ids_unpadded, ids_padded, mask)`."""
    def _encode(self, messages):
        ids, mask = _ref_data.DPODataset._encode(self, messages)
        n = len(self.tokenizer(_ref_data.render_chat(messages), add_special_tokens=False)["input_ids"][:self.max_length])
        return ids, mask_of(self, n, ids, mask)
    return _encode


def _pad_with_eos(self, messages):
    ids, mask = _ref_data.DPODataset._encode(self, messages)
    n = len(self.tokenizer(_ref_data.render_chat(messages), add_special_tokens=False)["input_ids"][:self.max_length])
    return ids[:n] + [self.tokenizer.eos_token_id] * (self.max_length - n), mask


def _parse_without_line_number(line, path, lineno):
    try:
        return _ref_data._parse_pair(line, path, lineno)
    except ValueError:
        raise ValueError(f"{path}: 坏行 (bad line)") from None


def _squeeze_all(logits, labels):
    return F.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze()


def _loss_detached(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
    return _ref_loss.dpo_loss(ref_log_probs, policy_log_probs, mask, beta, length_normalize).detach()


def _rewards_detached(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
    with torch.no_grad():  # the mistake: the docstring says the caller decides
        return _ref_loss.implicit_rewards(ref_log_probs, policy_log_probs, mask, beta, length_normalize)


def _encode_spans_uncut(self, messages):
    """The spans searched on the whole (uncut) ids: a reply cut by max_length stretches the mask."""
    full = self.tokenizer(_ref_data.render_chat(messages), add_special_tokens=False)["input_ids"]
    ids = full[:self.max_length]
    mask = [0] * self.max_length
    for b, e in _ref_data.assistant_spans(full, self.start_ids, self.end_ids):
        mask[b:e] = [1] * (e - b)
    return ids + [self.pad_id] * (self.max_length - len(ids)), mask


def _no_squeeze(logits, labels):
    return F.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1))


def _rewards_not_halved(ref_log_probs, policy_log_probs, mask, beta, length_normalize=True):
    r = beta * (_ref_loss.sequence_log_probs(policy_log_probs, mask, length_normalize)
                - _ref_loss.sequence_log_probs(ref_log_probs, mask, length_normalize))
    return r, r  # the mistake: the whole batch twice, not its two halves


ls = F.logsigmoid

MUTANTS = {
    # logits_to_log_probs
    "log_of_softmax_underflows": (_variant(logits_to_log_probs=_log_of_softmax), "下溢 (underflow)"),
    "probabilities_not_log": (_variant(logits_to_log_probs=_probs), "不是对数概率"),
    "log_softmax_in_bf16": (_variant(logits_to_log_probs=_in_bf16), "在 bfloat16 里算的"),
    "log_softmax_over_time": (_variant(logits_to_log_probs=_wrong_dim), "维度不对"),
    "labels_shifted_again": (_variant(logits_to_log_probs=_shifted_again), "又错位了一次"),
    "squeeze_forgotten": (_variant(logits_to_log_probs=_no_squeeze), "少了 .squeeze(-1)"),
    "rewards_not_halved": (_variant(implicit_rewards=_rewards_not_halved), "没有分成两半"),
    "squeeze_all_dims": (_variant(logits_to_log_probs=_squeeze_all), ".squeeze(-1)"),
    "dpo_loss_detached": (_variant(dpo_loss=_loss_detached), "不带梯度 (requires_grad=False)"),
    "rewards_detached": (_variant(implicit_rewards=_rewards_detached), "Not detached"),
    "mask_spans_on_uncut_ids": (_variant({"_encode": _encode_spans_uncut}), "没有截断的 ids 上找的 span"),
    "log_probs_detached": (_variant(logits_to_log_probs=_detached), "没有梯度"),
    # sequence_log_probs
    "sum_and_mean_swapped": (_variant(sequence_log_probs=_seq(_reversed_option)), "含义反了"),
    "always_mean": (_variant(sequence_log_probs=_seq(_always_mean)), "都返回了平均"),
    "mask_not_applied": (_variant(sequence_log_probs=_seq(_mask_ignored)), "mask 没有用上"),
    "mean_over_all_positions": (_variant(sequence_log_probs=_seq(_divided_by_t)), "除以的是序列长度"),
    "mask_shifted_again_in_loss": (_variant(sequence_log_probs=_seq(_mask_shifted_in_loss)), "又错了一位"),
    "mean_over_the_batch_total": (_variant(sequence_log_probs=_seq(_mean_over_batch_total)), "整个 batch 的回答 token 总数"),
    "mask_rolled_by_two": (_variant(sequence_log_probs=_seq(_mask_rolled_two)), "错开了 2 位"),
    "no_clamp_nan": (_variant(sequence_log_probs=_seq(_no_clamp)), "clamp"),
    # dpo_loss
    "halves_swapped": (_loss_variant(lambda rc, rr, pc, pr, b: -ls(b * ((pr - pc) - (rr - rc))).mean()),
                       "chosen 和 rejected 两半取反了"),
    "pairs_interleaved": (_variant(dpo_loss=_interleaved), "不是交错的"),
    "beta_on_policy_only": (_loss_variant(lambda rc, rr, pc, pr, b: -ls(b * (pc - pr) - (rc - rr)).mean()),
                            "只乘了 policy"),
    "beta_outside_logsigmoid": (_loss_variant(lambda rc, rr, pc, pr, b: -b * ls((pc - pr) - (rc - rr)).mean()),
                                "乘在了 logsigmoid 外面"),
    "beta_divides": (_loss_variant(lambda rc, rr, pc, pr, b: -ls(((pc - pr) - (rc - rr)) / b).mean()), "除以了 β"),
    "reference_ignored": (_loss_variant(lambda rc, rr, pc, pr, b: -ls(b * (pc - pr)).mean()), "参考模型 (reference) 没有用上"),
    "log_of_sigmoid_underflows": (_loss_variant(
        lambda rc, rr, pc, pr, b: -torch.log(torch.sigmoid(b * ((pc - pr) - (rc - rr)))).mean()), "下溢 (underflow)"),
    "sigmoid_instead_of_logsigmoid": (_loss_variant(
        lambda rc, rr, pc, pr, b: -torch.sigmoid(b * ((pc - pr) - (rc - rr))).mean()), "sigmoid 而不是 logsigmoid"),
    "loss_summed_over_pairs": (_loss_variant(lambda rc, rr, pc, pr, b: -ls(b * ((pc - pr) - (rc - rr))).sum()), "求了和"),
    "length_option_not_passed": (_variant(dpo_loss=_option_dropped), "length_normalize 没有用上"),
    # implicit_rewards
    "rewards_without_beta": (_variant(implicit_rewards=_rewards_without_beta), "没有乘 β"),
    # make_ref_model
    "reference_not_in_eval": (_variant(make_ref_model=_ref_not_eval), "没有切到 eval"),
    "reference_not_frozen": (_variant(make_ref_model=_ref_not_frozen), "没有冻结"),
    "reference_is_the_policy": (_variant(make_ref_model=_ref_is_policy), "policy 本身"),
    "reference_shallow_copy": (_variant(make_ref_model=_ref_shallow), "浅拷贝"),
    "policy_frozen_instead": (_variant(make_ref_model=_policy_frozen), "切到了 eval"),
    # DPODataset
    "chosen_rejected_keys_swapped": (_variant({"__getitem__": _keys_swapped}), "chosen 和 rejected 反了"),
    "mask_unshifted": (_variant({"__getitem__": _getitem(lambda self, s, ids, m: (ids[:-1], ids[1:], m[:-1]))}),
                       "没有错位 (unshifted)"),
    "y_not_shifted": (_variant({"__getitem__": _getitem(lambda self, s, ids, m: (ids[:-1], ids[:-1], m[1:]))}),
                      "没有错位"),
    "x_and_y_swapped": (_variant({"__getitem__": _getitem(lambda self, s, ids, m: (ids[1:], ids[:-1], m[1:]))}),
                        "x 和 y 反了"),
    "not_shifted_at_all": (_variant({"__getitem__": _getitem(lambda self, s, ids, m: (ids, ids, m))}),
                           "max_length - 1"),
    "prompt_in_mask": (_variant({"_encode": _encode_with(lambda self, n, ids, m: [1] * n + [0] * (len(ids) - n))}),
                       "提问 (prompt)"),
    "pretrain_style_mask": (_variant({"__getitem__": _getitem(
        lambda self, s, ids, m: (ids[:-1], ids[1:], [int(t != self.pad_id) for t in ids[1:]]))}), "提问 (prompt)"),
    "pad_masked_by_value": (_variant({"_encode": _encode_with(
        lambda self, n, ids, m: [k if t != self.pad_id else 0 for k, t in zip(m, ids)])}), "按值 (by value)"),
    "y_padded_with_minus_100": (_variant({"__getitem__": _getitem(_y_padded_with_minus_100)}), "y 里有 -100"),
    "pad_not_masked": (_variant({"_encode": _encode_with(lambda self, n, ids, m: m[:n] + [1] * (len(ids) - n))}),
                       "pad 没有被 mask 掉"),
    "mask_bool": (_variant({"__getitem__": _mask_bool}), "dtype"),
    "pad_with_eos": (_variant({"_encode": _pad_with_eos}), "padding 用了 eos"),
    "bad_line_without_line_number": (_variant(_parse_pair=_parse_without_line_number), "没有行号"),
}
