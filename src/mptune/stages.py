"""The four stages of MPT, each a short explicit loop, and `run` that chains them.

    teach    one soft prompt per source task, loss L_PLM                 -> teach/TASK/
    distill  P*, u_k, v_k on all sources, L_PLM + lambda (L_logits + L_hidden) -> distill/
    adapt    each target from scratch (PT), from a teacher (SPoT), from P* (MPT) -> adapt/METHOD/TARGET/
             (with target.seeds: once per seed, adapt/METHOD/seedS/TARGET/, reported as mean ± std)
    evaluate the task metric of a saved prompt on a split

Every unit of work writes `prompt.safetensors`, `metrics.json` and a per-step `log.jsonl` into
its own folder of the run directory; a unit whose metrics.json exists is done and is loaded
instead of trained again, so an interrupted run resumes at the first unfinished unit. The run
directory keeps the resolved `config.yaml`; a second run with a different config on the same
directory is refused rather than mixing results.

Launched as several processes (torchrun, accelerate launch), the stages train data-parallel: each
step every process takes its shard of the same global batch, losses are normalised by the label
tokens of the whole batch and gradients summed, so the update is the one-process update; only
the main process writes to the run directory (see `distributed`).
"""

from __future__ import annotations

import fcntl
import json
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from mptune import distributed
from mptune.backbone import Backbone
from mptune.checkpoint import PROMPT_FILE, load_prompt, save_prompt
from mptune.config import RunConfig, TrainArgs, same_run, save_yaml
from mptune.data import TAIL, Encoded, collate, encode, label_tokens, multitask_batches, tokenize_targets
from mptune.errors import MptuneError
from mptune.evaluate import evaluate_items
from mptune.logs import StepLog, use_loggers
from mptune.losses import distill_kl, hidden_mse, plm_loss
from mptune.prompts import (MultitaskPrompt, SoftPrompt, mpt_target_parameters, num_parameters,
                            target_from_source, text_init, vocab_init)
from mptune.resume import clear_state, restore_state, save_state, skip, warn
from mptune.tasks import Task, get_task, resolve_data_dir
from mptune.teachers import TeacherOutputs
from mptune.tasks.custom import load_custom_yaml, register_custom

MERGED_FILE = "merged.safetensors"
"""A trained multitask prompt merged into plain l x d prompts, one per task row."""
SPOT_PROBE_EXAMPLES = 100
"""Dev examples used to pick the best teacher for SPoT (spot_source = 'best')."""
CUT_WARNING = 0.1
"""`load_tasks` warns when more than this share of a split's inputs is cut to model.max_input_tokens."""


# --- data --------------------------------------------------------------------------------------

@dataclass
class TaskData:
    """One task's tokenised train split and evaluation split."""

    task: Task
    train: list[Encoded]
    eval: list[Encoded]
    eval_labels: list


def load_tasks(cfg: RunConfig, backbone: Backbone, names: list[str], split: str,
               seed: int | None = None, prompt_length: int | None = None,
               with_train: bool = True) -> list[TaskData]:
    """Tokenise train and `split` of each task once; task ids follow the order of `names`.

    Few-shot tasks draw their k-shot train sample with data.split_seed + `seed` (default: the run
    seed), so each seed of target.seeds trains on its own sample. `with_train=False` (evaluation
    only) leaves train empty and unread. Every task must fit the model's positions with a prompt
    of `prompt_length` rows (default prompt.length), see `check_fits`.
    """
    data_dir = resolve_data_dir(cfg.data.data_dir)
    sample_seed = cfg.data.split_seed + (cfg.seed if seed is None else seed)
    out = []
    for task_id, name in enumerate(names):
        task = get_task(name)
        parts = {"train": task.load(data_dir, "train", cfg.data.split_seed, sample_seed)} if with_train else {}
        evals = task.load(data_dir, split, cfg.data.split_seed)
        if cfg.data.eval_examples and len(evals) > cfg.data.eval_examples:
            evals = random.Random(cfg.data.split_seed).sample(evals, cfg.data.eval_examples)
        parts[split] = evals
        encoded = {}
        for part, rows in parts.items():
            if not rows:
                raise MptuneError(f"task {name} has an empty {part} split")
            encoded[part] = encode(rows, backbone.tokenizer, backbone.is_seq2seq, cfg.model.max_input_tokens,
                                   task_id, append_eos=not task.is_classification)
            warn_if_cut(name, part, encoded[part], cfg.model.max_input_tokens)
        out.append(TaskData(task, encoded.get("train", []), encoded[split], [e.label for e in evals]))
        check_fits(backbone, cfg.prompt.length if prompt_length is None else prompt_length, out[-1])
    return out


