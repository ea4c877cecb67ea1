"""Target-task quality: mptune's MPT, PT and SPoT against PEFT's MultitaskPromptTuning, same budget.

One frozen model (the embedded SmolLM2-135M-Instruct unless --full), real GLUE/SuperGLUE data,
the same prompt length, step budgets, batch sizes, learning rates, seeds, batches and test
examples for every method. Per seed:

- mptune runs through `mptune.stages` in benchmarks/runs/quality/seed{N}: `teach` (one teacher
  per source), `distill` (P*, u, v), then `adapt_one` per target for PT (from sampled vocabulary
  rows), SPoT (from the teacher that scores best on the target's DEV split) and MPT (from P* and
  the mean source u, v). Finished units are reused, so teach/distill are shared by every target
  of a seed, and a rerun resumes where it stopped.
- PEFT: its MultitaskPromptTuning trained on the same sources with its own loss (no distillation:
  PEFT has none) on the distill stage's batch stream, steps, batch size and optimizer, then one
  model per target from its AVERAGE_SOURCE_TASKS init with the adapt budget
  (`benchmarks/peft_mpt.py` says how, and how its prompt is scored).
- Scoring is identical for all methods: mptune's `evaluate_items` (rank classification) on the
  same seeded sample of the TEST split. Nothing is chosen by looking at test (SPoT picks its
  teacher on dev).

    python benchmarks/quality.py                      # targets rte, mrpc, cola, stsb, boolq, cb; seeds 0,1,2
    python benchmarks/quality.py --fewshot            # boolq@K, cb@K, rte@K for K = 4, 16, 32
    python benchmarks/quality.py --fewshot --methods pt,spot,mpt   # without PEFT (a quarter less time)
    python benchmarks/quality.py --mnli               # sources sst2, qnli, qqp, mnli (own run dirs)
    python benchmarks/quality.py --quick --seeds 0 --targets rte,cb@4   # smoke test, ~3 min
    python benchmarks/quality.py --full --dry-run     # the paper's budget on T5-Base (GPU, hub)

writes benchmarks/results/quality[_fewshot].{json,md,png} (with --quick: under the runs dir). The JSON
records every finished unit of its budget: a run on other seeds or targets adds to it, and the run
directories may be deleted once their units are in it.
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

from mptune import stages
from mptune.config import RunConfig, with_overrides
from mptune.errors import MptuneError
from mptune.models import load_backbone
from mptune.rundir import RunDir, open_run
from mptune.task_data import load_tasks, single
from mptune.tasks import get_task, resolve_data_dir

import common
import peft_mpt

METHODS = {"pt": "PT", "spot": "SPoT", "mpt": "MPT", "peft": "PEFT MPT"}
SOURCES = ["sst2", "qnli", "qqp"]
TARGETS = ["rte", "mrpc", "cola", "stsb", "boolq", "cb"]
FEWSHOT = ["boolq", "cb", "rte"]
PAPER_TARGETS = ["mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola", "multirc", "boolq", "wic", "wsc", "cb"]
PAPER_FEWSHOT = ["boolq", "cb", "scitail"]
SHOTS = [4, 16, 32]


def peft_source_file(cfg: RunConfig) -> Path:
    return peft_mpt.source_folder(cfg) / peft_mpt.WEIGHTS


# --- units -------------------------------------------------------------------------------------

def unit_folder(cfg: RunConfig, method: str, target: str) -> Path:
    run = RunDir(Path(cfg.out_dir))
    return run.root / "peft" / "adapt" / target if method == "peft" else run.adapted(method, target)


def run_target(cfg: RunConfig, backbone, target: str, methods: list[str]) -> None:
    """Every method on one target (finished units are skipped before any data is loaded)."""
    todo = [m for m in methods if RunDir.done(unit_folder(cfg, m, target)) is None]
    if not todo:
        return
    data = load_tasks(cfg, backbone, [target], cfg.eval_split)[0]
    for method in todo:
        if method == "peft":
            peft_mpt.peft_unit(backbone, cfg, unit_folder(cfg, method, target), [single(data)], peft_source_file(cfg))
        else:
            stages.adapt_one(cfg, backbone, method, data, cfg.seed)


SOURCE_UNITS = ("teach", "distill", "peft/source")
"""What --shared-sources trains once (with the first seed) and copies into every other seed's run."""


