"""The paper's ablations of MPT, each variant against one shared baseline, on quality.py's setup.

Same model, data, budget and seeds as benchmarks/quality.py; only MPT is adapted to the targets.
Variants (each in its own run directory benchmarks/runs/ablations/VARIANT/seed{N}):

- baseline: MPT as `mptune run` trains it (decomposition, distillation with L_logits + L_hidden,
  every source task, prompt length l).
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

A unit whose settings equal those of a finished unit elsewhere (a teacher of the baseline, or the
baseline's units in quality.py's run directory) is copied instead of retrained: runs are bitwise
reproducible from their settings, so the copy is what retraining would give.

    python benchmarks/ablations.py                    # targets sst2@16, rte, mrpc, boolq@16; seeds 0,1,2
    python benchmarks/ablations.py --variants baseline,no-distillation --seeds 0
    python benchmarks/ablations.py --quick --seeds 0 --targets rte      # smoke test
    python benchmarks/ablations.py --full --dry-run   # the paper's budget on T5-Base (GPU, hub)

writes benchmarks/results/ablations.{json,md,png} (with --quick: under the runs dir).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from mptune import stages
from mptune.checkpoint import PROMPT_FILE, load_prompt
from mptune.config import RunConfig, load_yaml, run_identity, with_overrides
from mptune.errors import MptuneError
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, SoftPrompt, num_parameters
from mptune.rundir import RunDir, open_run
from mptune.task_data import load_tasks, single
from mptune.tasks import get_task

import common

TARGETS = ["sst2@16", "rte", "mrpc", "boolq@16"]
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


def groups(table: dict, sources: list[str], length: int) -> dict[str, list[tuple[str, str]]]:
    """Ablation -> [(setting, variant)], the baseline placed where its value belongs."""
    base = {"prompt decomposition": "on", "distillation": "on", "distillation loss": "L_logits + L_hidden",
            "source tasks": f"{len(sources)} ({', '.join(sources)})", "prompt length": f"l = {length}"}
    out: dict[str, list[tuple[str, str]]] = {}
    for name, v in table.items():
        if name != "baseline":
            out.setdefault(v["group"], []).append((v["setting"], name))
    if not out:
        return {"baseline": [("MPT", "baseline")]}
    for group, rows in out.items():
        rows.append((base[group], "baseline"))
        if group in ("source tasks", "prompt length"):
            rows.sort(key=lambda r: int(r[0].split()[-1] if group == "prompt length" else r[0].split()[0]))
    return out


# --- decomposition off -------------------------------------------------------------------------

def distill_shared(cfg: RunConfig, backbone) -> dict:
    """Distil the teachers into one prompt P* shared by every source task: u v^T frozen at all-ones."""
    folder = RunDir(Path(cfg.out_dir)).root / SHARED_DISTILL
    if (metrics := RunDir.done(folder)) is not None:
        return metrics
    teachers = stages.load_teachers(cfg, backbone)
    data = load_tasks(cfg, backbone, cfg.sources, cfg.eval_split)
    folder.mkdir(parents=True, exist_ok=True)
    student = MultitaskPrompt(stages.initial_prompt(cfg, backbone), len(cfg.sources))
    student.u.requires_grad_(False)  # u = 1, v = 1: P_k = P* for every task; only P* trains
    student.v.requires_grad_(False)
    metrics = stages.train_distill(cfg, backbone, student, teachers, data, folder)
    metrics.update(stages.eval_tasks(backbone, student, data), parameters=num_parameters(student))
    return RunDir.finish(folder, student, cfg.sources, metrics)


def adapt_shared(cfg: RunConfig, backbone, target) -> dict:
    """A target tuned from the shared P* alone (an l x d prompt, no u, v), adapt_one's loop and budget."""
    folder = unit_folder(cfg, "no-decomposition", target.task.name)
    shared = load_prompt(Path(cfg.out_dir) / SHARED_DISTILL / PROMPT_FILE, backbone.dim)[0].shared
    prompt = SoftPrompt(shared)
    folder.mkdir(parents=True, exist_ok=True)
    data = [single(target)]
    metrics = stages.train_plm(backbone, prompt, data, cfg.adapt, 2, cfg.seed, folder, f"shared {target.task.name}")
    metrics.update(**stages.eval_tasks(backbone, prompt, data), parameters=num_parameters(prompt))
    return RunDir.finish(folder, prompt, [target.task.name], metrics)


def unit_folder(cfg: RunConfig, variant: str, target: str) -> Path:
    return RunDir(Path(cfg.out_dir)).adapted("shared" if variant == "no-decomposition" else "mpt", target)


# --- reusing finished units ----------------------------------------------------------------------

UNIT_SETTINGS = {"teach": ["seed", "eval_split", "model", "data", "prompt", "teach"]}
UNIT_SETTINGS["distill"] = UNIT_SETTINGS["teach"] + ["sources", "distill", "loss"]
UNIT_SETTINGS["adapt"] = UNIT_SETTINGS["distill"] + ["adapt"]
UNIT_SETTINGS[SHARED_DISTILL] = UNIT_SETTINGS["distill"]
"""Settings a unit's result depends on: equal settings, equal (bitwise) unit."""


