"""Does transfer help once the sources learn? PT, SPoT, SPoT-fixed and MPT on the targets' dev splits (issue 14),
then, with the settings fixed, on test.

The sources' teachers that `benchmarks/sources.py` trained for 300 steps are above the majority
label on dev (QNLI, QQP, MNLI at lr 0.3). This script distils them into P* o u_k v_k^T and adapts
every target with every method, once per target learning rate, all on the DEV split: it is the
step that fixes the target settings before any test run, so nothing here looks at test.

- Teachers: copied from the --reuse run directories (by default sources.py's) with the library's
  `reuse` setting when one trained them the same way (`config.UNIT_SETTINGS`), scored again on
  this run's examples unless that run scored the same ones; otherwise trained here by
  `stages.teach` (~10 min per source).
- Distillation: --distill-steps, model selection every --distill-eval-every steps on the mean dev
  score over the sources (data.dev_examples each). Trained once (or copied from a --reuse run
  trained the same way); the other lrs' runs reuse the first lr's.
- Targets: --adapt-steps per method and lr, the last step kept (no selection: the scores below are
  on the same dev split, and selecting there would flatter every method). SPoT starts from the
  teacher best on the target's dev split (an oracle), SPoT-fixed from MNLI's (chosen a priori).
- PEFT's MPT (--peft): PEFT's MultitaskPromptTuning source model on the sources with the distillation's
  steps and dev selection, then each target and seed from its average source prompt with the targets'
  budget (`benchmarks/peft_mpt.py`), in RUN/peft/; copied from the --reuse runs like mptune's units.
- Statistics: MPT - PT, MPT - SPoT and MPT - SPoT-fixed (and MPT - PEFT MPT) per target and on the
  average, with 95% paired-bootstrap intervals over the seeds and dev examples (`mptune.results.intervals`).
- Source runs (--source-seeds S0,S1,...): the teachers and P* depend on the run seed, and a second
  source run moves MPT as much as the effect measured. Each further source seed S trains its own
  teachers and P* in adaptLR-sourcesS and adapts with the methods that use them (PT's units are the
  same in every source run and are not trained again); the report adds a table pooled over the
  source runs with two-level bootstrap intervals (`mptune.results.pooled`).
- A source-side variant (--distill-steps, --set loss.*): --reuse RUN copies every unit RUN trained
  the same way (`config.UNIT_SETTINGS`: PT's units depend on no source setting), so only what the
  variant changes trains again and the comparison is against the very PT prompts of RUN.
  --mpt-against RUN adds the variant's MPT minus RUN's MPT, paired over the seeds and dev examples.
- The test run (--split test): once the dev runs have fixed the settings, the same command with
  --split test, --reuse naming the dev runs and more --seeds scores the prompts the dev runs trained
  on the test split (training never reads the eval split, so they are the prompts a test run would
  train) and trains only the seeds they lack.

Each target lr trains in benchmarks/runs/transfer/adaptLR with `mptune run`'s code (`stages.run`),
and its results.md is that run's table; a rerun resumes at the first unfinished unit. Until a run ends,
the report covers the seeds whose every unit is finished (`results.table_so_far`), marked PARTIAL.

    python benchmarks/transfer.py                                 # qnli,qqp,mnli -> rte,mrpc,cb,boolq
    python benchmarks/transfer.py --adapt-lrs 0.03 --seeds 0,1
    python benchmarks/transfer.py --adapt-steps 300 --adapt-lrs 0.03 --set compare.methods=pt,mpt \
        --runs benchmarks/runs/transfer300 --name transfer300 \
        --reuse benchmarks/runs/sources/lr0.3,benchmarks/runs/transfer/adapt0.03
    python benchmarks/transfer.py --adapt-steps 300 --adapt-lrs 0.03 --seeds 0,1,2 --source-seeds 0,1,2 \
        --set compare.methods=pt,mpt --runs benchmarks/kept/transfer300 --name transfer300x3s --reuse ''
    python benchmarks/transfer.py --adapt-steps 300 --adapt-lrs 0.03 --seeds 0,1,2 --distill-steps 900 \
        --set compare.methods=pt,mpt --runs benchmarks/kept/distill900 --name transfer300d900 \
        --reuse benchmarks/kept/transfer300/adapt0.03 --mpt-against benchmarks/kept/transfer300/adapt0.03
    python benchmarks/transfer.py --quick                         # smoke test (~2 min)
    python benchmarks/transfer.py --report-only                   # tables of the finished runs, or of
                                                                  # their finished seeds so far

writes benchmarks/results/transfer.{json,md,png} (--name: another stem; with --quick: under the runs dir).
With --split test the tables and plots say so; nothing in this script chooses anything on test.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from mptune import stages
from mptune.config import RunConfig, with_overrides
from mptune.models import load_backbone
from mptune.results import (
    METHOD_LABELS,
    SOURCE_FREE,
    interval_cell,
    majority_score,
    paired_intervals,
    pooled,
    table_so_far,
)
from mptune.rundir import RunDir, open_run
from mptune.tasks import get_task

import common
import peft_mpt

SOURCES = ["qnli", "qqp", "mnli"]
TARGETS = ["rte", "mrpc", "cb", "boolq"]
METHODS = ["pt", "spot", "spot-fixed", "mpt"]
LABELS = {**METHOD_LABELS, "peft": "PEFT MPT"}
"""Every method of the tables: mptune's and, with --peft, PEFT's MultitaskPromptTuning."""


def mpt_against(cfg: RunConfig, other: Path) -> dict | None:
    """This run's MPT minus the MPT of the run in `other` (the same targets, seeds and eval examples, e.g. the same
    teachers distilled for another budget), per target and on the average, with paired-bootstrap intervals over
    the seeds and eval examples; None until both runs have every MPT unit. `paired_intervals` pairs methods by
    name: here this run's MPT stands as "mpt" and the other run's MPT as "other"."""
    runs = {"mpt": RunDir(Path(cfg.out_dir), cfg.compare.seeds), "other": RunDir(other, cfg.compare.seeds)}

    def fetch(method: str, target: str, seed: int | None) -> dict | None:
        return (RunDir.predictions(runs[method].adapted("mpt", target, seed)) or {}).get(target)

    found = paired_intervals(["other", "mpt"], cfg.targets, cfg.compare.seeds or [None], fetch,
                             pairs=[("mpt", "other")]).get("mpt - other")
    return {"run": str(other), **found} if found and found["average"] else None


def pair_label(name: str) -> str:
    """An interval's name ('mpt - pt') as the tables and plots print it ('MPT - PT')."""
    return " - ".join(LABELS[m] for m in name.split(" - "))


