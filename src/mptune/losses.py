"""The three loss terms of MPT: L = L_PLM + lambda * (L_logits + L_hidden).

All three work on rows gathered at the label positions (see `backbone.Outputs`): logits
[N, V] and hidden states [N, d], where N counts the target tokens of the batch. Student and
teacher see the same batch, so their rows line up one to one.

Decisions
- L_logits is KL(teacher || student) between softmax(z / T) distributions over the full
  vocabulary, averaged over label tokens and multiplied by T^2 (Hinton et al., 2015) so its
  gradient scale does not shrink as T grows.
- L_hidden is the mean squared error between the final hidden states (the ones that feed the
  LM head) at the label positions, averaged over tokens and dimensions. These are the states
  that decide the prediction; matching them at the label positions also keeps the cost at
  N x d instead of the whole sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def plm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-mean log P(y | x): logits [N, V], targets [N] -> scalar."""
    return F.cross_entropy(logits.float(), targets)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over rows of KL(softmax(teacher/T) || softmax(student/T)): [N, V], [N, V] -> scalar."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between hidden states: [N, d], [N, d] -> scalar."""
    return F.mse_loss(student.float(), teacher.float())
