"""Applying trained prompts to new inputs: `Predictor(backbone, prompts).predict(rows)`.

One frozen model serves every task: a row is `{"task": NAME, **fields}` with the official field
names of the task's files, and each row carries only its task's l x d prompt, so rows of different
tasks share a batch. `mptune predict` (`prediction_files`, `leaderboard`) and `mptune serve`
(`serve`) are built on this one object.

Decisions
- Rows are read by the task's own reader (`Task.read_row`: the reader of its splits, labels optional)
  and tokenised as evaluation tokenises them (`data.encode`, truncated to model.max_input_tokens);
  they are predicted by `evaluate.mixed_predictions`, the code path of `mptune evaluate`, so a
  prompt predicts on new inputs exactly what it scores on a split (tests compare the two).
- The prompts are plain l x d matrices, one per task, stacked into one `SoftPrompt` [T, l, d]: an MPT
  prompt P* o (u_k v_k^T) is merged first (`MultitaskPrompt.task_prompts`), so inference needs no
  factors. Every prompt must have the same length l (rows of one batch are concatenated [B, l+n, d]);
  prompts of one run always do.
- A task is named by its registry name; a few-shot target 'cb@16' answers to 'cb' too (same reader
  and label words). Two prompts for one task are refused rather than one chosen silently.
- From a run directory the prompts are its targets' adapted prompts of one method (default 'mpt',
  MPT* units when the run adapted jointly) and, when the run lists compare.seeds, of one seed: `--seed`
  (one the run trained; another is an error naming those it has), by default the first.
- Every built-in task and every custom task reads single rows (`Task.read_row`), classification and
  generation alike; rows of both kinds share a call and a batch (`evaluate.scoring_groups` scores each
  kind in its own group: rank classification, or greedy generation as `mptune evaluate` generates).
- One input row may give several examples (a MultiRC passage: one per answer); its output then
  holds a list, in the row's answer order.
- Rows of short and long tasks meet in one batch, and a batch costs its padded positions on a CPU:
  a batch is split, longest first, where more than `max_padding` of its positions (prompt and input)
  would be padding (`data.padded_batches`; the settings predict.max_padding, serve.max_padding;
  1 keeps evaluation's fixed batches, whose predictions are the same up to rounding).
- Every prompt must fit the model's positions with the longest input kept and the longest answer
  (`task_data.check_fits`), checked once when the Predictor is built, never mid-stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from mptune.backbone import Backbone
from mptune.checkpoint import PROMPT_FILE, load_prompt
from mptune.config import RunConfig, load_yaml
from mptune.data import Encoded, encode
from mptune.errors import MptuneError
from mptune.evaluate import mixed_predictions
from mptune.prompts import SoftPrompt
from mptune.rundir import CONFIG_FILE, RunDir
from mptune.task_data import TaskData, check_fits
from mptune.tasks import Task, get_task
from mptune.tasks.custom import register_custom_tasks

TASK_FIELD = "task"
"""The field naming a row's task in mixed-task input (JSONL lines, server requests)."""


def base_name(name: str) -> str:
    """The task a prompt answers to: 'cb@16' -> 'cb'."""
    return name.strip().lower().split("@")[0]