def run_folder(root: Path, lr: str, source_seed: int, first_source_seed: int) -> Path:
    """adaptLR for the first source seed (the study's run), adaptLR-sourcesS for each other one."""
    return root / (f"adapt{lr}" if source_seed == first_source_seed else f"adapt{lr}-sources{source_seed}")


def config(folder: Path, lr: str, args, reuse: list[str], source_seed: int, other_run: bool) -> RunConfig:
    """One run's settings: teachers and P* from `source_seed`; `other_run` (not the first source seed):
    only the methods that use the sources, since PT's units are the same in every source run."""
    # the smoke budget first, then this script's settings, then --set
    overrides = {**common.config_overrides(args.quick, False, []),
                 "sources": args.sources, "targets": args.targets, "eval_split": args.split,
                 "seed": str(source_seed), "compare.seeds": args.seeds,
                 "compare.methods": ",".join(METHODS), "compare.spot_fixed": "mnli",
                 "teach.lr": "0.3", "teach.steps": str(args.teach_steps),
                 "teach.eval_every": str(args.teach_eval_every),
                 "data.dev_examples": str(args.dev_examples), "data.eval_examples": str(args.eval_examples),
                 "distill.steps": str(args.distill_steps), "distill.eval_every": str(args.distill_eval_every),
                 "adapt.steps": str(args.adapt_steps), "adapt.lr": lr, "reuse": ",".join(reuse),
                 **common.config_overrides(False, False, args.set)}
    cfg = with_overrides(RunConfig(), {**overrides, "out_dir": str(folder)})
    if other_run:
        cfg = with_overrides(cfg, {"compare.methods": ",".join(m for m in cfg.compare.methods if m not in SOURCE_FREE)})
    return cfg


