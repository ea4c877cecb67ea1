"""The three loss terms against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from mptune.losses import distill_kl, hidden_mse, plm_loss


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_plm_loss_is_mean_negative_log_softmax():
    logits = _randn(6, 11)
    targets = torch.tensor([0, 3, 10, 5, 5, 1])
    manual = -torch.stack([torch.log_softmax(logits[i], -1)[t] for i, t in enumerate(targets.tolist())]).mean()
    assert torch.allclose(plm_loss(logits, targets), manual, atol=1e-6)


def test_plm_loss_by_hand_on_two_classes():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [1/4, 3/4]
    assert plm_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75), abs=1e-6)
    assert plm_loss(logits, torch.tensor([0])).item() == pytest.approx(-math.log(0.25), abs=1e-6)


def test_plm_loss_upcasts_half_precision():
    logits = _randn(4, 9).bfloat16()
    out = plm_loss(logits, torch.tensor([1, 2, 3, 4]))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_distill_kl_by_hand(temperature):
    student, teacher = _randn(5, 13, seed=1), _randn(5, 13, seed=2) * 2
    n = student.shape[0]
    p_t = torch.softmax(teacher / temperature, -1)
    log_p_t = torch.log_softmax(teacher / temperature, -1)
    log_p_s = torch.log_softmax(student / temperature, -1)
    manual = (p_t * (log_p_t - log_p_s)).sum() * temperature**2 / n
    got = distill_kl(student, teacher, temperature)
    assert torch.allclose(got, manual, atol=1e-5)
    assert got.item() > 0


def test_distill_kl_is_zero_when_equal_and_not_symmetric():
    x = _randn(4, 7)
    assert distill_kl(x, x.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    # a constant shift of the logits leaves the distributions unchanged
    assert distill_kl(x, x + 3.0, 2.0).item() == pytest.approx(0.0, abs=1e-5)
    y = _randn(4, 7, seed=5)
    assert distill_kl(x, y, 1.0).item() != pytest.approx(distill_kl(y, x, 1.0).item(), abs=1e-4)


def test_distill_kl_gradient_reaches_student_only():
    student = _randn(3, 5).requires_grad_(True)
    teacher = _randn(3, 5, seed=9).requires_grad_(True)
    distill_kl(student, teacher.detach(), 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_hidden_mse_by_hand():
    s, t = _randn(6, 8, seed=3), _randn(6, 8, seed=4)
    manual = ((s - t) ** 2).sum() / (6 * 8)
    assert torch.allclose(hidden_mse(s, t), manual, atol=1e-6)
    assert hidden_mse(s, s.clone()).item() == 0.0
    assert hidden_mse(torch.zeros(2, 2), torch.full((2, 2), 2.0)).item() == pytest.approx(4.0)


def _terms(logits, targets, teacher, hidden, hidden_t, total=None):
    return torch.stack([plm_loss(logits, targets, total), distill_kl(logits, teacher, 2.0, total),
                        hidden_mse(hidden, hidden_t, total)])


def test_default_total_is_torch_mean_bit_for_bit_value_and_gradient():
    """One process keeps the exact numbers of the mean reductions (the README's runs stay reproducible)."""
    import torch.nn.functional as F

    for seed in range(20):
        n = 1 + seed
        logits, teacher = _randn(n, 50, seed=seed).requires_grad_(True), _randn(n, 50, seed=seed + 100)
        hidden, hidden_t = _randn(n, 8, seed=seed + 200).requires_grad_(True), _randn(n, 8, seed=seed + 300)
        targets = torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(seed))
        kl = F.kl_div(F.log_softmax(logits / 2.0, -1), F.log_softmax(teacher / 2.0, -1), log_target=True,
                      reduction="batchmean") * 4.0
        means = torch.stack([F.cross_entropy(logits, targets), kl, F.mse_loss(hidden, hidden_t)])
        ours = _terms(logits, targets, teacher, hidden, hidden_t)
        for i in range(3):
            a = torch.autograd.grad(means[i], [logits, hidden], retain_graph=True, materialize_grads=True)
            b = torch.autograd.grad(ours[i], [logits, hidden], retain_graph=True, materialize_grads=True)
            assert torch.equal(means[i], ours[i]) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_parts_divided_by_the_whole_count_add_up_to_the_whole_batch():
    logits, teacher = _randn(9, 20, seed=1), _randn(9, 20, seed=2)
    hidden, hidden_t = _randn(9, 8, seed=3), _randn(9, 8, seed=4)
    targets = torch.arange(9) % 20
    whole = _terms(logits, targets, teacher, hidden, hidden_t)
    parts = sum(_terms(logits[a:b], targets[a:b], teacher[a:b], hidden[a:b], hidden_t[a:b], total=9)
                for a, b in ((0, 4), (4, 5), (5, 9)))
    assert torch.allclose(parts, whole, atol=1e-6)
