"""The paper's ablations of MPT on the protocol of a finished run, each variant against that run's MPT.

The baseline is a run directory that trained MPT at several adaptation seeds: by default the dev run of
transfer.py's protocol (--of, benchmarks/kept/protocol/adapt0.03). Each variant is its config with one
change, MPT only, in its own run directory benchmarks/runs/ablations/VARIANT. The library's `reuse`
copies every unit the change leaves alone (`config.UNIT_SETTINGS`: a distillation variant copies the
teachers, a prompt-length variant trains everything), so a variant trains only what it changes, and
the baseline (RUNS/baseline) is copied whole. Variants:

- prompt decomposition off: the teachers are distilled into ONE shared prompt P* used by every
  source task (u, v frozen at the all-ones matrix, so P_k = P*), and each target tunes that P*
  alone (a plain l x d prompt started from P*). Built here from mptune's own pieces
  (`stages.train_distill`, `stages.train_plm`); the library has no switch for it.
- distillation off: lambda = 0 (`loss.lam 0`): P*, u, v trained with L_PLM only.
- distillation loss: L_logits only (`loss.hidden false`), L_hidden only (`loss.logits false`), or
  L_hidden over every real token of the sequence instead of the label positions
  (`loss.hidden_positions sequence`, the paper's form).
- number of source tasks: the first 1, 2, ... of the sources (the baseline uses all of them).
- prompt length: l in --lengths (teachers retrained at that length).

Every variant is scored on the baseline's split and examples (dev for transfer.py's runs), and its MPT
minus the baseline's gets a 95% paired-bootstrap interval over the adaptation seeds and those examples,
per target and on the average (`mptune.results.paired_intervals`). Without --of (--quick, --full, or
--of '') the baseline is trained here from RunConfig and the budget flags, scored on dev.

    python benchmarks/ablations.py                    # every variant of the dev protocol run, seeds 0,1,2
    python benchmarks/ablations.py --variants no-distillation,hidden-sequence --seeds 0
    python benchmarks/ablations.py --quick --seeds 0,1 --targets rte   # smoke test (trains its baseline)
    python benchmarks/ablations.py --full --dry-run   # the paper's budget on T5-Base (GPU, hub)

writes benchmarks/results/ablations-dev.{json,md,png} (--name: another stem; with --quick: under the runs dir).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from mptune import stages
from mptune.checkpoint import PROMPT_FILE, load_prompt
from mptune.config import RunConfig, load_yaml, to_dict, unit_diff, with_overrides
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, SoftPrompt, num_parameters
from mptune.results import interval_cell, paired_intervals
from mptune.rundir import RunDir, open_run, reusable
from mptune.task_data import load_tasks, single
from mptune.tasks import get_task

import common

OF = common.HERE / "kept" / "protocol" / "adapt0.03"
"""The default baseline: transfer.py's dev protocol run (teachers, the 900-step P*, MPT at seeds 0, 1, 2)."""
SOURCES = ["qnli", "qqp", "mnli"]
TARGETS = ["rte", "mrpc", "cb", "boolq"]
SHARED_DISTILL = "distill-shared"
"""Folder of the decomposition-off source prompt (kept apart from the `distill/` of a real MPT)."""


# --- variants ----------------------------------------------------------------------------------

def variants(sources: list[str], counts: list[int], lengths: list[int]) -> dict[str, dict]:
    """name -> {group, setting, overrides}; the baseline appears in every group under its own setting."""
    out = {
        "baseline": {"group": "baseline", "setting": "MPT", "overrides": {}},
        "no-decomposition": {"group": "prompt decomposition", "setting": "off", "overrides": {}},
        "no-distillation": {"group": "distillation", "setting": "off (lambda = 0)", "overrides": {"loss.lam": "0"}},
        "logits-only": {"group": "distillation loss", "setting": "L_logits only",
                        "overrides": {"loss.hidden": "false"}},
        "hidden-only": {"group": "distillation loss", "setting": "L_hidden only",
                        "overrides": {"loss.logits": "false"}},
        "hidden-sequence": {"group": "distillation loss", "setting": "L_logits + L_hidden over the sequence",
                            "overrides": {"loss.hidden_positions": "sequence"}},
    }
    for k in counts:
        out[f"sources-{k}"] = {"group": "source tasks", "setting": f"{k} ({', '.join(sources[:k])})",
                               "overrides": {"sources": ",".join(sources[:k])}}
    for n in lengths:
        out[f"length-{n}"] = {"group": "prompt length", "setting": f"l = {n}", "overrides": {"prompt.length": str(n)}}
    return out