_CUT_WARNED: set[tuple[str, str, int, int]] = set()
"""(task, split, max_tokens, cut) already warned about: a run loads a target once per method and seed."""


def warn_if_cut(name: str, part: str, items: list[Encoded], max_tokens: int) -> None:
    """Warn (main process, once per task and split) when over `CUT_WARNING` of a split's inputs fill `max_tokens`."""
    cut = sum(len(it.input_ids) >= max_tokens for it in items)
    key = (name, part, max_tokens, cut)
    if cut > CUT_WARNING * len(items) and distributed.is_main() and key not in _CUT_WARNED:
        _CUT_WARNED.add(key)
        warn(f"task {name}: {cut:,} of {len(items):,} {part} inputs reach model.max_input_tokens ({max_tokens}) "
             f"and lose their middle (head and last {TAIL} tokens kept); long-input tasks such as QA need more, "
             "e.g. --model.max_input_tokens 512")


def check_fits(backbone: Backbone, length: int, data: TaskData) -> None:
    """MptuneError when prompt + longest (truncated) input + longest answer exceed the model's positions.

    The answer is the longest target, label word or, for generation tasks, max_new_tokens; a
    seq2seq model reads prompt + input in its encoder and the answer in its decoder.
    """
    limit, task = backbone.max_positions, data.task
    if limit is None:
        return
    items = data.train + data.eval
    words = tokenize_targets(backbone.tokenizer, task.choices, backbone.is_seq2seq) if task.choices else []
    answer = max([len(e.target_ids) for e in items] + [len(w) for w in words]
                 + ([] if task.is_classification else [task.max_new_tokens]))
    source = length + max(len(e.input_ids) for e in items)
    need = max(source, answer) if backbone.is_seq2seq else source + answer
    if need > limit:
        raise MptuneError(f"task {task.name}: its longest example needs {need} positions (prompt {length}, input "
                          f"{source - length}, answer {answer} tokens), more than the {limit} of model "
                          f"{backbone.name}; lower --model.max_input_tokens or --prompt.length")


# --- prompts and optimisation ------------------------------------------------------------------

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


