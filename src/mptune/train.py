"""The training loop, written once: teach, distill, adapt and the benchmarks' PEFT baseline run it.

    train(backbone, module, args, folder, desc, batches, loss_step, task_names, seed)

A stage passes what differs: the prompt module it trains, its stream of batches, and
`loss_step(part, whole) -> (loss, terms)`, the loss of one micro-batch of the step's batch `whole`
(and the named terms it logs besides `loss`). Everything else is here, top to bottom: set-up (seed, optimizer, schedule,
resume), then per step: the batch, its micro-batches (forward, backward), the sum over processes,
the finite check, gradient clipping, the optimizer and schedule step, model selection on dev (when
asked), the log line, the checkpoint.

Decisions
- A step's batch (the same in every process) is split by `micro_batches` into this process's
  grad_accum micro-batches; each loss term is divided by a count over the whole batch (its label
  tokens, `data.label_tokens`, or its real tokens, `data.sequence_tokens`), so the parts' losses and
  gradients add up to the whole batch's (see `distributed`).
- The same sum lets a micro-batch be split further by length (`max_padding` < 1): the multitask
  sampling draws the step's examples exactly as before, and only the padded positions they are
  computed in change. A mixed batch of short (SST-2) and long (QNLI, RTE) examples pads each to the
  longest; split longest first, the short ones stop paying for it (`data.padded_batches`, as
  evaluation and prediction split). With max_padding 1 the micro-batches are the shards, untouched.
- The loss is checked before the optimizer steps, so a NaN or infinite loss leaves the unit's last
  checkpoint as its last good state, and the error names the stage, the step and the batch's tasks.
- AdamW with two learning rates: `lr` for prompt matrices, `factor_lr` for the rank-r factors u, v
  (their scale is 1, the prompt's is the embeddings'); linear warm-up, then linear decay to zero.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from mptune import distributed
from mptune.backbone import Backbone, Batch
from mptune.config import TrainArgs
from mptune.data import Encoded, collate, multitask_batches, padded_batches
from mptune.errors import MptuneError
from mptune.logs import StepLog
from mptune.resume import restore_state, save_state, skip

LossStep = Callable[[list[Encoded], list[Encoded]], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""loss_step(micro-batch, the step's whole batch) -> (loss, {name: term}) of that part, each term
normalised by a count over the whole batch."""


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


def batch_stream(train: Sequence[Sequence[Encoded]], args: TrainArgs, kappa: int, seed: int,
                 start: int = 0) -> Iterator[list[Encoded]]:
    """Training batches over one or several tasks' train examples (K-of-kappa mixing when there are
    several), after the first `start` (the data position of a resumed unit)."""
    pairs = multitask_batches([len(t) for t in train], args.batch_size, kappa, random.Random(seed))
    return skip(([train[t][i] for t, i in chosen] for chosen in pairs), start)


def shards(items: list[Encoded], args: TrainArgs) -> list[list[Encoded]]:
    """This process's grad_accum shards of a step's batch."""
    return distributed.shard(items, args.grad_accum)


def positions(item: Encoded) -> int:
    """The positions an example fills in a batch besides the prompt: its input and target tokens."""
    return len(item.input_ids) + len(item.target_ids)


def micro_batches(items: list[Encoded], args: TrainArgs, prompt_length: int = 0) -> list[list[Encoded]]:
    """The micro-batches this process computes a step's batch in: its shards, each split longest first
    where more than args.max_padding of the positions (`prompt_length` + tokens per row) would be padding."""
    parts = []
    for shard in shards(items, args):
        if args.max_padding >= 1:
            parts.append(shard)
            continue
        order = sorted(range(len(shard)), key=lambda i: -positions(shard[i]))
        lengths = [prompt_length + positions(shard[i]) for i in order]
        for start, end in padded_batches(lengths, len(shard), args.max_padding):
            parts.append([shard[i] for i in order[start:end]])
    return parts


def to_batch(items: Sequence[Encoded], backbone: Backbone) -> Batch:
    """A micro-batch as padded tensors on the backbone's device."""
    return collate(items, backbone.tokenizer.pad_token_id, backbone.is_seq2seq).to(backbone.device)


def check_finite(loss: torch.Tensor, stage: str, step: int, tasks: Sequence[str] = ()) -> None:
    """Stop with a user error naming the stage, step and the batch's tasks when the loss is NaN or infinite."""
    if not math.isfinite(loss.item()):
        on = f" on a batch of {', '.join(tasks)}" if tasks else ""
        raise MptuneError(f"{stage}: loss is {loss.item()} at step {step}{on}; lower the learning rate, in a new "
                          f"--out_dir (a run directory keeps the settings it was started with)")


