"""Tasks tokenised for a stage: each task's train split and evaluation split, once per stage.

Decisions
- Every task must fit the model's positions with the prompt (`check_fits`), checked when the
  stage loads it, before any step: a long input would otherwise fail mid-training.
- Over-long inputs are cut (`data.truncate`); when more than `CUT_WARNING` of a split's inputs
  are cut, one warning per task and split says so (a run loads a target once per method and
  seed, so the warnings already given are remembered in `_CUT_WARNED`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mptune import distributed
from mptune.backbone import Backbone
from mptune.config import RunConfig
from mptune.data import TAIL, Encoded, encode, tokenize_targets
from mptune.errors import MptuneError
from mptune.resume import warn
from mptune.tasks import Task, get_task, resolve_data_dir

CUT_WARNING = 0.1
"""`load_tasks` warns when more than this share of a split's inputs is cut to model.max_input_tokens."""


@dataclass
class TaskData:
    """One task's tokenised train split and evaluation split."""

    task: Task
    train: list[Encoded]
    eval: list[Encoded]
    eval_labels: list


def load_tasks(cfg: RunConfig, backbone: Backbone, names: list[str], split: str,
               seed: int | None = None, prompt_length: int | None = None,
               with_train: bool = True, examples: int | None = None) -> list[TaskData]:
    """Tokenise train and `split` of each task once; task ids follow the order of `names`.

    Few-shot tasks draw their k-shot train sample with data.split_seed + `seed` (default: the run
    seed), so each seed of compare.seeds trains on its own sample. `with_train=False` (evaluation
    only) leaves train empty and unread; `examples` caps the evaluation split (default
    data.eval_examples). Every task must fit the model's positions with a prompt
    of `prompt_length` rows (default prompt.length), see `check_fits`.
    """
    data_dir = resolve_data_dir(cfg.data.data_dir)
    sample_seed = cfg.data.split_seed + (cfg.seed if seed is None else seed)
    out = []
    for task_id, name in enumerate(names):
        task = get_task(name)
        parts = {"train": task.load(data_dir, "train", cfg.data.split_seed, sample_seed)} if with_train else {}
        evals = task.load(data_dir, split, cfg.data.split_seed)
        keep = cfg.data.eval_examples if examples is None else examples
        if keep and len(evals) > keep:
            evals = random.Random(cfg.data.split_seed).sample(evals, keep)
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


def single(data: TaskData) -> TaskData:
    """The same task data with every task id set to 0 (for a one-task prompt module)."""
    relabel = lambda items: [Encoded(e.input_ids, e.target_ids, 0) for e in items]  # noqa: E731
    return TaskData(data.task, relabel(data.train), relabel(data.eval), data.eval_labels)
