"""`mptune report RUN_DIR`: learning curves, the method comparison and a summary of one run.

Reads what the stages wrote (config.yaml, every unit's log.jsonl and metrics.json, results.json)
and writes RUN_DIR/report/:

    teach.png     training loss of each teacher, per step
    distill.png   the distillation terms ce (L_PLM), kl (L_logits) and mse (L_hidden), per step
    adapt.png     training loss of each method, one panel per target
    results.png   PT / SPoT / MPT scores per target (results.json, else the finished adapt units'
                  mean over their seeds)
    report.md     the plots, the results table (before results.json: the table and intervals of
                  the seeds finished so far), time, throughput, parameters and scores of every
                  unit, and what is missing

Decisions
- Read-only on the run: only report/ is written and the run directory is not locked, so a report
  can be made while the run trains; a unit in progress shows its steps so far.
- config.yaml is read as plain YAML, not validated into a RunConfig, so runs made by other
  versions of mptune still report; what the report uses of it is checked (`read_config`: sources
  and targets lists of task names, sections mappings, compare.methods and compare.seeds lists), so
  a scalar where a list belongs is an error naming the file, never read character by character.
- Every file is read through `mptune.files` / `rundir` (a damaged one is one error naming it) and
  every file of report/ is written atomically.
- A unit whose log.jsonl misses steps (a hole) says so in its status and in the missing list.
- Curves are drawn raw (thin, pale) under a trailing moving average: one step of 8 examples is
  noisy. Plots with no data are not drawn, and report.md says why.
- matplotlib is used through `Figure` objects (Agg canvas), never pyplot: no global backend, no
  window, nothing left open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mptune.config import load_yaml, missing_sections, upgrade
from mptune.errors import MptuneError
from mptune.files import atomic_write, read_text, read_yaml, type_word, write_text
from mptune.logs import read_log, steps_missing
from mptune.results import table_so_far
from mptune.rundir import CONFIG_FILE, LOG_FILE, RESULTS_JSON, RESULTS_MD, STAGES, RunDir, UnitInfo, read_results

REPORT_DIR = "report"
METHOD_COLORS = {"pt": "tab:blue", "spot": "tab:orange", "spot-fixed": "tab:brown", "mpt": "tab:green"}
METHOD_NAMES = {"pt": "PT", "spot": "SPoT", "spot-fixed": "SPoT-fixed", "mpt": "MPT"}
TERM_COLORS = {"ce": "tab:blue", "kl": "tab:red", "mse": "tab:purple"}


@dataclass
class Unit:
    """One unit of work of the run, as far as it got."""

    stage: str  # teach, distill or adapt
    name: str  # the source task, 'distill', or METHOD/TARGET
    folder: Path
    steps: int  # the steps its stage is configured for
    log: list[dict]
    metrics: dict | None

    @property
    def label(self) -> str:
        return self.stage if self.stage == self.name else f"{self.stage}/{self.name}"

    @property
    def status(self) -> str:
        holes = steps_missing(self.log)
        hole = f"; log.jsonl misses steps {_ranges(holes)}" if holes else ""
        if self.metrics is not None:
            return ("imported" if "imported_from" in self.metrics else "done") + hole
        if self.log:
            return f"in progress ({self.log[-1]['step']} of {self.steps} steps{hole})"
        return "missing"


def _ranges(steps: list[int]) -> str:
    """'3-5, 9' for [3, 4, 5, 9]."""
    out, start = [], None
    for i, s in enumerate(steps):
        start = s if start is None else start
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            out.append(f"{start}-{s}" if s != start else str(s))
            start = None
    return ", ".join(out)


# --- reading the run ---------------------------------------------------------------------------

def read_config(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise MptuneError(f"run directory {run_dir} does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise MptuneError(f"{run_dir} is not an mptune run directory: it has no config.yaml")
    what = "an mptune run config (a mapping with sources and targets, lists of task names)"
    config = read_yaml(path, what)
    try:
        config = upgrade(config)  # the settings of earlier versions under today's names
    except MptuneError:
        pass
    for key in ("sources", "targets"):
        names = config.get(key)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise MptuneError(f"{path}: {key} is {_shown(names)}; expected {what}")
    for key, value in config.items():
        if key in (*STAGES, "model", "data", "prompt", "loss", "compare") and not isinstance(value, dict):
            raise MptuneError(f"{path}: {key} is {_shown(value)}, not a mapping; expected {what}")
    if lacking := missing_sections(config):
        raise MptuneError(f"{path}: has no section {', '.join(lacking)} (cut short or edited); expected {what}")
    compare = config.get("compare", {})
    for key, item in (("methods", str), ("seeds", int)):
        if key in compare and not (isinstance(compare[key], list) and all(isinstance(v, item) for v in compare[key])):
            raise MptuneError(f"{path}: compare.{key} is {_shown(compare[key])}; expected a list")
    return config


def _shown(value) -> str:
    return "missing" if value is None else f"{type_word(value)} ({value!r})"


def read_unit(info: UnitInfo, steps: int) -> Unit:
    folder = info.folder
    log = read_log(folder / LOG_FILE) if (folder / LOG_FILE).exists() else []
    return Unit(info.stage, info.name, folder, steps, log, RunDir.done(folder))


def run_units(run_dir: Path, config: dict) -> list[Unit]:
    """Every unit the run's config asks for, in pipeline order."""
    target = config.get("compare", {})
    methods, joint = target.get("methods", ["pt", "spot", "mpt"]), target.get("joint", False)
    steps = {stage: config.get(stage, {}).get("steps", 0) for stage in STAGES}
    run = RunDir(run_dir, target.get("seeds", []))
    infos = run.units(config["sources"], config["targets"], methods, joint)
    return [read_unit(info, steps[info.stage]) for info in infos]