def share_sources(first: RunConfig, cfg: RunConfig) -> None:
    """Copy the first seed's finished source units (teachers, P*, PEFT source) into cfg's run."""
    for unit in SOURCE_UNITS:
        src, dst = Path(first.out_dir) / unit, Path(cfg.out_dir) / unit
        if src.exists() and not dst.exists():  # no peft/source when --methods leaves PEFT out
            shutil.copytree(src, dst)


def run_seed(cfg: RunConfig, backbone, targets: list[str], methods: list[str], on_target) -> None:
    run = open_run(cfg)
    run.save_config()  # units are written here without the stages
    stages.teach(cfg, backbone, run)
    stages.distill(cfg, backbone, run)
    source = peft_source_file(cfg).parent
    if "peft" in methods and run.done(source) is None:
        peft_mpt.peft_unit(backbone, cfg, source, load_tasks(cfg, backbone, cfg.sources, cfg.eval_split), None)
    for target in targets:
        run_target(cfg, backbone, target, methods)
        on_target()
    run.close()


def plan(cfgs: dict[int, RunConfig], targets: list[str], methods: list[str], full: bool) -> float:
    """Print the units still to run with a time estimate; returns the estimated seconds."""
    total, todo, done = 0.0, 0, 0
    for cfg in cfgs.values():
        run, l, sources = RunDir(Path(cfg.out_dir)), cfg.prompt.length, cfg.sources
        train = common.estimate_train
        units = [(run.teacher(s), train(cfg.teach.steps, cfg.teach.batch_size, "teach", l, [s])
                  + common.estimate_eval(cfg, [s])) for s in sources]
        units.append((run.distilled(), train(cfg.distill.steps, cfg.distill.batch_size, "distill", l, sources)
                      + common.estimate_eval(cfg, sources)))
        if "peft" in methods:
            units.append((peft_source_file(cfg).parent, train(cfg.distill.steps, cfg.distill.batch_size, "adapt", l,
                                                         sources, peft=True) + common.estimate_eval(cfg, sources)))
        for t in targets:
            for m in methods:
                probe = common.estimate_eval(cfg, [t] * len(sources), stages.SPOT_PROBE_EXAMPLES) if m == "spot" else 0
                units.append((unit_folder(cfg, m, t), probe + common.estimate_eval(cfg, [t]) + train(
                    cfg.adapt.steps, cfg.adapt.batch_size, "adapt", l, [t], peft=m == "peft")))
        for folder, seconds in units:
            if RunDir.done(folder) is None:
                total, todo = total + seconds, todo + 1
            else:
                done += 1
    print(f"   units: {done} done, {todo} to run ({len(cfgs)} seeds x ({len(sources)} teachers"
          f" + distill{' + PEFT source' if 'peft' in methods else ''} + {len(targets)} targets"
          f" x {len(methods)} methods))")
    print("   estimated time: " + ("not estimated for --full (a GPU run)" if full else
                                     f"{common.duration(total)} (from 2-core CPU rates at bf16)"))
    return total


# --- results -----------------------------------------------------------------------------------

def collect(cfgs: dict[int, RunConfig], targets: list[str], methods: list[str]) -> dict:
    """Scores of every finished unit: runs[seed][target][method] = {score, metric, parameters, ...}."""
    runs: dict = {}
    for seed, cfg in cfgs.items():
        for t in targets:
            metric = get_task(t).metric
            for m in methods:
                metrics = RunDir.done(unit_folder(cfg, m, t))
                if metrics is not None:
                    row = {"score": round(metrics["scores"][t][metric], 2), "metric": metric,
                           "parameters": metrics["parameters"], "train_seconds": metrics["train_seconds"]}
                    if "spot_source" in metrics:
                        row["spot_source"] = metrics["spot_source"]
                    runs.setdefault(str(seed), {}).setdefault(t, {})[m] = row
    return runs


