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
    # the teacher is a fixed target: no gradient may flow back into it
    with torch.no_grad():
        teacher_probs = F.softmax(teacher_logits / temperature, dim=-1)
    # F.kl_div(input, target) wants the student's LOG-probabilities and the teacher's probabilities
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    # KL(target ‖ input); "batchmean" sums over the vocabulary and averages over the N rows
    kl = F.kl_div(student_log_probs, teacher_probs, reduction=reduction)
    # the gradient of the softened KL is 1/T² smaller: T² brings it back to the scale of CE
    return temperature ** 2 * kl


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
    vocab = student_logits.size(-1)
    # the teacher may know more tokens: keep the vocabulary the two models share
    teacher_logits = teacher_logits[..., :vocab]
    # position t predicts token t + 1
    shift_labels = labels[:, 1:]
    counted = shift_labels != -100  # (batch, seq - 1) bool
    if not counted.any():
        # nothing to learn in this batch: 0 (a mean over no position would be NaN)
        zero = student_logits.sum() * 0.0
        return zero.float(), zero.float(), zero.float()
    # (N, V_s) rows of the counted positions, in float32 (bf16 logits from autocast lose digits)
    student_rows = student_logits[:, :-1][counted].float()
    teacher_rows = teacher_logits[:, :-1][counted].float()
    targets = shift_labels[counted]  # (N,)
    ce = F.cross_entropy(student_rows, targets)
    kd = distillation_loss(student_rows, teacher_rows, temperature=temperature)
    loss = alpha * ce + (1.0 - alpha) * kd
    return loss, ce, kd