def progress_bar(desc: str, start: int, steps: int) -> tqdm:
    """Steps start+1 .. steps, with a bar in the main process only."""
    return tqdm(range(start + 1, steps + 1), desc=desc, initial=start, total=steps, dynamic_ncols=True,
                disable=not distributed.is_main())


def train(backbone: Backbone, module: torch.nn.Module, args: TrainArgs, folder: Path, desc: str,
          batches: Callable[[int], Iterator[list[Encoded]]], loss_step: LossStep,
          task_names: Sequence[str], seed: int, tensorboard: Path | None = None,
          select: Callable[[], float] | None = None) -> dict:
    """Train `module` (the only trainable tensors) for args.steps steps, resuming from `folder`.

    batches(start): the batch stream after `start` finished steps. task_names[k]: the name of task
    id k (for error messages). tensorboard: the unit's TensorBoard directory, if the run logs there.
    select(): the module's dev score (higher is better); with args.eval_every the module ends as
    the best-scoring one (see `Selection`). Returns the log's summary, the kernels the backbone ran
    with and what selection chose.
    """
    backbone.assert_frozen()
    length = getattr(module, "length", 0)  # prompt rows every example carries (for max_padding)
    torch.manual_seed(seed)
    opt, sched = make_optimizer(module, args)
    resumed: dict = {}
    start = restore_state(folder, module, opt, sched, resumed)
    selection = Selection(module, select, args, resumed.get("best"))
    stream = batches(start)
    log = StepLog(folder / "log.jsonl", start, tensorboard)
    bar = progress_bar(desc, start, args.steps)
    for step in bar:
        items = next(stream)
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=backbone.device)  # of the whole batch: summed over micro-batches, processes
        terms: dict[str, torch.Tensor] = {}
        for part in micro_batches(items, args, length):
            part_loss, part_terms = loss_step(part, items)
            part_loss.backward()
            loss += part_loss.detach()
            for name, value in part_terms.items():
                terms[name] = terms.get(name, torch.zeros((), device=backbone.device)) + value.detach()
        distributed.all_reduce_sum([loss, *terms.values(), *(p.grad for p in module.parameters())])
        check_finite(loss, desc, step, [task_names[t] for t in sorted({e.task_id for e in items})])
        torch.nn.utils.clip_grad_norm_(module.parameters(), args.clip_norm)
        opt.step()
        sched.step()
        dev = selection.after(step)  # {"dev": score} at an evaluation step, else {}
        row = log.write(step, len(items), sched.get_last_lr()[0], loss=loss, **terms, **dev)
        bar.set_postfix({name: f"{row[name]:.3f}" for name in ("loss", *terms, *dev)}, ex_s=row["examples_per_s"])
        if args.checkpoint_every and step % args.checkpoint_every == 0 and step < args.steps:
            save_state(folder, step, module, opt, sched, selection.state())
    return {**log.close(), "kernels": backbone.kernels, **selection.finish()}


class Selection:
    """Model selection on dev: score the module every args.eval_every steps (and at the last step)
    and keep a copy of the best-scoring parameters; `finish` puts them back into the module.

    Ties keep the earlier step. The best copy travels in the step checkpoints, so a resumed unit
    selects what an uninterrupted one selects. Without select or eval_every it does nothing and the
    module ends as the last step left it.
    """

    def __init__(self, module: torch.nn.Module, select: Callable[[], float] | None, args: TrainArgs,
                 best: dict | None = None):
        self.module, self.select, self.args = module, select, args
        self.best = best
        """{"score", "step", "params": {name: tensor}} of the best evaluation so far."""
        self.seconds = 0.0

    def after(self, step: int) -> dict[str, torch.Tensor]:
        every = self.args.eval_every
        if self.select is None or not every or (step % every and step != self.args.steps):
            return {}
        start = time.perf_counter()
        score = float(self.select())
        self.seconds += time.perf_counter() - start
        if self.best is None or score > self.best["score"]:
            params = {n: p.detach().clone() for n, p in self.module.named_parameters()}
            self.best = {"score": score, "step": step, "params": params}
        return {"dev": torch.tensor(score)}

    def state(self) -> dict | None:
        return {"best": self.best} if self.best is not None else None

    def finish(self) -> dict:
        if self.best is None:  # no evaluation ran: the module stays as the last step left it
            return {}
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                p.copy_(self.best["params"][name])
        return {"selected": {"step": self.best["step"], "dev_score": round(self.best["score"], 4),
                             "eval_every": self.args.eval_every, "seconds_this_run": round(self.seconds, 1)}}
