"""Greedy generation with prompts: equal to a step-by-step Backbone.forward reference, batching, eos; eos targets.

The reference decodes one example at a time with `Backbone.forward` alone (no cache, no padding):
at each step the generated tokens so far plus a placeholder are the labels, and the logits at the
placeholder give the next token. Tiny models in fp32.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

import mptune.evaluate as evaluate_mod
from mptune.backbone import Backbone
from mptune.data import collate, encode
from mptune.evaluate import evaluate_items
from mptune.generate import generate, left_pad
from mptune.metrics import score
from mptune.prompts import SoftPrompt
from mptune.tasks import Example, Task, get_task

from conftest import tiny_llama

STEPS = 6


def _items(backbone: Backbone, data_dir, tasks=("rte", "cola", "mrpc"), per_task=3):
    """Encoded examples of several tasks (task id = position in `tasks`), interleaved; lengths differ."""
    out = []
    for task_id, name in enumerate(tasks):
        rows = get_task(name).load(data_dir, "train", 42)[:per_task]
        out.append(encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, task_id))
    items = [it for group in zip(*out) for it in group]
    assert len({len(it.input_ids) for it in items}) > 1
    return items


def _prompt(backbone: Backbone, tasks=3, length=4, seed=0) -> SoftPrompt:
    g = torch.Generator().manual_seed(seed)
    return SoftPrompt(torch.randn(tasks, length, backbone.dim, generator=g) * backbone.embeddings.detach().std())


@torch.no_grad()
def _reference(backbone: Backbone, prompt, item, steps: int, eos: int) -> list[int]:
    """Greedy decoding of one item with Backbone.forward only."""
    out: list[int] = []
    for _ in range(steps):
        batch = collate([replace(item, target_ids=out + [0])], backbone.tokenizer.pad_token_id, backbone.is_seq2seq)
        nxt = int(backbone.forward(prompt(batch.task_ids), batch).logits[-1].argmax())
        if nxt == eos:
            break
        out.append(nxt)
    return out


def test_generation_equals_step_by_step_reference(backbone, data_dir):
    prompt = _prompt(backbone)
    items = _items(backbone, data_dir)
    got = generate(backbone, prompt, items, STEPS, batch_size=4)
    eos = backbone.tokenizer.eos_token_id
    assert got == [_reference(backbone, prompt, it, STEPS, eos) for it in items]
    assert all(len(ids) <= STEPS and eos not in ids for ids in got)
    assert any(len(ids) == STEPS for ids in got)  # the tiny random models rarely stop by themselves


def test_batched_equals_one_at_a_time(backbone, data_dir):
    prompt = _prompt(backbone, seed=3)
    items = _items(backbone, data_dir)
    batched = generate(backbone, prompt, items, STEPS, batch_size=len(items))
    assert batched == generate(backbone, prompt, items, STEPS, batch_size=1)
    assert batched == generate(backbone, prompt, items, STEPS, batch_size=4)


def test_each_example_gets_its_task_prompt(llama_backbone, data_dir):
    items = _items(llama_backbone, data_dir)
    prompt = _prompt(llama_backbone)
    swapped = SoftPrompt(prompt.prompt.detach()[[1, 2, 0]])
    got = generate(llama_backbone, prompt, items, STEPS)
    assert got != generate(llama_backbone, swapped, items, STEPS)
    moved = [replace(it, task_id=(it.task_id - 1) % 3) for it in items]  # swapped[(t - 1) % 3] == prompt[t]
    assert generate(llama_backbone, swapped, moved, STEPS) == got


def test_stops_at_eos(backbone, data_dir):
    """Each row stops at its first end token (excluded); by default the end token is the tokenizer's."""
    prompt = _prompt(backbone, seed=1)
    items = _items(backbone, data_dir)
    free = generate(backbone, prompt, items, STEPS, batch_size=4, eos_id=-1)  # never stops early
    assert all(len(ids) == STEPS for ids in free)
    # treat a token the model produces as the end token, preferably one first produced mid-way
    row, k = next(((i, k) for i, ids in enumerate(free) for k in range(1, STEPS) if ids[k] not in ids[:k]), (0, 0))
    stop = free[row][k]
    expected = [ids[:ids.index(stop)] if stop in ids else ids for ids in free]
    assert expected[row] == free[row][:k]
    assert generate(backbone, prompt, items, STEPS, batch_size=4, eos_id=stop) == expected
    other = copy.copy(backbone)
    other.tokenizer = SimpleNamespace(eos_token_id=stop, pad_token_id=backbone.tokenizer.pad_token_id)
    assert generate(other, prompt, items, STEPS, batch_size=4) == expected


