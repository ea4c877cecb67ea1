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
  anything is written (settings, device, task names, data dir, custom tasks, prompt.init), takes
  the lock, then checks config.yaml and the files of the units already there (metrics.json,
  predictions.json: a damaged one is one error naming it, before the model loads). It holds the
  lock and the run's loggers until `close()` (the CLI closes it when the command ends, whatever
  the outcome); nothing about a run lives in module globals.
- config.yaml is written when the first unit starts (`start`), not when the directory is opened:
  whatever is refused before (a model that does not load, a prompt too long for the model, data
  that do not fit) leaves no config.yaml, so the corrected command is never refused as "a
  different config". That refusal names each differing setting with both values; paths are
  compared as paths (`config.config_diff`).
- Every file is read through `mptune.files` (one error naming the file and what it should hold)
  and written atomically through it (temp file, fsync, rename).
- Only the main process of a distributed run writes: `done` and `finish` go through
  `distributed.from_main`.
- `reuse` names finished runs whose units may stand in for this run's (`reusable`): teachers, the
  distilled prompt and single-target units (a method on a target with a seed; MPT*'s joint unit is
  always trained). A unit is taken from the first run whose config.yaml agrees with this run in every
  setting the unit is computed from (`config.UNIT_SETTINGS`, compared as `config_diff` does). Its
  prompt and log are copied, and the stage scores it again on this run's split unless that run
  scored the same examples (`config.SCORE_SETTINGS`; then its scores and predictions are kept),
  so a copied unit's scores are never another run's examples. Copying target units is what lets a
  test run score the very prompts its dev run trained (training never reads the eval split), and a
  source-side variant compare against the same PT prompts. Each named directory is checked to hold a
  run's config before anything is written.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from mptune import distributed
from mptune.checkpoint import PROMPT_FILE, load_prompt, save_prompt
from mptune.config import SCORE_SETTINGS, RunConfig, config_diff, missing_sections, save_yaml, settings_diff, unit_diff
from mptune.errors import MptuneError
from mptune.files import read_bytes, read_json, read_yaml, type_word, write_bytes, write_json
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
    config: RunConfig | None = None
    """The run's settings, written to config.yaml when the first unit starts (None: opened to read)."""
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
        """The metrics of a finished unit, or None (as the main process reads them); a damaged
        metrics.json is an MptuneError naming it."""
        path = Path(folder) / METRICS_FILE
        return distributed.from_main(lambda: read_metrics(path) if path.exists() else None)

    @staticmethod
    def predictions(folder: Path) -> dict | None:
        """A finished unit's predictions.json: task -> {"predictions", "labels"} (None for units of
        earlier versions or imported ones)."""
        path = Path(folder) / PREDICTIONS_FILE
        return read_predictions(path) if path.exists() else None

    def start(self, folder: Path) -> Path | None:
        """A unit is about to write into `folder`: write the run's config.yaml first if it is not there
        yet (see the decisions). Returns the unit's TensorBoard directory (`tensorboard_dir`)."""
        self.save_config()
        return self.tensorboard_dir(folder)

    def save_config(self) -> None:
        """Write config.yaml unless it is there (main process); a caller that writes units itself (the
        benchmarks) calls it once the model is loaded and checked."""
        if self.config is not None:
            cfg = self.config
            distributed.from_main(lambda: None if self.config_file.exists() else save_yaml(cfg, self.config_file))

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
        handle = open(self.root / ".lock", "a")
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
    """The run directory of `cfg`, checked and locked (see the decisions); config.yaml is written by
    `RunDir.start` when the first unit starts.

    Refuses a directory holding another config or damaged files; resume: the directory must
    already hold this run (`--resume`). Also joins the process group when launched as several processes.
    """
    from mptune.models import check_device

    check_device(cfg.model.device)
    distributed.init_from_env(cfg.model.device)
    register_custom_tasks(cfg.data.custom_tasks)
    for name in [*cfg.sources, *cfg.targets]:  # a typo must not leave a config.yaml that blocks the fix
        get_task(name)
    resolve_data_dir(cfg.data.data_dir)
    check_init(cfg)
    check_reuse(cfg)
    for stage in ("teach", "distill", "adapt"):
        args = getattr(cfg, stage)
        distributed.check_batch(args.batch_size, args.grad_accum, f"{stage}.batch_size")
    if "tensorboard" in cfg.loggers:
        summary_writer_class()
    run = RunDir(Path(cfg.out_dir), cfg.compare.seeds, tuple(cfg.loggers), cfg)
    distributed.from_main(lambda: _claim(run, cfg, resume))
    return run


