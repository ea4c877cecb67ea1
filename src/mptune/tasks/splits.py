"""Deterministic train/dev/test splits, as in the prompt-transfer literature (ATTEMPT, MPT).

Official test sets of GLUE and SuperGLUE are unlabelled, so every task evaluates on data
carved out of the labelled official files:

- Small tasks (OFFICIAL train set under 10,000 rows): train = official train; the official
  validation set is shuffled with `random.Random(seed)` and cut in two: dev = first half,
  test = second half (for an odd size the test half is one larger).
- Large tasks (OFFICIAL train set of 10,000 rows or more): dev = 1,000 examples held out of
  train (seeded), train = the rest, test = official validation.
- When a large task's official validation file is absent (MNLI, QQP and QNLI may only have a
  sample of train on disk), test is held out of train as well: dev = 1,000, test = the next
  1,000 of the same seeded shuffle, train = the rest.
- MNLI with both official validation files: train = official train, dev = validation_mismatched,
  test = validation_matched.
- Tasks whose labelled held-out file is an official TEST set (Yelp-2) pass it as the validation
  set above: dev = 1,000 held out of train, test = the official test set.
- Tasks with labelled official dev AND test sets (SciTail, PAWS, E2E, WebNLG) use them as they
  are (`select_given`), as the prompt-transfer literature does.
- Users' own tasks (`select_given`): every given file keeps its role; a missing dev or test set
  is held out of train, min(1,000, 10% of train) examples each (seeded). At 10,000 rows and more
  this is the large-task rule above.

Design decisions
- The small/large decision uses the size of the OFFICIAL train set (a constant per task), never
  the size of the file on disk, so a 9,999-row sample of MNLI is still split like MNLI.
- Split by position, not by text: duplicate rows (SST-2 train has some) can sit on both sides
  of a held-out split, exactly as they do in the official data.
- Shuffles work on a copy of the row indices; every part comes back in file order. The same
  seed always gives the same split, and train never overlaps a held-out part.
- Files are read lazily: each split only calls the loaders it needs (the SST-2 test split does
  not read the 67K-row train file).
"""

from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

from mptune.errors import MptuneError

T = TypeVar("T")
Loader = Callable[[], list[T]]

SPLITS = ("train", "dev", "test")
SMALL_TRAIN_LIMIT = 10_000
"""Tasks whose official train set has fewer rows than this split their validation set in halves."""
HELD_OUT = 1_000
"""Rows held out of train for dev (and for test when the validation file is absent)."""


def check_split(split: str) -> None:
    """Raise MptuneError unless `split` is 'train', 'dev' or 'test'."""
    if split not in SPLITS:
        raise MptuneError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")


def partition(items: Sequence[T], sizes: Sequence[int], seed: int) -> list[list[T]]:
    """Cut a seeded shuffle of `items` into consecutive parts of `sizes` plus the remainder.

    Returns len(sizes) + 1 lists, each in the original order of `items`.
    """
    if sum(sizes) > len(items):
        raise MptuneError(
            f"Cannot hold out {sum(sizes)} examples from only {len(items)}; the file is too small."
        )
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    parts, start = [], 0
    for size in list(sizes) + [len(items) - sum(sizes)]:
        parts.append([items[i] for i in sorted(order[start:start + size])])
        start += size
    return parts


def halves(validation: Sequence[T], seed: int) -> tuple[list[T], list[T]]:
    """(dev, test): the first and second half of a seeded shuffle of the validation set."""
    dev, test = partition(validation, [len(validation) // 2], seed)
    return dev, test


def select(
    split: str,
    seed: int,
    official_train_size: int,
    train: Loader,
    validation: Loader | None,
    mismatched: Loader | None = None,
) -> list:
    """Examples of one split following the rules in the module docstring.

    `train` and `validation` load the official files (`validation=None` when that file is
    absent); `mismatched` is a second official validation set used as dev (MNLI only).
    """
    check_split(split)
    if mismatched is not None and validation is not None:
        return {"train": train, "dev": mismatched, "test": validation}[split]()
    if official_train_size < SMALL_TRAIN_LIMIT:
        if split == "train":
            return train()
        if validation is None:
            raise MptuneError("A small task needs its official validation file for dev and test.")
        dev, test = halves(validation(), seed)
        return dev if split == "dev" else test
    if split == "test" and validation is not None:
        return validation()
    if validation is not None:
        dev, rest = partition(train(), [HELD_OUT], seed)
        return dev if split == "dev" else rest
    dev, test, rest = partition(train(), [HELD_OUT, HELD_OUT], seed)
    return {"train": rest, "dev": dev, "test": test}[split]


def held_out_size(n_train: int) -> int:
    """Rows held out of a train set of `n_train` rows for each missing part: min(1,000, 10%)."""
    return min(HELD_OUT, n_train // 10)


def select_given(split: str, seed: int, train: Loader, dev: Loader | None = None, test: Loader | None = None,
                 train_name: str = "the train file") -> list:
    """Examples of one split when the files say which part they are (see the module docstring).

    Given loaders are used as they are; a missing dev or test part is held out of train.
    `train_name` names the train file in the error raised when it is too small to hold out from.
    """
    check_split(split)
    given = {"dev": dev, "test": test}
    if split != "train" and given[split] is not None:
        return given[split]()
    missing = [part for part, loader in given.items() if loader is None]
    if not missing:
        return train()
    rows = train()
    size = held_out_size(len(rows))
    if size == 0:
        raise MptuneError(f"{train_name} has only {len(rows)} examples, too few to hold out "
                          f"{' and '.join(missing)} (10% each); give at least 10 examples, or {' and '.join(missing)} "
                          f"file{'s' if len(missing) > 1 else ''}.")
    *held, rest = partition(rows, [size] * len(missing), seed)
    return rest if split == "train" else dict(zip(missing, held))[split]


def describe(official_train_size: int, offline_test: bool = False,
             validation: str = "official validation", train: str = "official train") -> str:
    """A one-line `splits_doc` for a task split by `select` (`train`, `validation`: what its files are)."""
    if official_train_size < SMALL_TRAIN_LIMIT:
        return (f"train: {train} ({official_train_size:,}); "
                "dev/test: official validation split in halves (seeded)")
    if offline_test:
        return ("train: official train minus the held-out rows (seeded); dev: 1,000 held out of train; "
                "test: official validation, or 1,000 more held out of train when that file is absent")
    return (f"train: {train} minus 1,000 (seeded); dev: those 1,000; "
            f"test: {validation}")
