"""The plan of a training command, printed by `--dry-run`: what it would train and score, unit by
unit, without loading the model or writing anything.

Decisions
- The units and their folders come from the run directory's own list (`RunDir.units`), so the plan
  is the order and layout the stages follow, not a second description of them; a unit already
  finished in --out_dir is marked done (a rerun skips it), as the run itself would find it. The
  run directory is checked as the command checks it (`rundir.check_saved`): a dry run that
  succeeds is not refused later for other settings or damaged files there.
- Each stage's line gives what decides its cost and its outcome: steps x batch (and the examples
  that makes), the learning rates, model selection (dev every N steps on how many dev examples),
  and the split and number of examples scored at the end. Nothing is estimated: wall time depends
  on the hardware the plan will run on, which is often not the one printing it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mptune.config import RunConfig, TrainArgs
from mptune.rundir import RunDir, check_saved

STAGES_OF = {"run": ("teach", "distill", "adapt"), "teach": ("teach",), "distill": ("distill",),
             "adapt": ("adapt",)}
"""The stages each training command runs."""


def _budget(args: TrainArgs) -> str:
    return f"{args.steps:,} x {args.batch_size} ({args.steps * args.batch_size:,} examples)"


def _lrs(args: TrainArgs, factors: bool) -> str:
    return f"{args.lr:g}" + (f", u/v {args.factor_lr:g}" if factors else "")


def _selection(cfg: RunConfig, args: TrainArgs) -> str:
    if not args.eval_every:
        return "last step"
    dev = cfg.data.dev_examples or "all"
    return f"best on dev every {args.eval_every:,} steps ({dev} examples per task)"


def describe(cfg: RunConfig, command: str) -> str:
    """The plan of `command` (run, teach, distill, adapt) with these settings, as markdown; refused
    (MptuneError) where the command itself would refuse --out_dir: a run there with other settings, or
    damaged files of its finished units."""
    run = RunDir(Path(cfg.out_dir), cfg.compare.seeds)
    check_saved(run, cfg)
    stages = STAGES_OF[command]
    scored = f"{cfg.data.eval_examples or 'all'} {cfg.eval_split} examples per task"
    args = {"teach": cfg.teach, "distill": cfg.distill, "adapt": cfg.adapt}
    rows = ["| stage | unit | steps x batch | lr | model selection | scored on | status |",
            "|---|---|---|---|---|---|---|"]
    units = [u for u in run.units(cfg.sources, cfg.targets, cfg.compare.methods, cfg.compare.joint)
             if u.stage in stages]
    done = [RunDir.done(u.folder) is not None for u in units]
    for unit, finished in zip(units, done):
        stage_args = args[unit.stage]
        factors = unit.stage == "distill" or unit.name.startswith("mpt")
        rows.append(f"| {unit.stage} | {unit.name} | {_budget(stage_args)} | {_lrs(stage_args, factors)} | "
                    f"{_selection(cfg, stage_args)} | {scored} | {'done' if finished else 'to train'} |")
    to_train = done.count(False)
    kd = cfg.loss
    here = "" if cfg.model.device == "cpu" or torch.cuda.is_available() else " (not available on this machine)"
    lines = [
        f"plan of `mptune {command}` in {cfg.out_dir} (dry run: nothing loaded, nothing written)",
        "",
        f"- model {cfg.model.name} on {cfg.model.device}{here}, precision {cfg.model.precision}, attention "
        f"{cfg.model.attention}, compile {cfg.model.compile}; inputs cut at {cfg.model.max_input_tokens} tokens",
        f"- prompt length {cfg.prompt.length}, rank {cfg.prompt.rank}, init {cfg.prompt.init}",
        f"- sources {', '.join(cfg.sources)}; targets {', '.join(cfg.targets)}",
        f"- methods {', '.join(cfg.compare.methods)}{' (MPT* joint)' if cfg.compare.joint else ''}; "
        f"target seeds {', '.join(map(str, cfg.compare.seeds)) or cfg.seed}; run seed {cfg.seed}",
        f"- multitask batches: K of kappa = {cfg.data.kappa} tasks per batch; distillation loss L_PLM + "
        f"{kd.lam:g} (L_logits{'' if kd.logits else ' off'} + L_hidden{'' if kd.hidden else ' off'} at "
        f"{kd.hidden_positions}), T = {kd.temperature:g}",
        f"- {len(units)} units, {to_train} to train",
        "",
        *rows,
    ]
    return "\n".join(lines)
