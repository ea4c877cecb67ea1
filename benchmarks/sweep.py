"""Learning rates and the form of L_hidden chosen on dev, stage by stage (issue 14, items 2 and 3).

Every unit is scored on the DEV split (`eval_split dev`, data.eval_examples per task); nothing
here looks at test. The sweep is coordinate-wise, in the order the pipeline trains:

1. teachers: `teach.lr` over --lrs; each source's teacher scored on its dev split. The lr with the
   best mean dev score over the sources is kept, and its teachers are reused below.
2. distillation: `distill.lr` over --distill-lrs (u, v at `distill.factor_lr`), with L_hidden at
   the label positions, and the best of those again with `loss.hidden_positions sequence`. A
   distilled prompt is scored twice: P* o u_k v_k^T on the sources' dev splits (the criterion of
   model selection, `stages.dev_score`), and by what it is for, MPT adapted to each target with
   the default adapt settings and scored on the target's dev split. The lr is chosen on the
   targets' mean; so is the form of L_hidden.
3. targets: `adapt.lr` over --lrs for each method (PT, SPoT, MPT), u, v at `adapt.factor_lr`; then
   `adapt.factor_lr` over --factor-lrs for MPT at its best lr. Chosen per method on the targets'
   mean dev score.

Each setting trains in its own run directory under benchmarks/runs/sweep/; the teachers and P*
it needs come from the earlier stages' directories through the `reuse` setting (copied with their
scores: a unit's result depends only on its own settings, `config.UNIT_SETTINGS`);
a rerun resumes at the first unfinished unit. With one seed per setting and dev splits of 100-200
examples, differences of 2-3 points are within noise: the table says how many examples each
score rests on, and the choice is only as good as that.

    python benchmarks/sweep.py                          # the default budget, seed 0
    python benchmarks/sweep.py --quick                  # smoke test (~2 min)
    python benchmarks/sweep.py --dry-run                # the settings it would train

writes benchmarks/results/sweep.{json,md,png} (with --quick: under the runs dir).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from mptune import stages
from mptune.config import RunConfig, with_overrides
from mptune.models import load_backbone
from mptune.rundir import RunDir, open_run
from mptune.task_data import load_tasks
from mptune.tasks import get_task

import common

SOURCES = ["sst2", "qnli", "qqp"]
TARGETS = ["rte", "mrpc", "boolq"]
METHODS = ["pt", "spot", "mpt"]


def mean_score(metrics: dict, names: list[str]) -> float:
    return round(statistics.mean(metrics["scores"][n][get_task(n).metric] for n in names), 2)


class Sweep:
    """The settings of each stage's run directories, their training and their dev scores."""

    def __init__(self, root: Path, base: dict[str, str], backbone=None):
        self.root, self.base, self.backbone = root, base, backbone
        self.record: dict[str, dict] = {"teach": {}, "distill": {}, "adapt": {}}

    def config(self, name: str, overrides: dict[str, str]) -> RunConfig:
        return with_overrides(RunConfig(), {**self.base, **overrides, "out_dir": str(self.root / name)})

    def teach(self, lr: str) -> float:
        cfg = self.config(f"teach/lr{lr}", {"teach.lr": lr})
        run = open_run(cfg)
        results = stages.teach(cfg, self.backbone, run)
        run.close()
        per_task = {s: mean_score(results[s], [s]) for s in cfg.sources}
        score = round(statistics.mean(per_task.values()), 2)
        self.record["teach"][lr] = {"per_task": per_task, "score": score}
        return score

    def distill(self, teach_lr: str, lr: str, positions: str) -> float:
        name = f"distill/lr{lr}-{positions}"
        cfg = self.config(name, {"teach.lr": teach_lr, "distill.lr": lr, "loss.hidden_positions": positions,
                                 "reuse": str(self.root / f"teach/lr{teach_lr}")})
        run = open_run(cfg)
        stages.teach(cfg, self.backbone, run)  # copied, with their scores
        metrics = stages.distill(cfg, self.backbone, run)
        targets = self.adapt_targets(cfg, run, "mpt")
        run.close()
        score = round(statistics.mean(targets.values()), 2)
        self.record["distill"][f"{lr} {positions}"] = {
            "lr": lr, "hidden_positions": positions, "sources_dev": mean_score(metrics, cfg.sources),
            "per_target": targets, "score": score}
        return score

    def adapt(self, teach_lr: str, distill_lr: str, positions: str, method: str, lr: str, factor_lr: str) -> float:
        name = f"adapt/{method}-lr{lr}-f{factor_lr}"
        cfg = self.config(name, {"teach.lr": teach_lr, "distill.lr": distill_lr, "loss.hidden_positions": positions,
                                 "adapt.lr": lr, "adapt.factor_lr": factor_lr, "compare.methods": method,
                                 "reuse": f"{self.root / f'teach/lr{teach_lr}'},"
                                          f"{self.root / f'distill/lr{distill_lr}-{positions}'}"})
        run = open_run(cfg)
        stages.teach(cfg, self.backbone, run)  # copied, with their scores
        if method == "mpt":
            stages.distill(cfg, self.backbone, run)
        targets = self.adapt_targets(cfg, run, method)
        run.close()
        score = round(statistics.mean(targets.values()), 2)
        self.record["adapt"][f"{method} {lr} {factor_lr}"] = {"method": method, "lr": lr, "factor_lr": factor_lr,
                                                              "per_target": targets, "score": score}
        return score

    def adapt_targets(self, cfg: RunConfig, run: RunDir, method: str) -> dict[str, float]:
        out = {}
        for t in cfg.targets:
            data = load_tasks(cfg, self.backbone, [t], cfg.eval_split)[0]
            out[t] = mean_score(stages.adapt_one(cfg, self.backbone, method, data, cfg.seed, run), [t])
        return out