def groups(table: dict, base: RunConfig) -> dict[str, list[tuple[str, str]]]:
    """Ablation -> [(setting, variant)], the baseline placed where its value belongs."""
    positions = "over the sequence" if base.loss.hidden_positions == "sequence" else "at the labels"
    settings = {"prompt decomposition": "on", "distillation": "on",
                "distillation loss": f"L_logits + L_hidden {positions}",
                "source tasks": f"{len(base.sources)} ({', '.join(base.sources)})",
                "prompt length": f"l = {base.prompt.length}"}
    out: dict[str, list[tuple[str, str]]] = {}
    for name, v in table.items():
        if name != "baseline":
            out.setdefault(v["group"], []).append((v["setting"], name))
    if not out:
        return {"baseline": [("MPT", "baseline")]}
    for group, rows in out.items():
        rows.append((settings[group], "baseline"))
        if group in ("source tasks", "prompt length"):
            rows.sort(key=lambda r: int(r[0].split()[-1] if group == "prompt length" else r[0].split()[0]))
    return out


# --- decomposition off -------------------------------------------------------------------------

def distill_shared(cfg: RunConfig, backbone, run: RunDir) -> dict:
    """Distil the teachers into one prompt P* shared by every source task: u v^T frozen at all-ones."""
    folder = run.root / SHARED_DISTILL
    if (metrics := run.done(folder)) is not None:
        return metrics
    teachers = stages.load_teachers(cfg, backbone)
    data = load_tasks(cfg, backbone, cfg.sources, cfg.eval_split)
    run.start(folder)
    student = MultitaskPrompt(stages.initial_prompt(cfg, backbone), len(cfg.sources))
    student.u.requires_grad_(False)  # u = 1, v = 1: P_k = P* for every task; only P* trains
    student.v.requires_grad_(False)
    select = stages.dev_score(cfg, backbone, student, cfg.sources, cfg.distill)  # as `stages.distill` selects
    metrics = stages.train_distill(cfg, backbone, student, teachers, data, folder, run, select)
    metrics.update(stages.eval_tasks(backbone, student, data), parameters=num_parameters(student))
    return run.finish(folder, student, cfg.sources, metrics)


def adapt_shared(cfg: RunConfig, backbone, run: RunDir, target, seed: int) -> dict:
    """A target tuned from the shared P* alone (an l x d prompt, no u, v): adapt_one's loop, budget and selection."""
    folder = unit_folder(run, "no-decomposition", target.task.name, seed)
    shared = load_prompt(run.root / SHARED_DISTILL / PROMPT_FILE, backbone.dim)[0].shared
    prompt = SoftPrompt(shared)
    run.start(folder)
    data = [single(target)]
    select = stages.dev_score(cfg, backbone, prompt, [target.task.name], cfg.adapt, seed)
    metrics = stages.train_plm(backbone, prompt, data, cfg.adapt, 2, seed, folder, f"shared {target.task.name}",
                               run, select)
    metrics.update(**stages.eval_tasks(backbone, prompt, data), parameters=num_parameters(prompt))
    return run.finish(folder, prompt, [target.task.name], metrics)


def unit_folder(run: RunDir, variant: str, target: str, seed: int) -> Path:
    return run.adapted("shared" if variant == "no-decomposition" else "mpt", target, seed)


# --- configuration and plan --------------------------------------------------------------------

def base_config(args, of: Path | None, seeds: str, targets: str | None) -> RunConfig:
    """The baseline's settings, MPT only: the run `of`'s, else RunConfig with the budget flags (dev split)."""
    mpt_only = {"compare.methods": "mpt", "compare.joint": "false", "compare.seeds": seeds}
    if of is not None:
        saved = load_yaml(RunDir(of).config_file)
        return with_overrides(saved, {**mpt_only, "targets": targets or ",".join(saved.targets),
                                      **common.config_overrides(False, False, args.set)})
    return with_overrides(RunConfig(), {
        "sources": ",".join(common.PAPER_SOURCES if args.full else SOURCES), "targets": targets or ",".join(TARGETS),
        "eval_split": "dev", **mpt_only, **common.config_overrides(args.quick, args.full, args.set)})


def units(cfg: RunConfig, variant: str) -> list[tuple[str | None, Path, float]]:
    """(kind for `reuse`, or None: this variant's own; folder; estimated seconds) of one variant, in order."""
    run, l, train = RunDir(Path(cfg.out_dir), cfg.compare.seeds), cfg.prompt.length, common.estimate_train
    out = [("teach", run.teacher(s),
            train(cfg.teach.steps, cfg.teach.batch_size, "teach", l, [s]) + common.estimate_eval(cfg, [s]))
           for s in cfg.sources]
    shared = variant == "no-decomposition"
    out.append((None if shared else "distill", run.root / SHARED_DISTILL if shared else run.distilled(),
                train(cfg.distill.steps, cfg.distill.batch_size, "distill", l, cfg.sources)
                + common.estimate_eval(cfg, cfg.sources)))
    out += [(None if shared else "mpt", unit_folder(run, variant, t, seed),
             train(cfg.adapt.steps, cfg.adapt.batch_size, "adapt", l, [t]) + common.estimate_eval(cfg, [t]))
            for seed in cfg.compare.seeds for t in cfg.targets]
    return out