def run_record(cfg: RunConfig) -> dict | None:
    """The finished run's results.json (scores, intervals, sources), else the table of the seeds finished
    so far (`results.table_so_far`, "partial"), with each target's majority-label score on the same dev
    examples (`majority`); None before a seed is done."""
    run = RunDir(Path(cfg.out_dir), cfg.compare.seeds)
    found = common.read_json(run.results_json, None)
    if found is None and (so_far := table_so_far(cfg, run)) is not None:
        found = so_far[0]
    if found is not None:
        seed = (found.get("seeds") or cfg.compare.seeds or [None])[0]
        found["majority"] = {t: majority_score(t, RunDir.predictions(run.adapted("pt", t, seed)))
                             for t in cfg.targets}
    return found


def with_peft(record: dict, cfg: RunConfig) -> None:
    """Add PEFT's MPT to a run's record (`run_record`): its mean (and std) over the record's seeds per target
    and on the average, and MPT - PEFT MPT with paired-bootstrap intervals over those seeds and the eval
    examples; nothing until each of those units is done."""
    seeds = record.get("seeds") or cfg.compare.seeds or [cfg.seed]
    units = {t: {s: RunDir.done(peft_mpt.target_folder(cfg, t, s)) for s in seeds} for t in cfg.targets}
    if any(m is None for by_seed in units.values() for m in by_seed.values()):
        return
    per_seed = {s: {t: units[t][s]["scores"][t][get_task(t).metric] for t in cfg.targets} for s in seeds}
    for t in cfg.targets:
        values = [per_seed[s][t] for s in seeds]
        record["targets"][t]["peft"] = statistics.mean(values)
        if len(seeds) > 1:
            record["targets"][t].setdefault("std", {})["peft"] = statistics.stdev(values)
    averages = [statistics.mean(per_seed[s].values()) for s in seeds]
    record["average"]["peft"] = statistics.mean(averages)
    if len(seeds) > 1:
        record.setdefault("average_std", {})["peft"] = statistics.stdev(averages)
    run = RunDir(Path(cfg.out_dir), cfg.compare.seeds)

    def fetch(method: str, target: str, seed: int | None) -> dict | None:
        folder = peft_mpt.target_folder(cfg, target, seed) if method == "peft" else run.adapted(method, target, seed)
        return (RunDir.predictions(folder) or {}).get(target)

    record.setdefault("intervals", {}).update(
        paired_intervals(["mpt", "peft"], cfg.targets, seeds, fetch, pairs=[("mpt", "peft")]))


def bar(table: dict, group: str, method: str) -> dict:
    """One bar of the plot: a method's score on a target (or the average), its std over seeds."""
    if group == "average":
        return {"mean": table["average"][method], "std": table.get("average_std", {}).get(method, 0.0), "n": 1}
    row = table["targets"][group]
    return {"mean": row[method], "std": row.get("std", {}).get(method, 0.0), "n": 1}


