"""Tokenisation, truncation, collation and the samplers (including MPT's K-of-kappa task mixing)."""

from __future__ import annotations

import collections
import itertools
import random

import pytest
import torch

from mptune.data import (
    TAIL,
    Encoded,
    collate,
    draw_num_tasks,
    encode,
    epoch_stream,
    multitask_batches,
    split_evenly,
    tokenize_targets,
    truncate,
)
from mptune.tasks import Example, get_task

# --- truncation --------------------------------------------------------------------------------


def test_truncate_keeps_short_lists():
    ids = list(range(10))
    assert truncate(ids, 10) == ids
    assert truncate(ids, 50) == ids


def test_truncate_keeps_head_and_tail():
    ids = list(range(100))
    out = truncate(ids, 40)
    tail = min(TAIL, 20)
    assert len(out) == 40
    assert out[:40 - tail] == ids[:40 - tail]
    assert out[-tail:] == ids[-tail:]
    out = truncate(ids, 64)
    assert len(out) == 64 and out[:64 - TAIL] == ids[:64 - TAIL] and out[-TAIL:] == ids[-TAIL:]


def test_truncate_small_budget_keeps_half_tail():
    out = truncate(list(range(30)), 10)
    assert out == [0, 1, 2, 3, 4, 25, 26, 27, 28, 29]


# --- tokenisation ------------------------------------------------------------------------------

def test_targets_tokenise_per_family(tokenizer):
    eos = tokenizer.eos_token_id
    causal = tokenize_targets(tokenizer, ["yes", "no", "maybe"], is_seq2seq=False)
    assert all(len(ids) == 1 for ids in causal) and len({ids[0] for ids in causal}) == 3
    seq2seq = tokenize_targets(tokenizer, ["yes", "no"], is_seq2seq=True)
    assert [ids[-1] for ids in seq2seq] == [eos, eos]
    assert [ids[0] for ids in seq2seq] == [causal[0][0], causal[1][0]]


def test_encode_truncates_inputs_and_tags_task(tokenizer):
    long = " ".join(["the cat sees the apple"] * 20) + "\nAnswer:"
    examples = [Example(long, "yes", 0), Example("the dog\nAnswer:", "no", 1)]
    causal = encode(examples, tokenizer, False, 32, task_id=3)
    assert len(causal[0].input_ids) == 32 and len(causal[1].input_ids) == 4
    answer = tokenizer("Answer:", add_special_tokens=False)["input_ids"]
    assert causal[0].input_ids[-2:] == answer  # the answer cue survives truncation
    assert all(e.task_id == 3 for e in causal)
    assert causal[0].target_ids == tokenizer(" yes", add_special_tokens=False)["input_ids"]
    seq2seq = encode(examples, tokenizer, True, 32)
    assert seq2seq[1].input_ids[-1] == tokenizer.eos_token_id
    assert seq2seq[1].target_ids == [tokenizer("no", add_special_tokens=False)["input_ids"][0],
                                     tokenizer.eos_token_id]


def test_encode_real_loader_rows(tokenizer, data_dir):
    rows = get_task("rte").load(data_dir, "train", 42)
    enc = encode(rows, tokenizer, False, 128)
    assert len(enc) == len(rows)
    assert all(tokenizer.unk_token_id not in e.input_ids for e in enc)


# --- collation ---------------------------------------------------------------------------------

ITEMS = [Encoded([5, 6, 7], [40], 0), Encoded([8], [41], 2), Encoded([9, 10], [42], 1)]
SEQ_ITEMS = [Encoded([5, 6, 7, 1], [40, 1], 0), Encoded([8, 1], [41, 42, 1], 1)]


