"""The four stages of MPT as short recipes, and `run` that chains them.

    teach    one soft prompt per source task, loss L_PLM                 -> teach/TASK/
    distill  P*, u_k, v_k on all sources, L_PLM + lambda (L_logits + L_hidden) -> distill/
    adapt    each target from scratch (PT), from a teacher (SPoT), from P* (MPT) -> adapt/METHOD/TARGET/
             (with compare.seeds: once per seed, adapt/METHOD/seedS/TARGET/, reported as mean ± std)
    evaluate the task metric of a saved prompt on a split

A recipe loads its tasks (`task_data`), builds its prompt module (`prompts`), defines the loss of
a micro-batch and hands both to the one training loop (`train.train`); the unit's prompt and
metrics go where the run directory (`rundir.RunDir`) says. A unit whose metrics.json exists is
done and is loaded instead of trained again, so an interrupted run resumes at the first
unfinished unit; with `reuse`, a teacher, P* or target unit that another run trained under the same
settings is copied (`reused`) and scored again here unless it was scored on the same examples. With
`STAGE.eval_every`, a unit keeps the prompt that scores best on the dev
split (`dev_score`, `train.Selection`). Each stage takes the command's open `RunDir` (`rundir.open_run`, once per
command), or opens one itself when called on its own.

Launched as several processes (torchrun, accelerate launch), the stages train data-parallel: each
step every process takes its shard of the same global batch, losses are normalised by the label
tokens of the whole batch and gradients summed, so the update is the one-process update; only
the main process writes to the run directory (see `distributed`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from mptune import distributed
from mptune.backbone import Backbone
from mptune.checkpoint import PROMPT_FILE, load_prompt, prompt_row
from mptune.config import RunConfig, TrainArgs
from mptune.data import label_tokens, sequence_tokens
from mptune.errors import MptuneError
from mptune.evaluate import evaluate_items, predictions, scores_of
from mptune.files import read_text, write_json, write_text
from mptune.losses import distill_kl, hidden_mse, plm_loss
from mptune.prompts import MultitaskPrompt, SoftPrompt, num_parameters, target_from_source, text_init, vocab_init
from mptune.results import (
    intervals,
    intervals_markdown,
    joint_per_target,
    over_seeds,
    results_table,
    sources_table,
    throughput,
)
from mptune.rundir import METRICS_FILE, PREDICTIONS, RunDir, copy_log, open_run, read_results, reusable
from mptune.task_data import TaskData, load_tasks, single
from mptune.tasks.custom import register_custom_tasks
from mptune.teachers import TeacherOutputs
from mptune.train import batch_stream, shards, to_batch, train

SPOT_PROBE_EXAMPLES = 100
"""Dev examples used to pick the best teacher for SPoT (compare.spot_source = 'best')."""


def initial_prompt(cfg: RunConfig, backbone: Backbone, seed: int | None = None) -> torch.Tensor:
    """The starting l x d matrix of teachers, PT and P*: [l, d] (vocab init drawn with `seed`, default the run seed)."""
    p = cfg.prompt
    if p.init == "vocab":
        seed = cfg.seed if seed is None else seed
        return vocab_init(backbone.embeddings, p.length, torch.Generator().manual_seed(seed))
    if p.init == "text":
        ids = backbone.tokenizer(p.init_text, add_special_tokens=False)["input_ids"]
        return text_init(backbone.embeddings, ids, p.length)
    module, _ = load_prompt(p.init, backbone.dim)
    start = module.task_prompts()[0].detach()
    if start.shape[0] != p.length:
        raise MptuneError(f"prompt.init {p.init} has length {start.shape[0]}, but prompt.length is {p.length}")
    return start


# --- the two losses ------------------------------------------------------------------------------

def train_plm(backbone: Backbone, prompt: torch.nn.Module, data: list[TaskData], args: TrainArgs,
              kappa: int, seed: int, folder: Path, desc: str, run: RunDir | None = None,
              select: Callable[[], float] | None = None) -> dict:
    """Prompt tuning with the task loss only: L = L_PLM. Used by teach and adapt. select: `dev_score`."""
    def loss_step(part, whole):
        batch = to_batch(part, backbone)
        out = backbone.forward(prompt(batch.task_ids), batch)
        return plm_loss(out.logits, out.targets, label_tokens(whole)), {}

    train_sets = [d.train for d in data]
    return train(backbone, prompt, args, folder, desc, lambda start: batch_stream(train_sets, args, kappa, seed, start),
                 loss_step, [d.task.name for d in data], seed, run.start(folder) if run else None, select)


def train_distill(cfg: RunConfig, backbone: Backbone, student: MultitaskPrompt, teachers: SoftPrompt,
                  data: list[TaskData], folder: Path, run: RunDir | None = None,
                  select: Callable[[], float] | None = None) -> dict:
    """MPT source training: L = L_PLM + lambda * (L_logits + L_hidden) against per-task teachers."""
    args, kd = cfg.distill, cfg.loss
    sequence = kd.hidden and kd.hidden_positions == "sequence"  # L_hidden over every real token, not the labels
    teacher = TeacherOutputs(backbone, teachers, kd.teacher_ahead, sequence)  # computed ahead, see `teachers`
    zero = torch.zeros((), device=backbone.device)

    def loss_step(part, whole):
        batch = to_batch(part, backbone)
        t = teacher(part)
        out = backbone.forward(student(batch.task_ids), batch, states=sequence)
        total = label_tokens(whole)
        ce = plm_loss(out.logits, out.targets, total)
        kl = distill_kl(out.logits, t.logits, kd.temperature, total) if kd.logits else zero
        if not kd.hidden:
            mse = zero
        elif sequence:  # the final states at every real token
            mse = hidden_mse(out.states, t.states, sequence_tokens(whole))
        else:  # the final states at the label positions
            mse = hidden_mse(out.hidden, t.hidden, total)
        loss = ce + kd.lam * (kl + mse)
        return loss, {"ce": ce, "kl": kl, "mse": mse}

    def batches(start):
        stream = batch_stream([d.train for d in data], args, cfg.data.kappa, cfg.seed)
        return teacher.stream(stream, start, args.batch_size, lambda items: shards(items, args))

    return train(backbone, student, args, folder, "distill", batches, loss_step, [d.task.name for d in data],
                 cfg.seed, run.start(folder) if run else None, select)


def eval_tasks(backbone: Backbone, prompt, data: list[TaskData]) -> dict:
    """{'scores': metrics per task, 'eval_examples_per_s': rate, PREDICTIONS: each task's predictions and labels}
    of a prompt module (task ids as in `data`); `RunDir.finish` writes the predictions to their own file."""
    start = time.perf_counter()
    preds = {d.task.name: predictions(backbone, prompt, d.task, d.eval, progress=f"eval {d.task.name}") for d in data}
    scores = {d.task.name: scores_of(d.task, preds[d.task.name], d.eval_labels) for d in data}
    rate = sum(len(d.eval) for d in data) / (time.perf_counter() - start)
    return {"scores": scores, "eval_examples_per_s": round(rate, 2),
            PREDICTIONS: {d.task.name: {"predictions": preds[d.task.name], "labels": list(d.eval_labels)}
                          for d in data}}


def dev_score(cfg: RunConfig, backbone: Backbone, prompt: torch.nn.Module, names: list[str], args: TrainArgs,
              seed: int | None = None) -> Callable[[], float] | None:
    """Model selection's score: the mean dev metric of `prompt` over the tasks `names` (task ids in
    that order) on data.dev_examples each; None when args.eval_every is 0 (keep the last step)."""
    if not args.eval_every:
        return None
    dev = load_tasks(cfg, backbone, names, "dev", seed, with_train=False, examples=cfg.data.dev_examples)
    return lambda: statistics.mean(evaluate_items(backbone, prompt, d.task, d.eval, d.eval_labels)[d.task.metric]
                                   for d in dev)


def reused(cfg: RunConfig, backbone: Backbone, run: RunDir, kind: str, folder: Path
           ) -> tuple[torch.nn.Module, dict] | None:
    """A unit another run trained under this run's settings (cfg.reuse, `rundir.reusable`): its prompt module and
    metrics (`reused_from` naming it), its log copied into `folder`. The metrics keep its scores and predictions
    only when that run scored the same examples; otherwise they have no 'scores' and the caller scores it here.
    None: train it here."""
    if not cfg.reuse or (found := reusable(cfg, kind, folder)) is None:
        return None
    source, scored_alike = found
    module = distributed.from_main(lambda: load_prompt(source / PROMPT_FILE, backbone.dim)[0])
    run.start(folder)  # config.yaml before the unit's first file
    copy_log(source, folder)
    if distributed.is_main():
        print(f"{kind} {folder.name}: copied from {source}, "
              + ("with its scores (the same examples)" if scored_alike else "scored again here"))
    metrics = {**RunDir.done(source), "reused_from": str(source)}  # a damaged metrics.json: one error naming it
    if scored_alike:
        return module, {**metrics, PREDICTIONS: distributed.from_main(lambda: RunDir.predictions(source))}
    return module, {k: v for k, v in metrics.items() if k not in ("scores", "eval_examples_per_s")}


# --- stages ------------------------------------------------------------------------------------

def teach(cfg: RunConfig, backbone: Backbone, run: RunDir | None = None) -> dict[str, dict]:
    """Train one teacher prompt per source task by vanilla prompt tuning."""
    run = run or open_run(cfg)
    results = {}
    for name in cfg.sources:
        folder = run.teacher(name)
        if (metrics := run.done(folder)) is None:
            data = load_tasks(cfg, backbone, [name], cfg.eval_split)
            if (copied := reused(cfg, backbone, run, "teach", folder)) is not None:
                prompt, metrics = copied
            else:
                prompt = SoftPrompt(initial_prompt(cfg, backbone))
                select = dev_score(cfg, backbone, prompt, [name], cfg.teach)
                metrics = train_plm(backbone, prompt, data, cfg.teach, 2, cfg.seed, folder, f"teach {name}", run,
                                    select)
            if "scores" not in metrics:
                metrics.update(eval_tasks(backbone, prompt, data))
            metrics = run.finish(folder, prompt, [name], {**metrics, "parameters": num_parameters(prompt)})
        results[name] = metrics
    return results


def load_teachers(cfg: RunConfig, backbone: Backbone) -> SoftPrompt:
    """All teacher prompts as one module [S, l, d], rows in the order of cfg.sources (read by the main process)."""
    run = RunDir(Path(cfg.out_dir))

    def read() -> SoftPrompt:
        rows = []
        for name in cfg.sources:
            path = run.teacher(name) / PROMPT_FILE
            if not path.exists():
                raise MptuneError(f"no teacher for source {name} at {path}: run `mptune teach` first")
            rows.append(load_prompt(path, backbone.dim)[0].prompt[0])
        return SoftPrompt(torch.stack(rows))

    return distributed.from_main(read)


def distill(cfg: RunConfig, backbone: Backbone, run: RunDir | None = None) -> dict:
    """Distil the teachers into one shared prompt P* and task factors u_k, v_k."""
    run = run or open_run(cfg)
    folder = run.distilled()
    if (metrics := run.done(folder)) is not None:
        return metrics
    data = load_tasks(cfg, backbone, cfg.sources, cfg.eval_split)
    if (copied := reused(cfg, backbone, run, "distill", folder)) is not None:
        student, metrics = copied
    else:
        teachers = load_teachers(cfg, backbone)
        student = MultitaskPrompt(initial_prompt(cfg, backbone), len(cfg.sources), cfg.prompt.rank)
        select = dev_score(cfg, backbone, student, cfg.sources, cfg.distill)  # mean dev score over the sources
        metrics = train_distill(cfg, backbone, student, teachers, data, folder, run, select)
    if "scores" not in metrics:
        metrics.update(eval_tasks(backbone, student, data))
    return run.finish(folder, student, cfg.sources, {**metrics, "parameters": num_parameters(student)})


def load_distilled(cfg: RunConfig, backbone: Backbone) -> MultitaskPrompt:
    """P* and the source factors, as the main process reads them from distill/."""
    def read() -> MultitaskPrompt:
        path = RunDir(Path(cfg.out_dir)).distilled() / PROMPT_FILE
        if not path.exists():
            raise MptuneError(f"no distilled prompt at {path}: run `mptune distill` first")
        module, _ = load_prompt(path, backbone.dim)
        if not isinstance(module, MultitaskPrompt):
            raise MptuneError(f"{path} holds a plain soft prompt, not a distilled multitask prompt")
        return module

    return distributed.from_main(read)


def spot_init(cfg: RunConfig, backbone: Backbone, target: TaskData, source: str, key: str = "compare.spot_source"
              ) -> tuple[SoftPrompt, str]:
    """SPoT's start: the teacher of `source`, or for 'best' the teacher that scores best on the target's
    dev split (an oracle the literature does not have: 'spot-fixed' is the a-priori choice)."""
    teachers = load_teachers(cfg, backbone)
    if source != "best":
        if source not in cfg.sources:
            raise MptuneError(f"{key} {source!r} is not one of the sources {', '.join(cfg.sources)}")
        pick = cfg.sources.index(source)
    else:
        dev = load_tasks(cfg, backbone, [target.task.name], "dev", with_train=False)[0]
        probe, labels = dev.eval[:SPOT_PROBE_EXAMPLES], dev.eval_labels[:SPOT_PROBE_EXAMPLES]
        task = target.task
        values = [evaluate_items(backbone, lambda ids, k=k: teachers.prompt[k].expand(len(ids), -1, -1),
                                 task, probe, labels)[task.metric] for k in range(len(cfg.sources))]
        pick = max(range(len(values)), key=values.__getitem__)
    return SoftPrompt(teachers.prompt[pick]), cfg.sources[pick]


def start_prompt(cfg: RunConfig, backbone: Backbone, method: str, target: TaskData, seed: int
                 ) -> tuple[torch.nn.Module, dict]:
    """Where a target's prompt starts: PT from scratch, SPoT from a teacher (chosen on the target's dev
    split, or named), SPoT-fixed from the teacher chosen a priori, MPT from P* o (u v^T)."""
    def spot(source: str, key: str):
        prompt, picked = spot_init(cfg, backbone, target, source, key)
        return prompt, {"spot_source": picked}

    starts = {"pt": lambda: (SoftPrompt(initial_prompt(cfg, backbone, seed)), {}),
              "spot": lambda: spot(cfg.compare.spot_source, "compare.spot_source"),
              "spot-fixed": lambda: spot(cfg.compare.spot_fixed, "compare.spot_fixed"),
              "mpt": lambda: (target_from_source(load_distilled(cfg, backbone), 1, cfg.prompt.target_factors), {})}
    return starts[method]()


def adapt_one(cfg: RunConfig, backbone: Backbone, method: str, target: TaskData, seed: int,
              run: RunDir | None = None) -> dict:
    """Train one target with one method; all methods share this code path and loss."""
    run = run or RunDir(Path(cfg.out_dir), cfg.compare.seeds)
    folder = run.adapted(method, target.task.name, seed)
    if (metrics := run.done(folder)) is not None:
        return metrics
    data = [single(target)]
    if (copied := reused(cfg, backbone, run, method, folder)) is not None:
        prompt, metrics = copied  # SPoT's metrics name the teacher it started from
    else:
        prompt, info = start_prompt(cfg, backbone, method, target, seed)
        select = dev_score(cfg, backbone, prompt, [target.task.name], cfg.adapt, seed)
        metrics = train_plm(backbone, prompt, data, cfg.adapt, 2, seed, folder, f"{method} {target.task.name}", run,
                            select)
        metrics.update(info)
    if "scores" not in metrics:
        metrics.update(eval_tasks(backbone, prompt, data))
    return run.finish(folder, prompt, [target.task.name], {**metrics, "parameters": num_parameters(prompt)})


def adapt_joint(cfg: RunConfig, backbone: Backbone, targets: list[TaskData], seed: int,
                run: RunDir | None = None) -> dict:
    """MPT*: all targets at once, one shared P* and a u, v per target, mixed-task batches."""
    run = run or RunDir(Path(cfg.out_dir), cfg.compare.seeds)
    folder = run.joint(seed)
    if (metrics := run.done(folder)) is not None:
        return metrics
    prompt = target_from_source(load_distilled(cfg, backbone), len(targets), cfg.prompt.target_factors)
    select = dev_score(cfg, backbone, prompt, cfg.targets, cfg.adapt, seed)
    metrics = train_plm(backbone, prompt, targets, cfg.adapt, cfg.data.kappa, seed, folder, "mpt-joint", run, select)
    metrics.update(eval_tasks(backbone, prompt, targets), parameters=num_parameters(prompt))
    return run.finish(folder, prompt, [t.task.name for t in targets], metrics)


def adapt_seed(cfg: RunConfig, backbone: Backbone, seed: int, run: RunDir | None = None) -> dict[str, dict[str, dict]]:
    """Every method on every target with one seed: results[method][target] = metrics."""
    targets = load_tasks(cfg, backbone, cfg.targets, cfg.eval_split, seed)  # task ids 0..tau-1, for MPT*
    results: dict[str, dict[str, dict]] = {}
    for method in cfg.compare.methods:
        if method == "mpt" and cfg.compare.joint:
            results["mpt"] = joint_per_target(adapt_joint(cfg, backbone, targets, seed, run), cfg.targets)
            continue
        results[method] = {t.task.name: adapt_one(cfg, backbone, method, t, seed, run) for t in targets}
    return results


def adapt(cfg: RunConfig, backbone: Backbone, run: RunDir | None = None) -> dict[str, dict[str, dict]]:
    """Every method on every target: results[method][target] = metrics (mean ± std over compare.seeds)."""
    run = run or open_run(cfg)
    if not cfg.compare.seeds:
        return adapt_seed(cfg, backbone, cfg.seed, run)
    return over_seeds({seed: adapt_seed(cfg, backbone, seed, run) for seed in cfg.compare.seeds}, cfg.targets)


def evaluate_prompt(cfg: RunConfig, backbone: Backbone, prompt_path: str, task_name: str,
                    split: str) -> dict[str, float]:
    """The metric of a saved prompt on one task's split; the task must be one of the file's rows."""
    register_custom_tasks(cfg.data.custom_tasks)
    module, row = prompt_row(prompt_path, task_name, backbone.dim)
    data = load_tasks(cfg, backbone, [task_name], split, prompt_length=module.length, with_train=False)[0]
    return evaluate_items(backbone, lambda ids: module(torch.full_like(ids, row)), data.task, data.eval,
                          data.eval_labels, progress=f"eval {task_name}")


# --- the whole pipeline ------------------------------------------------------------------------

def run(cfg: RunConfig, backbone: Backbone, run_dir: RunDir | None = None) -> tuple[dict, str]:
    """teach -> distill -> adapt (PT, SPoT, MPT) -> results table (results.json, results.md)."""
    run_dir = run_dir or open_run(cfg)
    if (finished := finished_results(cfg, run_dir)) is not None:  # a finished run is never rewritten
        return finished
    timings = {}
    start = time.perf_counter()
    stage_results = {}
    for name, stage in (("teach", teach), ("distill", distill), ("adapt", adapt)):
        if name == "distill" and "mpt" not in cfg.compare.methods:
            continue
        t0 = time.perf_counter()
        stage_results[name] = stage(cfg, backbone, run_dir)
        timings[name] = round(time.perf_counter() - t0, 1)
    table, markdown = results_table(cfg, stage_results["adapt"], backbone.dim)
    table["intervals"] = intervals(cfg, run_dir)
    markdown += "\n" + intervals_markdown(cfg, table["intervals"]) if table["intervals"] else ""
    table["sources"], sources_markdown = sources_table(cfg, run_dir, stage_results["teach"],
                                                       stage_results.get("distill"))
    markdown += "\n" + sources_markdown
    timings["total"] = round(time.perf_counter() - start, 1)
    table["seconds"] = timings
    table["throughput_examples_per_s"] = throughput(stage_results)
    run_dir.save_config()  # every unit may have been imported: the table is the first thing written here
    if distributed.is_main():
        write_json(run_dir.results_json, table)
        write_text(run_dir.results_md, markdown)
    return table, markdown


def finished_results(cfg: RunConfig, run_dir: RunDir) -> tuple[dict, str] | None:
    """(results.json, results.md) of a run whose every unit is done and whose table is written, else None."""
    def read() -> tuple[dict, str] | None:
        if not (run_dir.results_json.exists() and run_dir.results_md.exists()):
            return None
        units = run_dir.units(cfg.sources, cfg.targets, cfg.compare.methods, cfg.compare.joint)
        if not all((u.folder / METRICS_FILE).is_file() for u in units):
            return None  # a unit was removed to be redone: the table is made again
        return read_results(run_dir.results_json), read_text(run_dir.results_md, "the run's results table (markdown)")

    return distributed.from_main(read)
