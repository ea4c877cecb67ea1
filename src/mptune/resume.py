"""Step checkpoints inside a unit of work, so a killed stage resumes where it stopped, exactly.

A unit of work (one teacher, the distillation, one target method) saves `state.pt` every
`checkpoint_every` steps: the trainable tensors, the optimizer and scheduler states and the step.
Nothing else is needed to continue bit for bit: the backbone is frozen and in eval mode (no
dropout, so no random numbers are drawn while training), and the batches come from a generator
seeded by the run seed, which is fast-forwarded by the number of finished steps. The file is
written to a temporary name, flushed to disk and renamed, so a kill during the write leaves the
previous checkpoint intact. `state.pt` is removed once the unit's metrics.json exists.
"""

from __future__ import annotations

import os
import pickle
from itertools import islice
from pathlib import Path
from typing import Iterator

import torch

from mptune.errors import MptuneError

STATE_FILE = "state.pt"


def save_state(folder: Path, step: int, module: torch.nn.Module, opt, sched) -> None:
    """Atomically write the training state after `step` finished steps."""
    path = folder / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    state = {"step": step, "module": module.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict()}
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def restore_state(folder: Path, module: torch.nn.Module, opt, sched) -> int:
    """Load the saved state into module, optimizer and scheduler; return the finished steps (0 if none)."""
    path = folder / STATE_FILE
    if not path.exists():
        return 0
    try:
        state = torch.load(path, weights_only=True)
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise MptuneError(f"checkpoint {path} is unreadable ({str(err).splitlines()[0]}); "
                          f"delete it to restart this unit from step 0") from None
    return int(state["step"])


def skip(stream: Iterator, steps: int) -> Iterator:
    """The batch stream after its first `steps` batches (the data position of a resumed unit)."""
    next(islice(stream, steps, steps), None)
    return stream


def clear_state(folder: Path) -> None:
    (folder / STATE_FILE).unlink(missing_ok=True)
