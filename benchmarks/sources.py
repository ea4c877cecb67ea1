"""Do the source teachers learn? Dev learning curves at longer budgets (issue 14, item 5).

At the default budget (100 steps of 8) only SST-2's teacher rises above the majority label; QNLI
and QQP sit at it, and MNLI stayed at chance. This script trains one teacher per source for longer,
scores it on a dev sample every --eval-every steps (model selection, `teach.eval_every`), and says
for each source and learning rate whether the teacher is clearly above a constant prediction of
the majority label.

Everything here is on the DEV split; nothing looks at test.
- The curve: every --eval-every steps, the teacher's metric on `data.dev_examples` dev examples
  (the seeded sample model selection scores), beside that sample's majority-label score. Its last
  point is the last step's prompt, before selection.
- The verdict: the selected teacher (the best curve point) scored on --final-examples dev
  examples (1,000 is all of a large task's dev split; it contains the curve's sample, so the
  selected score is slightly optimistic), with a paired bootstrap interval (`mptune.stats`, over
  those examples) of the teacher minus the constant majority prediction. "Learns" means the
  interval's low end is above 0.

Each learning rate gets one run directory, benchmarks/runs/sources/lrLR, and trains there with
`mptune teach`'s code (`stages.teach`); a rerun resumes at the first unfinished teacher.

    python benchmarks/sources.py                                    # qnli, qqp, mnli; 300 steps; lr 0.3, 0.03
    python benchmarks/sources.py --tasks qnli --lrs 0.3 --steps 200
    python benchmarks/sources.py --quick                            # smoke test (~1 min)
    python benchmarks/sources.py --report-only                      # tables of the finished teachers

writes benchmarks/results/sources.{json,md,png} (--name: another stem; with --quick: under the runs dir).
"""

from __future__ import annotations

from pathlib import Path

from mptune import stages
from mptune.config import RunConfig, with_overrides
from mptune.logs import read_log
from mptune.models import load_backbone
from mptune.results import above_majority, interval_cell, majority_score
from mptune.rundir import RunDir, open_run
from mptune.task_data import load_tasks
from mptune.tasks import get_task

import common

TASKS = ["qnli", "qqp", "mnli"]


def config(root: Path, lr: str, args) -> RunConfig:
    # the smoke budget first, then this script's settings, then --set
    overrides = {**common.config_overrides(args.quick, False, []),
                 "sources": args.tasks, "eval_split": "dev", "seed": args.seed, "teach.lr": lr,
                 "teach.steps": str(args.steps), "teach.eval_every": str(args.eval_every),
                 "data.dev_examples": str(args.dev_examples), "data.eval_examples": str(args.final_examples),
                 **common.config_overrides(False, False, args.set)}
    return with_overrides(RunConfig(), {**overrides, "out_dir": str(root / f"lr{lr}")})


def teacher_record(cfg: RunConfig, backbone, name: str) -> dict | None:
    """A finished teacher's dev curve, its selected step, and its verdict against the majority label."""
    folder = RunDir(Path(cfg.out_dir)).teacher(name)
    metrics, found = RunDir.done(folder), RunDir.predictions(folder)
    if metrics is None or found is None:
        return None
    metric = get_task(name).metric
    dev_rows = [r for r in read_log(folder / "log.jsonl") if "dev" in r]
    curve = load_tasks(cfg, backbone, [name], "dev", with_train=False, examples=cfg.data.dev_examples)[0]
    curve_labels = {name: {"labels": list(curve.eval_labels)}}
    gap = above_majority(name, found, replicates=2000)
    return {"metric": metric,
            "curve": [[r["step"], round(r["dev"], 2)] for r in dev_rows],
            "curve_examples": len(curve.eval_labels), "curve_majority": round(majority_score(name, curve_labels), 2),
            "selected_step": metrics.get("selected", {}).get("step"),
            "selected": round(metrics["scores"][name][metric], 2), "final_examples": len(found[name]["labels"]),
            "majority": round(majority_score(name, found), 2), "gap": gap, "learns": gap["low"] > 0,
            "train_seconds": metrics.get("train_seconds"),
            "train_examples_per_s": metrics.get("train_examples_per_s")}