def check_init(cfg: RunConfig) -> None:
    """A prompt.init file must be a readable, finite mptune prompt of prompt.length rows (its width is
    checked against the model when it is loaded)."""
    if not cfg.prompt.init.endswith(".safetensors"):
        return
    from mptune.checkpoint import load_prompt

    module, _ = load_prompt(cfg.prompt.init)
    if module.length != cfg.prompt.length:
        raise MptuneError(f"prompt.init {cfg.prompt.init} has length {module.length}, but prompt.length is "
                          f"{cfg.prompt.length}")


def _reused_config(root: Path) -> dict:
    """The config.yaml of a run directory named by `reuse` (one error naming it when it is not a run's)."""
    path = Path(root) / CONFIG_FILE
    if not path.is_file():
        raise MptuneError(f"reuse names {root}, which holds no run (no {CONFIG_FILE}); name a finished run directory")
    saved = read_yaml(path, "a reused run's config", fix="name another run directory in reuse")
    if lacking := missing_sections(saved):
        raise MptuneError(f"{path} lacks the section(s) {', '.join(lacking)}: it was cut short or edited; "
                          "name another run directory in reuse")
    return saved


def check_reuse(cfg: RunConfig) -> None:
    """Every directory `reuse` names must hold a run's config.yaml (read only, before anything is written)."""
    for root in cfg.reuse:
        distributed.from_main(lambda root=root: _reused_config(Path(root)))


def reusable(cfg: RunConfig, kind: str, folder: Path, settings: tuple[str, ...] = ()) -> tuple[Path, bool] | None:
    """The finished copy of this run's unit `folder` (a teacher, the distilled prompt or a target unit: `kind`
    'teach', 'distill' or the method) in the first directory of cfg.reuse whose run trained it under the same
    settings (`config.unit_diff`; or `settings`, for a unit mptune does not define, such as a benchmark's), and
    whether that run scored it on the examples this one scores (SCORE_SETTINGS, with predictions kept); None
    when there is none. Read by the main process."""
    here = Path(cfg.out_dir).resolve()
    unit = Path(folder).resolve().relative_to(here)

    def find() -> tuple[Path, bool] | None:
        for root in map(Path, cfg.reuse):
            if root.resolve() == here or not (root / unit / METRICS_FILE).is_file():
                continue
            saved = _reused_config(root)
            if not (settings_diff(saved, cfg, settings) if settings else unit_diff(saved, cfg, kind)):
                scored_alike = not settings_diff(saved, cfg, SCORE_SETTINGS) \
                    and (root / unit / PREDICTIONS_FILE).is_file()
                return root / unit, scored_alike
        return None

    return distributed.from_main(find)


def copy_log(source: Path, folder: Path) -> None:
    """Copy a reused unit's training log (log.jsonl) into `folder`, atomically (main process)."""
    def write() -> None:
        if (source / LOG_FILE).is_file():
            Path(folder).mkdir(parents=True, exist_ok=True)
            write_bytes(Path(folder) / LOG_FILE, read_bytes(source / LOG_FILE, "a reused unit's training log"))

    distributed.from_main(write)


def _claim(run: RunDir, cfg: RunConfig, resume: bool) -> None:
    """Lock the directory, then check its config.yaml and its finished units (the main process only)."""
    out, saved = run.root, run.config_file
    if out.exists():
        run.lock()
    if resume and not saved.exists():
        why = f"holds no run (no {saved.name})" if out.exists() else "does not exist"
        raise MptuneError(f"nothing to resume: {out} {why}; check --out_dir, or drop --resume to start a new run")
    if saved.exists():
        check_saved(run, cfg)
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        run.lock()
    except OSError as err:
        raise MptuneError(f"cannot write the run directory {out}: {err.strerror}") from None