def pooled_markdown(record: dict, targets: list[str], split: str) -> str:
    """The tables over several source runs (`results.pooled`), one pair per adapt.lr that has them."""
    out = ""
    for lr, table in record.items():
        if not (found := table.get("pooled")):
            continue
        methods = [m for m in METHODS if m in found["average"]]
        rows = [[t, *(f"{found['targets'][t][m]:.1f}" for m in methods)] for t in targets]
        rows.append(["average", *(f"{found['average'][m]:.1f}" for m in methods)])
        diffs = [[pair_label(name),
                  *(interval_cell(pair["targets"].get(t)) for t in targets), interval_cell(pair["average"])]
                 for name, pair in found["intervals"].items()]
        runs = ", ".join(map(str, found["source_seeds"]))
        out += (f"\nadapt.lr {lr}, pooled over the source runs with seeds {runs} (teachers and P* trained once per "
                f"seed) and adaptation seeds {', '.join(map(str, found['seeds']))}: each method's mean over every "
                "(source run, adaptation seed); PT uses no source and is the same in every run.\n\n"
                + common.md_table(["target", *(LABELS[m] for m in methods)], rows) + "\n"
                + common.md_table(["difference", *targets, "average"], diffs)
                + "\n95% two-level bootstrap intervals: the source runs, then their adaptation seeds, then the "
                  f"{split} examples (`mptune.stats`).\n")
    return out