def plan(cfgs: dict[str, RunConfig], full: bool) -> None:
    """Print how many units are done, will be copied (`reuse`) or must train, with a time estimate; a unit that
    an earlier variant trains is counted once (the later one copies it)."""
    total, todo, done, trained = 0.0, 0, 0, []
    for variant, cfg in cfgs.items():
        for kind, folder, seconds in units(cfg, variant):
            earlier = kind is not None and any(
                k == kind and f.relative_to(c.out_dir) == folder.relative_to(cfg.out_dir)
                and not unit_diff(to_dict(c), cfg, kind) for k, f, c in trained)
            if RunDir.done(folder) or earlier or (kind is not None and reusable(cfg, kind, folder)):
                done += 1
            else:
                total, todo = total + seconds, todo + 1
                trained.append((kind, folder, cfg))
    print(f"   units: {done} done or copied from an identical unit, {todo} to train")
    print("   estimated time: " + ("not estimated for --full (a GPU run)" if full else
                                     f"{common.duration(total)} (from 2-core CPU rates at bf16)"))


# --- running -----------------------------------------------------------------------------------

def run_variant(cfg: RunConfig, variant: str, backbone) -> None:
    run = open_run(cfg)
    if variant != "no-decomposition":
        stages.run(cfg, backbone, run)
    else:
        stages.teach(cfg, backbone, run)
        distill_shared(cfg, backbone, run)
        for target in cfg.targets:
            todo = [s for s in cfg.compare.seeds if run.done(unit_folder(run, variant, target, s)) is None]
            data = load_tasks(cfg, backbone, [target], cfg.eval_split)[0] if todo else None
            for seed in todo:
                adapt_shared(cfg, backbone, run, data, seed)
    run.close()


# --- results -----------------------------------------------------------------------------------

def variant_result(cfg: RunConfig, base: RunConfig, variant: str) -> dict:
    """A variant's MPT scores per seed and target, their mean ± std, and its difference to the baseline with
    paired-bootstrap intervals (over the seeds whose units are all done in both)."""
    runs = {"variant": RunDir(Path(cfg.out_dir), cfg.compare.seeds), "baseline": RunDir(Path(base.out_dir),
                                                                                          base.compare.seeds)}
    folder = {"variant": lambda t, s: unit_folder(runs["variant"], variant, t, s),
              "baseline": lambda t, s: unit_folder(runs["baseline"], "baseline", t, s)}
    scores, params = {}, None
    for seed in cfg.compare.seeds:
        found = {t: RunDir.done(folder["variant"](t, seed)) for t in cfg.targets}
        if any(m is None for m in found.values()):
            continue
        scores[seed] = {t: round(m["scores"][t][get_task(t).metric], 2) for t, m in found.items()}
        params = next(iter(found.values()))["parameters"]
    per_target = {t: common.summary([r[t] for r in scores.values()]) for t in cfg.targets}
    average = common.summary([statistics.mean(r.values()) for r in scores.values()])
    paired = [s for s in scores if all(RunDir.done(folder["baseline"](t, s)) for t in cfg.targets)]
    difference = None
    if variant != "baseline" and paired:
        def fetch(which: str, target: str, seed: int) -> dict | None:
            return (RunDir.predictions(folder[which](target, seed)) or {}).get(target)

        difference = paired_intervals(["variant", "baseline"], cfg.targets, paired, fetch,
                                      pairs=[("variant", "baseline")]).get("variant - baseline")
    return {"runs": {str(s): r for s, r in scores.items()}, "summary": per_target, "average": average,
            "minus_baseline": difference, "paired_seeds": paired, "parameters_per_target": params}


