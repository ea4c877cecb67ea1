"""The `mptune` command: one subcommand per stage, plus `run`, `tasks` and the PEFT, report tools.

Every setting of `RunConfig` is a flag `--section.field` (help text = the field's docstring),
applied on top of `--config FILE.yaml`, applied on top of the defaults. User errors print one
line `mptune: error: ...` and exit with status 2. The training commands (run, teach, distill,
adapt) continue a run directory that holds the same config; `--resume` also refuses to start a
new run when there is none.

Under `torchrun` / `accelerate launch` every process runs the same command (`python -m mptune`
works too); they join one process group before the model is loaded, and only the main process
prints results (see `distributed`).
"""

from __future__ import annotations

import argparse
import json
import sys

from mptune.config import RunConfig, flat_fields, load_yaml, with_overrides
from mptune.errors import MptuneError

STAGES = {
    "run": "the whole pipeline: teach, distill, adapt (PT, SPoT, MPT), then the comparison table",
    "teach": "train one teacher prompt per source task (vanilla prompt tuning)",
    "distill": "distil the teachers into a shared prompt P* and task factors u_k, v_k",
    "adapt": "train every target with each method in --target.methods, from the saved prompts",
    "evaluate": "score a saved prompt file on one task's split",
    "export": "write a saved prompt as a Hugging Face PEFT prompt-tuning adapter (merged, with a model card)",
    "import": "write a PEFT prompt-tuning or multitask prompt-tuning adapter as an mptune prompt file",
    "report": "plot a run's learning curves and results and summarise it in RUN_DIR/report/report.md",
    "tasks": "list the known tasks with their metrics, label words, splits, files and hub copy",
}

