"""Wrong GRPO pieces a learner really writes, and what the check must say about each.

Each mutant is a fresh copy of the reference module with one function replaced (grpo_loss calls
the module's own k3_kl, so a wrong k3_kl is also inside its loss; the check meets it first).
"""
import importlib.util
import itertools
import warnings

import torch
import torch.nn.functional as F

from workbook import _modes

_ref = _modes.reference_module("train.grpo_loss")
_count = itertools.count()


def _variant(**functions):
    """A copy of the reference module with module-level functions replaced."""
    spec = importlib.util.spec_from_file_location(f"_grpo_mutant_{next(_count)}", _ref.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, value in functions.items():
        setattr(mod, name, value)
    return mod


# ---- repeat_prompts

def _repeat(ids_mode="interleave", mask_mode="interleave", check=True):
    def repeat_prompts(input_ids, attention_mask, num_generations):
        if check and num_generations < 1:
            raise ValueError("num_generations >= 1")
        g = num_generations

        def rep(x, mode):
            return x.repeat(g, 1) if mode == "tile" else x.repeat_interleave(g, dim=0)
        return rep(input_ids, ids_mode), rep(attention_mask, mask_mode)
    return _variant(repeat_prompts=repeat_prompts)


# ---- completion_mask

def _mask(kind):
    def completion_mask(completion_ids, eos_token_id):
        eos = 2 if kind == "hard_coded_2" else eos_token_id
        is_eos = completion_ids == eos
        n, r = completion_ids.shape
        if kind == "not_eos":  # the mistake: every non-eos token, the eos itself left out
            return (~is_eos).long()
        if kind == "all_ones":
            return torch.ones_like(completion_ids)
        first = is_eos.int().argmax(dim=1)  # 0 for a row without eos
        if kind == "last":
            first = r - 1 - is_eos.int().flip(1).argmax(dim=1)
        if kind != "argmax_only":  # the mistake there: a row that never stopped keeps only position 0
            first = torch.where(is_eos.any(dim=1), first, torch.full_like(first, r))
        pos = torch.arange(r).expand(n, r)
        out = pos < first.unsqueeze(1) if kind == "exclusive" else pos <= first.unsqueeze(1)
        return out if kind == "bool" else out.long()
    return _variant(completion_mask=completion_mask)


# ---- completion_log_probs

def _log_probs(kind):
    def completion_log_probs(logits, completion_ids):
        r = completion_ids.shape[1]
        if kind != "no_check" and logits.shape[1] < r + 1:
            raise ValueError("need R + 1 positions")
        if kind == "last_r":  # the mistake: no shift
            rows = logits[:, -r:]
        elif kind == "first_r":
            rows = logits[:, :r]
        elif kind == "no_check":  # no ValueError: with K = R a slice of R rows still works, one off
            rows = logits[:, -(r + 1):-1] if logits.shape[1] >= r + 1 else logits[:, -r:]
        else:
            rows = logits[:, -(r + 1):-1]
        if kind == "bf16_softmax":  # log_softmax in the input dtype, the float32 cast at the end
            lp = F.log_softmax(rows, dim=-1).float()
        elif kind == "no_float":
            lp = F.log_softmax(rows, dim=-1)
        elif kind == "probs":
            lp = F.softmax(rows.float(), dim=-1)
        else:
            lp = F.log_softmax(rows.float(), dim=-1)
        out = lp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
        return out.detach() if kind == "detached" else out
    return _variant(completion_log_probs=completion_log_probs)


# ---- group_advantages

def _adv(grouping="group", unbiased=True, eps_on=True, clamp="before", batch="unbiased", batch_eps=1e-8,
         check=True, fixed_eps=None, fixed_clip=None, upcast=True, flatten=True, in_place=False):
    def group_advantages(rewards, num_generations, eps=1e-4, clip=10.0):
        with warnings.catch_warnings():  # G = 1 without the check: torch warns that the std has 0 dof
            warnings.simplefilter("ignore", UserWarning)
            return _body(rewards, num_generations, eps, clip)

    def _body(rewards, num_generations, eps, clip):
        g = num_generations
        if check and (g < 2 or rewards.dim() != 1 or rewards.numel() % g):
            raise ValueError("bad rewards or num_generations")
        e = fixed_eps if fixed_eps is not None else eps
        c = fixed_clip if fixed_clip is not None else clip
        r = rewards.float() if upcast else rewards
        if in_place:  # the mistake: the caller's rewards become the advantages
            r = rewards
        if grouping == "batch":
            a = (r - r.mean()) / (r.std(unbiased=unbiased) + (e if eps_on else 0.0))
        elif grouping == "strided":
            grouped = r.view(g, -1)
            a = ((grouped - grouped.mean(0, keepdim=True))
                 / (grouped.std(0, keepdim=True, unbiased=unbiased) + (e if eps_on else 0.0))).reshape(-1)
        else:
            grouped = r.view(-1, g)
            if in_place:
                grouped -= grouped.mean(1, keepdim=True).clone()
                a = grouped / (grouped.std(1, keepdim=True) + e)
            else:
                a = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True, unbiased=unbiased)
                                                                  + (e if eps_on else 0.0))
            if not flatten:
                a = a.clamp(-c, c)
                return (a - a.mean()) / (a.std() + batch_eps)
            a = a.reshape(-1)
        if clamp == "before":
            a = a.clamp(-c, c)
        if batch != "none":
            a = (a - a.mean()) / (a.std(unbiased=batch == "unbiased") + batch_eps)
        if clamp == "after":
            a = a.clamp(-c, c)
        return a
    return _variant(group_advantages=group_advantages)


