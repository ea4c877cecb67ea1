"""Per-step training logs: `log.jsonl` in every unit's folder, TensorBoard event files on request.

Each unit of work (teach/TASK, distill, adapt/METHOD/TARGET, adapt/mpt-joint) writes one JSON
line per step: the step, its loss terms (loss; distillation adds ce, kl, mse), the learning rate
and the training throughput so far. With `loggers: [tensorboard]` the same values also go, as
scalars named like the JSON keys, to `RUN_DIR/tensorboard/UNIT`, so
`tensorboard --logdir RUN_DIR/tensorboard` shows every unit as one run.

Decisions
- log.jsonl is always written: resuming a unit keeps its first lines, and `mptune report` plots
  it. Other loggers are extras, and none is needed to train.
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
            kept = path.read_text().splitlines()[:kept_steps] if kept_steps and path.exists() else []
            self.file = path.open("w")
            self.file.writelines(line + "\n" for line in kept)
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
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