def test_empty_inputs_and_zero_budget(backbone, data_dir):
    prompt = _prompt(backbone)
    items = _items(backbone, data_dir)[:3]
    assert generate(backbone, prompt, [], STEPS) == []
    assert generate(backbone, prompt, items, 0) == [[], [], []]


def test_left_pad_moves_padding_to_the_left():
    x = torch.arange(12.0).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    moved, new_mask = left_pad(x, mask)
    assert new_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert torch.equal(moved[0, 1:], x[0, :2]) and torch.equal(moved[1], x[1])


def test_bf16_autocast_generates(tokenizer, data_dir):
    bb = Backbone(tiny_llama(tokenizer), tokenizer, precision="bf16")
    items = _items(bb, data_dir)[:4]
    got = generate(bb, _prompt(bb), items, 3, batch_size=2)
    assert len(got) == 4 and all(len(ids) <= 3 for ids in got)


# --- targets end with eos for generation tasks ------------------------------------------------

def test_encode_appends_eos_to_causal_targets_only_when_asked(tokenizer):
    rows = [Example("question: Who sees a book ?\nAnswer:", "The cat", ("The cat",))]
    eos = tokenizer.eos_token_id
    plain = encode(rows, tokenizer, False, 128)[0]
    ended = encode(rows, tokenizer, False, 128, append_eos=True)[0]
    assert ended.target_ids == plain.target_ids + [eos] and eos not in plain.target_ids
    assert ended.input_ids == plain.input_ids
    seq2seq = encode(rows, tokenizer, True, 128)[0]
    assert seq2seq.target_ids[-1] == eos  # seq2seq targets already end with the end token
    assert encode(rows, tokenizer, True, 128, append_eos=True)[0] == seq2seq


# --- evaluation of generation tasks -----------------------------------------------------------

def _qa_task() -> Task:
    return Task("tiny_qa", "qa", (), "squad_f1", lambda d, s, n: [], extra_metrics=("squad_em",), max_new_tokens=4)


def test_evaluate_items_scores_decoded_generations(backbone, data_dir):
    prompt = _prompt(backbone, tasks=1)
    items = [replace(it, task_id=0) for it in _items(backbone, data_dir)[:5]]
    texts = [t.strip() for t in backbone.tokenizer.batch_decode(generate(backbone, prompt, items, 4),
                                                                skip_special_tokens=True)]
    labels = [(texts[0],), ("the apple", texts[1]), ("nothing like it",), ("a dog",), ("a dog",)]
    metrics = evaluate_items(backbone, prompt, _qa_task(), items, labels, batch_size=2)
    assert list(metrics) == ["squad_f1", "squad_em", "empty_generations"]
    assert metrics == {**score(_qa_task(), texts, labels), "empty_generations": sum(not t for t in texts)}
    assert metrics["squad_em"] >= 40.0  # the first two predictions are gold answers


def test_empty_generations_are_counted_and_wrong(llama_backbone, data_dir, monkeypatch):
    bb = llama_backbone
    cat = bb.tokenizer("the cat", add_special_tokens=False)["input_ids"]
    items = _items(bb, data_dir)[:3]
    outputs = {tuple(it.input_ids): ids for it, ids in zip(items, [[], cat, [bb.tokenizer.pad_token_id]])}
    # evaluation predicts items longest first: the fake generation answers each item, in any order
    monkeypatch.setattr(evaluate_mod, "generate", lambda _bb, _prompt, chunk, *a, **k:
                        [outputs[tuple(it.input_ids)] for it in chunk])
    metrics = evaluate_items(bb, _prompt(bb, tasks=3), _qa_task(), items, [("The",), ("the cat",), ("x",)])
    assert metrics["empty_generations"] == 2  # nothing, and only a special token
    assert metrics["squad_em"] == pytest.approx(100 / 3) and metrics["squad_f1"] == pytest.approx(100 / 3)