def report(cfgs: dict[str, RunConfig], table: dict, budget: list[str], of: Path | None, stem: Path) -> str:
    """Write stem.json, stem.md and stem.png from the finished units of every variant in `cfgs`."""
    base = cfgs["baseline"]
    targets, split = base.targets, base.eval_split
    result = {v: {**{k: table[v][k] for k in ("group", "setting", "overrides")}, **variant_result(cfg, base, v)}
              for v, cfg in cfgs.items()}
    layout = groups(table, base)
    rows = []
    for group, members in layout.items():
        for setting, variant in members:
            r = result[variant]
            rows.append([group, setting + (" (baseline)" if variant == "baseline" else ""),
                         *(common.fmt(r["summary"][t]) for t in targets), f"**{common.fmt(r['average'])}**",
                         interval_cell((r["minus_baseline"] or {}).get("average")),
                         f"{r['parameters_per_target']:,}" if r["parameters_per_target"] else "—"])
    seeds = ", ".join(map(str, base.compare.seeds))
    markdown = (common.md_table(["ablation", "setting", *targets, "average", "minus baseline (average)",
                                 "trainable parameters per target"], rows)
                + f"\nMPT target scores ({split} split, the last step of each target), mean ± std over the adaptation "
                  f"seeds {seeds}; minus baseline: the variant's average minus the baseline's with a 95% "
                  f"paired-bootstrap interval over the seeds and {split} examples. Baseline: "
                  + (f"`{of}`" if of else "trained here") + ". Budget: " + "; ".join(budget) + ".\n")
    diffs = [[v, *(interval_cell((r["minus_baseline"] or {}).get("targets", {}).get(t)) for t in targets)]
             for v, r in result.items() if r["minus_baseline"]]
    if diffs:
        markdown += ("\nVariant minus baseline per target (points, 95% paired-bootstrap interval):\n\n"
                     + common.md_table(["variant", *targets], diffs))
    fig, axes = common.figure(len(layout), width=3.6)
    for ax, (group, members) in zip(axes, layout.items()):
        common.bar_plot(ax, [s for s, _ in members], {"average": [result[v]["average"] for _, v in members]},
                        f"average target score ({split}, %)", group)
    data = {"of": str(of) if of else None, "split": split, "targets": targets, "seeds": base.compare.seeds,
            "budget": budget, "variants": result, "groups": layout}
    return common.write_outputs(stem, data, markdown, fig)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--of", default=None,
                        help=f"the baseline run directory (default: {OF.relative_to(common.HERE.parent)}; none "
                             "with --quick or --full, or '': the baseline is trained here)")
    parser.add_argument("--targets", help="comma-separated target tasks (default: the baseline run's)")
    parser.add_argument("--variants", help="comma-separated variants to run (default: all; see --dry-run)")
    parser.add_argument("--source-counts", default="1,2", help="numbers of source tasks besides the baseline's")
    parser.add_argument("--lengths", help="prompt lengths besides the baseline's (default 10,50; --full 50,200)")
    parser.add_argument("--runs", help="run directory root (default: benchmarks/runs/ablations[-full][-quick])")
    parser.add_argument("--name", default="ablations-dev", help="results file stem")
    common.add_budget_arguments(parser)
    args = parser.parse_args()
    if args.of is None:
        args.of = "" if args.quick or args.full else str(OF)
    of = Path(args.of) if args.of else None
    if of is not None and not RunDir(of).config_file.is_file():
        parser.error(f"--of {of} holds no run (no config.yaml); name a finished run directory, or --of '' to train "
                     "the baseline here")
    common.setup(args.threads)
    suffix = ("-full" if args.full else "") + ("-quick" if args.quick else "")
    root = Path(args.runs) if args.runs else common.RUNS / f"ablations{suffix}"
    base = base_config(args, of, args.seeds, args.targets)
    lengths = args.lengths or ("50,200" if args.full else "10,50")
    table = variants(base.sources, [int(k) for k in args.source_counts.split(",") if int(k) < len(base.sources)],
                     [int(n) for n in lengths.split(",") if int(n) != base.prompt.length])
    chosen = ["baseline"] + [v for v in (args.variants.split(",") if args.variants else table) if v != "baseline"]
    if unknown := [v for v in chosen if v not in table]:
        parser.error(f"unknown variants {unknown}; known: {', '.join(table)}")
    table = {v: table[v] for v in chosen}
    reuse = [*([str(of)] if of else []), str(root / "baseline")]
    cfgs = {v: with_overrides(base, {**table[v]["overrides"], "out_dir": str(root / v),
                                     "reuse": ",".join(r for r in reuse if r != str(root / v))})
            for v in chosen}
    budget = common.print_budget("ablations of MPT", base, args.full)
    print(f"   variants {', '.join(chosen)}")
    print(f"   targets {', '.join(base.targets)}; adaptation seeds {args.seeds}; runs {root}; baseline "
          + (str(of) if of else "trained here"))
    plan(cfgs, args.full)
    if args.dry_run:
        return
    stem = (root / "results" if args.quick else common.RESULTS) / args.name
    if not args.report_only:
        backbone = load_backbone(base.model.name, base.model.precision, base.model.device, base.model.attention,
                                 base.model.compile)
        for variant in chosen:
            run_variant(cfgs[variant], variant, backbone)
            report(cfgs, table, budget, of, stem)
    print(report(cfgs, table, budget, of, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
