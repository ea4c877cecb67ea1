"""The comparison table of a run: scores per target and method, with their spread over seeds, the
trainable parameters of each method, and MPT - PT, MPT - SPoT with paired-bootstrap intervals
(results.json and results.md of `mptune run`)."""

from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from typing import Callable, Sequence

from mptune.checkpoint import PROMPT_FILE, load_prompt
from mptune.config import RunConfig, with_overrides
from mptune.errors import MptuneError
from mptune.metrics import score
from mptune.prompts import mpt_target_parameters
from mptune.rundir import RunDir
from mptune.stats import Paired, Seed, paired_bootstrap
from mptune.tasks import get_task


def aggregate(runs: dict[int, dict], target: str) -> dict:
    """Metrics of one method on one target over seeds: mean scores, their std and each seed's metrics."""
    scores = [r["scores"][target] for r in runs.values()]
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    first = next(iter(runs.values()))
    return {"scores": {target: {k: statistics.mean(s[k] for s in scores) for k in scores[0]}},
            "std": {target: {k: spread([s[k] for s in scores]) for k in scores[0]}},
            "train_examples_per_s": statistics.mean(r["train_examples_per_s"] for r in runs.values()),
            "parameters": first["parameters"], "seeds": runs}


def over_seeds(per_seed: dict[int, dict[str, dict[str, dict]]], targets: list[str]) -> dict[str, dict[str, dict]]:
    """per_seed[seed][method][target] = metrics -> results[method][target] = `aggregate` over the seeds."""
    first = next(iter(per_seed.values()))
    return {m: {t: aggregate({s: per_seed[s][m][t] for s in per_seed}, t) for t in targets} for m in first}


def joint_per_target(joint: dict, targets: list[str]) -> dict[str, dict]:
    """MPT*'s one unit's metrics as one entry per target, each with that target's scores alone."""
    return {t: {**joint, "scores": {t: joint["scores"][t]}} for t in targets}


def seed_metrics(cfg: RunConfig, run: RunDir, seed: int | None) -> dict[str, dict[str, dict]] | None:
    """results[method][target] = metrics of one seed's adapt units as their metrics.json hold them, or
    None while any of them is unfinished (seed None: a run without compare.seeds)."""
    out = {}
    for method in cfg.compare.methods:
        if method == "mpt" and cfg.compare.joint:
            if (joint := RunDir.done(run.joint(seed))) is None:
                return None
            out[method] = joint_per_target(joint, cfg.targets)
            continue
        found = {t: RunDir.done(run.adapted(method, t, seed)) for t in cfg.targets}
        if any(m is None for m in found.values()):
            return None
        out[method] = found
    return out


def table_so_far(cfg: RunConfig, run: RunDir) -> tuple[dict, str] | None:
    """The results table (`results_table`, with `intervals`; a dict and its markdown) of the compare.seeds
    whose every adapt unit is finished, read from the units alone (no model), while the run still trains;
    None before the first seed is done. "seeds" lists the seeds it covers, "partial" is true while some
    are still missing.

    The seeds kept need not be a prefix: any seed whose units are all done counts, so a table never mixes
    a seed's finished targets with its unfinished ones. The backbone's width, for the parameter row,
    is read from a finished unit's prompt file."""
    seeds = list(cfg.compare.seeds) or [None]
    per_seed = {s: found for s in seeds if (found := seed_metrics(cfg, run, s)) is not None}
    if not per_seed:
        return None
    done = [s for s in per_seed if s is not None]
    part = with_overrides(cfg, {"compare.seeds": ",".join(map(str, done))}) if done else cfg
    results = over_seeds(per_seed, cfg.targets) if len(done) > 1 else next(iter(per_seed.values()))  # no std of one
    seed, method = next(iter(per_seed)), cfg.compare.methods[0]
    unit = run.joint(seed) if method == "mpt" and cfg.compare.joint else run.adapted(method, cfg.targets[0], seed)
    dim = load_prompt(unit / PROMPT_FILE)[0].dim
    table, markdown = results_table(part, results, dim)
    table["intervals"] = intervals(part, run)
    table["seeds"], table["partial"] = done, len(per_seed) < len(seeds)
    if table["intervals"]:
        markdown += "\n" + intervals_markdown(part, table["intervals"])
    return table, markdown