def best(scores: dict[str, float]) -> str:
    """The key with the highest score (ties: the first listed)."""
    return max(scores, key=scores.__getitem__)


def report(sweep: Sweep, chosen: dict, budget: list[str], stem: Path) -> str:
    rec = sweep.record
    rows = [["teachers", f"teach.lr {lr}", ", ".join(f"{t} {v}" for t, v in r["per_task"].items()), r["score"]]
            for lr, r in rec["teach"].items()]
    rows += [["distillation", f"distill.lr {r['lr']}, L_hidden at {r['hidden_positions']}",
              f"P* on sources {r['sources_dev']}; MPT: " + ", ".join(f"{t} {v}" for t, v in r["per_target"].items()),
              r["score"]] for r in rec["distill"].values()]
    rows += [[f"targets ({r['method']})", f"adapt.lr {r['lr']}, factor_lr {r['factor_lr']}",
              ", ".join(f"{t} {v}" for t, v in r["per_target"].items()), r["score"]] for r in rec["adapt"].values()]
    markdown = (common.md_table(["stage", "setting", "dev scores", "mean"], rows)
                + "\nDev-split scores (nothing on test), one seed per setting. Chosen: "
                + "; ".join(f"{k} {v}" for k, v in chosen.items()) + ". Budget: " + "; ".join(budget) + ".\n")
    fig, axes = common.figure(3, width=4.2)
    lrs = list(rec["teach"])
    axes[0].plot(range(len(lrs)), [rec["teach"][lr]["score"] for lr in lrs], marker="o")
    axes[0].set_xticks(range(len(lrs)), lrs)
    axes[0].set(title="teachers (mean over sources)", xlabel="teach.lr", ylabel="dev score")
    names = list(rec["distill"])
    axes[1].bar(range(len(names)), [rec["distill"][n]["score"] for n in names])
    axes[1].set_xticks(range(len(names)), names, rotation=30, ha="right")
    axes[1].set(title="distillation (MPT on targets)", ylabel="dev score")
    for method in METHODS:
        runs = [r for r in rec["adapt"].values()
                if r["method"] == method and r["factor_lr"] == chosen["adapt.factor_lr"]]
        axes[2].plot([r["lr"] for r in runs], [r["score"] for r in runs], marker="o", label=method)
    axes[2].set(title="targets (mean over targets)", xlabel="adapt.lr", ylabel="dev score")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    return common.write_outputs(stem, {"budget": budget, "chosen": chosen, **rec}, markdown, fig)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--lrs", default="0.3,0.03,0.01", help="prompt learning rates of teachers and targets")
    parser.add_argument("--distill-lrs", default="0.3,0.03", help="prompt learning rates of distillation")
    parser.add_argument("--factor-lrs", default="0.003,0.03,0.3", help="u, v learning rates of MPT's targets")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target tasks")
    parser.add_argument("--seed", default="0", help="run seed")
    parser.add_argument("--runs", help="run directory root (default: benchmarks/runs/sweep[-quick])")
    parser.add_argument("--quick", action="store_true", help="smoke-test budget; results under the runs dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any RunConfig setting")
    parser.add_argument("--dry-run", action="store_true", help="print the settings, then stop")
    args = parser.parse_args()
    common.setup(args.threads)
    root = Path(args.runs) if args.runs else common.RUNS / ("sweep-quick" if args.quick else "sweep")
    base = {"sources": ",".join(SOURCES), "targets": args.targets, "seed": args.seed, "eval_split": "dev",
            **common.config_overrides(args.quick, False, args.set)}
    lrs, distill_lrs = args.lrs.split(","), args.distill_lrs.split(",")
    factor_lrs = args.factor_lrs.split(",")
    sweep = Sweep(root, base)
    cfg = sweep.config("dry-run", {})
    budget = common.print_budget("learning rates and L_hidden on dev", cfg, False)
    print(f"   teach.lr {lrs}; distill.lr {distill_lrs} (+ L_hidden over the sequence at the best); "
          f"adapt.lr {lrs} for {METHODS}; MPT factor_lr {factor_lrs}; targets {args.targets}; runs {root}")
    if args.dry_run:
        return
    sweep.backbone = load_backbone(cfg.model.name, cfg.model.precision, cfg.model.device, cfg.model.attention,
                                   cfg.model.compile)
    stem = (root / "results" if args.quick else common.RESULTS) / "sweep"
    default_factor = str(cfg.adapt.factor_lr)
    chosen: dict[str, str] = {"adapt.factor_lr": default_factor}

    teach_lr = best({lr: sweep.teach(lr) for lr in lrs})
    chosen["teach.lr"] = teach_lr
    report(sweep, chosen, budget, stem)

    by_lr = {lr: sweep.distill(teach_lr, lr, "labels") for lr in distill_lrs}
    distill_lr = best(by_lr)
    sequence = sweep.distill(teach_lr, distill_lr, "sequence")
    positions = "sequence" if sequence > by_lr[distill_lr] else "labels"
    chosen.update({"distill.lr": distill_lr, "loss.hidden_positions": positions})
    report(sweep, chosen, budget, stem)

    for method in METHODS:
        by_lr = {lr: sweep.adapt(teach_lr, distill_lr, positions, method, lr, default_factor) for lr in lrs}
        chosen[f"adapt.lr ({method})"] = best(by_lr)
        report(sweep, chosen, budget, stem)
    mpt_lr = chosen["adapt.lr (mpt)"]
    by_factor = {f: sweep.adapt(teach_lr, distill_lr, positions, "mpt", mpt_lr, f) if f != default_factor
                 else sweep.record["adapt"][f"mpt {mpt_lr} {default_factor}"]["score"] for f in factor_lrs}
    chosen["adapt.factor_lr (mpt)"] = best(by_factor)
    print(report(sweep, chosen, budget, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