def make_optimizer(module: torch.nn.Module, args: TrainArgs):
    """AdamW with lr for prompt matrices and factor_lr for u, v; linear warm-up then linear decay."""
    factors = [p for n, p in module.named_parameters() if n in ("u", "v")]
    matrices = [p for n, p in module.named_parameters() if n not in ("u", "v")]
    groups = [{"params": matrices, "lr": args.lr}] + ([{"params": factors, "lr": args.factor_lr}] if factors else [])
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay)

    warmup = min(args.warmup_steps, args.steps // 2)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (args.steps - step) / max(1, args.steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def batch_stream(data: list[TaskData], args: TrainArgs, kappa: int, seed: int):
    """Training batches over one or several tasks (K-of-kappa mixing when there are several)."""
    rng = random.Random(seed)
    pairs = multitask_batches([len(d.train) for d in data], args.batch_size, kappa, rng)
    for chosen in pairs:
        yield [data[t].train[i] for t, i in chosen]


def batch_tasks(data: list[TaskData], items: list[Encoded]) -> list[str]:
    """Names of the tasks a batch draws from, in task-id order."""
    return [data[t].task.name for t in sorted({e.task_id for e in items})]


def check_finite(loss: torch.Tensor, stage: str, step: int, tasks: Sequence[str] = ()) -> None:
    """Stop with a user error naming the stage, step and the batch's tasks when the loss is NaN or infinite.

    Raised before the optimizer steps, so the unit's last checkpoint stays the last good state.
    """
    if not math.isfinite(loss.item()):
        on = f" on a batch of {', '.join(tasks)}" if tasks else ""
        raise MptuneError(f"{stage}: loss is {loss.item()} at step {step}{on}; lower the learning rate")


# --- the two training loops --------------------------------------------------------------------

def progress_bar(desc: str, start: int, steps: int) -> tqdm:
    """Steps start+1 .. steps, with a bar in the main process only."""
    return tqdm(range(start + 1, steps + 1), desc=desc, initial=start, total=steps, dynamic_ncols=True,
                disable=not distributed.is_main())


def train_plm(backbone: Backbone, prompt: torch.nn.Module, data: list[TaskData], args: TrainArgs,
              kappa: int, seed: int, folder: Path, desc: str) -> dict:
    """Prompt tuning with the task loss only: L = L_PLM. Used by teach and adapt.

    A step's batch (the same in every process) is split by `distributed.shard` into this process's
    grad_accum micro-batches; each one's loss is divided by the label tokens of the whole batch.
    """
    backbone.assert_frozen()
    torch.manual_seed(seed)
    opt, sched = make_optimizer(prompt, args)
    start = restore_state(folder, prompt, opt, sched)
    batches = skip(batch_stream(data, args, kappa, seed), start)
    log = StepLog(folder / "log.jsonl", start)
    bar = progress_bar(desc, start, args.steps)
    for step in bar:
        items = next(batches)
        total = label_tokens(items)
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=backbone.device)  # of the whole batch: summed over micro-batches, processes
        for part in distributed.shard(items, args.grad_accum):
            batch = collate(part, backbone.tokenizer.pad_token_id, backbone.is_seq2seq).to(backbone.device)
            out = backbone.forward(prompt(batch.task_ids), batch)
            part_loss = plm_loss(out.logits, out.targets, total)
            part_loss.backward()
            loss += part_loss.detach()
        distributed.all_reduce_sum([loss, *(p.grad for p in prompt.parameters())])
        check_finite(loss, desc, step, batch_tasks(data, items))
        torch.nn.utils.clip_grad_norm_(prompt.parameters(), 1.0)
        opt.step()
        sched.step()
        row = log.write(step, len(items), sched.get_last_lr()[0], loss=loss)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ex_s=row["examples_per_s"])
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < args.steps:
            save_state(folder, step, prompt, opt, sched)
    return {**log.close(), "kernels": backbone.kernels}