# ---- k3_kl

def _kl(kind):
    def k3_kl(policy_log_probs, ref_log_probs):
        d = ref_log_probs - policy_log_probs
        if kind == "sign":  # d = logp - ref
            d = -d
            return torch.exp(d) - d - 1
        if kind == "k1":
            return -d
        if kind == "minus_k1":
            return d
        if kind == "k2":
            return d ** 2 / 2
        return torch.exp(d) - 1  # "no_minus_d"
    return _variant(k3_kl=k3_kl)


# ---- grpo_loss

def _loss(freeze_ref=True, ratio="detach_inner", beta_sign=-1.0, fixed_beta=None, reduce="completion", kl="own",
          clamp_count=True, detach_kl_policy=False, sign=1.0):
    def grpo_loss(policy_log_probs, ref_log_probs, advantages, mask, beta=0.02):
        b = fixed_beta if fixed_beta is not None else beta
        logp = policy_log_probs
        ref = ref_log_probs.detach() if freeze_ref else ref_log_probs
        lp_kl = logp.detach() if detach_kl_policy else logp
        d = ref - lp_kl
        per_kl = {"own": torch.exp(d) - d - 1, "k2": d ** 2 / 2}[kl]
        if ratio == "detach_inner":
            rt = torch.exp(logp - logp.detach())
        elif ratio == "detached":  # the mistake: no gradient through the ratio at all
            rt = torch.exp(logp - logp.detach()).detach()
        elif ratio == "logp":
            rt = logp
        else:  # "ref"
            rt = torch.exp(logp - ref)
        per_token = -sign * (rt * advantages.unsqueeze(1) + beta_sign * b * per_kl)
        m = mask.to(per_token.dtype)
        count = m.sum(dim=1).clamp(min=1) if clamp_count else m.sum(dim=1)
        if reduce == "tokens":
            return (per_token * m).sum() / m.sum()
        if reduce == "sum":
            return (per_token * m).sum(dim=1).mean()
        if reduce == "no_mask":
            return per_token.mean()
        return ((per_token * m).sum(dim=1) / count).mean()
    return _variant(grpo_loss=grpo_loss)


