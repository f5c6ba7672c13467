"""Knowledge distillation: the student learns the teacher's whole distribution (stage 17).

A one-hot label says only which token came next.  A trained teacher says more: how plausible it
finds every other token ("dark knowledge").  Distillation trains a small student on both: the
cross-entropy with the data's labels, and the KL divergence from the teacher's softened
distribution, both at the same temperature T > 1 so that the small probabilities count.  The
KL term is multiplied by T² because its gradient shrinks like 1/T² as T grows (Hinton et al.,
2015); with the factor, α keeps the same meaning at any T.  MiniMind's ``train_distillation.py``::

    kd   = T² · KL(softmax(teacher / T) ‖ softmax(student / T))     on the counted positions
    loss = α · CE(student, labels) + (1 − α) · kd                     defaults α 0.5, T 1.5

Lesson: notebooks/17_distillation.ipynb.  Check: ``python -m workbook check 17``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0, reduction: str = "batchmean") -> torch.Tensor:
    """T² · KL(p_teacher ‖ p_student) over rows of logits, both softened by the temperature T.

    student_logits: (N, V) float, one row per counted position (already selected).
    teacher_logits: (N, V) float, the same positions, the same vocabulary.
    Returns a 0-d tensor (any other `reduction` of F.kl_div: what it returns, times T²):

        T² · kl_div(log_softmax(student / T), softmax(teacher / T), reduction)
        batchmean: T² / N · Σ_rows Σ_v p_t[v] · (log p_t[v] − log p_s[v])

    The teacher side carries no gradient; the inputs are not modified.
    """
    # TODO(learner):
    #   1. teacher_probs = F.softmax(teacher_logits / temperature, dim=-1), computed inside
    #      `with torch.no_grad():` (or .detach() it): the teacher is a fixed target, its logits
    #      must get no gradient
    #   2. student_log_probs = F.log_softmax(student_logits / temperature, dim=-1): the SAME T on
    #      both sides, softmax over the vocabulary (the last dim, not the rows)
    #   3. kl = F.kl_div(student_log_probs, teacher_probs, reduction=reduction): the first argument
    #      is the student's LOG-probabilities, the second the teacher's probabilities (not logs);
    #      that order gives KL(teacher ‖ student).  "batchmean" divides by the N rows, "mean"
    #      would divide by N·V
    #   4. return temperature ** 2 * kl: softening makes the gradient 1/T² smaller, T² undoes it
    #      (the notebook derives it)
    raise NotImplementedError(
        "TODO(17 distillation): 在 workbook/train/distill_loss.py 里写 distillation_loss，"
        "见 notebooks/17_distillation.ipynb")


def distill_objective(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha: float = 0.5, temperature: float = 1.5
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distillation trainer's loss: α·CE + (1 − α)·KD on the positions that have a label.

    student_logits: (batch, seq, V_s) float, the student's output on input_ids (batch, seq).
    teacher_logits: (batch, seq, V_t) float, V_t >= V_s: the teacher's output on the same input_ids;
        only its first V_s columns are used (the shared vocabulary).
    labels: (batch, seq) int64, -100 = not learned (prompt, padding), UNSHIFTED like the model's
        ``labels`` argument: position t's logits predict labels[:, t + 1].
    Counted positions: logits[:, :-1] where labels[:, 1:] != -100 (N rows).  On them, in float32:
        ce   = mean cross-entropy of the student with labels[:, 1:]        (the model's own loss)
        kd   = distillation_loss(student rows, teacher rows, temperature)  (batchmean over N)
        loss = alpha · ce + (1 − alpha) · kd
    Returns (loss, ce, kd): three 0-d float32 tensors; the gradient reaches the student only.
    No counted position at all (every label -100): all three are 0, not NaN, and still
    connected to student_logits so that backward() works.  The inputs are not modified.
    """
    # TODO(learner):
    #   1. teacher_logits = teacher_logits[..., :student_logits.size(-1)]: the first V_s columns,
    #      the vocabulary both models share
    #   2. the shift: position t predicts token t + 1, so use student_logits[:, :-1],
    #      teacher_logits[:, :-1] and labels[:, 1:]; counted = labels[:, 1:] != -100  (batch, seq - 1)
    #   3. no counted position (not counted.any()): return zero, zero, zero with
    #      zero = student_logits.sum() * 0.0 as float32 — 0 instead of a NaN mean, and still
    #      connected to the student so that backward() works
    #   4. the (N, V) rows: student_rows = student_logits[:, :-1][counted].float(), the teacher's
    #      the same way, targets = labels[:, 1:][counted]  (N,); float32 because bf16 logits from
    #      autocast lose digits in log_softmax
    #   5. ce = F.cross_entropy(student_rows, targets): the mean over the N counted positions,
    #      exactly the model's own loss (no temperature here)
    #   6. kd = distillation_loss(student_rows, teacher_rows, temperature=temperature): pass the
    #      temperature on (its default is 1.0, not 1.5)
    #   7. loss = alpha * ce + (1 - alpha) * kd; return loss, ce, kd
    raise NotImplementedError(
        "TODO(17 distillation): 在 workbook/train/distill_loss.py 里写 distill_objective，"
        "见 notebooks/17_distillation.ipynb")