def train_distill(cfg: RunConfig, backbone: Backbone, student: MultitaskPrompt, teachers: SoftPrompt,
                  data: list[TaskData], folder: Path) -> dict:
    """MPT source training: L = L_PLM + lambda * (L_logits + L_hidden) against per-task teachers."""
    args, mpt = cfg.distill, cfg.mpt
    backbone.assert_frozen()
    torch.manual_seed(cfg.seed)
    opt, sched = make_optimizer(student, args)
    start = restore_state(folder, student, opt, sched)
    teacher = TeacherOutputs(backbone, teachers, mpt.teacher_ahead)
    parts = lambda items: distributed.shard(items, args.grad_accum)  # noqa: E731
    batches = teacher.stream(batch_stream(data, args, mpt.kappa, cfg.seed), start, args.batch_size, parts)
    log = StepLog(folder / "log.jsonl", start)
    zero = torch.zeros((), device=backbone.device)
    bar = progress_bar("distill", start, args.steps)
    for step in bar:
        items = next(batches)
        total = label_tokens(items)
        opt.zero_grad(set_to_none=True)
        terms = torch.zeros(3, device=backbone.device)  # ce, kl, mse of the whole batch (as in train_plm)
        for part in parts(items):
            batch = collate(part, backbone.tokenizer.pad_token_id, backbone.is_seq2seq).to(backbone.device)
            teacher_logits, teacher_hidden = teacher(part)
            out = backbone.forward(student(batch.task_ids), batch)
            ce = plm_loss(out.logits, out.targets, total)
            kl = distill_kl(out.logits, teacher_logits, mpt.temperature, total) if mpt.logits else zero
            mse = hidden_mse(out.hidden, teacher_hidden, total) if mpt.hidden else zero
            loss = ce + mpt.lam * (kl + mse)
            loss.backward()
            terms += torch.stack([ce, kl, mse]).detach()
        distributed.all_reduce_sum([terms, *(p.grad for p in student.parameters())])
        ce, kl, mse = terms
        loss = ce + mpt.lam * (kl + mse)
        check_finite(loss, "distill", step, batch_tasks(data, items))
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        row = log.write(step, len(items), sched.get_last_lr()[0], loss=loss, ce=ce, kl=kl, mse=mse)
        bar.set_postfix(ce=f"{row['ce']:.3f}", kl=f"{row['kl']:.3f}", mse=f"{row['mse']:.3f}")
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < args.steps:
            save_state(folder, step, student, opt, sched)
    return {**log.close(), "kernels": backbone.kernels}


# --- run directory -----------------------------------------------------------------------------

def register_custom_tasks(cfg: RunConfig) -> None:
    """Add the user's own tasks (data.custom_tasks YAML files) to the task registry."""
    for path in cfg.data.custom_tasks:
        register_custom(load_custom_yaml(path))


def prepare_run_dir(cfg: RunConfig, resume: bool = False) -> Path:
    """Create the run directory and record the config; refuse a directory holding another config.

    resume: the directory must already hold this run (`--resume`): refuse rather than start a new one.
    Also joins the process group when launched as several processes (`distributed.init_from_env`).
    """
    distributed.init_from_env(cfg.model.device)
    register_custom_tasks(cfg)
    for name in [*cfg.sources, *cfg.targets]:  # a typo must not leave a config.yaml that blocks the fix
        get_task(name)
    resolve_data_dir(cfg.data.data_dir)
    for stage in ("teach", "distill", "adapt"):
        args = getattr(cfg, stage)
        distributed.check_batch(args.batch_size, args.grad_accum, f"{stage}.batch_size")
    out = Path(cfg.out_dir)
    use_loggers(out, cfg.loggers)
    distributed.from_main(lambda: claim_run_dir(cfg, out, resume))
    return out


def claim_run_dir(cfg: RunConfig, out: Path, resume: bool = False) -> None:
    """Lock the run directory, then check its config.yaml or write it (the main process only).

    resume: a directory without config.yaml is an error, not a new run.
    """
    saved = out / "config.yaml"
    if out.exists():
        lock_run_dir(out)
    if resume and not saved.exists():
        why = f"holds no run (no {saved.name})" if out.exists() else "does not exist"
        raise MptuneError(f"nothing to resume: {out} {why}; check --out_dir, or drop --resume to start a new run")
    if saved.exists():
        import yaml

        if not same_run(yaml.safe_load(saved.read_text()), cfg):
            raise MptuneError(f"{out} holds a run with a different config ({saved}); "
                              f"choose another --out_dir or rerun with the saved config")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock_run_dir(out)
        save_yaml(cfg, saved)
    except OSError as err:
        raise MptuneError(f"cannot write the run directory {out}: {err.strerror}") from None


_LOCKS: dict[Path, object] = {}


