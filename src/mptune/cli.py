"""The `mptune` command: one subcommand per stage, plus `run`, `tasks` and the PEFT, report tools.

Every command is one row of `COMMANDS`: its help, its own arguments, whether it takes the
settings (`--config FILE.yaml` and a flag `--section.field` per `RunConfig` field, help text = the
field's docstring, applied on top of the file, on top of the defaults) and whether it trains
into a run directory (`--resume`), and the function that runs it. A command's own argument of a
setting's name replaces that setting's flag (`predict --seed` picks a run's seed to predict with).

User errors print one line `mptune: error: ...` and exit with status 2. The training commands
continue a run directory that holds the same config; `--resume` also refuses to start a new run
when there is none. What a command holds (the run directory's lock, the process group) is held
by `holding` and released when it ends, whatever the outcome.

SIGTERM (what `kill`, schedulers and containers send) is handled as Ctrl-C is: the command stops
where it is, files being written are left as they were (every write is atomic, see `files`), the
log is flushed per step, and one line says the run resumes from its last step checkpoint (exit
status 143 for SIGTERM, 130 for Ctrl-C).

Under `torchrun` / `accelerate launch` every process runs the same command (`python -m mptune`
works too); they join one process group before the model is loaded, and only the main process
prints results (see `distributed`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from mptune.config import RENAMED, RunConfig, flat_fields, load_yaml, with_overrides
from mptune.errors import MptuneError
from mptune.presets import PRESETS


@dataclass(frozen=True)
class Arg:
    """One argument of a command, as argparse's add_argument takes it."""

    flag: str
    help: str
    metavar: str | None = None
    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False
    """A flag without a value (store_true)."""
    type: Callable[[str], object] | None = None
    """What argparse converts the value with (int: a bad value is a usage error); None keeps the text."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.switch:
            parser.add_argument(self.flag, help=self.help, action="store_true")
            return
        options = {k: v for k, v in (("metavar", self.metavar), ("default", self.default),
                                     ("choices", self.choices), ("type", self.type)) if v is not None}
        if self.flag.startswith("--"):
            options["required"] = self.required
        parser.add_argument(self.flag, help=self.help, **options)


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[argparse.Namespace], None]
    args: tuple[Arg, ...] = ()
    settings: bool = True
    """Takes --config and the --section.field flags."""
    trains: bool = False
    """Trains into a run directory (and takes --resume)."""


RESUME_HELP = ("continue the run in --out_dir (skip its finished units, continue the others from their last "
               "checkpoint) and refuse if it holds no run; `--config RUN_DIR/config.yaml --resume` repeats its "
               "settings. Without --resume the command continues an existing run too, or starts a new one")


# --- what each command does ----------------------------------------------------------------------

def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The defaults, then --config FILE, then --preset NAME, then each --section.field flag."""
    from mptune.presets import preset

    cfg = load_yaml(args.config) if args.config else RunConfig()
    if args.preset:
        cfg = with_overrides(cfg, preset(args.preset))
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}
    return with_overrides(cfg, overrides)