class Predictor:
    """A frozen backbone and one prompt per task; `predict` takes rows of any of the tasks, mixed."""

    def __init__(self, backbone: Backbone, prompts: Mapping[str, torch.Tensor], max_input_tokens: int = 128,
                 batch_size: int = 32, max_padding: float = 1.0):
        """prompts: task name -> its prompt [l, d] (all of one length l, d = backbone.dim); batches of at most
        batch_size examples, split where more than max_padding of their positions would be padding
        (`data.padded_batches`; 1: fixed batches, as `mptune evaluate`)."""
        if not prompts:
            raise MptuneError("no prompts to predict with")
        self.backbone, self.max_input_tokens, self.batch_size = backbone, max_input_tokens, batch_size
        self.max_padding = max_padding
        self.tasks: dict[str, Task] = {}
        self.prompt_names: dict[str, str] = {}
        rows = []
        for name, prompt in prompts.items():
            key = base_name(name)
            if key in self.tasks:
                raise MptuneError(f"two prompts for task {key} ({self.prompt_names[key]} and {name}); give one")
            task = get_task(key)
            if task.read_row is None:
                raise MptuneError(f"task {key} cannot read single rows (its Task has no read_row), so it cannot "
                                  "predict on new inputs; every built-in task and every custom task can")
            if prompt.dim() != 2 or prompt.shape[1] != backbone.dim:
                raise MptuneError(f"the prompt of {name} has shape {list(prompt.shape)}; expected [l, {backbone.dim}]"
                                  f" for model {backbone.name}")
            self.tasks[key], self.prompt_names[key] = task, name
            rows.append(prompt.detach().float())
        lengths = sorted({r.shape[0] for r in rows})
        if len(lengths) > 1:
            raise MptuneError(f"the prompts have lengths {lengths}; one Predictor batches prompts of one length")
        self.module = SoftPrompt(torch.stack(rows)).to(backbone.device)
        self.module.requires_grad_(False)
        self.task_ids = {name: i for i, name in enumerate(self.tasks)}
        worst = [Encoded([0] * max_input_tokens, [], 0)]
        for task in self.tasks.values():
            check_fits(backbone, self.length, TaskData(task, [], worst, []))

    @property
    def length(self) -> int:
        """Prompt length l."""
        return self.module.length

    def describe(self) -> list[dict[str, Any]]:
        """What each task served expects and answers: name, prompt, fields, label words, parameters (l x d)."""
        return [{"task": name, "prompt": self.prompt_names[name], "fields": list(t.input_fields),
                 "label_words": list(t.choices), "generation": not t.is_classification,
                 "regression": t.regression, "parameters": self.length * self.module.dim}
                for name, t in self.tasks.items()]

    def task_of(self, row: Mapping[str, Any], where: str, line: int, default: str | None = None) -> Task:
        """The task a row names (its "task" field, else `default`), which must be one served."""
        if not isinstance(row, Mapping):
            raise MptuneError(f"{where} line {line} is not an object with the task's fields")
        name = row.get(TASK_FIELD, default)
        if not isinstance(name, str) or not name:
            raise MptuneError(f"{where} line {line} names no task: give it a {TASK_FIELD!r} field")
        key = base_name(name)
        if key not in self.tasks:
            raise MptuneError(f"{where} line {line} is for task {name!r}, which has no prompt here; "
                              f"tasks served: {', '.join(self.tasks)}")
        return self.tasks[key]

    def encode_row(self, row: Mapping[str, Any], where: str = "input", line: int = 1,
                   default: str | None = None) -> tuple[Task, list[Encoded]]:
        """A row's task and its examples, tokenised as evaluation tokenises them (MptuneError if it is bad)."""
        task = self.task_of(row, where, line, default)
        examples = task.read_row(row, where, line)
        if not examples:
            raise MptuneError(f"{where} line {line} holds no example for task {task.name}")
        items = encode(examples, self.backbone.tokenizer, self.backbone.is_seq2seq, self.max_input_tokens,
                       self.task_ids[task.name], append_eos=not task.is_classification)
        return task, items

    def predict(self, rows: Iterable[Mapping[str, Any]], default_task: str | None = None, scores: bool = False,
                where: str = "input", progress: str | None = None) -> list[dict[str, Any]]:
        """One output per row, in order: {"task", "prediction"} (the label word, STS-B's number or the text;
        a list for a row of several examples) and, with `scores`, each label word's log-likelihood."""
        encoded = [self.encode_row(row, where, line, default_task) for line, row in enumerate(rows, 1)]
        return self.predict_encoded(encoded, scores, progress)

    def predict_encoded(self, encoded: Sequence[tuple[Task, list[Encoded]]], scores: bool = False,
                        progress: str | None = None) -> list[dict[str, Any]]:
        """`predict` of rows already read by `encode_row`."""
        tasks = [task for task, items in encoded for _ in items]
        items = [it for _, row_items in encoded for it in row_items]
        preds = iter(mixed_predictions(self.backbone, self.module, tasks, items, self.batch_size, progress,
                                       self.max_padding, self.length))
        out = []
        for task, row_items in encoded:
            mine = [next(preds) for _ in row_items]
            outputs = [output(task, p, scores) for p in mine]
            if len(outputs) == 1:
                out.append({"task": task.name, **outputs[0]})
            else:
                out.append({"task": task.name, **{k: [o[k] for o in outputs] for k in outputs[0]}})
        return out