def report(record: dict, cfgs: dict[str, RunConfig], budget: list[str], stem: Path) -> str:
    first = next(iter(cfgs.values()))
    split = first.eval_split
    targets = first.targets
    methods = [m for m in METHODS if m in first.compare.methods]
    methods += ["peft"] if any("peft" in table["average"] for table in record.values()) else []
    rows, diff_rows = [], []
    for lr, table in record.items():
        for t in [*targets, "average"]:
            scores = table["average"] if t == "average" else table["targets"][t]
            metric = "" if t == "average" else get_task(t).metric
            majority = table["majority"].values() if t == "average" else [table["majority"][t]]
            shown = f"{sum(majority) / len(majority):.1f}" if None not in majority else "n/a"
            rows.append([lr, t, metric, shown, *(f"{scores[m]:.1f}" if m in scores else "n/a" for m in methods)])
        pairs = [(pair_label(name), found) for name, found in table.get("intervals", {}).items()]
        if against := table.get("against"):
            pairs.append((f"MPT - MPT of {against['run']}", against))
        for label, found in pairs:
            diff_rows.append([lr, label, *(interval_cell(found["targets"].get(t)) for t in targets),
                              interval_cell(found["average"])])
    planned = len(first.compare.seeds) or 1
    partial = [f"seed(s) {', '.join(map(str, t['seeds']))} of {planned} at adapt.lr {lr}"
               for lr, t in record.items() if t.get("partial")]
    seeds = f"PARTIAL, the run still trains: {'; '.join(partial)}" if partial else f"{planned} seed(s)"
    markdown = (common.md_table(["adapt.lr", "target", "metric", "majority label",
                                 *(LABELS[m] for m in methods)], rows)
                + "\n" + common.md_table(["adapt.lr", "difference", *targets, "average"], diff_rows)
                + f"\n{split.capitalize()} split (targets: the last step, no selection; {seeds}; 95% "
                  f"paired-bootstrap intervals over the seeds and {split} examples). SPoT starts from the teacher "
                  "best on the target's dev split (an oracle), SPoT-fixed from MNLI's"
                + (", PEFT MPT from the average of its source prompts (no distillation)" if "peft" in methods else "")
                + ". Budget: " + "; ".join(budget) + ".\n")
    markdown += pooled_markdown(record, targets, split)
    fig, axes = common.figure(max(1, 2 * len(record)), width=6.0)
    groups = [*targets, "average"]
    for (score_ax, diff_ax), (lr, table) in zip(zip(axes[::2], axes[1::2]), record.items()):
        series = {LABELS[m]: [bar(table, g, m) for g in groups] for m in methods if m in table["average"]}
        so_far = f", PARTIAL: seeds {', '.join(map(str, table['seeds']))}" if table.get("partial") else ""
        common.bar_plot(score_ax, groups, series, f"{split} score", f"targets at adapt.lr {lr} ({split}{so_far})")
        majority = [*(table["majority"][t] for t in targets), None]
        if None not in majority[:-1]:
            majority[-1] = sum(majority[:-1]) / len(targets)
            score_ax.scatter(range(len(groups)), majority, marker="_", s=400, color="black", zorder=3,
                             label="majority label")
        score_ax.legend(fontsize=8)
        # this source run's intervals, then those pooled over every source run (when there are several)
        pooled_table = table.get("pooled")
        seeds = pooled_table["source_seeds"] if pooled_table else []
        this_run = f", source run {seeds[0]}" if seeds else ""
        pairs = [(pair_label(name) + this_run, found)
                 for name, found in table.get("intervals", {}).items()]
        if pooled_table:
            pairs += [(pair_label(name)
                       + f", source runs {', '.join(map(str, seeds))}", found)
                      for name, found in pooled_table["intervals"].items()]
        if against := table.get("against"):
            pairs.append((f"MPT - MPT of {Path(against['run']).parent.name}", against))
        width = 0.8 / max(1, len(pairs))
        for i, (label, found) in enumerate(pairs):
            rows = [found["targets"].get(t) for t in targets] + [found["average"]]
            xs = [g + (i - (len(pairs) - 1) / 2) * width for g in range(len(groups))]
            ok = [(x, r) for x, r in zip(xs, rows) if r]
            diff_ax.errorbar([x for x, _ in ok], [r["diff"] for _, r in ok], capsize=3, fmt="o",
                             yerr=[[r["diff"] - r["low"] for _, r in ok], [r["high"] - r["diff"] for _, r in ok]],
                             label=label)
        diff_ax.axhline(0, color="gray", linewidth=1)
        diff_ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        diff_ax.set(ylabel="difference (points), 95% interval", title=f"MPT minus each method, adapt.lr {lr}")
        diff_ax.grid(axis="y", alpha=0.3)
        diff_ax.legend(fontsize=8)
    return common.write_outputs(stem, {"budget": budget, "runs": record}, markdown, fig)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated source tasks")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target tasks")
    parser.add_argument("--reuse", default=None,
                        help="comma-separated run directories whose finished units (teachers, P*, target units, "
                             "PEFT's) are copied when trained with the same settings (the `reuse` setting; '' for "
                             "none; default: benchmarks/runs/sources/lr0.3, none with --quick)")
    parser.add_argument("--teach-steps", type=int, default=300, help="teacher steps (teach.steps), as sources.py")
    parser.add_argument("--teach-eval-every", type=int, default=75, help="teach.eval_every, as sources.py")
    parser.add_argument("--dev-examples", type=int, default=200, help="dev examples per model-selection score")
    parser.add_argument("--distill-steps", type=int, default=300, help="distillation steps (distill.steps)")
    parser.add_argument("--distill-eval-every", type=int, default=100, help="distill.eval_every")
    parser.add_argument("--adapt-steps", type=int, default=100, help="target steps per method (adapt.steps)")
    parser.add_argument("--adapt-lrs", default="0.03,0.3", help="comma-separated target prompt learning rates")
    parser.add_argument("--eval-examples", type=int, default=500,
                        help="examples of --split each target and source is scored on (data.eval_examples; 0 = all)")
    parser.add_argument("--seeds", default="0", help="comma-separated adaptation seeds (compare.seeds)")
    parser.add_argument("--source-seeds", default="",
                        help="comma-separated seeds of the teachers and P*, one source run each (default: the first "
                             "of --seeds); with several, MPT is pooled over them with two-level intervals")
    parser.add_argument("--mpt-against", default="",
                        help="a run directory with MPT units of the same targets, seeds and dev examples (e.g. the "
                             "same teachers at another --distill-steps): adds this run's MPT minus that run's, paired")
    parser.add_argument("--split", choices=("dev", "test"), default="dev",
                        help="the split targets and sources are scored on (eval_split): dev to fix the settings, then "
                             "test, with --reuse naming the dev runs, to score the prompts they trained")
    parser.add_argument("--peft", action="store_true",
                        help="also PEFT's MultitaskPromptTuning (benchmarks/peft_mpt.py): its source model on the "
                             "distillation budget and selection, each target and seed on the target budget, in "
                             "RUN/peft/; adds MPT - PEFT MPT")
    common.add_run_arguments(parser, "transfer", "the finished runs")
    args = parser.parse_args()
    if args.mpt_against and not RunDir(Path(args.mpt_against)).config_file.is_file():
        parser.error(f"--mpt-against {args.mpt_against} holds no run (no config.yaml); name a run directory")
    if args.quick:
        args.teach_steps, args.teach_eval_every, args.distill_steps, args.distill_eval_every = 4, 2, 4, 2
        args.adapt_steps, args.dev_examples, args.eval_examples = 2, 8, 8
    common.setup(args.threads)
    root, stem = common.run_paths(args, "transfer")
    lrs = args.adapt_lrs.split(",")
    if args.reuse is None:  # sources.py's runs, but not for a smoke test, whose budget they do not share
        args.reuse = "" if args.quick else str(common.RUNS / "sources" / "lr0.3")
    reuse = [r for r in args.reuse.split(",") if r.strip()]
    source_seeds = [int(x) for x in (args.source_seeds or args.seeds.split(",")[0]).split(",")]
    # per source seed, the first lr's run trains (or copies) the teachers and P*; the other lrs' runs copy them
    runs = {lr: {s: config(run_folder(root, lr, s, source_seeds[0]), lr, args,
                           reuse if lr == lrs[0] else [*reuse, str(run_folder(root, lrs[0], s, source_seeds[0]))],
                           s, s != source_seeds[0]) for s in source_seeds} for lr in lrs}
    cfgs = {lr: by_seed[source_seeds[0]] for lr, by_seed in runs.items()}
    first = cfgs[lrs[0]]
    budget = common.print_budget(f"transfer to the targets on {args.split}", first, False)
    budget.append(f"teachers {args.teach_steps} steps (dev every {args.teach_eval_every}), distillation "
                  f"{args.distill_steps} (dev every {args.distill_eval_every}) on {args.dev_examples} dev examples "
                  f"per source; targets {args.adapt_steps} steps at adapt.lr {', '.join(lrs)}; seeds {args.seeds}"
                  + (f"; source runs with seeds {', '.join(map(str, source_seeds))}" if len(source_seeds) > 1 else ""))
    print("   " + budget[-1])
    record: dict[str, dict] = {}
    backbone = None
    for lr, by_seed in runs.items():
        for cfg in by_seed.values():
            if not args.report_only:
                if backbone is None:
                    backbone = load_backbone(cfg.model.name, cfg.model.precision, cfg.model.device,
                                             cfg.model.attention, cfg.model.compile)
                run = open_run(cfg)
                stages.run(cfg, backbone, run)
                if args.peft and cfg is cfgs[lr]:
                    peft_mpt.run_units(cfg, backbone, cfg.targets, cfg.compare.seeds or [cfg.seed])
                run.close()
            if cfg is cfgs[lr] and (found := run_record(cfg)) is not None:
                record[lr] = found
                if args.peft:
                    with_peft(found, cfg)
                if args.mpt_against and (against := mpt_against(cfg, Path(args.mpt_against))):
                    record[lr]["against"] = against
                report(record, cfgs, budget, stem)
        if len(by_seed) > 1 and lr in record and (across := pooled(
                {s: (c, RunDir(Path(c.out_dir), c.compare.seeds)) for s, c in by_seed.items()})) is not None:
            record[lr]["pooled"] = across  # once per lr, after its last source run
            report(record, cfgs, budget, stem)
    print(report(record, cfgs, budget, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
