"""The run directory: where every unit of work lies, who holds the directory, which units are done.

This is the one module that knows the layout; the stages, `report`, `card`, `interop` and the
benchmarks ask it for paths and never build them.

    RUN_DIR/config.yaml                the resolved config: written once, checked by every later command
    RUN_DIR/.lock                      held (flock) by the process training into the directory
    RUN_DIR/teach/TASK/                one teacher per source task
    RUN_DIR/distill/                   P*, u_k, v_k (and merged.safetensors: one l x d prompt per source)
    RUN_DIR/adapt/METHOD/TARGET/       one target trained with one method (pt, spot, mpt)
    RUN_DIR/adapt/mpt-joint/           MPT*: every target at once
    RUN_DIR/adapt/.../seedS/...        with compare.seeds, the adapt units of each seed under seedS/
    RUN_DIR/results.json, results.md   the comparison table of `mptune run`
    RUN_DIR/report/                    `mptune report`
    RUN_DIR/tensorboard/UNIT/          with loggers: [tensorboard]

Each unit folder holds prompt.safetensors, log.jsonl, state.pt while it trains, predictions.json
(the evaluation split's predictions and labels per task, for paired statistics) and metrics.json,
written last: its presence marks the unit done (an imported PEFT prompt gets one too, naming the
adapter, so the stages use it and never train over it).

Decisions
- A `RunDir` is opened once per command (`open_run`): it validates what can be checked before
  anything is written, takes the lock, then checks config.yaml or writes it. It holds the lock
  and the run's loggers until `close()` (the CLI closes it when the command ends, whatever the
  outcome); nothing about a run lives in module globals.
- Only the main process of a distributed run writes: `done` and `finish` go through
  `distributed.from_main`.
- metrics.json is written atomically (temp file, fsync, rename), like prompts and checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from mptune import distributed
from mptune.checkpoint import PROMPT_FILE, save_prompt
from mptune.config import RunConfig, same_run, save_yaml
from mptune.errors import MptuneError
from mptune.logs import summary_writer_class
from mptune.prompts import MultitaskPrompt
from mptune.resume import clear_state
from mptune.tasks import get_task, resolve_data_dir
from mptune.tasks.custom import register_custom_tasks

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
PREDICTIONS_FILE = "predictions.json"
MERGED_FILE = "merged.safetensors"
"""A trained multitask prompt merged into plain l x d prompts, one per task row."""
PREDICTIONS = "predictions"
"""A unit's evaluation predictions and labels per task: a key of the metrics `finish` takes, written to
predictions.json (for paired statistics, `mptune.stats`) rather than into metrics.json."""
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
STAGES = ("teach", "distill", "adapt")
JOINT = "mpt-joint"
"""The adapt folder of MPT* (all targets at once)."""


def seed_folder(seed: int) -> str:
    return f"seed{seed}"


@dataclass
class UnitInfo:
    """Where a unit lies and what it is: stage teach/distill/adapt, name (the source task,
    'distill', METHOD/TARGET, mpt-joint, with seedS/ when nested), folder."""

    stage: str
    name: str
    folder: Path


@dataclass
class RunDir:
    """A run directory's layout. `seeds`: compare.seeds (adapt units nest by seed when it is set)."""

    root: Path
    seeds: Sequence[int] = ()
    loggers: tuple[str, ...] = ()
    _lock: object = field(default=None, repr=False)

    def __post_init__(self):
        self.root = Path(self.root)

    # --- paths ------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def results_json(self) -> Path:
        return self.root / RESULTS_JSON

    @property
    def results_md(self) -> Path:
        return self.root / RESULTS_MD

    def teacher(self, task: str) -> Path:
        return self.root / "teach" / task

    def distilled(self) -> Path:
        return self.root / "distill"

    def _adapt(self, method: str, seed: int | None) -> Path:
        folder = self.root / "adapt" / method
        return folder / seed_folder(seed) if self.seeds else folder

    def adapted(self, method: str, target: str, seed: int | None = None) -> Path:
        """adapt/METHOD/TARGET/ (adapt/METHOD/seedS/TARGET/ when the run lists target seeds)."""
        return self._adapt(method, seed) / target

    def joint(self, seed: int | None = None) -> Path:
        """adapt/mpt-joint/ (adapt/mpt-joint/seedS/ when the run lists target seeds)."""
        return self._adapt(JOINT, seed)

    def units(self, sources: Sequence[str], targets: Sequence[str], methods: Sequence[str],
              joint: bool) -> list[UnitInfo]:
        """Every unit a run with these settings makes, in pipeline order."""
        units = [UnitInfo("teach", s, self.teacher(s)) for s in sources]
        if "mpt" in methods:
            units.append(UnitInfo("distill", "distill", self.distilled()))
        seeds = list(self.seeds) or [None]
        for method in methods:
            for seed in seeds:
                if method == "mpt" and joint:
                    folders = [self.joint(seed)]
                else:
                    folders = [self.adapted(method, t, seed) for t in targets]
                units += [UnitInfo("adapt", str(f.relative_to(self.root / "adapt")), f) for f in folders]
        return units

    def unit_of(self, folder: Path) -> tuple[str, ...]:
        """The parts of a unit folder inside this run: ('adapt', 'mpt', 'cola'), ('distill',), ..."""
        return Path(folder).resolve().relative_to(self.root.resolve()).parts

    def tensorboard_dir(self, folder: Path) -> Path | None:
        """Where a unit's TensorBoard events go (None unless the run logs to TensorBoard)."""
        if "tensorboard" not in self.loggers:
            return None
        return self.root / "tensorboard" / Path(*self.unit_of(folder))

    # --- units -------------------------------------------------------------------------------

    @staticmethod
    def done(folder: Path) -> dict | None:
        """The metrics of a finished unit, or None (as the main process reads them)."""
        path = Path(folder) / METRICS_FILE
        return distributed.from_main(lambda: json.loads(path.read_text()) if path.exists() else None)

    @staticmethod
    def predictions(folder: Path) -> dict | None:
        """A finished unit's predictions.json: task -> {"predictions", "labels"} (None for units of
        earlier versions or imported ones)."""
        path = Path(folder) / PREDICTIONS_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    @staticmethod
    def finish(folder: Path, module: torch.nn.Module, tasks: list[str], metrics: dict) -> dict:
        """Save a unit's prompt (and, for P* o u v^T, its merged l x d form), then its metrics.

        metrics.json is written last: its presence marks the unit done. The main process writes;
        every process returns the metrics.
        """
        metrics = dict(metrics)
        preds = metrics.pop(PREDICTIONS, None)

        def write() -> dict:
            save_prompt(module, tasks, folder / PROMPT_FILE)
            if isinstance(module, MultitaskPrompt):
                save_prompt(module.merged(), tasks, folder / MERGED_FILE)
            if preds is not None:
                write_json(folder / PREDICTIONS_FILE, preds)
            write_json(folder / METRICS_FILE, metrics)
            clear_state(folder)
            return metrics

        return distributed.from_main(write)

    # --- holding the directory ---------------------------------------------------------------

    def lock(self) -> None:
        """Hold an exclusive lock on the directory until `close()` (or the process ends)."""
        if self._lock is not None:
            return
        handle = open(self.root / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise MptuneError(f"another mptune process is using {self.root}; wait for it or choose another "
                              f"--out_dir") from None
        self._lock = handle

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_run(cfg: RunConfig, resume: bool = False) -> RunDir:
    """The run directory of `cfg`, checked, locked and holding its config.yaml (see the decisions).

    Refuses a directory holding another config; resume: the directory must already hold this run
    (`--resume`). Also joins the process group when launched as several processes.
    """
    distributed.init_from_env(cfg.model.device)
    register_custom_tasks(cfg.data.custom_tasks)
    for name in [*cfg.sources, *cfg.targets]:  # a typo must not leave a config.yaml that blocks the fix
        get_task(name)
    resolve_data_dir(cfg.data.data_dir)
    for stage in ("teach", "distill", "adapt"):
        args = getattr(cfg, stage)
        distributed.check_batch(args.batch_size, args.grad_accum, f"{stage}.batch_size")
    if "tensorboard" in cfg.loggers:
        summary_writer_class()
    run = RunDir(Path(cfg.out_dir), cfg.compare.seeds, tuple(cfg.loggers))
    distributed.from_main(lambda: _claim(run, cfg, resume))
    return run


def _claim(run: RunDir, cfg: RunConfig, resume: bool) -> None:
    """Lock the directory, then check its config.yaml or write it (the main process only)."""
    out, saved = run.root, run.config_file
    if out.exists():
        run.lock()
    if resume and not saved.exists():
        why = f"holds no run (no {saved.name})" if out.exists() else "does not exist"
        raise MptuneError(f"nothing to resume: {out} {why}; check --out_dir, or drop --resume to start a new run")
    if saved.exists():
        import yaml

        if not same_run(yaml.safe_load(saved.read_text()), cfg):
            raise MptuneError(f"{out} holds a run with a different config ({saved}); "
                              f"choose another --out_dir or rerun with the saved config")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        run.lock()
        save_yaml(cfg, saved)
    except OSError as err:
        raise MptuneError(f"cannot write the run directory {out}: {err.strerror}") from None


def find_run(path: Path) -> RunDir | None:
    """The run directory holding `path`: the nearest folder at or above it with a config.yaml."""
    folder = Path(path).resolve()
    for root in [folder, *folder.parents]:
        if (root / CONFIG_FILE).is_file():
            return RunDir(root)
    return None


def write_json(path: Path, data) -> None:
    """Write JSON atomically: a temp file, flushed to disk, renamed over the target."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
