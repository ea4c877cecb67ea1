"""From examples to token batches: tokenise once, pad per batch, sample tasks.

Decisions
- Every split is tokenised once, in one call to the (Rust) tokenizer, when a stage starts;
  batches only gather and pad lists of ids (dynamic padding to the longest in the batch).
- Over-long inputs keep their head and their last `TAIL` tokens, so the question and the
  answer cue at the end of every input survive truncation.
- Decoder-only models read input then target as one sequence; the target is tokenised with a
  leading space, so the label word is the same token it would be in running text. Targets of
  generation tasks end with the end token (`append_eos`), so greedy generation learns to stop;
  classification targets stay the bare label word (rank classification never generates).
- Samplers are plain generators over index lists driven by `random.Random(seed)`: the same seed
  gives the same batches, and the whole data position is the generator's state.
- Multitask batches follow the paper: draw K uniformly from [2, kappa] (capped at the number of
  tasks), then K distinct tasks uniformly, then split the batch evenly between them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from mptune.backbone import Batch
from mptune.tasks import Example

TAIL = 24
"""Tokens kept from the end of an over-long input (they hold the question and the answer cue)."""


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: input and target ids, and the index of its task in the prompt module."""

    input_ids: list[int]
    target_ids: list[int]
    task_id: int


def truncate(ids: list[int], max_tokens: int) -> list[int]:
    """Keep the head and the last TAIL tokens of an over-long id list."""
    if len(ids) <= max_tokens:
        return ids
    tail = min(TAIL, max_tokens // 2)
    return ids[: max_tokens - tail] + ids[len(ids) - tail:]


def tokenize_targets(tokenizer, texts: Sequence[str], is_seq2seq: bool) -> list[list[int]]:
    """Target texts -> ids: seq2seq with the tokenizer's end token, causal with a leading space."""
    if is_seq2seq:
        return tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"]


def encode(examples: Sequence[Example], tokenizer, is_seq2seq: bool, max_input_tokens: int,
           task_id: int = 0, append_eos: bool = False) -> list[Encoded]:
    """Tokenise a split once: inputs (truncated) and targets.

    append_eos: end causal targets with the tokenizer's end token, so generation learns to stop
    (generation tasks; seq2seq targets already end with it).
    """
    inputs = tokenizer([e.input_text for e in examples], add_special_tokens=is_seq2seq)["input_ids"]
    targets = tokenize_targets(tokenizer, [e.target_text for e in examples], is_seq2seq)
    if append_eos and not is_seq2seq:
        targets = [t + [tokenizer.eos_token_id] for t in targets]
    return [Encoded(truncate(i, max_input_tokens), t, task_id) for i, t in zip(inputs, targets)]


def collate(items: Sequence[Encoded], pad_id: int, is_seq2seq: bool) -> Batch:
    """Right-pad a list of encoded examples into a Batch."""
    if is_seq2seq:
        seqs = [it.input_ids for it in items]
        labels = [it.target_ids for it in items]
    else:
        seqs = [it.input_ids + it.target_ids for it in items]
        labels = [[-100] * len(it.input_ids) + it.target_ids for it in items]
    n, m = max(map(len, seqs)), max(map(len, labels))
    input_ids = torch.tensor([s + [pad_id] * (n - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
    label_ids = torch.tensor([lab + [-100] * (m - len(lab)) for lab in labels])
    task_ids = torch.tensor([it.task_id for it in items])
    return Batch(input_ids, mask, label_ids, task_ids)


def padded_batches(lengths: Sequence[int], batch_size: int, max_padding: float = 1.0) -> list[tuple[int, int]]:
    """[start, end) of consecutive batches of input lengths sorted longest first: at most `batch_size` each,
    and (max_padding < 1) none in which more than `max_padding` of the positions [n, longest] are padding.
    max_padding = 1 gives the fixed batches of `batch_size` that evaluation uses."""
    out, start, total = [], 0, 0
    for i, length in enumerate(lengths):
        n = i - start + 1
        padding = 1 - (total + length) / (n * max(lengths[start], 1))
        if i > start and (n > batch_size or padding > max_padding):
            out.append((start, i))
            start, total = i, 0
        total += length
    if start < len(lengths):
        out.append((start, len(lengths)))
    return out


def label_tokens(items: Sequence[Encoded]) -> int:
    """Label positions of the batch `collate` makes of these items (the N rows of `Backbone.forward`)."""
    return sum(len(it.target_ids) for it in items)


def sequence_tokens(items: Sequence[Encoded]) -> int:
    """Real tokens of the batch `collate` makes of these items, inputs and targets (the M rows of
    `Backbone.forward(..., states=True).states`)."""
    return sum(len(it.input_ids) + len(it.target_ids) for it in items)


def epoch_stream(n: int, rng: random.Random) -> Iterator[int]:
    """Indices 0..n-1, reshuffled every epoch, forever."""
    order = list(range(n))
    while True:
        rng.shuffle(order)
        yield from order


def split_evenly(total: int, parts: int) -> list[int]:
    """total items over `parts` shares differing by at most one: split_evenly(8, 3) == [3, 3, 2]."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def draw_num_tasks(num_tasks: int, kappa: int, rng: random.Random) -> int:
    """K uniform in [2, min(kappa, num_tasks)]; 1 when there is a single task."""
    upper = min(kappa, num_tasks)
    return 1 if upper < 2 else rng.randint(2, upper)


def multitask_batches(sizes: Sequence[int], batch_size: int, kappa: int,
                      rng: random.Random) -> Iterator[list[tuple[int, int]]]:
    """Batches of (task, index) pairs: K from [2, kappa], then K tasks, then their examples."""
    streams = [epoch_stream(n, rng) for n in sizes]
    while True:
        k = draw_num_tasks(len(sizes), kappa, rng)
        tasks = rng.sample(range(len(sizes)), k)
        shares = split_evenly(batch_size, k)
        yield [(t, next(streams[t])) for t, share in zip(tasks, shares) for _ in range(share)]