def check_saved(run: RunDir, cfg: RunConfig) -> None:
    """Refuse settings that differ from those saved in the run directory (naming each setting), and
    damaged files of its finished units; reads only (`open_run` and `--dry-run` call it)."""
    saved = run.config_file
    if not saved.exists():
        return
    fix = "choose another --out_dir (or delete the damaged file)"
    data = read_yaml(saved, "the run's config (a mapping of settings)", fix=fix)
    if lacking := missing_sections(data):
        raise MptuneError(f"{saved}: has no section {', '.join(lacking)} (cut short or edited); expected the "
                          f"run's config with every section; {fix}")
    try:
        diff = config_diff(data, cfg)
    except MptuneError as err:
        raise MptuneError(f"{saved}: not a valid run config ({err}); {fix}") from None
    if diff:
        raise MptuneError(f"{run.root} holds a run with a different config: {'; '.join(diff)}; choose another "
                          f"--out_dir, or rerun with the saved settings (--config {saved})")
    for unit in run.units(cfg.sources, cfg.targets, cfg.compare.methods, cfg.compare.joint):
        for name, read in ((METRICS_FILE, read_metrics), (PREDICTIONS_FILE, read_predictions),
                           (PROMPT_FILE, load_prompt)):
            if (unit.folder / name).exists():  # a damaged file is refused before the model loads
                read(unit.folder / name)


def find_run(path: Path) -> RunDir | None:
    """The run directory holding `path`: the nearest folder at or above it with a config.yaml."""
    folder = Path(path).resolve()
    for root in [folder, *folder.parents]:
        if (root / CONFIG_FILE).is_file():
            return RunDir(root)
    return None


REDO = "delete it to redo the unit"


def _numbers(value) -> bool:
    """A mapping of names to numbers."""
    return isinstance(value, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           for v in value.values())


def read_metrics(path: Path) -> dict:
    """A unit's metrics.json: a JSON object whose scores are task -> metric -> number."""
    what = "a unit's metrics (a JSON object with scores: task -> metric -> number)"
    metrics = read_json(path, what, fix=REDO)
    scores = metrics.get("scores", {})
    if not isinstance(scores, dict) or not all(_numbers(v) for v in scores.values()):
        raise MptuneError(f"{path}: its scores are not task -> metric -> number; expected {what}; {REDO}")
    if not isinstance(metrics.get("parameters", 0), int):
        raise MptuneError(f"{path}: its parameters are not a whole number; expected {what}; {REDO}")
    return metrics


def read_predictions(path: Path) -> dict:
    """A unit's predictions.json: task -> {"predictions": [...], "labels": [...]}."""
    what = 'a unit\'s predictions (task -> {"predictions": list, "labels": list})'
    data = read_json(path, what, fix=REDO)
    for value in data.values():
        if not (isinstance(value, dict) and isinstance(value.get("predictions"), list)
                and isinstance(value.get("labels"), list)):
            raise MptuneError(f"{path}: a task's entry is not {{\"predictions\": list, \"labels\": list}}; "
                              f"expected {what}; {REDO}")
    return data



def read_results(path: Path) -> dict:
    """A run's results.json: a JSON object whose targets are target -> method -> score."""
    what = "the run's results table (a JSON object with targets: target -> method -> score)"
    fix = "delete it and rerun `mptune run` to write it again (finished units are reused)"
    results = read_json(path, what, fix=fix)
    targets = results.get("targets")
    if not isinstance(targets, dict) or not all(isinstance(row, dict) for row in targets.values()):
        raise MptuneError(f"{path}: its targets are not target -> method -> score; expected {what}; {fix}")
    for key in ("seconds", "average"):
        if key in results and not isinstance(results[key], dict):
            raise MptuneError(f"{path}: its {key} is {type_word(results[key])}, not a mapping; expected {what}; {fix}")
    return results