def lock_run_dir(out: Path) -> None:
    """Hold an exclusive lock on the run directory for this process's lifetime (released on any exit)."""
    key = out.resolve()
    if key in _LOCKS:
        return
    handle = open(out / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise MptuneError(f"another mptune process is using {out}; wait for it or choose another --out_dir") from None
    _LOCKS[key] = handle


def unlock_run_dirs() -> None:
    """Release every run directory this process holds (the CLI calls it when a command ends)."""
    while _LOCKS:
        _LOCKS.popitem()[1].close()


def done(folder: Path) -> dict | None:
    """The metrics of a finished unit of work, or None (as the main process reads them)."""
    path = folder / "metrics.json"
    return distributed.from_main(lambda: json.loads(path.read_text()) if path.exists() else None)


def finish(folder: Path, module: torch.nn.Module, tasks: list[str], metrics: dict) -> dict:
    """Save a unit's prompt (and, for P* o u v^T, its merged l x d form), then its metrics.

    metrics.json is written last: its presence marks the unit done. The main process writes; every
    process returns its metrics.
    """
    def write() -> dict:
        save_prompt(module, tasks, folder / PROMPT_FILE)
        if isinstance(module, MultitaskPrompt):
            save_prompt(module.merged(), tasks, folder / MERGED_FILE)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        clear_state(folder)
        return metrics

    return distributed.from_main(write)


def eval_tasks(backbone: Backbone, prompt, data: list[TaskData]) -> dict:
    """{'scores': metrics per task, 'eval_examples_per_s': rate} of a prompt module (task ids as in `data`)."""
    start = time.perf_counter()
    scores = {d.task.name: evaluate_items(backbone, prompt, d.task, d.eval, d.eval_labels,
                                          progress=f"eval {d.task.name}") for d in data}
    rate = sum(len(d.eval) for d in data) / (time.perf_counter() - start)
    return {"scores": scores, "eval_examples_per_s": round(rate, 2)}


# --- stages ------------------------------------------------------------------------------------

def teach(cfg: RunConfig, backbone: Backbone) -> dict[str, dict]:
    """Train one teacher prompt per source task by vanilla prompt tuning."""
    out = prepare_run_dir(cfg)
    results = {}
    for name in cfg.sources:
        folder = out / "teach" / name
        if (metrics := done(folder)) is None:
            data = load_tasks(cfg, backbone, [name], cfg.eval_split)
            prompt = SoftPrompt(initial_prompt(cfg, backbone))
            metrics = train_plm(backbone, prompt, data, cfg.teach, 2, cfg.seed, folder, f"teach {name}")
            metrics.update(eval_tasks(backbone, prompt, data), parameters=num_parameters(prompt))
            finish(folder, prompt, [name], metrics)
        results[name] = metrics
    return results


def load_teachers(cfg: RunConfig, backbone: Backbone) -> SoftPrompt:
    """All teacher prompts as one module [S, l, d], rows in the order of cfg.sources (read by the main process)."""
    def read() -> SoftPrompt:
        rows = []
        for name in cfg.sources:
            path = Path(cfg.out_dir) / "teach" / name / PROMPT_FILE
            if not path.exists():
                raise MptuneError(f"no teacher for source {name} at {path}: run `mptune teach` first")
            rows.append(load_prompt(path, backbone.dim)[0].prompt[0])
        return SoftPrompt(torch.stack(rows))

    return distributed.from_main(read)


def distill(cfg: RunConfig, backbone: Backbone) -> dict:
    """Distil the teachers into one shared prompt P* and task factors u_k, v_k."""
    out = prepare_run_dir(cfg)
    folder = out / "distill"
    if (metrics := done(folder)) is not None:
        return metrics
    teachers = load_teachers(cfg, backbone)
    data = load_tasks(cfg, backbone, cfg.sources, cfg.eval_split)
    student = MultitaskPrompt(initial_prompt(cfg, backbone), len(cfg.sources), cfg.prompt.rank)
    metrics = train_distill(cfg, backbone, student, teachers, data, folder)
    metrics.update(eval_tasks(backbone, student, data), parameters=num_parameters(student))
    return finish(folder, student, cfg.sources, metrics)


def load_distilled(cfg: RunConfig, backbone: Backbone) -> MultitaskPrompt:
    """P* and the source factors, as the main process reads them from distill/."""
    def read() -> MultitaskPrompt:
        path = Path(cfg.out_dir) / "distill" / PROMPT_FILE
        if not path.exists():
            raise MptuneError(f"no distilled prompt at {path}: run `mptune distill` first")
        module, _ = load_prompt(path, backbone.dim)
        if not isinstance(module, MultitaskPrompt):
            raise MptuneError(f"{path} holds a plain soft prompt, not a distilled multitask prompt")
        return module

    return distributed.from_main(read)


def spot_init(cfg: RunConfig, backbone: Backbone, target: TaskData) -> tuple[SoftPrompt, str]:
    """SPoT's start: the chosen teacher, or the teacher that scores best on the target's dev split."""
    teachers = load_teachers(cfg, backbone)
    if cfg.target.spot_source != "best":
        if cfg.target.spot_source not in cfg.sources:
            raise MptuneError(f"target.spot_source {cfg.target.spot_source!r} is not one of the sources "
                              f"{', '.join(cfg.sources)}")
        pick = cfg.sources.index(cfg.target.spot_source)
    else:
        dev = load_tasks(cfg, backbone, [target.task.name], "dev", with_train=False)[0]
        probe, labels = dev.eval[:SPOT_PROBE_EXAMPLES], dev.eval_labels[:SPOT_PROBE_EXAMPLES]
        task = target.task
        values = [evaluate_items(backbone, lambda ids, k=k: teachers.prompt[k].expand(len(ids), -1, -1),
                                 task, probe, labels)[task.metric] for k in range(len(cfg.sources))]
        pick = max(range(len(values)), key=values.__getitem__)
    return SoftPrompt(teachers.prompt[pick]), cfg.sources[pick]


def single(data: TaskData) -> TaskData:
    """The same task data with every task id set to 0 (for a one-task prompt module)."""
    relabel = lambda items: [Encoded(e.input_ids, e.target_ids, 0) for e in items]  # noqa: E731
    return TaskData(data.task, relabel(data.train), relabel(data.eval), data.eval_labels)


def adapt_folder(cfg: RunConfig, method: str, seed: int) -> Path:
    """adapt/METHOD/ of a run; with several target seeds each seed's units nest under it as seedS/."""
    folder = Path(cfg.out_dir) / "adapt" / method
    return folder / f"seed{seed}" if cfg.target.seeds else folder


def adapt_one(cfg: RunConfig, backbone: Backbone, method: str, target: TaskData, seed: int) -> dict:
    """Train one target with one method; all methods share this code path and loss."""
    folder = adapt_folder(cfg, method, seed) / target.task.name
    if (metrics := done(folder)) is not None:
        return metrics
    info = {}
    if method == "pt":
        prompt = SoftPrompt(initial_prompt(cfg, backbone, seed))
    elif method == "spot":
        prompt, info["spot_source"] = spot_init(cfg, backbone, target)
    else:
        prompt = target_from_source(load_distilled(cfg, backbone), 1, cfg.prompt.target_factors)
    data = [single(target)]
    metrics = train_plm(backbone, prompt, data, cfg.adapt, 2, seed, folder, f"{method} {target.task.name}")
    metrics.update(info, **eval_tasks(backbone, prompt, data), parameters=num_parameters(prompt))
    return finish(folder, prompt, [target.task.name], metrics)


def adapt_joint(cfg: RunConfig, backbone: Backbone, targets: list[TaskData], seed: int) -> dict:
    """MPT*: all targets at once, one shared P* and a u, v per target, mixed-task batches."""
    folder = adapt_folder(cfg, "mpt-joint", seed)
    if (metrics := done(folder)) is not None:
        return metrics
    prompt = target_from_source(load_distilled(cfg, backbone), len(targets), cfg.prompt.target_factors)
    metrics = train_plm(backbone, prompt, targets, cfg.adapt, cfg.mpt.kappa, seed, folder, "mpt-joint")
    metrics.update(eval_tasks(backbone, prompt, targets), parameters=num_parameters(prompt))
    return finish(folder, prompt, [t.task.name for t in targets], metrics)


def adapt_seed(cfg: RunConfig, backbone: Backbone, seed: int) -> dict[str, dict[str, dict]]:
    """Every method on every target with one seed: results[method][target] = metrics."""
    targets = load_tasks(cfg, backbone, cfg.targets, cfg.eval_split, seed)  # task ids 0..tau-1, for MPT*
    results: dict[str, dict[str, dict]] = {}
    for method in cfg.target.methods:
        if method == "mpt" and cfg.target.joint:
            joint = adapt_joint(cfg, backbone, targets, seed)
            results["mpt"] = {t: {**joint, "scores": {t: joint["scores"][t]}} for t in cfg.targets}
            continue
        results[method] = {t.task.name: adapt_one(cfg, backbone, method, t, seed) for t in targets}
    return results


def adapt(cfg: RunConfig, backbone: Backbone) -> dict[str, dict[str, dict]]:
    """Every method on every target: results[method][target] = metrics (mean ± std over target.seeds)."""
    prepare_run_dir(cfg)
    if not cfg.target.seeds:
        return adapt_seed(cfg, backbone, cfg.seed)
    per_seed = {seed: adapt_seed(cfg, backbone, seed) for seed in cfg.target.seeds}
    return {m: {t: aggregate({s: per_seed[s][m][t] for s in per_seed}, t) for t in cfg.targets}
            for m in per_seed[cfg.target.seeds[0]]}


def aggregate(runs: dict[int, dict], target: str) -> dict:
    """Metrics of one method on one target over seeds: mean scores, their std and each seed's metrics."""
    scores = [r["scores"][target] for r in runs.values()]
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
    first = next(iter(runs.values()))
    return {"scores": {target: {k: statistics.mean(s[k] for s in scores) for k in scores[0]}},
            "std": {target: {k: spread([s[k] for s in scores]) for k in scores[0]}},
            "train_examples_per_s": statistics.mean(r["train_examples_per_s"] for r in runs.values()),
            "parameters": first["parameters"], "seeds": runs}


def prompt_row(prompt_path: str, task_name: str, dim: int | None = None):
    """(module, row) of the task's prompt in a saved file; NAME@K matches a file trained on NAME."""
    module, tasks = load_prompt(prompt_path, dim)
    get_task(task_name)
    base = task_name.split("@")[0]
    row = next((i for i, t in enumerate(tasks) if t == task_name or t.split("@")[0] == base), None)
    if row is None:
        raise MptuneError(f"prompt file {prompt_path} was trained for {', '.join(tasks)}, not {task_name}")
    return module, row


def evaluate_prompt(cfg: RunConfig, backbone: Backbone, prompt_path: str, task_name: str,
                    split: str) -> dict[str, float]:
    """The metric of a saved prompt on one task's split; the task must be one of the file's rows."""
    register_custom_tasks(cfg)
    module, row = prompt_row(prompt_path, task_name, backbone.dim)
    data = load_tasks(cfg, backbone, [task_name], split, prompt_length=module.length, with_train=False)[0]
    return evaluate_items(backbone, lambda ids: module(torch.full_like(ids, row)), data.task, data.eval,
                          data.eval_labels, progress=f"eval {task_name}")


# --- the whole pipeline ------------------------------------------------------------------------

def results_table(cfg: RunConfig, results: dict[str, dict[str, dict]], backbone_dim: int) -> tuple[dict, str]:
    """Scores per target and method with trainable parameters, as a dict and a markdown table."""
    methods = [m for m in cfg.target.methods if m in results]
    header = "| target | metric | " + " | ".join(m.upper() for m in methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    table: dict = {"targets": {}, "average": {}, "parameters": {}}
    for name in cfg.targets:
        metric = get_task(name).metric
        row = {m: results[m][name]["scores"][name][metric] for m in methods}
        std = {m: results[m][name]["std"][name][metric] for m in methods if "std" in results[m][name]}
        table["targets"][name] = {"metric": metric, **row, **({"std": std} if std else {})}
        cell = lambda m: f"{row[m]:.1f}" + (f" ± {std[m]:.1f}" if m in std else "")  # noqa: E731
        lines.append(f"| {name} | {metric} | " + " | ".join(cell(m) for m in methods) + " |")
    for m in methods:
        table["average"][m] = sum(table["targets"][t][m] for t in cfg.targets) / len(cfg.targets)
    spread = average_std(cfg, results, methods)
    if spread:
        table["average_std"] = spread
    cell = lambda m: f"**{table['average'][m]:.1f}**" + (f" ± {spread[m]:.1f}" if spread else "")  # noqa: E731
    lines.append("| **average** | | " + " | ".join(cell(m) for m in methods) + " |")
    l, r, tau = cfg.prompt.length, cfg.prompt.rank, len(cfg.targets)
    params = {"pt": l * backbone_dim, "spot": l * backbone_dim,
              "mpt": (mpt_target_parameters(l, backbone_dim, tau, r) if cfg.target.joint
                      else mpt_target_parameters(l, backbone_dim, 1, r))}
    table["parameters"] = {m: params[m] for m in methods}
    joint = f" (all {tau} targets, one shared P*)"
    lines.append("| trainable parameters | | " + " | ".join(
        f"{params[m]:,}" + (joint if m == "mpt" and cfg.target.joint else " per target") for m in methods) + " |")
    return table, "\n".join(lines) + "\n"


def average_std(cfg: RunConfig, results: dict, methods: list[str]) -> dict[str, float]:
    """Std over target.seeds of each method's target average ({} for a single-seed run)."""
    if len(cfg.target.seeds) < 2:
        return {}
    out = {}
    for m in methods:
        metric = {t: get_task(t).metric for t in cfg.targets}
        per_seed = [statistics.mean(results[m][t]["seeds"][s]["scores"][t][metric[t]] for t in cfg.targets)
                    for s in cfg.target.seeds]
        out[m] = statistics.stdev(per_seed)
    return out


def run(cfg: RunConfig, backbone: Backbone) -> tuple[dict, str]:
    """teach -> distill -> adapt (PT, SPoT, MPT) -> results table (results.json, results.md)."""
    out = prepare_run_dir(cfg)
    timings = {}
    start = time.perf_counter()
    stage_results = {}
    for name, stage in (("teach", teach), ("distill", distill), ("adapt", adapt)):
        if name == "distill" and "mpt" not in cfg.target.methods:
            continue
        t0 = time.perf_counter()
        stage_results[name] = stage(cfg, backbone)
        timings[name] = round(time.perf_counter() - t0, 1)
    table, markdown = results_table(cfg, stage_results["adapt"], backbone.dim)
    timings["total"] = round(time.perf_counter() - start, 1)
    table["seconds"] = timings
    table["throughput_examples_per_s"] = throughput(stage_results)
    if distributed.is_main():
        (out / "results.json").write_text(json.dumps(table, indent=2))
        (out / "results.md").write_text(markdown)
    return table, markdown


def throughput(stage_results: dict) -> dict[str, float]:
    """Mean training examples/s of each stage (over the units it trained in this or earlier runs)."""
    units = {"teach": list(stage_results.get("teach", {}).values()),
             "distill": [stage_results["distill"]] if "distill" in stage_results else [],
             "adapt": [m for per in stage_results.get("adapt", {}).values() for m in per.values()]}
    units = {k: [u for u in v if "train_examples_per_s" in u] for k, v in units.items()}  # not imported ones
    return {k: round(sum(u["train_examples_per_s"] for u in v) / len(v), 2) for k, v in units.items() if v}