def primary_metric(target: str, scores: dict) -> str:
    """The task's metric (first of its scores when the task is unknown here, e.g. a custom task)."""
    from mptune.tasks import get_task

    try:
        return get_task(target).metric
    except MptuneError:
        return next(iter(scores))


def comparison(units: list[Unit], results: dict | None) -> dict[str, dict[str, float]]:
    """scores[target][method] of the finished adapt units, the mean over the seeds finished of each
    (results.json's table when present)."""
    if results is not None:
        return {t: {m: v for m, v in row.items() if m not in ("metric", "std")}
                for t, row in results["targets"].items()}
    found: dict[str, dict[str, list[float]]] = {}
    for unit in units:
        if unit.stage != "adapt" or unit.metrics is None or "scores" not in unit.metrics:
            continue
        method = "mpt" if unit.name.startswith("mpt-joint") else unit.name.split("/")[0]
        for target, values in unit.metrics["scores"].items():
            found.setdefault(target, {}).setdefault(method, []).append(values[primary_metric(target, values)])
    return {t: {m: sum(v) / len(v) for m, v in row.items()} for t, row in found.items()}


def seeds_so_far(run_dir: Path) -> str | None:
    """The results table and intervals of the compare.seeds whose every adapt unit is finished
    (`results.table_so_far`), for a run with no results.json yet; None before a seed is done, or
    when config.yaml does not validate under this version (the unit means are shown instead)."""
    try:
        cfg = load_yaml(run_dir / CONFIG_FILE)
        found = table_so_far(cfg, RunDir(run_dir, cfg.compare.seeds))
    except MptuneError:
        return None
    if found is None:
        return None
    table, markdown = found
    planned = len(cfg.compare.seeds) or 1
    return (f"The seeds finished so far ({len(table['seeds']) or 1} of {planned}; no results.json yet):\n\n"
            + markdown.rstrip())


# --- plots -------------------------------------------------------------------------------------