def averages(runs: dict, methods: list[str], subset: list[str]) -> dict:
    """Per method: mean ± std over seeds of the per-seed average over `subset` (seeds with every target done)."""
    out = {}
    for m in methods:
        per_seed = [sum(r[t][m]["score"] for t in subset) / len(subset) for r in runs.values()
                    if all(m in r.get(t, {}) for t in subset)]
        out[m] = common.summary(per_seed)
    return out


def merged(stem: Path, budget: list[str], runs: dict) -> dict:
    """The units recorded in stem.json under the same budget, updated with `runs` (the run dirs).

    The results JSON is the record of every finished unit: an invocation on some seeds or targets
    keeps what earlier ones wrote, and a run directory may be deleted once its units are reported.
    A different budget starts a new record.
    """
    old = common.read_json(common.stem_file(stem, ".json"), {})
    out = copy.deepcopy(old.get("runs", {})) if old.get("budget") == budget else {}
    for seed, by_target in runs.items():
        for target, by_method in by_target.items():
            out.setdefault(seed, {}).setdefault(target, {}).update(by_method)
    return out


def in_order(wanted: list[str], present, canonical: list[str]) -> list[str]:
    """`wanted` plus the other names in `present`, in the order of `canonical` (unknown names last)."""
    names = set(wanted) | set(present)
    return sorted(names, key=lambda n: canonical.index(n) if n in canonical else len(canonical))


def report(cfgs: dict[int, RunConfig], targets: list[str], methods: list[str], budget: list[str], stem: Path) -> str:
    """Write stem.json, stem.md and stem.png from every unit finished under this budget (see `merged`)."""
    runs = merged(stem, budget, collect(cfgs, targets, methods))
    seeds = sorted({*runs, *map(str, cfgs)}, key=int)
    targets = in_order(targets, {t for r in runs.values() for t in r}, next(iter(cfgs.values())).targets)
    methods = in_order(methods, {m for r in runs.values() for by in r.values() for m in by}, list(METHODS))
    labels = {m: METHODS[m] for m in methods}
    table = {t: {m: common.summary([r[t][m]["score"] for r in runs.values() if m in r.get(t, {})])
                 for m in methods} for t in targets}
    groups = {"average": targets}
    shots = sorted({t.partition("@")[2] for t in targets if "@" in t}, key=int)
    if len(shots) > 1:
        groups.update({f"average k={k}": [t for t in targets if t.endswith(f"@{k}")] for k in shots})
    avg = {name: averages(runs, methods, subset) for name, subset in groups.items()}
    params = {m: next((r[t][m]["parameters"] for r in runs.values() for t in r if m in r[t]), None) for m in methods}
    data = {"budget": budget, "seeds": seeds, "targets": targets, "methods": labels,
            "runs": runs, "summary": table, "averages": avg, "parameters_per_target": params}
    rows = [[t, get_task(t).metric, *(common.fmt(table[t][m]) for m in methods)] for t in targets]
    rows += [[f"**{name}**", "", *(f"**{common.fmt(avg[name][m])}**" for m in methods)] for name in groups]
    rows.append(["trainable parameters per target", "", *(f"{params[m]:,}" if params[m] else "—" for m in methods)])
    markdown = (common.md_table(["target", "metric", *labels.values()], rows)
                + f"\nMean ± std over seeds {', '.join(seeds)} (test split). Budget: "
                + "; ".join(budget) + ".\n")
    fig, (ax,) = common.figure(1, width=max(6.0, 0.9 * (len(targets) + len(groups))))
    names = targets + list(groups)
    series = {label: [table[t][m] for t in targets] + [avg[g][m] for g in groups] for m, label in labels.items()}
    common.bar_plot(ax, names, series, "score (task metric, %)", f"target tasks, mean ± std over {len(seeds)} seeds")
    ax.legend()
    return common.write_outputs(stem, data, markdown, fig)


