"""Prompt modules: shapes, the P* o (u v^T) decomposition, merging, initialisers, parameter counts."""

from __future__ import annotations

import pytest
import torch

from mptune.errors import MptuneError
from mptune.prompts import (
    MultitaskPrompt,
    SoftPrompt,
    mpt_target_parameters,
    num_parameters,
    target_from_source,
    text_init,
    vocab_init,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _random_mpt(tasks=3, length=5, dim=7, rank=1, seed=0) -> MultitaskPrompt:
    return MultitaskPrompt(_randn(length, dim, seed=seed), tasks, rank,
                           _randn(tasks, length, rank, seed=seed + 1), _randn(tasks, rank, dim, seed=seed + 2))


# --- shapes ------------------------------------------------------------------------------------

def test_soft_prompt_shapes():
    one = SoftPrompt(_randn(5, 7))
    assert (one.num_tasks, one.length, one.dim) == (1, 5, 7)
    assert one.prompt.shape == (1, 5, 7)
    many = SoftPrompt(_randn(3, 5, 7))
    assert (many.num_tasks, many.length, many.dim) == (3, 5, 7)
    out = many(torch.tensor([2, 0, 2, 1]))
    assert out.shape == (4, 5, 7)
    assert torch.equal(out[0], many.prompt[2]) and torch.equal(out[1], many.prompt[0])
    assert many.task_prompts().shape == (3, 5, 7)


def test_soft_prompt_copies_its_init():
    init = _randn(5, 7)
    p = SoftPrompt(init)
    init.add_(1.0)
    assert not torch.equal(p.prompt[0], init)
    assert p.prompt.dtype == torch.float32 and p.prompt.requires_grad


def test_multitask_prompt_shapes_and_default_factors():
    shared = _randn(5, 7)
    mpt = MultitaskPrompt(shared, num_tasks=3, rank=2)
    assert (mpt.num_tasks, mpt.rank, mpt.length, mpt.dim) == (3, 2, 5, 7)
    assert mpt.shared.shape == (5, 7) and mpt.u.shape == (3, 5, 2) and mpt.v.shape == (3, 2, 7)
    assert mpt(torch.tensor([0, 2])).shape == (2, 5, 7)
    # u = 1, v = 1/r: u_k v_k^T is all ones, so every task prompt starts equal to P*.
    for k in range(3):
        assert torch.allclose(mpt.task_prompts()[k], shared)


def test_rank_one_product_is_hadamard_with_outer_product():
    mpt = _random_mpt(tasks=3, rank=1)
    prompts = mpt.task_prompts()
    for k in range(3):
        manual = mpt.shared * torch.outer(mpt.u[k, :, 0], mpt.v[k, 0, :])
        assert torch.allclose(prompts[k], manual, atol=1e-6)
        assert torch.allclose(mpt(torch.tensor([k]))[0], manual, atol=1e-6)


def test_higher_rank_product():
    mpt = _random_mpt(tasks=2, rank=3)
    ids = torch.tensor([1, 0, 1])
    out = mpt(ids)
    for row, k in enumerate(ids.tolist()):
        manual = mpt.shared * (mpt.u[k] @ mpt.v[k])
        assert torch.allclose(out[row], manual, atol=1e-6)
        assert torch.allclose(mpt.task_prompts()[k], manual, atol=1e-6)


def test_forward_matches_task_prompts_for_mixed_ids():
    mpt = _random_mpt(tasks=4, rank=2)
    ids = torch.tensor([3, 0, 0, 2, 1, 3])
    assert torch.allclose(mpt(ids), mpt.task_prompts()[ids], atol=1e-6)


def test_merged_gives_the_same_prompts():
    mpt = _random_mpt(tasks=3, rank=2)
    merged = mpt.merged()
    assert isinstance(merged, SoftPrompt)
    ids = torch.tensor([0, 1, 2, 1])
    assert torch.allclose(merged(ids), mpt(ids), atol=1e-6)
    assert not merged.prompt.grad_fn and merged.prompt.is_leaf


@pytest.mark.parametrize("shape", [(7,), (1, 2, 3, 4)])
def test_soft_prompt_bad_shape(shape):
    with pytest.raises(MptuneError, match="shape"):
        SoftPrompt(torch.zeros(shape))


def test_multitask_prompt_bad_shapes():
    with pytest.raises(MptuneError, match=r"\[l, d\]"):
        MultitaskPrompt(torch.zeros(2, 5, 7), 1)
    with pytest.raises(MptuneError, match="num_tasks"):
        MultitaskPrompt(torch.zeros(5, 7), 0)
    with pytest.raises(MptuneError, match="rank"):
        MultitaskPrompt(torch.zeros(5, 7), 2, rank=0)
    with pytest.raises(MptuneError, match="task factors"):
        MultitaskPrompt(torch.zeros(5, 7), 2, 1, u=torch.ones(2, 4, 1), v=torch.ones(2, 1, 7))
    with pytest.raises(MptuneError, match="task factors"):
        MultitaskPrompt(torch.zeros(5, 7), 2, 1, u=torch.ones(2, 5, 1), v=torch.ones(3, 1, 7))


# --- initialisers ------------------------------------------------------------------------------

def test_vocab_init_draws_distinct_rows_of_the_top_k():
    vocab = torch.arange(50, dtype=torch.float32)[:, None].repeat(1, 4)  # row i is all i
    out = vocab_init(vocab, 10, torch.Generator().manual_seed(0), top_k=20)
    assert out.shape == (10, 4)
    ids = out[:, 0].long().tolist()
    assert len(set(ids)) == 10 and all(0 <= i < 20 for i in ids)
    assert torch.equal(out, vocab[ids])
    same = vocab_init(vocab, 10, torch.Generator().manual_seed(0), top_k=20)
    other = vocab_init(vocab, 10, torch.Generator().manual_seed(1), top_k=20)
    assert torch.equal(out, same) and not torch.equal(out, other)


def test_vocab_init_needs_enough_rows():
    vocab = torch.zeros(8, 4)
    assert vocab_init(vocab, 8, torch.Generator().manual_seed(0)).shape == (8, 4)
    with pytest.raises(MptuneError, match="exceeds"):
        vocab_init(vocab, 9, torch.Generator().manual_seed(0))


def test_vocab_init_is_a_copy():
    vocab = torch.randn(10, 4, requires_grad=True)
    out = vocab_init(vocab, 3, torch.Generator().manual_seed(0))
    assert not out.requires_grad
    out.zero_()
    assert vocab.abs().sum() > 0


def test_text_init_repeats_tokens():
    vocab = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 3)
    out = text_init(vocab, [4, 7, 2], 7)
    assert out.shape == (7, 3)
    assert out[:, 0].long().tolist() == [4, 7, 2, 4, 7, 2, 4]
    assert text_init(vocab, [4, 7, 2], 2)[:, 0].long().tolist() == [4, 7]
    with pytest.raises(MptuneError, match="empty"):
        text_init(vocab, [], 4)