def output(task: Task, pred, scores: bool) -> dict[str, Any]:
    """{"prediction": label word / number / text[, "scores": {word: log-likelihood}]} of one Prediction."""
    if not task.is_classification:
        return {"prediction": pred.value}
    value = pred.value if task.regression else task.choices[pred.value]
    out: dict[str, Any] = {"prediction": value}
    if scores:
        out["scores"] = {word: round(s, 6) for word, s in zip(task.choices, pred.scores)}
    return out


# --- where prompts come from ---------------------------------------------------------------------

def run_config(sources: Sequence[str | Path]) -> Path | None:
    """The config.yaml of the first run directory among `sources`, if any."""
    return next((Path(s) / CONFIG_FILE for s in sources if (Path(s) / CONFIG_FILE).is_file()), None)


def load_prompts(sources: Sequence[str | Path], dim: int | None = None, method: str = "mpt",
                 custom_tasks: Sequence[str] = (), seed: int | None = None) -> dict[str, torch.Tensor]:
    """Task name -> prompt [l, d] of every task of `sources`: prompt files (every row) and run directories
    (their targets adapted with `method`, of `seed`: see `run_seed`)."""
    register_custom_tasks(custom_tasks)
    if seed is not None and not any(Path(s).is_dir() for s in sources):
        raise MptuneError(f"--seed {seed} picks the prompts of one seed of a run directory, and --prompts names "
                          "none (only prompt files, whose prompts are all read)")
    out: dict[str, torch.Tensor] = {}
    for source in sources:
        path = Path(source)
        found = run_prompts(path, method, dim, seed) if path.is_dir() else file_prompts(path, dim)
        for name, prompt in found.items():
            if name in out:
                raise MptuneError(f"two prompts for task {name}: {source} and an earlier one; give one")
            out[name] = prompt
    return out


def file_prompts(path: Path, dim: int | None = None) -> dict[str, torch.Tensor]:
    """Every task row of a prompt file as an l x d matrix."""
    module, tasks = load_prompt(path, dim)
    with torch.no_grad():
        table = module.task_prompts().detach()
    return {name: table[i] for i, name in enumerate(tasks)}


def run_seed(cfg: RunConfig, root: Path, seed: int | None) -> int | None:
    """The seed of the units read from the run in `root`: `seed`, by default the first of compare.seeds; None
    when the run lists no compare.seeds (its units are not per seed: `seed` may only be its run seed).
    MptuneError when the run did not train `seed`, naming the seeds it did."""
    trained = list(cfg.compare.seeds) or [cfg.seed]
    if seed is not None and seed not in trained:
        raise MptuneError(f"the run in {root} has no seed {seed}: it adapted its targets with seed"
                          f"{'s' if len(trained) > 1 else ''} {', '.join(map(str, trained))}")
    if not cfg.compare.seeds:
        return None
    return trained[0] if seed is None else seed


def run_prompts(root: Path, method: str, dim: int | None = None, seed: int | None = None) -> dict[str, torch.Tensor]:
    """The adapted prompt of each target of the run in `root` (MPT* units for 'mpt' when the run adapted jointly),
    of `seed` (`run_seed`)."""
    if not (root / CONFIG_FILE).is_file():
        raise MptuneError(f"{root} is not a run directory (no {CONFIG_FILE}) nor a prompt file")
    cfg: RunConfig = load_yaml(root / CONFIG_FILE)
    register_custom_tasks(cfg.data.custom_tasks)
    if method not in cfg.compare.methods:
        raise MptuneError(f"the run in {root} adapted its targets with {', '.join(cfg.compare.methods)}, "
                          f"not {method}")
    run = RunDir(root, cfg.compare.seeds)
    seed = run_seed(cfg, root, seed)
    out = {}
    for target in cfg.targets:
        folder = run.joint(seed) if method == "mpt" and cfg.compare.joint else run.adapted(method, target, seed)
        file = folder / PROMPT_FILE
        if not file.is_file():
            raise MptuneError(f"target {target} of {root} has no {method} prompt yet ({file}); finish the run "
                              f"(mptune adapt --config {root / CONFIG_FILE})")
        prompts = file_prompts(file, dim)
        out[target] = prompts[target] if target in prompts else next(iter(prompts.values()))
    return out