def planned_examples(cfg: RunConfig, command: str) -> tuple[int, int]:
    """(training examples, scored examples) `command` runs at most (finished units included): what
    compiling must repay. Scored: every unit's final evaluation (data.eval_examples per task) and its
    dev evaluations under eval_every (data.dev_examples per task, every eval_every steps and at the last)."""
    def scored(args, tasks: int) -> int:
        dev = -(-args.steps // args.eval_every) * cfg.data.dev_examples if args.eval_every else 0
        return tasks * (cfg.data.eval_examples + dev)

    units = len(cfg.targets) * len(cfg.compare.methods) * max(1, len(cfg.compare.seeds))
    plan = {"teach": (cfg.teach.steps * cfg.teach.batch_size * len(cfg.sources), scored(cfg.teach, len(cfg.sources))),
            "distill": (cfg.distill.steps * cfg.distill.batch_size, scored(cfg.distill, len(cfg.sources))),
            "adapt": (cfg.adapt.steps * cfg.adapt.batch_size * units, scored(cfg.adapt, units)),
            "evaluate": (0, cfg.data.eval_examples)}
    plan["run"] = tuple(map(sum, zip(plan["teach"], plan["distill"], plan["adapt"])))
    return plan.get(command, (0, 0))


@contextlib.contextmanager
def holding(cfg: RunConfig, command: str, resume: bool = False) -> Iterator:
    """The process group and, for a training command, the run directory (checked, locked, its
    config.yaml written), held for the command and released when it ends. Yields the RunDir (or None)."""
    from mptune import distributed
    from mptune.models import check_device
    from mptune.rundir import open_run

    check_device(cfg.model.device)  # an unavailable device is refused before anything is loaded or written
    distributed.init_from_env(cfg.model.device)  # before loading: a CUDA process picks its GPU
    run = None
    try:
        if COMMANDS[command].trains:  # bad settings or a clashing run directory: refused before the model loads
            run = open_run(cfg, resume=resume)
        yield run
    finally:
        if run is not None:
            run.close()
        distributed.close()


def show(*lines: str) -> None:
    """Print on stdout, in the main process only."""
    from mptune import distributed

    if distributed.is_main():
        print(*lines)


def backbone_for(cfg: RunConfig, command: str):
    """The frozen model of the settings; its kernel choice is reported on stderr (stdout carries results)."""
    from mptune import distributed
    from mptune.models import load_backbone

    backbone = load_backbone(cfg.model.name, cfg.model.precision, cfg.model.device, cfg.model.attention,
                             cfg.model.compile, *planned_examples(cfg, command))
    k = backbone.kernels
    if distributed.is_main():
        print(f"mptune: {cfg.model.name} in {k['precision']}, attention {k['attention']['train']} (training) / "
              f"{k['attention']['infer']} (inference), {'compiled' if k['compiled'] else 'not compiled'}",
              file=sys.stderr)
    return backbone


def train_command(args: argparse.Namespace) -> None:
    """run, teach, distill, adapt: the stage of that name on the run directory."""
    from mptune import stages

    cfg = resolve_config(args)
    if args.dry_run:
        from mptune.plan import describe

        print(describe(cfg, args.command))
        return
    with holding(cfg, args.command, args.resume) as run:
        backbone = backbone_for(cfg, args.command)
        if args.command == "run":
            table, markdown = stages.run(cfg, backbone, run)
            show(markdown)
            show(f"results: {cfg.out_dir}/results.md and results.json; seconds per stage: {table['seconds']}")
        else:
            show(json.dumps(getattr(stages, args.command)(cfg, backbone, run), indent=2))


def prompt_task(cfg: RunConfig, args: argparse.Namespace) -> str:
    """The task row of --prompt that --task names (or the file's only one), checked before the model loads."""
    from mptune.checkpoint import load_prompt, prompt_row
    from mptune.tasks.custom import register_custom_tasks

    task = args.task
    if task is None:
        tasks = load_prompt(args.prompt)[1]
        if len(tasks) != 1:
            raise MptuneError(f"{args.prompt} holds prompts for {', '.join(tasks)}: choose one with --task")
        task = tasks[0]
    register_custom_tasks(cfg.data.custom_tasks)
    prompt_row(args.prompt, task)
    return task


def evaluate_command(args: argparse.Namespace) -> None:
    from mptune import stages

    cfg = resolve_config(args)
    with holding(cfg, "evaluate"):
        task = prompt_task(cfg, args)
        backbone = backbone_for(cfg, "evaluate")
        show(json.dumps(stages.evaluate_prompt(cfg, backbone, args.prompt, task, args.split)))


def export_command(args: argparse.Namespace) -> None:
    from mptune.card import check_model
    from mptune.interop import export_peft

    cfg = resolve_config(args)
    with holding(cfg, "export"):
        task = prompt_task(cfg, args)
        check_model(args.prompt, cfg.model.name)  # a prompt only works on the model of its run
        backbone = backbone_for(cfg, "export")
        from mptune import distributed

        if distributed.is_main():
            show(f"PEFT adapter written to {export_peft(backbone, args.prompt, task, args.peft)}")


def predictor_for(args: argparse.Namespace, command: str):
    """(settings, Predictor) of --prompts: the settings default to the config.yaml of a run directory among
    them; the prompts are read and checked before the model loads."""
    from mptune.predict import Predictor, load_prompts, run_config

    sources = [s.strip() for s in args.prompts.split(",") if s.strip()]
    if args.config is None and (saved := run_config(sources)) is not None:
        args.config = str(saved)
    cfg = resolve_config(args)
    prompts = load_prompts(sources, None, args.method, cfg.data.custom_tasks, args.seed)
    backbone = backbone_for(cfg, command)
    batch = cfg.serve.max_batch if command == "serve" else cfg.predict.batch_size
    padding = cfg.serve.max_padding if command == "serve" else cfg.predict.max_padding
    predictor = Predictor(backbone, prompts, cfg.model.max_input_tokens, batch, padding)
    return cfg, predictor


def predict_command(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mptune.leaderboard import write_board
    from mptune.prediction_files import predict_file, read_input, sink_for
    from mptune.tasks import resolve_data_dir

    out = Path(args.out)
    if args.format == "rows":
        if args.input is None:
            raise MptuneError("predict needs --input FILE (or --format glue|superglue for the leaderboard files)")
        read_input(Path(args.input))  # a wrong extension is refused before the model loads
        sink = sink_for(out)
    elif args.input is not None:
        raise MptuneError(f"--format {args.format} predicts the official test files; drop --input")
    cfg = RunConfig()
    with holding(cfg, "predict"):
        cfg, predictor = predictor_for(args, "predict")
        if args.format == "rows":
            done = predict_file(predictor, Path(args.input), out, sink, args.task, args.scores, cfg.predict.chunk,
                                desc="predict")
            show(f"{out} already holds these predictions; nothing to do" if not done["done"] else
                 f"predictions of {done['rows']:,} rows written to {out}"
                 + (f" ({done['skipped']:,} saved by an earlier run)" if done["skipped"] else ""))
            return
        board = write_board(predictor, resolve_data_dir(cfg.data.data_dir), args.format, out)
        for name, rows in board["written"].items():
            show(f"{out / name}: {rows:,} rows")
        for name in board["kept"]:
            show(f"{out / name}: already there, kept")
        missing = board["missing"]
        show(f"{args.format} files still missing: " + ("none" if not missing else
             "; ".join(f"{name} ({why})" for name, why in missing.items())))


def serve_command(args: argparse.Namespace) -> None:
    try:
        from mptune.serve import serve
    except ImportError as err:
        raise MptuneError(f"mptune serve needs FastAPI and uvicorn ({err}): pip install 'mptune[serve]'") from None

    with holding(RunConfig(), "serve"):
        cfg, predictor = predictor_for(args, "serve")
        serve(predictor, cfg.serve)


def import_command(args: argparse.Namespace) -> None:
    from mptune.interop import import_peft_file

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    print(f"mptune prompt written to {import_peft_file(args.peft, tasks, args.out)}")


def report_command(args: argparse.Namespace) -> None:
    from mptune.report import write_report

    print(f"report written to {write_report(args.run_dir)}")


def tasks_command(args: argparse.Namespace) -> None:
    print(list_tasks())


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


# --- the table -----------------------------------------------------------------------------------

PROMPTS = Arg("--prompts", "run directories (their targets' prompts) and/or prompt files, comma-separated",
              "PATH,...", required=True)
METHOD = Arg("--method", "which prompt of a run directory's targets (pt, spot, spot-fixed, mpt)", default="mpt")
SEED = Arg("--seed", "which seed's prompts of a run directory that adapted its targets once per seed: one of its "
                     "compare.seeds (default: the first); another is an error naming the seeds it has", "N", type=int)
"""The prompts' arguments of `predict` and `serve` (their --seed replaces the setting --seed, the run seed, which
prediction does not use)."""

COMMANDS: dict[str, Command] = {
    "run": Command("the whole pipeline: teach, distill, adapt (PT, SPoT, MPT), then the comparison table",
                   train_command, trains=True),
    "teach": Command("train one teacher prompt per source task (vanilla prompt tuning)", train_command, trains=True),
    "distill": Command("distil the teachers into a shared prompt P* and task factors u_k, v_k", train_command,
                       trains=True),
    "adapt": Command("train every target with each method in --compare.methods, from the saved prompts",
                     train_command, trains=True),
    "evaluate": Command("score a saved prompt file on one task's split", evaluate_command, (
        Arg("--prompt", "prompt.safetensors to score", "FILE", required=True),
        Arg("--task", "task to score it on (one of the file's tasks)", required=True),
        Arg("--split", "split to score", default="test", choices=("dev", "test")))),
    "export": Command("write a saved prompt as a Hugging Face PEFT prompt-tuning adapter (merged, with a model card)",
                      export_command, (
        Arg("--prompt", "prompt.safetensors to export", "FILE", required=True),
        Arg("--peft", "new folder for the PEFT adapter", "DIR", required=True),
        Arg("--task", "task row to export (default: the file's only task)"))),
    "predict": Command("apply trained prompts to new inputs (mixed tasks), or write the GLUE/SuperGLUE leaderboard "
                       "files", predict_command, (
        PROMPTS,
        Arg("--input", "rows to predict: .jsonl (each may name its \"task\"), .csv or .tsv with a header", "FILE"),
        Arg("--task", "task of the rows that name none", "NAME"),
        Arg("--out", "output file (.jsonl or .csv); with --format glue|superglue, the folder of the leaderboard "
                     "files", "PATH", required=True),
        Arg("--format", "rows: --input to --out; glue, superglue: every test file of the benchmark that the "
                        "prompts predict, as its leaderboard expects", default="rows",
            choices=("rows", "glue", "superglue")),
        METHOD, SEED,
        Arg("--scores", "also write each label word's log-likelihood", switch=True))),
    "serve": Command("serve trained prompts over HTTP: POST /predict, GET /tasks, GET /health (needs the "
                     "'serve' extra)", serve_command, (PROMPTS, METHOD, SEED)),
    "import": Command("write a PEFT prompt-tuning or multitask prompt-tuning adapter as an mptune prompt file",
                      import_command, (
        Arg("--peft", "PEFT adapter folder to import", "DIR", required=True),
        Arg("--out", "new prompt file; a run unit's prompt.safetensors (RUN_DIR/teach/TASK/, RUN_DIR/distill/) "
                     "also gets its metrics.json, so the stages use it", "FILE", required=True),
        Arg("--tasks", "names of the adapter's task prompts, in order (one for prompt tuning)", "A,B,...",
            required=True)), settings=False),
    "report": Command("plot a run's learning curves and results and summarise it in RUN_DIR/report/report.md",
                      report_command, (Arg("run_dir", "run directory (holds config.yaml)", "RUN_DIR"),),
                      settings=False),
    "tasks": Command("list the known tasks with their metrics, label words, splits, files and hub copy",
                     tasks_command, settings=False),
}


def type_name(tp) -> str:
    text = getattr(tp, "__name__", str(tp))
    return {"list": "A,B,..."}.get(text, text.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mptune", description="Multitask Prompt Tuning (Wang et al., ICLR 2023)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        for arg in command.args:
            arg.add_to(p)
        if not command.settings:
            continue
        p.add_argument("--config", metavar="FILE", help="YAML file with settings (flags override it)")
        p.add_argument("--preset", choices=sorted(PRESETS), help="named settings applied on top of the defaults and "
                       "--config (flags override them); 'paper': the paper's T5-Base setting (docs/method.md)")
        if command.trains:
            p.add_argument("--resume", action="store_true", help=RESUME_HELP)
            p.add_argument("--dry-run", action="store_true", help="print the plan (every unit with its steps, "
                           "learning rates, model selection and scoring; which are done) and exit without loading "
                           "the model or writing anything")
        own = {arg.flag for arg in command.args}
        for key, tp, doc in flat_fields():
            if f"--{key}" not in own:  # a command's own argument replaces the setting of its name
                # docstrings are plain text: a '%' in one is no argparse format field
                p.add_argument(f"--{key}", dest=f"set:{key}", metavar=type_name(tp), help=doc.replace("%", "%%"))
        for old, new in RENAMED.items():  # earlier names still work, unlisted
            p.add_argument(f"--{old}", dest=f"set:{new}", help=argparse.SUPPRESS)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds as Ctrl-C does."""


def _terminate(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` while the command runs (main thread only; the old handler comes back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        with sigterm_as_interrupt():
            COMMANDS[args.command].run(args)
    except MptuneError as err:
        print(f"mptune: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or missing folder: nothing is left half-written
        where = f" {err.filename}" if err.filename else ""
        print(f"mptune: error: cannot read or write{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        print(f"mptune: {how}; a rerun resumes from the last step checkpoint", file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