def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (shorter windows for the first steps)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def draw_curve(ax, log: list[dict], key: str, label: str, color=None) -> None:
    steps, values = [r["step"] for r in log], [r[key] for r in log]
    window = max(1, min(25, len(values) // 10))
    line, = ax.plot(steps, values, linewidth=0.6, alpha=0.3, color=color)
    ax.plot(steps, smooth(values, window), linewidth=1.8, color=line.get_color(), label=label)


def new_figure(panels: int = 1, width: float = 6.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels if panels > 1 else width, 4.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    return fig, axes


def save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def plot_teach(units: list[Unit], path: Path) -> bool:
    logged = [u for u in units if u.stage == "teach" and u.log]
    if not logged:
        return False
    fig, (ax,) = new_figure()
    for unit in logged:
        draw_curve(ax, unit.log, "loss", unit.name)
    ax.set(title="teach: training loss per source task", ylabel="loss (L_PLM)")
    ax.legend()
    save_figure(fig, path)
    return True


def plot_distill(units: list[Unit], path: Path) -> bool:
    unit = next((u for u in units if u.stage == "distill" and u.log), None)
    if unit is None:
        return False
    fig, (ax,) = new_figure()
    names = {"ce": "ce (L_PLM)", "kl": "kl (L_logits)", "mse": "mse (L_hidden)"}
    for key, label in names.items():
        if key in unit.log[0]:
            draw_curve(ax, unit.log, key, label, TERM_COLORS[key])
    ax.set(title="distill: loss terms of the multitask student", ylabel="loss term")
    ax.legend()
    save_figure(fig, path)
    return True


def plot_adapt(units: list[Unit], targets: list[str], path: Path) -> bool:
    logged = [u for u in units if u.stage == "adapt" and u.log]
    if not logged:
        return False
    joint = any(u.name.startswith("mpt-joint") for u in logged)
    targets = [t for t in targets if joint or any(u.name.rsplit("/", 1)[1] == t for u in logged)]  # no empty panels
    fig, axes = new_figure(len(targets), width=5.0)
    for ax, target in zip(axes, targets):
        labelled = set()  # with compare.seeds, one legend entry per method
        for unit in logged:
            method = unit.name.split("/")[0]
            if method != "mpt-joint" and unit.name.rsplit("/", 1)[1] != target:
                continue
            label = "MPT (joint, all targets)" if method == "mpt-joint" else METHOD_NAMES.get(method, method)
            draw_curve(ax, unit.log, "loss", None if label in labelled else label,
                       METHOD_COLORS.get(method.removesuffix("-joint")))
            labelled.add(label)
        ax.set(title=f"adapt: {target}", ylabel="loss (L_PLM)")
        if ax.has_data():
            ax.legend()
    save_figure(fig, path)
    return True


def plot_results(scores: dict[str, dict[str, float]], methods: list[str], path: Path) -> bool:
    if not scores:
        return False
    import numpy as np

    groups = list(scores)
    fig, (ax,) = new_figure(width=max(5.0, 1.8 * len(groups) + 2))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs = [g + (i - (len(methods) - 1) / 2) * width for g in np.arange(len(groups))]
        values = [scores[g].get(method, float("nan")) for g in groups]
        bars = ax.bar(xs, values, width, label=METHOD_NAMES.get(method, method), color=METHOD_COLORS.get(method))
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlabel("target")
    ax.set(title="target tasks: score per method", ylabel="score (task metric)")
    ax.set_ylim(0, 115)
    ax.grid(alpha=0.3, axis="y")
    ax.grid(False, axis="x")
    ax.legend(loc="upper center", ncols=len(methods))
    save_figure(fig, path)
    return True


# --- report.md ---------------------------------------------------------------------------------

def unit_table(units: list[Unit]) -> list[str]:
    lines = ["| unit | status | steps logged | train s | train examples/s | eval examples/s | "
             "trainable parameters | scores |", "|---|---|---|---|---|---|---|---|"]
    for u in units:
        m = u.metrics or {}
        scores = "; ".join(f"{task} " + ", ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.1f}"
                                                 for k, v in values.items())  # counts (empty_generations) as ints
                           for task, values in m.get("scores", {}).items())
        cells = [u.label, u.status,
                 str(len(u.log)), m.get("train_seconds", ""), m.get("train_examples_per_s", ""),
                 m.get("eval_examples_per_s", ""), f"{m['parameters']:,}" if "parameters" in m else "", scores]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def stage_table(units: list[Unit], results: dict | None) -> list[str]:
    seconds = (results or {}).get("seconds", {})
    lines = ["| stage | units finished | wall s (results.json) | train s (sum over units) | "
             "mean train examples/s |", "|---|---|---|---|---|"]
    for stage in ("teach", "distill", "adapt"):
        ours = [u for u in units if u.stage == stage]
        if not ours:
            continue
        trained = [u.metrics for u in ours if u.metrics and "train_seconds" in u.metrics]
        train_s = round(sum(m["train_seconds"] for m in trained), 1) if trained else ""
        rate = round(sum(m["train_examples_per_s"] for m in trained) / len(trained), 2) if trained else ""
        finished = sum(u.metrics is not None for u in ours)
        lines.append(f"| {stage} | {finished} of {len(ours)} | {seconds.get(stage, '')} | {train_s} | {rate} |")
    if "total" in seconds:
        lines.append(f"| **total** | | **{seconds['total']}** | | |")
    return lines


def score_table(scores: dict[str, dict[str, float]], methods: list[str]) -> list[str]:
    lines = ["| target | " + " | ".join(m.upper() for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for target, row in scores.items():
        lines.append(f"| {target} | " + " | ".join(f"{row[m]:.1f}" if m in row else "-" for m in methods) + " |")
    return lines


def missing(run_dir: Path, units: list[Unit], results: dict | None) -> list[str]:
    notes = [f"- {u.label}: {u.status}" for u in units if u.metrics is None or steps_missing(u.log)]
    if results is None:
        command = f"mptune run --config {run_dir / 'config.yaml'} --out_dir {run_dir}"
        notes.append(f"- results.json: not written yet; `{command}` writes it (finished units are reused)")
    return notes


def summary(run_dir: Path, config: dict, methods: list[str]) -> list[str]:
    """The run's setting in four bullet points."""
    section = lambda name: config.get(name) or {}  # noqa: E731
    joint = " (MPT joint over all targets)" if section("compare").get("joint") else ""
    steps = ", ".join(f"{stage} {section(stage).get('steps', '?')}" for stage in ("teach", "distill", "adapt"))
    return [f"- run directory: `{run_dir}`",
            f"- model: `{section('model').get('name', '?')}`, prompt length {section('prompt').get('length', '?')}",
            f"- sources: {', '.join(config['sources'])}; targets: {', '.join(config['targets'])}; "
            f"methods: {', '.join(methods)}{joint}",
            f"- steps: {steps}"]


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report/ (PNG plots and report.md) for a finished or partial run; returns report.md."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    units = run_units(run_dir, config)
    results_path = run_dir / RESULTS_JSON
    results = read_results(results_path) if results_path.exists() else None
    table_md = (read_text(run_dir / RESULTS_MD, "the run's results table (markdown)").rstrip()
                if results is not None and (run_dir / RESULTS_MD).exists() else None)  # read all before writing
    methods = config.get("compare", {}).get("methods", ["pt", "spot", "mpt"])
    scores = comparison(units, results)
    bars = dict(scores, average=results["average"]) if results and "average" in results else scores

    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    plots = {  # file: (section title, drawn?)
        "teach": ("Teachers", plot_teach(units, out / "teach.png")),
        "distill": ("Distillation", plot_distill(units, out / "distill.png")),
        "adapt": ("Target adaptation", plot_adapt(units, config["targets"], out / "adapt.png")),
        "results": ("Comparison", plot_results(bars, methods, out / "results.png")),
    }
    for key, (_, drawn) in plots.items():
        if not drawn:
            (out / f"{key}.png").unlink(missing_ok=True)  # a plot left from an earlier report of this directory
    lines = [f"# mptune run report: {run_dir.name}", "", *summary(run_dir, config, methods), ""]
    gaps = missing(run_dir, units, results)
    lines += ["## Status", ""]
    lines += ["Missing or unfinished:", "", *gaps, ""] if gaps else ["Every unit is finished.", ""]
    lines += ["## Results", ""]
    if table_md is not None:
        lines += [table_md, ""]
    elif (so_far := seeds_so_far(run_dir)) is not None:
        lines += [so_far, ""]
    elif scores:
        lines += ["From the finished adapt units, the mean over each one's finished seeds (no results.json yet):",
                  ""] + score_table(scores, methods) + [""]
    else:
        lines += ["No target is finished yet.", ""]
    for key, (title, drawn) in plots.items():
        lines += [f"## {title}", "", f"![{key}]({key}.png)" if drawn else "Nothing to plot yet.", ""]
    lines += ["## Time and throughput", ""] + stage_table(units, results) + [""]
    lines += ["## Units", "", "Trainable parameters are those of each unit's prompt module.", ""]
    lines += unit_table(units) + [""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
