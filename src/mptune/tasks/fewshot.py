"""Few-shot training sets: k examples per class drawn from a task's full train split.

Design decisions
- `kshot` draws k examples of every class with one `random.Random(seed)`, visiting classes in
  label order, then shuffles the union with the same generator: same seed, same sample.
- A class with fewer than k examples contributes all of them (CB has only 16 'neutral' rows in
  train; offline BoolQ has 14 'false' rows), so the sample is balanced up to what exists.
- Regression tasks (or `choices` empty) have no classes: k * 2 examples are drawn uniformly.
- Dev and test stay the base task's full splits (see `tasks/registry.py`).
- `Task.load` applies it to the train split of a task with `shots` > 0, seeded by its
  `sample_seed` (the adaptation seed in `stages`), so each seed of a repeated run draws its own
  sample while dev/test, fixed by the split seed, stay the same.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # base imports this module
    from mptune.tasks.base import Example


def kshot(examples: Sequence[Example], k: int, seed: int, choices: Sequence[str]) -> list[Example]:
    """k examples per class of `choices` (by label index), or k * 2 uniformly when `choices` is empty."""
    rng = random.Random(seed)
    if not choices:
        return rng.sample(list(examples), min(2 * k, len(examples)))
    by_class: dict[int, list[Example]] = {i: [] for i in range(len(choices))}
    for ex in examples:
        by_class.setdefault(ex.label, []).append(ex)
    sample = []
    for label in range(len(choices)):
        pool = by_class[label]
        sample.extend(rng.sample(pool, min(k, len(pool))))
    rng.shuffle(sample)
    return sample
