"""Pieces shared by the benchmark scripts: timing helpers, result files, tables, plots, estimates.

Every script imports this module as `common` (the scripts run as `python benchmarks/NAME.py`, so
this folder is on sys.path). Nothing here trains on its own.

- `setup`, `parser`: the thread count (--threads), the tokenizer's fork warning, the argument parser.
- `matmul_gflops`, `step_flops`, `real_batches`, `MptuneStep`, `time_steps`: the speed
  measurements' building blocks (speed.py and scaling.py).
- `summary`, `fmt`, `md_table`, `write_json`, `write_outputs`, `bar_plot`, `figure`: results as
  JSON, markdown and PNG; JSON is written atomically after every finished unit, so an interrupted
  script loses nothing.
- `QUICK`, `PAPER`, `PAPER_NOTES`, `config_overrides`, `add_budget_arguments`, `print_budget`: the
  smoke-test budget, the paper's budget (`--full`) and the options and settings quality.py and
  ablations.py apply on top of `RunConfig`'s defaults.
- `estimate_train`, `estimate_eval`: rough wall times from the rates measured on the 2-core
  development machine (time proportional to tokens).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch

from mptune import presets, rundir
from mptune.backbone import Backbone
from mptune.data import collate, encode
from mptune.losses import distill_kl, hidden_mse, plm_loss
from mptune.prompts import SoftPrompt
from mptune.tasks import get_task, resolve_data_dir

HERE = Path(__file__).parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"


def setup(threads: int | None) -> None:
    """Use `threads` CPU threads (None: torch's default) and keep tokenizers single-process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        torch.set_num_threads(threads)


# --- speed building blocks ---------------------------------------------------------------------

def real_batches(backbone: Backbone, steps: int, batch: int) -> list:
    """Mixed SST-2 / RTE training batches (task ids 0 and 1), tokenised once."""
    data_dir = resolve_data_dir(None)
    items = []
    for task_id, name in enumerate(("sst2", "rte")):
        rows = get_task(name).load(data_dir, "train", 42)[: steps * batch]
        items.append(encode(rows, backbone.tokenizer, False, 128, task_id))
    mixed = [it for pair in zip(*items) for it in pair]
    pad = backbone.tokenizer.pad_token_id
    return [collate(mixed[i * batch:(i + 1) * batch], pad, False) for i in range(steps)]


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Throughput of n x n matrix products in this process (GFLOP/s)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def step_flops(backbone: Backbone, batches: list, length: int, teacher: bool) -> float:
    """Approximate FLOPs of one training step: 2 forwards (2 x params x tokens each), 3 with a teacher."""
    # the LM head runs on the label positions only (and may be a bf16 copy of the tied embeddings)
    skip = {id(backbone.embeddings), id(backbone.lm_head.weight)}
    params = sum(p.numel() for p in backbone.model.parameters() if id(p) not in skip)
    tokens = sum(b.input_ids.numel() + length * len(b) for b in batches) / len(batches)
    forward = 2 * params * tokens
    return forward * (3 if teacher else 2)


class MptuneStep:
    """One mptune training step: Backbone.forward + L_PLM (+ distillation with a teacher) + AdamW."""

    def __init__(self, backbone: Backbone, module: torch.nn.Module, teacher: SoftPrompt | None = None):
        self.backbone, self.module, self.teacher = backbone, module, teacher
        self.opt = torch.optim.AdamW(module.parameters(), lr=0.3)

    def __call__(self, batch) -> None:
        if self.teacher is not None:
            with torch.no_grad():
                t = self.backbone.forward(self.teacher(batch.task_ids), batch)
        out = self.backbone.forward(self.module(batch.task_ids), batch)
        loss = plm_loss(out.logits, out.targets)
        if self.teacher is not None:
            loss = loss + 1.0 * (distill_kl(out.logits, t.logits, 2.0) + hidden_mse(out.hidden, t.hidden))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def time_steps(step, batch, warmup: int, timed: int) -> list[float]:
    """Seconds of `timed` calls of step(batch) after `warmup` untimed ones."""
    for _ in range(warmup):
        step(batch)
    seconds = []
    for _ in range(timed):
        start = time.perf_counter()
        step(batch)
        seconds.append(time.perf_counter() - start)
    return seconds


# --- results -----------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summary(values: Sequence[float]) -> dict:
    """{'mean', 'std', 'n'} of a list of scores, rounded for the JSON files."""
    mean, std = mean_std(values)
    return {"mean": round(mean, 2), "std": round(std, 2), "n": len(values)}


def fmt(stats: dict | None, digits: int = 1) -> str:
    """'mean ± std' of a `summary` dict ('mean' alone for one seed, '—' when missing)."""
    if not stats or not stats.get("n"):
        return "—"
    if stats["n"] == 1:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: Path, data) -> None:
    """Write JSON atomically (a kill never leaves half a file), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(path, data)


def stem_file(stem: Path, suffix: str) -> Path:
    """stem + suffix: 'sources-lr0.3' + '.json' (Path.with_suffix would replace the '.3')."""
    return stem.parent / f"{stem.name}{suffix}"


def write_outputs(stem: Path, data: dict, markdown: str, fig=None) -> str:
    """stem.json (atomically), stem.md and, given a figure, stem.png; returns the markdown."""
    write_json(stem_file(stem, ".json"), data)
    stem_file(stem, ".md").write_text(markdown)
    if fig is not None:
        save_figure(fig, stem_file(stem, ".png"))
    return markdown


def copy_unit(source: Path, folder: Path, leave: tuple[str, ...] = ()) -> None:
    """Copy a finished unit folder in one rename (a killed copy leaves no half-finished unit), over what an
    unfinished unit left in `folder`; runs are bitwise reproducible from their settings, so the copy is what
    retraining would give. leave: file names not copied (e.g. the scores, for a unit scored again here)."""
    tmp = folder.with_name(folder.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".lock", *leave))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def bar_plot(ax, groups: Sequence[str], series: dict[str, Sequence[dict | None]], ylabel: str, title: str) -> None:
    """Grouped bars with error bars on a matplotlib axis: series name -> one `summary` per group."""
    width = 0.8 / max(1, len(series))
    for i, (name, stats) in enumerate(series.items()):
        means = [s["mean"] if s and s.get("n") else 0.0 for s in stats]
        errs = [s["std"] if s and s.get("n") else 0.0 for s in stats]
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def figure(panels: int, width: float = 5.0, height: float = 4.0):
    """A figure with `panels` axes side by side (matplotlib without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def duration(seconds: float) -> str:
    """'1 h 05 min', '12 min', '40 s'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 120:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds)} s"


# --- budgets -----------------------------------------------------------------------------------

QUICK = {"teach.steps": "2", "distill.steps": "2", "adapt.steps": "2", "teach.batch_size": "4",
         "distill.batch_size": "4", "adapt.batch_size": "4", "data.eval_examples": "8"}
"""Smoke-test budget (--quick): 2 steps of 4 per stage, 8 test examples per task."""

PAPER = {k: v for k, v in presets.PAPER.items() if k.split(".")[0] not in ("sources", "targets", "compare")}
"""The `--full` budget for GPU users (model from the hub): `mptune --preset paper` without its tasks and
methods, which each script chooses. See PAPER_NOTES for what is the paper's."""
PAPER_SOURCES = presets.PAPER_SOURCES
PAPER_NOTES = presets.PAPER_NOTES


def config_overrides(quick: bool, full: bool, sets: Sequence[str]) -> dict[str, str]:
    """Budget overrides for RunConfig: --quick or --full, then every --set KEY=VALUE."""
    out = dict(PAPER if full else QUICK if quick else {})
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--set expects KEY=VALUE (e.g. teach.steps=50), got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parser(doc: str):
    """An argument parser described by the script's first docstring line, with --threads."""
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    out.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return out


def add_run_arguments(parser, name: str, report: str) -> None:
    """--runs, --name, --quick, --set and --report-only of a dev-split study (sources.py, transfer.py);
    `report` says what --report-only writes."""
    parser.add_argument("--runs", help=f"run directory root (default: benchmarks/runs/{name}[-quick])")
    parser.add_argument("--name", default=name, help="results file stem")
    parser.add_argument("--quick", action="store_true", help="smoke-test budget; results under the runs dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any RunConfig setting")
    parser.add_argument("--report-only", action="store_true", help=f"write the results of {report}")


def run_paths(args, name: str) -> tuple[Path, Path]:
    """(run directory root, results stem) of `add_run_arguments`' options: with --quick both under
    benchmarks/runs/NAME-quick, never into results/."""
    root = Path(args.runs) if args.runs else RUNS / (f"{name}-quick" if args.quick else name)
    return root, (root / "results" if args.quick else RESULTS) / args.name


def add_budget_arguments(parser) -> None:
    """The options quality.py and ablations.py share."""
    parser.add_argument("--seeds", default="0,1,2", help="run seeds (comma-separated)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test budget (2 steps of 4 per stage, 8 test examples); "
                             "results go under the runs dir")
    parser.add_argument("--full", action="store_true",
                        help="the paper's budget on T5-Base (needs the hub and a GPU); prints the settings first")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any RunConfig setting, e.g. --set adapt.steps=80 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, then stop")
    parser.add_argument("--report-only", action="store_true",
                        help="write the results (JSON, markdown, PNG) of the units finished so far; train nothing")


def print_budget(title: str, cfg, full: bool) -> list[str]:
    """Print (and return) the budget lines every quality/ablation output states."""
    lines = [f"model {cfg.model.name} ({cfg.model.precision}), prompt length {cfg.prompt.length}, "
             f"rank {cfg.prompt.rank}",
             f"sources {', '.join(cfg.sources)}",
             f"teach {cfg.teach.steps} steps x {cfg.teach.batch_size}, distill {cfg.distill.steps} x "
             f"{cfg.distill.batch_size} (lambda {cfg.loss.lam}, T {cfg.loss.temperature}, logits {cfg.loss.logits}, "
             f"hidden {cfg.loss.hidden}), adapt {cfg.adapt.steps} x {cfg.adapt.batch_size}; lr {cfg.adapt.lr}, "
             f"u/v lr {cfg.adapt.factor_lr}",
             f"scored on {cfg.data.eval_examples or 'all'} {cfg.eval_split} examples per task (seeded sample), "
             f"rank classification"]
    print(f"== {title}")
    for line in lines:
        print("   " + line)
    if full:
        print("   --full settings:")
        for note in PAPER_NOTES:
            print("     - " + note)
    return lines


# --- time estimates ----------------------------------------------------------------------------

TRAIN_TOKENS_PER_S = {"teach": 630.0, "adapt": 600.0, "distill": 370.0}
"""Training tokens/s (prompt + input + label) per stage at bf16 on 2 idle cores: README's `mptune run`
rates (9.0, 7.7, 5.3 examples/s) times the mean tokens of its tasks. Distillation adds a teacher forward."""
EVAL_TOKENS_PER_S = 1300.0
"""Scored tokens/s (eval_examples_per_s of finished units times their tokens, on the shared machine)."""
PEFT_SLOWDOWN = 1.63
"""PEFT's MPT step over mptune's at bf16 (results/speed.md)."""
TASK_SIZES = {"sst2": (37, 872), "qnli": (66, 5463), "qqp": (48, 1000), "mnli": (57, 1000), "rte": (78, 139),
              "mrpc": (72, 204), "cola": (22, 522), "stsb": (55, 750), "boolq": (115, 1635), "cb": (92, 28)}
"""Mean input + label tokens (SmolLM2 tokenizer, inputs cut at 128) and test-split size of each task."""


def task_tokens(name: str) -> int:
    return TASK_SIZES.get(name.split("@")[0], (70, 1000))[0]


def estimate_train(steps: int, batch: int, stage: str, length: int, tasks: Sequence[str], peft: bool = False) -> float:
    """Seconds of one training unit on `tasks` (a rough model: time proportional to tokens)."""
    tokens = length + sum(task_tokens(t) for t in tasks) / len(tasks)
    return steps * batch * tokens / TRAIN_TOKENS_PER_S[stage] * (PEFT_SLOWDOWN if peft else 1.0)


def estimate_eval(cfg, tasks: Sequence[str], cap: int | None = None) -> float:
    """Seconds to score each of `tasks` on its test sample (multi-token label sets run once per choice)."""
    seconds = 0.0
    for name in tasks:
        task = get_task(name)
        size = TASK_SIZES.get(name.split("@")[0], (70, 1000))[1]
        n = min(x for x in (cfg.data.eval_examples or size, size, cap or size))
        per = len(task.choices) if task.regression else 1
        seconds += n * per * (cfg.prompt.length + task_tokens(name)) / EVAL_TOKENS_PER_S
    return seconds
