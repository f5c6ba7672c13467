"""Wrong distillation losses and objectives a learner really writes, and what the check must say
about each.

Each mutant is a fresh copy of the reference module with one function replaced, so the other
function of the module (distill_objective calls the module's own distillation_loss) uses the
wrong piece.
"""
import importlib.util
import itertools

import torch
import torch.nn.functional as F

from workbook import _modes

_ref = _modes.reference_module("train.distill_loss")
_count = itertools.count()


def _variant(**functions):
    """A copy of the reference module with module-level functions replaced."""
    spec = importlib.util.spec_from_file_location(f"_distill_mutant_{next(_count)}", _ref.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, value in functions.items():
        setattr(mod, name, value)
    return mod


# ---- distillation_loss

def _loss(swap=False, student_probs=False, teacher_log=False, factor="T2", t_student=True, t_teacher=True,
          detach=True, reduction_used=True, fixed_reduction=None, dim=-1, fixed_temperature=None,
          default_temperature=1.0, inplace=False, all_no_grad=False):
    def distillation_loss(student_logits, teacher_logits, temperature=default_temperature, reduction="batchmean"):
        T = fixed_temperature if fixed_temperature is not None else temperature
        red = fixed_reduction or (reduction if reduction_used else "batchmean")
        if inplace:
            student_logits.div_(T)  # the mistake: divides the caller's tensor
            s = student_logits
        else:
            s = student_logits / T if t_student else student_logits
        t = teacher_logits / T if t_teacher else teacher_logits
        if detach:
            t = t.detach()
        with torch.set_grad_enabled(not all_no_grad and torch.is_grad_enabled()):
            target = F.log_softmax(t, dim=dim) if teacher_log else F.softmax(t, dim=dim)
            inp = F.softmax(s, dim=dim) if student_probs else F.log_softmax(s, dim=dim)
            if swap:  # KL(student ‖ teacher)
                kl = F.kl_div(F.log_softmax(t, dim=dim), F.softmax(s, dim=dim), reduction=red)
            else:
                kl = F.kl_div(inp, target, reduction=red)
            k = {"T2": T ** 2, "T": T, "1": 1.0, "2T": 2 * T}[factor]
            return k * kl
    return distillation_loss


def _kd_variant(kind):
    def distillation_loss(student_logits, teacher_logits, temperature=1.0, reduction="batchmean"):
        T = temperature
        with torch.no_grad():
            pt = F.softmax(teacher_logits * T if kind == "times_t" else teacher_logits / T, dim=-1)
        if kind == "times_t":  # the mistake: the logits multiplied by T
            return T ** 2 * F.kl_div(F.log_softmax(student_logits * T, -1), pt, reduction=reduction)
        ls = F.log_softmax(student_logits / T, dim=-1)
        if kind == "soft_ce":  # the mistake: cross-entropy with the soft targets, the teacher's entropy kept
            return T ** 2 * -(pt * ls).sum(-1).mean()
        return T ** 2 * F.mse_loss(ls.exp(), pt)  # the mistake: MSE between the probabilities
    return distillation_loss


def _with_loss(**opts):
    return _variant(distillation_loss=_loss(**opts))


# ---- distill_objective

def _objective(shift="right", kd_positions="labelled", cut="first", soft_then_cut=False, pass_temperature=True,
               ce_temperature=False, ce_over="counted", alpha_mode="right", kd_over_batch=False, empty_guard=True,
               upcast=True, counted_by="label", teacher_shift="same", order="right"):
    def distill_objective(student_logits, teacher_logits, labels, alpha=0.5, temperature=1.5):
        V = student_logits.size(-1)
        if cut == "first":
            teacher = teacher_logits[..., :V]
        elif cut == "last":
            teacher = teacher_logits[..., -V:]
        else:  # not cut
            teacher = teacher_logits
        if soft_then_cut:
            teacher = teacher_logits
        if shift == "right":
            s, t, y = student_logits[:, :-1], teacher[:, :-1], labels[:, 1:]
        elif shift == "none":
            s, t, y = student_logits, teacher, labels
        else:
            s, t, y = student_logits[:, 1:], teacher[:, 1:], labels[:, :-1]
        if teacher_shift == "later":  # the teacher's rows taken one position later than the student's
            t = teacher[:, 1:]
        counted = y != -100
        if counted_by == "positive":  # the mistake: labels > 0, as if 0 (the pad id) were never a label
            counted = y > 0
        elif counted_by == "unshifted":  # the rows chosen by the unshifted labels, the targets shifted
            counted = labels[:, :-1] != -100
        if empty_guard and not counted.any():
            zero = student_logits.sum() * 0.0
            return zero.float(), zero.float(), zero.float()
        cast = (lambda x: x.float()) if upcast else (lambda x: x)
        srows, yrows = cast(s[counted]), y[counted]
        ce = F.cross_entropy(srows / (temperature if ce_temperature else 1.0), yrows,
                             reduction="sum" if ce_over != "counted" else "mean")
        if ce_over == "all":
            ce = ce / y.numel()
        T = temperature if pass_temperature else 1.0
        if kd_over_batch:  # masked by zeroing on the (B, S, V) layout: "batchmean" divides by B
            ls = F.log_softmax(cast(s) / T, -1)
            with torch.no_grad():
                pt = F.softmax(cast(t) / T, -1)
            elem = F.kl_div(ls, pt, reduction="none").sum(-1) * counted
            kd = T ** 2 * elem.sum() / s.shape[0]
        elif kd_positions == "all":
            kd = _ref.distillation_loss(cast(s.reshape(-1, V)), cast(t.reshape(-1, V)), temperature=T)
        elif soft_then_cut:
            with torch.no_grad():
                pt = F.softmax(cast(t[counted]) / T, -1)[:, :V]
            kd = T ** 2 * F.kl_div(F.log_softmax(srows / T, -1), pt, reduction="batchmean")
        else:
            kd = _ref.distillation_loss(srows, cast(t[counted]), temperature=T)
        if alpha_mode == "right":
            loss = alpha * ce + (1 - alpha) * kd
        elif alpha_mode == "swapped":
            loss = (1 - alpha) * ce + alpha * kd
        elif alpha_mode == "half":
            loss = 0.5 * ce + 0.5 * kd
        else:
            loss = ce + kd
        if order == "ce_kd_loss":
            return ce, kd, loss
        return loss, ce, kd
    return distill_objective


def _empty_leaf_zero():
    """An empty batch answered with a fresh leaf: backward() works, the student gets no gradient."""
    base = _objective()

    def distill_objective(student_logits, teacher_logits, labels, alpha=0.5, temperature=1.5):
        if not (labels[:, 1:] != -100).any():
            zero = torch.tensor(0.0, requires_grad=True)
            return zero, zero, zero
        return base(student_logits, teacher_logits, labels, alpha, temperature)
    return distill_objective


def _with_objective(**opts):
    return _variant(distill_objective=_objective(**opts))


MUTANTS = {
    # distillation_loss: the KL itself
    "kl_arguments_swapped": (_with_loss(swap=True), "两个参数顺序反了"),
    "probabilities_not_log_probabilities": (_with_loss(student_probs=True), "**对数概率** (log-probabilities)"),
    "teacher_log_probabilities_as_target": (_with_loss(teacher_log=True), "第二个参数要是老师的**概率**"),
    "softmax_over_rows": (_with_loss(dim=0), "softmax 的维度不对"),
    # the temperature and T²
    "no_t_squared": (_with_loss(factor="1"), "少了 T² 因子"),
    "t_instead_of_t_squared": (_with_loss(factor="T"), "乘的是 T 而不是 T²"),
    "logits_multiplied_by_t": (_variant(distillation_loss=_kd_variant("times_t")), "logits 乘以了温度"),
    "soft_cross_entropy_not_kl": (_variant(distillation_loss=_kd_variant("soft_ce")), "你算的是交叉熵"),
    "mse_of_probabilities": (_variant(distillation_loss=_kd_variant("mse")), "均方误差 (MSE)"),
    "two_t_instead_of_t_squared": (_with_loss(factor="2T"), "乘的是 2·T（temperature * 2）"),
    "temperature_on_student_only": (_with_loss(t_teacher=False), "温度只用在了学生一侧"),
    "temperature_on_teacher_only": (_with_loss(t_student=False), "温度只用在了老师一侧"),
    "temperature_hard_coded": (_with_loss(fixed_temperature=1.5), "temperature 参数没有用上"),
    "default_temperature_1_5": (_with_loss(default_temperature=1.5), "参数 temperature 默认值应该是 1.0"),
    # reduction
    "reduction_mean": (_with_loss(fixed_reduction="mean"), "reduction 用成了 \"mean\""),
    "reduction_sum": (_with_loss(fixed_reduction="sum"), "reduction 用成了 \"sum\""),
    "reduction_argument_ignored": (_with_loss(reduction_used=False), "reduction 参数没有用上"),
    # gradients, inputs
    "gradient_reaches_teacher": (_with_loss(detach=False), "梯度流进了老师"),
    "student_under_no_grad": (_with_loss(all_no_grad=True), "结果不带梯度"),
    "divides_input_in_place": (_with_loss(inplace=True), "原地操作 in-place"),
    # distill_objective: positions
    "shift_forgotten": (_with_objective(shift="none"), "忘了错位 (shift)"),
    "shift_reversed": (_with_objective(shift="reversed"), "错位的方向反了"),
    "kd_on_prompt_and_padding": (_with_objective(kd_positions="all"), "把 prompt 和 padding 的位置也算进去了"),
    "ce_mean_over_every_position": (_with_objective(ce_over="all"), "ce 的平均除错了数"),
    "ce_summed": (_with_objective(ce_over="sum"), "ce 是求和 (sum) 不是平均"),
    "kd_divided_by_batch_size": (_with_objective(kd_over_batch=True), "kd 除以了 batch 大小"),
    # the teacher's vocabulary
    "teacher_vocab_not_cut": (_with_objective(cut="none"), "没有截到学生的词表"),
    "teacher_vocab_cut_from_the_end": (_with_objective(cut="last"), "老师的词表截错了"),
    "teacher_softmax_before_cut": (_with_objective(soft_then_cut=True), "老师的词表截晚了"),
    # temperature and α in the objective
    "label_zero_not_counted": (_with_objective(counted_by="positive"), "漏掉了 label 是 0 的位置"),
    "rows_chosen_by_unshifted_labels": (_with_objective(counted_by="unshifted"), "没有对齐"),
    "teacher_rows_one_later": (_with_objective(teacher_shift="later"), "老师用的是 logits[1, 3]"),
    "returns_ce_kd_loss": (_with_objective(order="ce_kd_loss"), "返回的顺序不对"),
    "temperature_not_passed_on": (_with_objective(pass_temperature=False), "temperature 没有传给 distillation_loss"),
    "temperature_in_ce": (_with_objective(ce_temperature=True), "ce 里用了温度"),
    "alpha_swapped": (_with_objective(alpha_mode="swapped"), "α 用反了"),
    "alpha_ignored": (_with_objective(alpha_mode="half"), "alpha 参数没有用上"),
    "no_alpha_weighting": (_with_objective(alpha_mode="sum"), "没有按 α 加权"),
    # edge cases
    "empty_batch_gives_nan": (_with_objective(empty_guard=False), "得到 NaN"),
    "empty_batch_zero_not_connected": (_variant(distill_objective=_empty_leaf_zero()), "没有连着 student_logits"),
    "bf16_not_upcast": (_with_objective(upcast=False), "应该是 float32"),
}