def unit_key(config: dict, unit: str) -> str:
    """What a unit's result depends on: its folder name and the settings of its kind."""
    return json.dumps([unit, {k: config[k] for k in UNIT_SETTINGS[unit.split("/")[0]]}], sort_keys=True)


def reusable(cfg: RunConfig, unit: str, elsewhere: list[Path]) -> Path | None:
    """A finished copy of `unit` (e.g. 'teach/sst2', 'distill', 'adapt/mpt/rte') trained with the same settings."""
    key = unit_key(json.loads(json.dumps(run_identity(cfg))), unit)
    for root in elsewhere:
        other = RunDir(root)
        if root.resolve() == Path(cfg.out_dir).resolve() or not other.config_file.exists():
            continue
        try:
            saved = json.loads(json.dumps(run_identity(load_yaml(other.config_file))))
        except MptuneError:
            continue
        if unit_key(saved, unit) == key and RunDir.done(root / unit) is not None:
            return root / unit
    return None


def units(cfg: RunConfig, variant: str, targets: list[str]) -> list[tuple[str, float]]:
    """(unit, estimated seconds) of one variant and seed, in training order."""
    l, train = cfg.prompt.length, common.estimate_train
    out = [(f"teach/{s}",
            train(cfg.teach.steps, cfg.teach.batch_size, "teach", l, [s]) + common.estimate_eval(cfg, [s]))
           for s in cfg.sources]
    out.append((SHARED_DISTILL if variant == "no-decomposition" else "distill",
                train(cfg.distill.steps, cfg.distill.batch_size, "distill", l, cfg.sources)
                + common.estimate_eval(cfg, cfg.sources)))
    out += [(str(unit_folder(cfg, variant, t).relative_to(cfg.out_dir)),
             train(cfg.adapt.steps, cfg.adapt.batch_size, "adapt", l, [t]) + common.estimate_eval(cfg, [t]))
            for t in targets]
    return out


# --- running -----------------------------------------------------------------------------------

def run_variant(cfg: RunConfig, variant: str, backbone, targets: list[str], elsewhere: list[Path]) -> None:
    run = open_run(cfg)
    run.save_config()  # units are copied and written here without the stages
    for unit, _ in units(cfg, variant, targets):
        folder = run.root / unit
        if run.done(folder) is None and (source := reusable(cfg, unit, elsewhere)) is not None:
            print(f"   {variant} seed {cfg.seed}: {unit} copied from {source}")
            common.copy_unit(source, folder)
    stages.teach(cfg, backbone, run)
    if variant == "no-decomposition":
        distill_shared(cfg, backbone)
    else:
        stages.distill(cfg, backbone, run)
    for t in targets:
        if run.done(unit_folder(cfg, variant, t)) is not None:
            continue
        data = load_tasks(cfg, backbone, [t], cfg.eval_split)[0]
        if variant == "no-decomposition":
            adapt_shared(cfg, backbone, data)
        else:
            stages.adapt_one(cfg, backbone, "mpt", data, cfg.seed, run)
    run.close()


def plan(cfgs: dict, targets: list[str], elsewhere: dict, full: bool) -> None:
    """Print how many units are done, will be copied or must train, with a time estimate."""
    total, todo, done, planned = 0.0, 0, 0, set()
    for seed in elsewhere:
        for variant, per_seed in cfgs.items():
            cfg = per_seed[seed]
            for unit, seconds in units(cfg, variant, targets):
                key = unit_key(json.loads(json.dumps(run_identity(cfg))), unit)
                if key in planned or RunDir.done(Path(cfg.out_dir) / unit) or reusable(cfg, unit, elsewhere[seed]):
                    done += 1
                else:
                    total, todo = total + seconds, todo + 1
                planned.add(key)
    print(f"   units: {done} done or copied from an identical unit, {todo} to train")
    print("   estimated time: " + ("not estimated for --full (a GPU run)" if full else
                                     f"{common.duration(total)} (from 2-core CPU rates at bf16)"))


# --- results -----------------------------------------------------------------------------------

def recorded(stem: Path, budget: list[str], targets: list[str]) -> dict:
    """variant -> its entry in stem.json ({group, setting, runs, ...}) when that file has this budget
    and these targets, else {}. The JSON is the record of every finished unit: a run on some
    variants or seeds keeps what earlier runs wrote, and a run directory may be deleted once reported."""
    old = common.read_json(common.stem_file(stem, ".json"), {})
    return old.get("variants", {}) if old.get("budget") == budget and old.get("targets") == targets else {}