def report(record: dict, budget: list[str], stem: Path) -> str:
    rows = []
    for lr, per_task in record.items():
        for name, r in per_task.items():
            points = ", ".join(f"{s}: {v:.1f}" for s, v in r["curve"])
            rows.append([name, lr, f"{r['curve_majority']:.1f}", points, r["selected_step"],
                         f"{r['selected']:.1f} / {r['majority']:.1f}",
                         interval_cell(r["gap"]),
                         "yes" if r["learns"] else "no"])
    any_record = next((r for per in record.values() for r in per.values()), None)
    sizes = (f"curve on {any_record['curve_examples']} dev examples per task, verdict on "
             f"{any_record['final_examples']}") if any_record else "no teacher finished yet"
    markdown = (common.md_table(["source", "teach.lr", "majority (curve sample)", "dev score at step",
                                 "selected step", "selected / majority", "gap, 95% interval", "learns"], rows)
                + f"\nDev split only ({sizes}; the gap is the selected teacher minus the majority label, "
                  "paired bootstrap over examples). Budget: " + "; ".join(budget) + ".\n")
    names = sorted({name for per in record.values() for name in per})
    fig, axes = common.figure(max(1, len(names)), width=4.2)
    for ax, name in zip(axes, names):
        for lr, per_task in record.items():
            if name in per_task:
                steps, values = zip(*per_task[name]["curve"])
                ax.plot(steps, values, marker="o", label=f"lr {lr}")
                majority_share = per_task[name]["curve_majority"]
        ax.axhline(majority_share, color="gray", linestyle="--", label="majority label")
        ax.set(title=f"{name} teacher (dev)", xlabel="step", ylabel=get_task(name).metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return common.write_outputs(stem, {"budget": budget, "teachers": record}, markdown, fig)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated source tasks")
    parser.add_argument("--lrs", default="0.3,0.03", help="comma-separated teacher learning rates (teach.lr)")
    parser.add_argument("--steps", type=int, default=300, help="teacher steps (teach.steps)")
    parser.add_argument("--eval-every", type=int, default=75, help="steps between dev evaluations (teach.eval_every)")
    parser.add_argument("--dev-examples", type=int, default=200, help="dev examples per curve point")
    parser.add_argument("--final-examples", type=int, default=1000,
                        help="dev examples the selected teacher is judged on (data.eval_examples; 0 = all)")
    parser.add_argument("--seed", default="0", help="run seed")
    common.add_run_arguments(parser, "sources", "the finished teachers")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_every, args.dev_examples, args.final_examples = 4, 2, 8, 16
    common.setup(args.threads)
    root, stem = common.run_paths(args, "sources")
    lrs = args.lrs.split(",")
    cfgs = {lr: config(root, lr, args) for lr in lrs}  # validated before anything trains
    first = cfgs[lrs[0]]
    budget = common.print_budget("source teachers on dev", first, False)
    budget.append(f"teach.lr {', '.join(lrs)}; {args.steps} steps, dev every {args.eval_every} on "
                  f"{args.dev_examples} examples; seed {args.seed}")
    print("   " + budget[-1])
    backbone = load_backbone(first.model.name, first.model.precision, first.model.device, first.model.attention,
                             first.model.compile)
    record: dict[str, dict] = {}
    for lr, cfg in cfgs.items():
        if not args.report_only:
            run = open_run(cfg)
            stages.teach(cfg, backbone, run)
            run.close()
        record[lr] = {n: r for n in cfg.sources if (r := teacher_record(cfg, backbone, n)) is not None}
        report(record, budget, stem)
    print(report(record, budget, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