# --- configuration -----------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--targets", help="comma-separated targets (default: the standard or --fewshot list)")
    parser.add_argument("--fewshot", action="store_true", help="targets boolq@K, cb@K, rte@K for K in --shots")
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)), help="K values of --fewshot")
    parser.add_argument("--mnli", action="store_true", help="add MNLI to the source tasks (separate run dirs)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"methods to train and report, comma-separated among {', '.join(METHODS)}")
    parser.add_argument("--shared-sources", action="store_true",
                        help="train the sources once (first seed) and only repeat target adaptation per seed")
    parser.add_argument("--runs", help="run directory root (default: benchmarks/runs/quality[-mnli][-full][-quick])")
    common.add_budget_arguments(parser)
    return parser.parse_args()


def default_targets(args) -> list[str]:
    if args.targets:
        return [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.fewshot:
        bases = PAPER_FEWSHOT if args.full else FEWSHOT
        return [f"{b}@{k}" for b in bases for k in args.shots.split(",")]
    return PAPER_TARGETS if args.full else TARGETS


def loadable(targets: list[str], split_seed: int) -> list[str]:
    """The targets whose train and test splits load from the offline data directory."""
    data_dir = resolve_data_dir(None)
    ok = []
    for t in targets:
        try:
            task = get_task(t)
            if not (task.load(data_dir, "train", split_seed) and task.load(data_dir, "test", split_seed)):
                raise MptuneError("empty split")
            ok.append(t)
        except (MptuneError, OSError) as err:
            print(f"   skipping target {t}: {str(err).splitlines()[0]}")
    return ok


def seed_configs(args, seeds: list[int]) -> dict[int, RunConfig]:
    """One RunConfig per seed. Its `targets` is the fixed list of every standard and few-shot target,
    so both modes share one run directory (and its teachers and P*) per seed."""
    name = "quality" + "".join(tag for tag, on in (("-mnli", args.mnli), ("-shared", args.shared_sources),
                                                    ("-full", args.full), ("-quick", args.quick)) if on)
    root = Path(args.runs) if args.runs else common.RUNS / name
    sources = (common.PAPER_SOURCES if args.full else SOURCES) + (["mnli"] if args.mnli else [])
    bases, fewshot = (PAPER_TARGETS, PAPER_FEWSHOT) if args.full else (TARGETS, FEWSHOT)
    canonical = bases + [f"{b}@{k}" for b in fewshot for k in SHOTS]
    overrides = common.config_overrides(args.quick, args.full, args.set)
    return {seed: with_overrides(RunConfig(), {"sources": ",".join(dict.fromkeys(sources)),
                                               "targets": ",".join(canonical), "seed": str(seed),
                                               "out_dir": str(root / f"seed{seed}"), "eval_split": "test",
                                               **overrides}) for seed in seeds}


def main() -> None:
    args = parse_args()
    common.setup(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    cfgs = seed_configs(args, seeds)
    cfg = cfgs[seeds[0]]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(f"quality.py: --methods must be among {', '.join(METHODS)}, got {args.methods!r}")
    budget = common.print_budget("quality: " + ", ".join(METHODS[m] for m in methods), cfg, args.full)
    targets = default_targets(args) if args.full else loadable(default_targets(args), cfg.data.split_seed)
    print(f"   targets {', '.join(targets)}; seeds {', '.join(map(str, seeds))}; runs {Path(cfg.out_dir).parent}")
    plan(cfgs, targets, methods, args.full)
    if args.dry_run:
        return
    if args.quick:
        stages.SPOT_PROBE_EXAMPLES = 8  # smoke test only: SPoT picks its teacher on 8 dev examples, not 100
    stem = ((Path(cfg.out_dir).parent / "results") if args.quick else common.RESULTS) / (
        Path(cfg.out_dir).parent.name.replace("-quick", "") + ("_fewshot" if args.fewshot else ""))
    if args.shared_sources:
        budget.append("sources trained once (in the first seed's run) and copied into every seed's run; "
                      "targets adapted once per seed")
    if args.report_only:
        print(report(cfgs, targets, methods, budget, stem))
        return
    backbone = load_backbone(cfg.model.name, cfg.model.precision, cfg.model.device, cfg.model.attention,
                             cfg.model.compile)
    for seed in seeds:
        if args.shared_sources and seed != seeds[0]:
            share_sources(cfgs[seeds[0]], cfgs[seed])
        run_seed(cfgs[seed], backbone, targets, methods, lambda: report(cfgs, targets, methods, budget, stem))
    print(report(cfgs, targets, methods, budget, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
