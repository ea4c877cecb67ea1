"""The task registry: names to `Task`s, few-shot variants, and the data directory.

Design decisions
- `TASKS` holds the GLUE, SuperGLUE and other classification tasks (`tasks/others.py`) and the
  generation tasks (`tasks/generation.py`: QA and data-to-text) under short lower-case names;
  SuperGLUE RTE is 'rte_sg' because GLUE RTE is 'rte' (same data, kept apart so results name
  their source). Users' own tasks join it through `tasks.custom.register_custom`.
- 'name@k' (e.g. 'cb@16') is a few-shot variant built on demand: its train split is
  `fewshot.kshot` of the base task's full train split (k per class, seeded; 2k uniformly for
  regression and generation tasks, which have no classes), its dev and test are the base task's.
  Training on the few-shot sample never sees the held-out dev rows.
- The data directory comes from the setting (--data.data_dir), else $MPTUNE_DATA_DIR; there is
  no silent default, so a run never reads data from an unexpected place.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from mptune.errors import MptuneError
from mptune.tasks import generation, glue, others, superglue
from mptune.tasks.base import Task

TASKS: dict[str, Task] = {**glue.TASKS, **superglue.TASKS, **others.TASKS, **generation.TASKS}
DATA_DIR_ENV = "MPTUNE_DATA_DIR"


def task_names() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The task called `name`, or its few-shot variant for 'name@k'."""
    base_name, at, k_text = name.strip().lower().partition("@")
    if base_name not in TASKS:
        raise MptuneError(f"Unknown task {base_name!r}; known tasks: {', '.join(task_names())}.")
    base = TASKS[base_name]
    if not at:
        return base
    if not (k_text.isascii() and k_text.isdigit()) or int(k_text) <= 0:
        raise MptuneError(f"Bad few-shot size in task {name!r}; expected 'name@k' with k a positive integer.")
    return few_shot(base, int(k_text))


def few_shot(base: Task, k: int) -> Task:
    """`base` with its train split replaced by a seeded sample of k examples per class."""
    per = f"{k} per class" if base.choices and not base.regression else f"{2 * k} uniformly"
    doc = f"train: {per} (seeded) from {base.name} train; dev/test: as {base.name} ({base.splits_doc})"
    return dataclasses.replace(base, name=f"{base.name}@{k}", shots=k, splits_doc=doc)


def resolve_data_dir(setting: str | os.PathLike | None) -> Path:
    """The data directory: `setting` if given, else $MPTUNE_DATA_DIR; it must exist."""
    value = str(setting) if setting not in (None, "") else os.environ.get(DATA_DIR_ENV, "")
    if not value:
        raise MptuneError(f"No data directory given; pass --data.data_dir or set {DATA_DIR_ENV}.")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise MptuneError(f"Data directory {path} does not exist (or is not a directory).")
    return path