# --- targets from a distilled source -----------------------------------------------------------

def test_target_from_source_mean():
    source = _random_mpt(tasks=3, rank=2)
    target = target_from_source(source, num_targets=2, factors="mean")
    assert (target.num_tasks, target.rank, target.length, target.dim) == (2, 2, 5, 7)
    assert torch.equal(target.shared, source.shared)
    for k in range(2):
        assert torch.allclose(target.u[k], source.u.mean(0))
        assert torch.allclose(target.v[k], source.v.mean(0))
    # a copy: training the target leaves the source alone
    assert target.shared.data_ptr() != source.shared.data_ptr()
    with torch.no_grad():
        target.shared.add_(1.0)
        target.u.add_(1.0)
    assert not torch.equal(target.shared, source.shared)
    assert not torch.allclose(target.u[0], source.u.mean(0))


def test_target_from_source_fresh():
    source = _random_mpt(tasks=3, rank=2)
    target = target_from_source(source, num_targets=1, factors="fresh")
    assert torch.equal(target.u, torch.ones(1, 5, 2))
    assert torch.equal(target.v, torch.full((1, 2, 7), 0.5))
    assert torch.allclose(target.task_prompts()[0], source.shared)


def test_target_from_source_unknown_factors():
    with pytest.raises(MptuneError, match="mean"):
        target_from_source(_random_mpt(), 1, "median")


# --- parameter counts --------------------------------------------------------------------------

def test_paper_parameter_count_for_one_target():
    target = MultitaskPrompt(torch.zeros(100, 768), num_tasks=1)
    assert num_parameters(target) == 100 * 768 + 100 + 768 == 77_668
    assert mpt_target_parameters(100, 768) == 77_668


@pytest.mark.parametrize("tau", [1, 2, 5])
@pytest.mark.parametrize("rank", [1, 2])
def test_parameter_counts_agree_with_modules(tau, rank):
    l, d = 20, 48
    module = MultitaskPrompt(torch.zeros(l, d), num_tasks=tau, rank=rank)
    assert num_parameters(module) == mpt_target_parameters(l, d, tau, rank)
    if rank == 1:
        assert num_parameters(module) == l * d + (l + d) * tau
    assert num_parameters(SoftPrompt(torch.zeros(l, d))) == l * d


def test_num_parameters_counts_trainable_only():
    module = _random_mpt()
    module.u.requires_grad_(False)
    assert num_parameters(module) == 5 * 7 + 3 * 7


@pytest.mark.parametrize("kind", ["soft", "multitask"])
def test_gradients_are_deterministic_with_repeated_task_ids(kind):
    """Same inputs, same gradient bits, at a real prompt size on 2 threads (advanced indexing was not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        table = torch.randn(3, 20, 576, generator=g)
        upstream = torch.randn(16, 20, 576, generator=g) * 1e-3
        ids = torch.tensor([0] * 10 + [2] * 6)
        grads = []
        for _ in range(20):
            module = SoftPrompt(table) if kind == "soft" else MultitaskPrompt(table[0], 3)
            (module(ids) * upstream).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
        assert all(torch.equal(grads[0], other) for other in grads[1:])
    finally:
        torch.set_num_threads(threads)