MUTANTS = {
    # repeat_prompts
    "repeat_not_repeat_interleave": (_repeat(ids_mode="tile", mask_mode="tile"), "你用了 repeat（把整个 batch 平铺 G 次）"),
    "attention_mask_tiled": (_repeat(mask_mode="tile"), "attention_mask 却是用 repeat 平铺的"),
    "repeat_zero_generations_allowed": (_repeat(check=False), "num_generations=0) 应该抛出 ValueError"),
    # completion_mask
    "mask_stops_before_eos": (_mask("exclusive"), "mask 停在了结束符之前"),
    "mask_all_ones": (_mask("all_ones"), "mask 全是 1：结束符之后的位置也算进去了"),
    "mask_row_without_eos_cut_to_one": (_mask("argmax_only"), "没有结束符的那一行只剩第 0 位是 1"),
    "mask_not_eos_tokens": (_mask("not_eos"), "你的 mask 是 ids != eos"),
    "mask_up_to_last_eos": (_mask("last"), "你数到了**最后**一个结束符"),
    "mask_eos_id_hard_coded": (_mask("hard_coded_2"), "eos_token_id 参数没有用上"),
    "mask_bool": (_mask("bool"), "dtype 应该是 torch.int64"),
    # completion_log_probs
    "log_probs_no_shift": (_log_probs("last_r"), "差了一位 (off by one)"),
    "log_probs_first_r_logits": (_log_probs("first_r"), "你用了最前面 R 个位置的 logits"),
    "log_softmax_in_bf16": (_log_probs("bf16_softmax"), "你的 log_softmax 是在 bfloat16 里算的"),
    "log_probs_not_float32": (_log_probs("no_float"), "completion_log_probs 要返回 float32，你的是 torch.bfloat16"),
    "log_probs_are_probabilities": (_log_probs("probs"), "你返回的是概率 p"),
    "log_probs_detached": (_log_probs("detached"), "的结果不带梯度"),
    "log_probs_too_few_positions_accepted": (_log_probs("no_check"), "只保留了 R = 4 个位置"),
    # group_advantages
    "advantages_over_batch_not_group": (_adv(grouping="batch"), "优势没有按组算"),
    "advantages_groups_strided": (_adv(grouping="strided"), "分组的方向错了"),
    "advantages_no_eps": (_adv(eps_on=False), "没有 eps 就是 0 / 0"),
    "advantages_population_std": (_adv(unbiased=False), "组内的标准差用成了总体标准差 (population std"),
    "advantages_batch_population_std": (_adv(batch="population"), "最后一步 batch 归一化的标准差用成了总体标准差"),
    "advantages_no_clamp": (_adv(clamp="none"), "没有 clamp"),
    "advantages_clamp_after_batch_step": (_adv(clamp="after"), "clamp 放错了地方"),
    "advantages_no_batch_normalisation": (_adv(batch="none"), "少了最后一步"),
    "advantages_eps_hard_coded": (_adv(fixed_eps=1e-4), "参数 eps 没有用上"),
    "advantages_clip_hard_coded": (_adv(fixed_clip=10.0), "参数 clip 没有用上"),
    "advantages_batch_step_without_1e_8": (_adv(batch_eps=0.0), "std(A) + 1e-8"),
    "advantages_one_generation_allowed": (_adv(check=False), "num_generations=1) 应该抛出 ValueError"),
    "advantages_float64_kept": (_adv(upcast=False), "float64 的 rewards 进来也要返回 float32"),
    "advantages_not_flattened": (_adv(flatten=False), "最后要 .view(-1) 摊平"),
    "advantages_rewards_changed_in_place": (_adv(in_place=True), "原地操作 in-place"),
    # k3_kl
    "kl_sign_of_d_flipped": (_kl("sign"), "d 的符号反了"),
    "kl_k1": (_kl("k1"), "你用的是 k1 = logp − ref"),
    "kl_minus_k1": (_kl("minus_k1"), "这是 k1 的相反数"),
    "kl_k2": (_kl("k2"), "你用的是 k2 = d² / 2"),
    "kl_without_minus_d": (_kl("no_minus_d"), "少了 − d"),
    # grpo_loss: the value
    "beta_on_the_wrong_side": (_loss(beta_sign=1.0), "β·kl 的符号反了"),
    "beta_hard_coded": (_loss(fixed_beta=0.02), "参数 beta 没有用上"),
    "no_kl_term": (_loss(fixed_beta=0.0), "KL 项没有算进去"),
    "loss_kl_k2_inline": (_loss(kl="k2"), "loss 里的 KL 用的是 k2"),
    "mean_over_all_tokens_of_the_batch": (_loss(reduce="tokens"), "你对整个 batch 的所有有效 token 取了一次平均"),
    "sum_per_completion": (_loss(reduce="sum"), "每个 completion 内部是求和，不是平均"),
    "mask_ignored_in_loss": (_loss(reduce="no_mask"), "mask 没有用上"),
    "reinforce_logp_for_ratio": (_loss(ratio="logp"), "你用 A·logp 代替了"),
    "ratio_against_reference": (_loss(ratio="ref"), "比值 (ratio) 用成了 exp(logp − ref)"),
    "loss_sign_flipped": (_loss(sign=-1.0), "整个 loss 的符号反了"),
    # grpo_loss: the gradient, edge cases
    "ratio_detached_entirely": (_loss(ratio="detached"), "整个 ratio 被 detach 了"),
    "reference_not_frozen": (_loss(freeze_ref=False), "梯度流进了参考模型的 log 概率"),
    "kl_policy_side_detached": (_loss(detach_kl_policy=True), "KL 那一项没有梯度"),
    "empty_completion_gives_nan": (_loss(clamp_count=False), "这一行是 0 / 0"),
}
