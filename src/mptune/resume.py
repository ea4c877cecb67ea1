"""Step checkpoints inside a unit of work, so a killed stage resumes where it stopped, exactly.

A unit of work (one teacher, the distillation, one target method) saves `state.pt` every
`checkpoint_every` steps: the trainable tensors, the optimizer and scheduler states, the step and
the RNG states (torch's CPU generator and Python's `random`). The data position needs no state of
its own: the batches come from a generator seeded by the run seed, which is fast-forwarded by the
number of finished steps. The RNG states are saved for safety only: the backbone is frozen and in
eval mode (no dropout), so training draws no random numbers, and restoring them changes nothing
today; a future source of randomness inside the loop would still resume exactly. `state.pt` is
removed once the unit's metrics.json exists.

Integrity
- `state.pt` is one header line `mptune-state/1 sha256=<hex>` and then the bytes of
  `torch.save(state)`; the hash covers those bytes, so a truncated or corrupted file is detected
  before anything is loaded from it.
- A new checkpoint is written to `state.pt.tmp` (removed again if the write fails or is
  interrupted) and flushed to disk; then the current `state.pt`
  becomes `state.prev.pt` and the new file becomes `state.pt` (two renames, then the folder is
  synced). A kill at any moment leaves an intact checkpoint: `state.pt`, or `state.prev.pt`
  between the two renames.
- Resuming reads `state.pt`, else `state.prev.pt`. A damaged file gets one warning line naming
  it and the next one is tried; with none intact the unit restarts from step 0 (with a warning),
  and the user's other results are left alone. An older checkpoint costs only recomputation:
  training from it replays the same batches and updates, so the unit still ends bit for bit
  where an uninterrupted run ends.
- Only the main process writes and reads checkpoints; the other processes receive the state from
  it (`distributed.from_main`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import sys
from itertools import islice
from pathlib import Path
from typing import Iterator

import torch

from mptune import distributed
from mptune.errors import MptuneError

STATE_FILE = "state.pt"
PREV_STATE_FILE = "state.prev.pt"
HEADER = b"mptune-state/1 sha256="


def save_state(folder: Path, step: int, module: torch.nn.Module, opt, sched, extra: dict | None = None) -> None:
    """Write the training state after `step` finished steps, keeping the previous one (main process only).

    extra: more of the loop's state (tensors, numbers), given back by `restore_state`."""
    if not distributed.is_main():
        return
    buffer = io.BytesIO()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    torch.save({"step": step, "module": module.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng, **({"extra": extra} if extra else {})}, buffer)
    payload = buffer.getvalue()
    path = folder / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(HEADER + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a failed or interrupted write (Ctrl-C, SIGTERM) leaves no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    if path.exists():
        os.replace(path, folder / PREV_STATE_FILE)
    os.replace(tmp, path)
    fd = os.open(folder, os.O_RDONLY)  # make the renames durable too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_state(path: Path) -> dict:
    """The state saved in `path`; MptuneError naming the file if it is truncated, corrupted or foreign."""
    header, _, payload = path.read_bytes().partition(b"\n")
    if not header.startswith(HEADER):
        raise MptuneError(f"checkpoint {path} is damaged (no mptune checkpoint header: empty, truncated or foreign)")
    if header[len(HEADER):] != hashlib.sha256(payload).hexdigest().encode():
        raise MptuneError(f"checkpoint {path} is damaged (checksum mismatch: truncated or corrupted)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise MptuneError(f"checkpoint {path} is damaged ({str(err).splitlines()[0]})") from None


def warn(message: str) -> None:
    print(f"mptune: warning: {message}", file=sys.stderr)


def latest_state(folder: Path) -> dict | None:
    """The newest intact checkpoint of a unit (state.pt, else state.prev.pt), or None; damaged ones are reported."""
    damaged = False
    for path in (folder / STATE_FILE, folder / PREV_STATE_FILE):
        if not path.exists():
            continue
        try:
            state = read_state(path)
        except MptuneError as err:
            warn(f"{err}; ignoring it")
            damaged = True
            continue
        if damaged:
            warn(f"resuming from the previous checkpoint {path} (step {state['step']})")
        return state
    if damaged:
        warn(f"no intact checkpoint in {folder}: this unit restarts from step 0")
    return None


def restore_state(folder: Path, module: torch.nn.Module, opt, sched, extra: dict | None = None) -> int:
    """Load the latest intact state into module, optimizer, scheduler and the RNGs; return the finished steps (0 if
    none). extra: filled with the `extra` the checkpoint was saved with."""
    state = distributed.from_main(lambda: latest_state(folder))
    if state is None:
        return 0
    try:
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "rng" in state:  # checkpoints written before mptune saved RNG states have none
            torch.set_rng_state(state["rng"]["torch"])
            random.setstate(state["rng"]["python"])
        if extra is not None:
            extra.update(state.get("extra", {}))
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise MptuneError(f"the checkpoint in {folder} does not fit this unit ({str(err).splitlines()[0]}); "
                          f"delete {STATE_FILE} and {PREV_STATE_FILE} to restart it from step 0") from None
    return int(state["step"])


def skip(stream: Iterator, steps: int) -> Iterator:
    """The batch stream after its first `steps` batches (the data position of a resumed unit)."""
    next(islice(stream, steps, steps), None)
    return stream


def clear_state(folder: Path) -> None:
    for name in (STATE_FILE, PREV_STATE_FILE, STATE_FILE + ".tmp"):
        (folder / name).unlink(missing_ok=True)