def report(cfgs: dict, targets: list[str], table: dict, budget: list[str], stem: Path) -> str:
    """Write stem.json, stem.md and stem.png from the finished units and those `recorded` earlier."""
    old = recorded(stem, budget, targets)
    table = {**{v: {"group": r["group"], "setting": r["setting"]} for v, r in old.items()}, **table}
    result = {}
    for variant in table:
        before = old.get(variant, {})
        runs, params = copy.deepcopy(before.get("runs", {})), before.get("parameters_per_target")
        for seed, cfg in cfgs.get(variant, {}).items():
            for t in targets:
                metrics = RunDir.done(unit_folder(cfg, variant, t))
                if metrics is not None:
                    runs.setdefault(str(seed), {})[t] = round(metrics["scores"][t][get_task(t).metric], 2)
                    params = metrics["parameters"]
        per_target = {t: common.summary([r[t] for r in runs.values() if t in r]) for t in targets}
        average = common.summary([sum(r.values()) / len(targets) for r in runs.values() if len(r) == len(targets)])
        result[variant] = {**table[variant], "runs": runs, "summary": per_target, "average": average,
                           "parameters_per_target": params}
    base = next(iter(cfgs["baseline"].values()))
    layout = groups(table, base.sources, base.prompt.length)
    seeds = sorted({*map(str, cfgs["baseline"]), *(s for r in result.values() for s in r["runs"])}, key=int)
    data = {"budget": budget, "targets": targets, "seeds": seeds, "variants": result,
            "groups": layout}
    rows = []
    for group, members in layout.items():
        for setting, variant in members:
            r = result[variant]
            rows.append([group, setting + (" (baseline)" if variant == "baseline" else ""),
                         *(common.fmt(r["summary"][t]) for t in targets), f"**{common.fmt(r['average'])}**",
                         f"{r['parameters_per_target']:,}" if r["parameters_per_target"] else "—"])
    markdown = (common.md_table(["ablation", "setting", *targets, "average", "trainable parameters per target"], rows)
                + f"\nMPT target scores (test split), mean ± std over seeds {', '.join(data['seeds'])}. Budget: "
                + "; ".join(budget) + ".\n")
    fig, axes = common.figure(len(layout), width=3.6)
    for ax, (group, members) in zip(axes, layout.items()):
        common.bar_plot(ax, [s for s, _ in members], {"average": [result[v]["average"] for _, v in members]},
                        "average target score (%)", group)
    return common.write_outputs(stem, data, markdown, fig)


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target tasks")
    parser.add_argument("--variants", help="comma-separated variants to run (default: all; see --dry-run)")
    parser.add_argument("--source-counts", default="1,2", help="numbers of source tasks besides the baseline's")
    parser.add_argument("--lengths", help="prompt lengths besides the baseline's (default 10,50; --full 50,200)")
    parser.add_argument("--runs", help="run directory root (default: benchmarks/runs/ablations[-full][-quick])")
    parser.add_argument("--reuse", help="quality.py's run root whose finished baseline units may be copied "
                                        "(default: benchmarks/runs/quality[-full][-quick])")
    common.add_budget_arguments(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    common.setup(args.threads)
    suffix = ("-full" if args.full else "") + ("-quick" if args.quick else "")
    root = Path(args.runs) if args.runs else common.RUNS / f"ablations{suffix}"
    reuse_root = Path(args.reuse) if args.reuse else common.RUNS / f"quality{suffix}"
    seeds = [int(s) for s in args.seeds.split(",")]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    sources = common.PAPER_SOURCES if args.full else ["sst2", "qnli", "qqp"]
    budget_overrides = common.config_overrides(args.quick, args.full, args.set)
    base = with_overrides(RunConfig(), budget_overrides)
    lengths = args.lengths or ("50,200" if args.full else "10,50")
    table = variants(sources, [int(k) for k in args.source_counts.split(",") if int(k) < len(sources)],
                     [int(n) for n in lengths.split(",") if int(n) != base.prompt.length])
    chosen = ["baseline"] + [v for v in (args.variants.split(",") if args.variants else table) if v != "baseline"]
    unknown = [v for v in chosen if v not in table]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(table)}")
    table = {v: table[v] for v in chosen}
    cfgs = {v: {seed: with_overrides(RunConfig(), {
        "sources": ",".join(sources), "targets": ",".join(TARGETS), "seed": str(seed), "eval_split": "test",
        "compare.methods": "mpt", "out_dir": str(root / v / f"seed{seed}"), **budget_overrides,
        **table[v]["overrides"]})
        for seed in seeds} for v in chosen}
    elsewhere = {seed: [reuse_root / f"seed{seed}", root / "baseline" / f"seed{seed}"] for seed in seeds}
    budget = common.print_budget("ablations of MPT", cfgs["baseline"][seeds[0]], args.full)
    print(f"   variants {', '.join(chosen)}")
    print(f"   targets {', '.join(targets)}; seeds {', '.join(map(str, seeds))}; runs {root}")
    plan(cfgs, targets, elsewhere, args.full)
    if args.dry_run:
        return
    stem = (root / "results" if args.quick else common.RESULTS) / "ablations"
    if args.report_only:
        print(report(cfgs, targets, table, budget, stem))
        return
    backbone = load_backbone(base.model.name, base.model.precision, base.model.device, base.model.attention,
                             base.model.compile)
    for seed in seeds:
        for variant in chosen:
            run_variant(cfgs[variant][seed], variant, backbone, targets, elsewhere[seed])
            report(cfgs, targets, table, budget, stem)
    print(report(cfgs, targets, table, budget, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
