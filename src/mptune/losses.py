"""The three loss terms of MPT: L = L_PLM + lambda * (L_logits + L_hidden).

All three work on rows gathered at the label positions (see `backbone.Outputs`): logits
[N, V] and hidden states [N, d], where N counts the target tokens of the batch. Student and
teacher see the same batch, so their rows line up one to one.

Decisions
- L_logits is KL(teacher || student) between softmax(z / T) distributions over the full
  vocabulary, averaged over label tokens and multiplied by T^2 (Hinton et al., 2015) so its
  gradient scale does not shrink as T grows.
- L_hidden is the mean squared error between final hidden states, averaged over positions and
  dimensions. By default (`loss.hidden_positions labels`) it compares the states at the label
  positions, the ones that feed the LM head and decide the prediction, at a cost of N x d. With
  `sequence` it compares the states at all M real tokens ([M, d], `Backbone.forward(...,
  states=True)`), the paper's sequence-level form; its count is then the real tokens of the batch
  (`data.sequence_tokens`).
- Each term is a sum over rows divided by a count, `total` (default: the rows given,
  which is the mean, bit for bit). A batch split over processes or gradient-accumulation
  micro-batches passes the label tokens of the whole batch, so the parts' terms and gradients add
  up to those of the whole batch (see `distributed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def plm_loss(logits: torch.Tensor, targets: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """-sum log P(y | x) / total (default N: the mean): logits [N, V], targets [N] -> scalar."""
    total = len(targets) if total is None else total
    return F.cross_entropy(logits.float(), targets, reduction="sum") / total


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
               total: int | None = None) -> torch.Tensor:
    """T^2 * sum over rows of KL(softmax(teacher/T) || softmax(student/T)) / total (default N: the mean):
    [N, V], [N, V] -> scalar."""
    total = len(student) if total is None else total
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="sum") / total
    return kl * temperature**2


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Squared error between hidden states summed / (total * d) (default N: the mean): [N, d], [N, d] -> scalar."""
    total = len(student) if total is None else total
    return F.mse_loss(student.float(), teacher.float(), reduction="sum") / (total * student.shape[-1])