def test_collate_causal():
    b = collate(ITEMS, pad_id=0, is_seq2seq=False)
    assert b.input_ids.tolist() == [[5, 6, 7, 40], [8, 41, 0, 0], [9, 10, 42, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert b.labels.tolist() == [[-100, -100, -100, 40], [-100, 41, -100, -100], [-100, -100, 42, -100]]
    assert b.task_ids.tolist() == [0, 2, 1]
    assert len(b) == 3
    # labels are aligned with input_ids: wherever a label is set it equals the input token
    mask = b.labels != -100
    assert torch.equal(b.labels[mask], b.input_ids[mask])


def test_collate_seq2seq():
    b = collate(SEQ_ITEMS, pad_id=0, is_seq2seq=True)
    assert b.input_ids.tolist() == [[5, 6, 7, 1], [8, 1, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b.labels.tolist() == [[40, 1, -100], [41, 42, 1]]
    assert b.task_ids.tolist() == [0, 1]


def test_collate_multi_token_causal_targets():
    b = collate([Encoded([1, 2], [3, 4, 5], 0), Encoded([6, 7, 8, 9], [10], 0)], pad_id=99, is_seq2seq=False)
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert b.labels.tolist() == [[-100, -100, 3, 4, 5], [-100, -100, -100, -100, 10]]


def test_batch_to_device_keeps_values():
    b = collate(ITEMS, 0, False)
    moved = b.to(torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(
        (b.input_ids, b.attention_mask, b.labels, b.task_ids),
        (moved.input_ids, moved.attention_mask, moved.labels, moved.task_ids)))


# --- samplers ----------------------------------------------------------------------------------

def test_epoch_stream_visits_everything_each_epoch():
    stream = epoch_stream(7, random.Random(0))
    epochs = [[next(stream) for _ in range(7)] for _ in range(3)]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]


@pytest.mark.parametrize("total,parts,expected", [(8, 3, [3, 3, 2]), (8, 2, [4, 4]), (5, 5, [1] * 5),
                                                  (3, 4, [1, 1, 1, 0]), (16, 1, [16])])
def test_split_evenly(total, parts, expected):
    assert split_evenly(total, parts) == expected
    assert sum(split_evenly(total, parts)) == total


def test_draw_num_tasks_bounds():
    rng = random.Random(0)
    assert {draw_num_tasks(1, 5, rng) for _ in range(50)} == {1}
    assert {draw_num_tasks(2, 5, rng) for _ in range(50)} == {2}
    assert {draw_num_tasks(3, 3, rng) for _ in range(200)} == {2, 3}
    assert {draw_num_tasks(10, 4, rng) for _ in range(300)} == {2, 3, 4}


def _chi_square(counts: collections.Counter, keys) -> float:
    n = sum(counts[k] for k in keys)
    expected = n / len(keys)
    return sum((counts[k] - expected) ** 2 / expected for k in keys)


# 99.9% quantiles of chi-square with 1..7 degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


@pytest.mark.parametrize("num_tasks,kappa", [(6, 4), (3, 5), (8, 8), (5, 2)])
def test_multitask_sampler_distribution(num_tasks, kappa):
    batch_size, draws = 12, 6000
    sizes = [5 + 3 * t for t in range(num_tasks)]
    batches = list(itertools.islice(multitask_batches(sizes, batch_size, kappa, random.Random(7)), draws))
    upper = min(kappa, num_tasks)
    ks, task_counts = collections.Counter(), collections.Counter()
    for batch in batches:
        assert len(batch) == batch_size
        per_task = collections.Counter(t for t, _ in batch)
        k = len(per_task)
        ks[k] += 1
        task_counts.update(per_task.keys())
        # the batch is split evenly between its K distinct tasks
        assert sorted(per_task.values(), reverse=True) == split_evenly(batch_size, k)
        assert all(0 <= i < sizes[t] for t, i in batch)
        # each task's examples come as one contiguous block
        order = [t for t, _ in batch]
        assert [t for t, _ in itertools.groupby(order)] == list(dict.fromkeys(order))
    assert set(ks) == set(range(2, upper + 1))
    k_values = list(range(2, upper + 1))
    if len(k_values) > 1:
        assert _chi_square(ks, k_values) < CHI2_999[len(k_values) - 1]
    # every task is equally likely to be among the K drawn
    assert _chi_square(task_counts, range(num_tasks)) < CHI2_999[num_tasks - 1]
    mean_k = sum(k * c for k, c in ks.items()) / draws
    assert mean_k == pytest.approx((2 + upper) / 2, abs=0.05)


def test_multitask_sampler_uniform_tasks_per_size_of_k():
    """Given K, the set of tasks is a uniform draw: every pair appears about equally often for K = 2."""
    batches = itertools.islice(multitask_batches([10] * 4, 8, 2, random.Random(3)), 6000)
    pairs = collections.Counter(frozenset(t for t, _ in b) for b in batches)
    keys = [frozenset(p) for p in itertools.combinations(range(4), 2)]
    assert set(pairs) == set(keys)
    assert _chi_square(pairs, keys) < CHI2_999[5]


def test_multitask_sampler_single_task_is_k_one():
    sizes = [9]
    batches = list(itertools.islice(multitask_batches(sizes, 4, 3, random.Random(0)), 30))
    assert all(len(b) == 4 and {t for t, _ in b} == {0} for b in batches)
    flat = [i for b in batches for _, i in b]
    assert sorted(flat[:9]) == list(range(9))  # one full epoch before any repeat


def test_multitask_sampler_is_deterministic():
    def take(seed):
        return list(itertools.islice(multitask_batches([7, 11, 5], 6, 3, random.Random(seed)), 50))

    assert take(11) == take(11)
    assert take(11) != take(12)


def test_multitask_sampler_covers_each_task_epoch():
    sizes = [6, 4, 9]
    batches = itertools.islice(multitask_batches(sizes, 6, 3, random.Random(1)), 400)
    seen = collections.defaultdict(list)
    for b in batches:
        for t, i in b:
            seen[t].append(i)
    for t, n in enumerate(sizes):
        full = len(seen[t]) // n
        for e in range(full):
            assert sorted(seen[t][e * n:(e + 1) * n]) == list(range(n))