def results_table(cfg: RunConfig, results: dict[str, dict[str, dict]], backbone_dim: int) -> tuple[dict, str]:
    """Scores per target and method with trainable parameters, as a dict and a markdown table."""
    methods = [m for m in cfg.compare.methods if m in results]
    header = "| target | metric | " + " | ".join(m.upper() for m in methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    table: dict = {"targets": {}, "average": {}, "parameters": {}}
    for name in cfg.targets:
        metric = get_task(name).metric
        row = {m: results[m][name]["scores"][name][metric] for m in methods}
        std = {m: results[m][name]["std"][name][metric] for m in methods if "std" in results[m][name]}
        table["targets"][name] = {"metric": metric, **row, **({"std": std} if std else {})}
        cell = lambda m: f"{row[m]:.1f}" + (f" ± {std[m]:.1f}" if m in std else "")  # noqa: E731
        lines.append(f"| {name} | {metric} | " + " | ".join(cell(m) for m in methods) + " |")
    for m in methods:
        table["average"][m] = sum(table["targets"][t][m] for t in cfg.targets) / len(cfg.targets)
    spread = average_std(cfg, results, methods)
    if spread:
        table["average_std"] = spread
    cell = lambda m: f"**{table['average'][m]:.1f}**" + (f" ± {spread[m]:.1f}" if spread else "")  # noqa: E731
    lines.append("| **average** | | " + " | ".join(cell(m) for m in methods) + " |")
    l, r, tau = cfg.prompt.length, cfg.prompt.rank, len(cfg.targets)
    params = {"pt": l * backbone_dim, "spot": l * backbone_dim, "spot-fixed": l * backbone_dim,
              "mpt": (mpt_target_parameters(l, backbone_dim, tau, r) if cfg.compare.joint
                      else mpt_target_parameters(l, backbone_dim, 1, r))}
    table["parameters"] = {m: params[m] for m in methods}
    joint = f" (all {tau} targets, one shared P*)"
    lines.append("| trainable parameters | | " + " | ".join(
        f"{params[m]:,}" + (joint if m == "mpt" and cfg.compare.joint else " per target") for m in methods) + " |")
    return table, "\n".join(lines) + "\n"


def average_std(cfg: RunConfig, results: dict, methods: list[str]) -> dict[str, float]:
    """Std over compare.seeds of each method's target average ({} for a single-seed run)."""
    if len(cfg.compare.seeds) < 2:
        return {}
    out = {}
    for m in methods:
        metric = {t: get_task(t).metric for t in cfg.targets}
        per_seed = [statistics.mean(results[m][t]["seeds"][s]["scores"][t][metric[t]] for t in cfg.targets)
                    for s in cfg.compare.seeds]
        out[m] = statistics.stdev(per_seed)
    return out


def throughput(stage_results: dict) -> dict[str, float]:
    """Mean training examples/s of each stage (over the units it trained in this or earlier runs)."""
    units = {"teach": list(stage_results.get("teach", {}).values()),
             "distill": [stage_results["distill"]] if "distill" in stage_results else [],
             "adapt": [m for per in stage_results.get("adapt", {}).values() for m in per.values()]}
    units = {k: [u for u in v if "train_examples_per_s" in u] for k, v in units.items()}  # not imported ones
    return {k: round(sum(u["train_examples_per_s"] for u in v) / len(v), 2) for k, v in units.items() if v}


PAIRS = (("mpt", "pt"), ("mpt", "spot"), ("mpt", "spot-fixed"))
"""The differences a run reports with intervals: MPT - PT, MPT - SPoT and MPT - SPoT (fixed source)."""
REPLICATES = 1000
"""Bootstrap replicates of each interval."""


def intervals(cfg: RunConfig, run: RunDir, replicates: int = REPLICATES) -> dict:
    """MPT - PT and MPT - SPoT per target and on the average, with 95% paired-bootstrap intervals over
    the seeds and test examples (`mptune.stats`), from the units' predictions.json. A pair is left
    out when a method did not run or a unit has no predictions (made by an earlier version)."""
    return paired_intervals(cfg.compare.methods, cfg.targets, cfg.compare.seeds or [cfg.seed],
                            lambda m, t, s: unit_predictions(cfg, run, m, t, s), replicates)


def paired_intervals(methods: Sequence[str], targets: Sequence[str], seeds: Sequence[Seed],
                     fetch: Callable[[str, str, Seed], dict | None], replicates: int = REPLICATES,
                     pairs: Sequence[tuple[str, str]] = PAIRS) -> dict:
    """The `pairs` (a, b) among `methods`, as "a - b", per target and on the average, with 95% paired-bootstrap
    intervals; fetch(method, target, seed) -> that unit's {"predictions", "labels"} or None (the pair's target
    is left out). Every unit of a target must have scored the same examples."""
    out = {}
    for a, b in pairs:
        if a not in methods or b not in methods:
            continue
        paired = {}
        for target in targets:
            task = get_task(target)
            preds = {m: {s: fetch(m, target, s) for s in seeds} for m in (a, b)}
            if any(p is None for by_seed in preds.values() for p in by_seed.values()):
                continue
            labels = preds[a][seeds[0]]["labels"]
            if any(p["labels"] != labels for by_seed in preds.values() for p in by_seed.values()):
                raise MptuneError(f"the units of {target} to compare ({a}, {b}; seeds {', '.join(map(str, seeds))}) "
                                  "were scored on different examples: they cannot be paired")
            paired[target] = Paired({s: p["predictions"] for s, p in preds[a].items()},
                                    {s: p["predictions"] for s, p in preds[b].items()}, labels,
                                    lambda p, lab, task=task: score(task, p, lab)[task.metric])
        if not paired:
            continue
        out[f"{a} - {b}"] = {
            "targets": {t: paired_bootstrap([p], replicates) for t, p in paired.items()},
            "average": paired_bootstrap(list(paired.values()), replicates) if len(paired) == len(targets) else None}
    return out


SOURCE_FREE = ("pt",)
"""Methods whose target units use neither the teachers nor P*: a unit of one of them is the same in every
source run, so `pooled` pairs one run's with every source run's."""


def finished_seeds(cfg: RunConfig, run: RunDir) -> list[int]:
    """The compare.seeds whose every adapt unit is finished, in order."""
    return [s for s in cfg.compare.seeds if seed_metrics(cfg, run, s) is not None]


def pooled(runs: dict[int, tuple[RunConfig, RunDir]], replicates: int = REPLICATES) -> dict | None:
    """Scores and intervals over several source runs: source seed -> (settings, directory) of a run whose
    teachers and P* were trained with that seed, all with the same targets and evaluation examples.
    Each method's mean score per target and on the average over every (source run, adaptation seed), and
    MPT - PT (...) with 95% intervals from the two-level bootstrap (`mptune.stats`: the source runs, then
    their adaptation seeds, then the examples). A SOURCE_FREE method (PT) needs to run in one of them
    only. Only the adaptation seeds finished in every run count ("seeds"); None when there is none."""
    first = next(iter(runs.values()))[0]
    if any(c.targets != first.targets for c, _ in runs.values()):
        raise MptuneError("the source runs to pool must adapt the same targets")
    methods = [m for m in METHOD_LABELS if any(m in c.compare.methods for c, _ in runs.values())]
    home = {m: next((c, r) for c, r in runs.values() if m in c.compare.methods) for m in methods}
    missing = [f"{m} (source run {s})" for m in methods if m not in SOURCE_FREE
               for s, (c, _) in runs.items() if m not in c.compare.methods]
    if missing:
        raise MptuneError("every source run must adapt with the methods that use the sources; missing: "
                          + ", ".join(missing))
    done = set.intersection(*(set(finished_seeds(c, r)) for c, r in runs.values()))
    seeds = [s for s in first.compare.seeds if s in done]
    if not seeds:
        return None

    @functools.cache  # the scores and the intervals read the same predictions.json
    def fetch(method: str, target: str, seed: tuple[int, int]) -> dict | None:
        source, adapt_seed = seed
        cfg, run = runs[source] if method in runs[source][0].compare.methods else home[method]
        return unit_predictions(cfg, run, method, target, adapt_seed)

    keys = [(source, s) for source in runs for s in seeds]

    def unit_metric(method: str, target: str, seed: tuple[int, int]) -> float:
        task, found = get_task(target), fetch(method, target, seed)
        if found is None:
            raise MptuneError(f"the {method} unit of {target} (source run {seed[0]}, seed {seed[1]}) has no "
                              "predictions.json (made by an earlier version): it cannot be pooled")
        return score(task, found["predictions"], found["labels"])[task.metric]

    scores = {t: {m: statistics.mean(unit_metric(m, t, k) for k in keys) for m in methods} for t in first.targets}
    return {"source_seeds": list(runs), "seeds": seeds, "targets": scores,
            "average": {m: statistics.mean(scores[t][m] for t in first.targets) for m in methods},
            "intervals": paired_intervals(methods, first.targets, keys, fetch, replicates)}


def unit_predictions(cfg: RunConfig, run: RunDir, method: str, target: str, seed: int) -> dict | None:
    """{"predictions", "labels"} of one target's unit (MPT* keeps every target's in its one unit)."""
    joint = method == "mpt" and cfg.compare.joint
    folder = run.joint(seed) if joint else run.adapted(method, target, seed)
    found = RunDir.predictions(folder)
    return found.get(target) if found else None


def interval_cell(found: dict | None) -> str:
    """A difference and its interval as a table cell, '+1.2 [-0.3, +2.8]' ('n/a' for None)."""
    return f"{found['diff']:+.1f} [{found['low']:+.1f}, {found['high']:+.1f}]" if found else "n/a"


def intervals_markdown(cfg: RunConfig, found: dict) -> str:
    """The intervals as a markdown table: one row per difference, one column per target and the average."""
    if not found:
        return ""
    seeds = len(cfg.compare.seeds) or 1
    lines = [f"Differences in points, with 95% paired-bootstrap intervals over {seeds} seed(s) and the "
             f"{cfg.eval_split} examples ({REPLICATES} replicates; `mptune.stats`):", "",
             "| difference | " + " | ".join(cfg.targets) + " | average |", "|" + "---|" * (len(cfg.targets) + 2)]
    for name, rows in found.items():
        label = " - ".join(METHOD_LABELS[m] for m in name.split(" - "))
        lines.append(f"| {label} | " + " | ".join(interval_cell(rows["targets"].get(t)) for t in cfg.targets)
                     + f" | {interval_cell(rows['average'])} |")
    return "\n".join(lines) + "\n"


METHOD_LABELS = {"pt": "PT", "spot": "SPoT", "spot-fixed": "SPoT-fixed", "mpt": "MPT"}


def sources_table(cfg: RunConfig, run: RunDir, teach: dict, distill: dict | None) -> tuple[dict, str]:
    """Did the sources learn? Each teacher's and P* o u_k v_k^T's score on the source's evaluation
    split (None for an imported unit, which was not scored), beside a constant prediction of the
    split's most frequent label, the teacher minus that constant with a 95% paired-bootstrap interval
    over the examples (`above_majority`), and the dev score model selection kept (when it ran)."""
    rows, out = [], {}
    cell = lambda c: "—" if c is None else f"{c:.1f}"  # noqa: E731
    for name in cfg.sources:
        metric = get_task(name).metric
        found = RunDir.predictions(run.teacher(name))
        gap = above_majority(name, found)
        entry = {"metric": metric, "teacher": unit_score(teach[name], name),
                 "distilled": unit_score(distill, name), "majority": majority_score(name, found),
                 "above_majority": gap, "teacher_dev": teach[name].get("selected", {}).get("dev_score")}
        out[name] = entry
        interval = "—" if gap is None else interval_cell(gap)
        rows.append(f"| {name} | {metric} | {cell(entry['teacher'])} | {cell(entry['distilled'])} | "
                    f"{cell(entry['majority'])} | {interval} | {cell(entry['teacher_dev'])} |")
    scored = f"{cfg.data.eval_examples or 'all'} {cfg.eval_split} examples each"
    lines = [f"Sources ({scored}): the teachers, P* o u_k v_k^T after distillation, a constant prediction of the "
             "most frequent label, the teacher minus that constant (95% paired-bootstrap interval over the "
             "examples: a teacher has learnt its task beyond the label prior where the interval is above 0), "
             "and the teacher's selected dev score:", "",
             "| source | metric | teacher | P* o u_k v_k^T | majority label | teacher - majority | teacher (dev) |",
             "|---|---|---|---|---|---|---|", *rows]
    return out, "\n".join(lines) + "\n"


def above_majority(name: str, found: dict | None, replicates: int = REPLICATES) -> dict | None:
    """A unit's score on task `name` minus the score of always predicting the most frequent label of
    the same examples, {"diff", "low", "high"} with the 95% paired-bootstrap interval over the examples
    (`stats.paired_bootstrap`, one seed); None where `majority_score` is None."""
    if majority_score(name, found) is None:
        return None
    task = get_task(name)
    labels = found[name]["labels"]
    paired = Paired({0: found[name]["predictions"]}, {0: majority_prediction(labels)}, labels,
                    lambda p, y: score(task, p, y)[task.metric])
    return {k: round(v, 2) for k, v in paired_bootstrap([paired], replicates).items()}


def unit_score(metrics: dict | None, task: str) -> float | None:
    """A unit's score on one task's metric; None where the unit did not score it (an imported prompt)."""
    return ((metrics or {}).get("scores") or {}).get(task, {}).get(get_task(task).metric)


def majority_prediction(labels: list) -> list:
    """The most frequent of `labels` (ties: the first seen), once per label: a constant baseline."""
    return [Counter(labels).most_common(1)[0][0]] * len(labels)


def majority_score(name: str, found: dict | None) -> float | None:
    """The metric of always predicting the most frequent label of a unit's evaluation labels (None for
    generation tasks, for metrics undefined on a constant, and for units without predictions)."""
    task = get_task(name)
    if not found or name not in found or not task.is_classification:
        return None
    labels = found[name]["labels"]
    try:
        value = score(task, majority_prediction(labels), labels)[task.metric]
    except (MptuneError, ValueError, ZeroDivisionError):
        return None
    return None if math.isnan(value) else value