TRAINING = ("run", "teach", "distill", "adapt")
"""The commands that train into a run directory (and take --resume)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mptune", description="Multitask Prompt Tuning (Wang et al., ICLR 2023)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "tasks":
            continue
        if name == "report":
            p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds config.yaml)")
            continue
        if name == "import":
            p.add_argument("--peft", required=True, metavar="DIR", help="PEFT adapter folder to import")
            p.add_argument("--out", required=True, metavar="FILE",
                           help="new prompt file; a run unit's prompt.safetensors (RUN_DIR/teach/TASK/, "
                                "RUN_DIR/distill/) also gets its metrics.json, so the stages use it")
            p.add_argument("--tasks", required=True, metavar="A,B,...",
                           help="names of the adapter's task prompts, in order (one for prompt tuning)")
            continue
        p.add_argument("--config", metavar="FILE", help="YAML file with settings (flags override it)")
        if name in TRAINING:
            p.add_argument("--resume", action="store_true",
                           help="continue the run in --out_dir (skip its finished units, continue the others "
                                "from their last checkpoint) and refuse if it holds no run; "
                                "`--config RUN_DIR/config.yaml --resume` repeats its settings. Without --resume "
                                "the command continues an existing run too, or starts a new one")
        if name == "evaluate":
            p.add_argument("--prompt", required=True, metavar="FILE", help="prompt.safetensors to score")
            p.add_argument("--task", required=True, help="task to score it on (one of the file's tasks)")
            p.add_argument("--split", default="test", choices=("dev", "test"), help="split to score")
        if name == "export":
            p.add_argument("--prompt", required=True, metavar="FILE", help="prompt.safetensors to export")
            p.add_argument("--peft", required=True, metavar="DIR", help="new folder for the PEFT adapter")
            p.add_argument("--task", help="task row to export (default: the file's only task)")
        for key, tp, doc in flat_fields():
            p.add_argument(f"--{key}", dest=f"set:{key}", metavar=type_name(tp), help=doc)
    return parser


def type_name(tp) -> str:
    text = getattr(tp, "__name__", str(tp))
    return {"list": "A,B,..."}.get(text, text.upper())


def planned_examples(cfg: RunConfig, command: str) -> int:
    """Training examples `command` runs at most (finished units included): what compiling must repay."""
    teach = cfg.teach.steps * cfg.teach.batch_size * len(cfg.sources)
    distill = cfg.distill.steps * cfg.distill.batch_size
    adapt = (cfg.adapt.steps * cfg.adapt.batch_size * len(cfg.targets) * len(cfg.target.methods)
             * max(1, len(cfg.target.seeds)))
    return {"run": teach + distill + adapt, "teach": teach, "distill": distill, "adapt": adapt}.get(command, 0)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    cfg = load_yaml(args.config) if args.config else RunConfig()
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    return with_overrides(cfg, overrides)


def list_tasks() -> str:
    from mptune.tasks import get_task, hub, task_names

    rows = ["| task | family | metrics | label words | splits | files (under the data dir) | hub copy |",
            "|---|---|---|---|---|---|---|"]
    for name in task_names():
        t = get_task(name)
        words = ", ".join(t.choices) if len(t.choices) <= 4 else f"{len(t.choices)} score strings"
        words = words or "(generated text)"
        cells = [name, t.family, ", ".join((t.metric, *t.extra_metrics)), words, t.splits_doc, t.source,
                 hub.describe(name)]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("\nAny task NAME also exists as NAME@K: K training examples per class "
                "(2K examples for regression and generation tasks).")
    return "\n".join(rows)


def dispatch(args: argparse.Namespace) -> None:
    if args.command == "tasks":
        print(list_tasks())
        return
    if args.command == "report":
        from mptune.report import write_report

        print(f"report written to {write_report(args.run_dir)}")
        return
    if args.command == "import":
        from mptune.interop import import_peft_file

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        print(f"mptune prompt written to {import_peft_file(args.peft, tasks, args.out)}")
        return
    cfg = resolve_config(args)
    from mptune import distributed, stages
    from mptune.models import load_backbone

    distributed.init_from_env(cfg.model.device)  # before loading: a CUDA process picks its GPU
    show = print if distributed.is_main() else lambda *lines: None

    if args.command in TRAINING:  # refuse bad settings or a clashing run directory before loading the model
        stages.prepare_run_dir(cfg, resume=args.resume)
    if args.command == "export" and args.task is None:
        from mptune.checkpoint import load_prompt

        tasks = load_prompt(args.prompt)[1]
        if len(tasks) != 1:
            raise MptuneError(f"{args.prompt} holds prompts for {', '.join(tasks)}: choose one with --task")
        args.task = tasks[0]
    if args.command in ("evaluate", "export"):
        stages.register_custom_tasks(cfg)
        stages.prompt_row(args.prompt, args.task)  # refuse a bad prompt file or task before loading the model
    if args.command == "export":
        from mptune.card import check_model

        check_model(args.prompt, cfg.model.name)  # a prompt only works on the model of its run
    backbone = load_backbone(cfg.model.name, cfg.model.precision, cfg.model.device, cfg.model.attention,
                             cfg.model.compile, planned_examples(cfg, args.command))
    k = backbone.kernels
    if distributed.is_main():  # on stderr: stdout carries the command's result
        print(f"mptune: {cfg.model.name} in {k['precision']}, attention {k['attention']['train']} (training) / "
              f"{k['attention']['infer']} (inference), {'compiled' if k['compiled'] else 'not compiled'}",
              file=sys.stderr)
    if args.command == "run":
        table, markdown = stages.run(cfg, backbone)
        show(markdown)
        show(f"results: {cfg.out_dir}/results.md and results.json; seconds per stage: {table['seconds']}")
    elif args.command == "evaluate":
        show(json.dumps(stages.evaluate_prompt(cfg, backbone, args.prompt, args.task, args.split)))
    elif args.command == "export":
        from mptune.interop import export_peft

        if distributed.is_main():
            show(f"PEFT adapter written to {export_peft(backbone, args.prompt, args.task, args.peft)}")
    else:
        result = getattr(stages, args.command)(cfg, backbone)
        show(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        dispatch(args)
    except MptuneError as err:
        print(f"mptune: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or missing folder: nothing is left half-written
        where = f" {err.filename}" if err.filename else ""
        print(f"mptune: error: cannot read or write{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mptune: interrupted; a rerun resumes from the last step checkpoint", file=sys.stderr)
        return 130
    finally:
        if "mptune.stages" in sys.modules:  # release the run directory held by this command
            sys.modules["mptune.stages"].unlock_run_dirs()
        if "mptune.distributed" in sys.modules:
            sys.modules["mptune.distributed"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
