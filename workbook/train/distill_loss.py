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
    #   What: KL(teacher || student) between the two distributions softened by the SAME temperature
    #   T, averaged over the N rows, times T².
    #   Why: F.kl_div(input, target) computes KL(target || input) with input given as
    #   log-probabilities: student log-probs first, teacher probabilities second.  Softening shrinks
    #   the gradient by about 1/T² and T² brings it back, so alpha keeps its meaning at any T.
    #   Pitfall: the teacher is a fixed target: no gradient into it; softmax over the vocabulary
    #   (the last dim); "batchmean" divides by N rows ("mean" by N·V); T ** 2, not T * 2 (they agree
    #   only at T = 2); pass `reduction` on.
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
    #   What: on the counted positions only (the shifted labels that are not -100), the student's
    #   cross-entropy with the labels, the KD term of the same rows, and alpha·CE + (1 - alpha)·KD.
    #   Why: it is the trainer's loss: the student learns both the data's next token and the
    #   teacher's whole distribution at that position.
    #   Pitfall: position t's logits predict labels[:, t + 1]: student rows, teacher rows and targets
    #   all come from that one shift; use only the teacher's first V_s columns (the shared
    #   vocabulary) and cut before any softmax; float32 rows; pass the temperature on (the CE has
    #   none); a label 0 is a real token (only -100 means "not counted"); no counted position at all:
    #   three zeros still connected to student_logits (not a NaN mean, not a fresh tensor).
    raise NotImplementedError(
        "TODO(17 distillation): 在 workbook/train/distill_loss.py 里写 distill_objective，"
        "见 notebooks/17_distillation.ipynb")
