"""Per-step training logs: `log.jsonl` in every unit's folder, TensorBoard event files on request.

Each unit of work (teach/TASK, distill, adapt/METHOD/TARGET, adapt/mpt-joint) writes one JSON
line per step: the step, its loss terms (loss; distillation adds ce, kl, mse), the learning rate
and the training throughput so far. With `loggers: [tensorboard]` the same values also go, as
scalars named like the JSON keys, to `RUN_DIR/tensorboard/UNIT`, so
`tensorboard --logdir RUN_DIR/tensorboard` shows every unit as one run.

Decisions
- log.jsonl is always written: resuming a unit keeps its first lines, and `mptune report` plots
  it. Other loggers are extras, and none is needed to train.
- Nothing is lost and nothing is doubled: each line is flushed when its step ends (a kill, Ctrl-C
  or SIGTERM loses at most the line being written), and a resumed unit keeps exactly the lines of
  steps 1 .. its checkpoint's step (rewritten atomically, `files.write_text`) before it appends, so
  the log of a resumed unit has no hole and no repeated step. `steps_missing` names the holes of a
  log made otherwise (by an earlier version, or edited); `mptune report` shows them.
- `read_log` skips a last line cut short (a running or killed process); any other damage (not
  UTF-8, a line that is not a JSON object with a step) is one MptuneError naming the file and line.
- The training loop only knows `StepLog(path, kept_steps, tensorboard)`, `write(step, examples,
  lr, **terms)` and `close()`. Which extra loggers a unit gets is a property of its run directory:
  the stage passes `RunDir.tensorboard_dir(folder)` (None unless the run asks for TensorBoard). A
  training loop called directly (as in tests) writes log.jsonl only.
- tensorboard is imported only when selected (`pip install 'mptune[tensorboard]'`); its absence is
  one MptuneError when the run directory is prepared, before any model is loaded.
- A resumed unit continues its event file from the last checkpoint: events after that step are
  purged (`purge_step`), as the lines after it are dropped from log.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from mptune import distributed
from mptune.errors import MptuneError
from mptune.files import read_text, write_text


def summary_writer_class():
    """torch's SummaryWriter, or one error telling how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MptuneError("loggers 'tensorboard' needs the tensorboard package: "
                          "pip install 'mptune[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter


class StepLog:
    """Appends one JSON line per step (and TensorBoard scalars, if the run asks) and tracks throughput.

    A resumed unit keeps the lines of its first `kept_steps` steps and appends after them. Only the
    main process of a distributed run writes.
    """

    def __init__(self, path: Path, kept_steps: int = 0, tensorboard: Path | None = None):
        """tensorboard: the unit's TensorBoard log directory (`RunDir.tensorboard_dir`), or None."""
        self.file = self.tensorboard = None
        if distributed.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = [r for r in read_log(path) if r["step"] <= kept_steps] if kept_steps and path.exists() else []
            write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
            self.file = path.open("a")
            if tensorboard is not None:
                self.tensorboard = summary_writer_class()(str(tensorboard),
                                                          purge_step=kept_steps + 1 if kept_steps else None)
        self.start = time.perf_counter()
        self.examples = 0

    def write(self, step: int, examples: int, lr: float, **terms: torch.Tensor) -> dict:
        self.examples += examples
        elapsed = time.perf_counter() - self.start
        row = {"step": step, **{k: round(v.item(), 5) for k, v in terms.items()},
               "lr": lr, "examples_per_s": round(self.examples / elapsed, 2)}
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, step)
        return row

    def close(self) -> dict:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        elapsed = time.perf_counter() - self.start
        return {"train_seconds": round(elapsed, 1), "train_examples_per_s": round(self.examples / elapsed, 2),
                "processes": distributed.world_size()}


def read_log(path: Path) -> list[dict]:
    """The rows of a log.jsonl; a last line cut short by a running or killed process is skipped."""
    what = "a unit's training log (one JSON object with a step per line)"
    lines = read_text(path, what).splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # cut short while being written
            raise MptuneError(f"{path}: line {number} is not valid JSON; expected {what}") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row["step"], bool):
            raise MptuneError(f"{path}: line {number} is not a JSON object with a step; expected {what}")
        rows.append(row)
    return rows


def steps_missing(rows: list[dict]) -> list[int]:
    """Steps absent from a log's rows between step 1 and its last step (a hole)."""
    seen = {r["step"] for r in rows}
    return [s for s in range(1, max(seen, default=0) + 1) if s not in seen]
