"""Teacher outputs computed ahead (mptune.teachers): the same batches, the same outputs within
rounding, each distinct example once, and distillation that ends where the per-batch path ends."""

from __future__ import annotations

import json
import random

import pytest
import torch

from mptune.config import LossArgs, RunConfig, TrainArgs
from mptune.data import collate, encode, multitask_batches
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.resume import skip
from mptune.stages import train_distill
from mptune.task_data import TaskData
from mptune.tasks import get_task
from mptune.teachers import TeacherOutputs

NAMES = ("rte", "mrpc", "cola")


def _data(backbone, data_dir):
    out = []
    for task_id, name in enumerate(NAMES):
        rows = get_task(name).load(data_dir, "train", 42)
        enc = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, task_id)
        out.append(TaskData(get_task(name), enc, enc[:4], [r.label for r in rows[:4]]))
    return out


def _batches(data, batch_size=4, seed=0):
    pairs = multitask_batches([len(d.train) for d in data], batch_size, 3, random.Random(seed))
    return ([data[t].train[i] for t, i in chosen] for chosen in pairs)


def _teachers(backbone):
    return SoftPrompt(torch.randn(3, 3, backbone.dim, generator=torch.Generator().manual_seed(1)) * 0.1)


def _halves(items):
    return [items[:2], items[2:]]


@pytest.mark.parametrize("ahead", [0, 4, 12, 1000])
@pytest.mark.parametrize("start", [0, 2, 5])
def test_stream_yields_the_drawn_batches(llama_backbone, data_dir, ahead, start):
    data = _data(llama_backbone, data_dir)
    teacher = TeacherOutputs(llama_backbone, _teachers(llama_backbone), ahead)
    got = teacher.stream(_batches(data), start, 4, _halves)
    want = skip(_batches(data), start)
    for _ in range(6):
        assert [id(e) for e in next(got)] == [id(e) for e in next(want)]


@pytest.mark.parametrize("states", [False, True])
def test_window_outputs_match_the_drawn_batch(backbone, data_dir, states):
    data = _data(backbone, data_dir)
    teachers = _teachers(backbone)
    ahead = TeacherOutputs(backbone, teachers, 12, states)
    drawn = TeacherOutputs(backbone, teachers, 0, states)
    stream = ahead.stream(_batches(data), 0, 4, _halves)
    for _ in range(5):
        for part in _halves(next(stream)):
            assert all(id(e) in ahead.window for e in part)
            got, want = ahead(part), drawn(part)
            for name in ("logits", "hidden", "states"):
                a, b = getattr(got, name), getattr(want, name)
                if not states and name == "states":
                    assert a is None and b is None
                    continue
                assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), name


def test_each_distinct_example_runs_once(llama_backbone, data_dir):
    data = _data(llama_backbone, data_dir)
    teacher = TeacherOutputs(llama_backbone, _teachers(llama_backbone), 8)
    a, b = data[0].train[:3], data[1].train[:2]
    seen = []
    real = teacher._forward
    teacher._forward = lambda items: (seen.extend(items), real(items))[1]
    teacher.compute([*a, *b, *a], batch_size=2)
    assert len(teacher.window) == 5 and sorted(map(id, seen)) == sorted(map(id, [*a, *b]))
    lengths = [len(e.input_ids) + len(e.target_ids) for e in seen]
    assert lengths == sorted(lengths, reverse=True)  # longest first


def test_a_part_outside_the_window_is_computed_as_drawn(llama_backbone, data_dir):
    data = _data(llama_backbone, data_dir)
    teachers = _teachers(llama_backbone)
    teacher = TeacherOutputs(llama_backbone, teachers, 8)
    part = data[2].train[:3]
    batch = collate(part, llama_backbone.tokenizer.pad_token_id, False)
    with torch.no_grad():
        want = llama_backbone.forward(teachers(batch.task_ids), batch)
    z, h, states = teacher(part)
    assert torch.equal(z, want.logits) and torch.equal(h, want.hidden) and states is None


@pytest.mark.parametrize("positions", ["labels", "sequence"])
def test_distillation_losses_match_the_per_batch_path(backbone, data_dir, tmp_path, positions):
    """The logged loss terms of each step, from the same student (lr 1e-9: Adam would amplify rounding
    in near-zero gradients into different updates, which says nothing about the teachers)."""
    data = _data(backbone, data_dir)
    args = TrainArgs(steps=6, batch_size=4, warmup_steps=1, lr=1e-9, factor_lr=1e-9)
    logs = []
    for ahead in (0, 8):
        loss = LossArgs(teacher_ahead=ahead, hidden_positions=positions)
        cfg = RunConfig(sources=list(NAMES), distill=args, loss=loss)
        student = MultitaskPrompt(torch.ones(3, backbone.dim) * 0.05, 3)
        folder = tmp_path / str(ahead)
        folder.mkdir()
        train_distill(cfg, backbone, student, _teachers(backbone), data, folder)
        logs.append([json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()])
    assert len(logs[0]) == len(logs[1]) == args.steps
    for a, b in zip(*logs):
        for key in ("ce", "kl", "mse"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), (a["step"], key)


@pytest.mark.parametrize("positions", ["labels", "sequence"])
def test_length_split_micro_batches_compute_the_same_losses(llama_backbone, data_dir, tmp_path, positions):
    """train.max_padding < 1 runs a step's examples in length-split micro-batches: the same examples
    (the sampling is untouched) and, each term normalised over the whole batch, the same loss terms."""
    data = _data(llama_backbone, data_dir)
    logs = []
    for padding in (1.0, 0.1):
        args = TrainArgs(steps=6, batch_size=4, warmup_steps=1, lr=1e-9, factor_lr=1e-9, max_padding=padding)
        cfg = RunConfig(sources=list(NAMES), distill=args, loss=LossArgs(teacher_ahead=8, hidden_positions=positions))
        student = MultitaskPrompt(torch.ones(3, llama_backbone.dim) * 0.05, 3)
        folder = tmp_path / str(padding)
        folder.mkdir()
        train_distill(cfg, llama_backbone, student, _teachers(llama_backbone), data, folder)
        logs.append([json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()])
    assert len(logs[0]) == len(logs[1]) == 6
    for a, b in zip(*logs):
        assert a["lr"] == b["lr"]
        for key in ("loss", "ce", "kl", "mse"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), (a["step"], key)


def test_micro_batches_split_by_length_cover_the_batch_once(llama_backbone, data_dir):
    from mptune.train import micro_batches, positions, shards

    items = [e for d in _data(llama_backbone, data_dir) for e in d.train[:4]]
    whole = TrainArgs(batch_size=len(items), max_padding=1.0)
    assert micro_batches(items, whole) == shards(items, whole) == [items]  # max_padding 1: untouched
    split = TrainArgs(batch_size=len(items), grad_accum=2, max_padding=0.2)
    parts = micro_batches(items, split, prompt_length=3)
    assert sorted(id(e) for p in parts for e in p) == sorted(id(e) for e in items)
    for shard in shards(items, split):  # every part lies inside one shard (grad_accum keeps its meaning)
        assert any(all(any(e is x for x in shard) for e in p) for p in parts)
    for p in parts:
        lengths = [3 + positions(e) for e in p]
        assert len(p) == 1 or 1 - sum(lengths) / (len(p) * max(lengths)) <= 0.2
    assert len(parts) > 2  # rte, mrpc and cola rows differ in length: the shards were split
