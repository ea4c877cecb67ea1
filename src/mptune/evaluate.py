"""Evaluation: rank classification for classification tasks, greedy generation for the others.

Decisions
- No free generation for classification: each label string (choice) is scored by the sum of its
  token log-probabilities given prompt + input, and the best-scoring choice is the prediction.
  An output outside the label set is impossible by construction.
- Decoder-only models whose choices are distinct single tokens (the common case: "yes", "no",
  "maybe") need one forward pass per batch: the logits at the answer position are compared
  directly. With longer choices (STS-B's 26 scores "0.0" ... "5.0", 4 tokens each on SmolLM2)
  prompt + input run once with the KV cache, the cache is copied once per choice and only the
  choice tokens run on it. Rank-classifying 32 STS-B test examples took 10 s instead of 85 s with
  one expanded sequence per (example, choice) (SmolLM2-135M, bf16, one thread, idle machine;
  same predictions).
  Encoder-decoder models run the encoder once per example and only the (short) decoder once per
  choice.
- Generation tasks (no choices) are scored on greedy generations (`mptune.generate`, at most
  `task.max_new_tokens` tokens), decoded without special tokens and stripped. An empty
  generation scores 0 on every metric, and the metrics report how many there were
  ("empty_generations"), which tells an untrained prompt that stops at once from a weak one.
- Items are predicted longest first (a stable sort on input length) and the predictions put back
  in their order, so a batch holds inputs of similar length and pads little: on 96 RTE test
  examples in batches of 32 the padded share of the batches fell from 39% to 14%, and with the
  bf16 weights and chosen kernel of `mptune.kernels` rank classification ran 1.6x faster
  (benchmarks/speed.py). Longest first also meets the largest batch, and any out-of-memory
  error, at once.
- Under data parallelism (`distributed`) each process predicts a contiguous run of whole batches
  of that order, the very batches one process forms, and the predictions are gathered in order:
  every process scores the full list, and the metric is the one-process metric.
- One code path for one task and for many: `predictions` (evaluation) is `mixed_predictions` (the
  `mptune.predict.Predictor`, `mptune predict`, `mptune serve`) with every item of one task. A batch
  may mix tasks, each row with its own prompt ([B, l, d], the prompt module maps each row's task id).
  Tasks differ in label words, so a batch is split into scoring groups (`scoring_groups`): one per
  set of label words (and one per generation length). Each group costs what it would alone: the
  encoder (seq2seq) or prefill (decoder-only, multi-token words) runs once per example anyway, and
  only the group's own words are expanded, whereas scoring the union of all words would expand
  every row by every task's words (STS-B's 26 on a yes/no row). The exception is the common
  decoder-only case where every word of the batch's tasks is a distinct single token: there the
  union costs nothing extra (one forward pass reads every word's logit at the answer position),
  so the whole batch is one group, and each row takes the argmax over its own task's words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from tqdm.auto import tqdm

from mptune import distributed
from mptune.backbone import Backbone, Batch
from mptune.data import Encoded, collate, padded_batches, tokenize_targets
from mptune.generate import cache_keyword, generate, prefill
from mptune.metrics import score
from mptune.tasks import Task


def _single_token_choices(choice_ids: list[list[int]]) -> list[int] | None:
    firsts = [ids[0] for ids in choice_ids if len(ids) == 1]
    return firsts if len(firsts) == len(choice_ids) and len(set(firsts)) == len(firsts) else None


def causal_choice_scores(backbone: Backbone, prompts: torch.Tensor, base: Batch,
                         choice_ids: list[list[int]]) -> torch.Tensor:
    """Decoder-only: log-likelihood [B, C] of each choice's tokens after prompt [B, l, d] + input.

    The batch runs once left-padded with the KV cache (`generate.prefill`, as generation starts);
    each choice's first token is scored from its last position. The cache is then
    repeated C times and the choices' remaining tokens (right-padded, [B*C, t-1]) run on it.
    """
    model, key = backbone.body, cache_keyword(backbone.body)
    width = max(map(len, choice_ids))
    pad = backbone.tokenizer.pad_token_id
    ids = torch.tensor([c + [pad] * (width - len(c)) for c in choice_ids], device=backbone.device)  # [C, t]
    valid = torch.tensor([[j < len(c) for j in range(width)] for c in choice_ids], device=backbone.device)
    with backbone.compute():
        out, mask = prefill(backbone, prompts, base)
        scores = backbone.head(out.last_hidden_state[:, -1]).float().log_softmax(-1)[:, ids[:, 0]]  # [B, C]
        if width == 1:
            return scores
        rows, choices = len(base), len(choice_ids)
        cache = out[key]
        cache.batch_repeat_interleave(choices)
        feed, targets = ids[:, :-1].repeat(rows, 1), ids[:, 1:].repeat(rows, 1)  # [B*C, t-1]
        start = mask.sum(1).repeat_interleave(choices)[:, None]
        h = model(input_ids=feed, position_ids=start + torch.arange(width - 1, device=feed.device),
                  attention_mask=torch.cat([mask.repeat_interleave(choices, 0), torch.ones_like(feed)], 1),
                  use_cache=True, **{key: cache}).last_hidden_state
        r, c = valid[:, 1:].repeat(rows, 1).nonzero(as_tuple=True)
        logp = backbone.head(h[r, c]).float().log_softmax(-1).gather(1, targets[r, c][:, None]).squeeze(1)
    rest = torch.zeros(rows * choices, device=logp.device).index_add_(0, r, logp)
    return scores + rest.view(rows, choices)


@torch.no_grad()
def choice_scores(backbone: Backbone, prompt, items: Sequence[Encoded], choices: Sequence[str],
                  batch_size: int = 32, progress: str | None = None) -> torch.Tensor:
    """Log-likelihood of every choice for every item: [N, C]. `prompt` maps task ids [B] -> [B, l, d]."""
    tok, seq2seq = backbone.tokenizer, backbone.is_seq2seq
    choice_ids = tokenize_targets(tok, choices, seq2seq)
    single = None if seq2seq else _single_token_choices(choice_ids)
    pad = tok.pad_token_id
    out = []
    for start in tqdm(range(0, len(items), batch_size), desc=progress, disable=progress is None, leave=False):
        chunk = items[start:start + batch_size]
        if single is not None:
            batch = collate([replace(it, target_ids=[single[0]]) for it in chunk], pad, seq2seq).to(backbone.device)
            logits = backbone.forward(prompt(batch.task_ids), batch).logits  # one label token per example
            out.append(torch.log_softmax(logits, -1)[:, single])
            continue
        if not seq2seq:
            base = collate([replace(it, target_ids=[]) for it in chunk], pad, seq2seq).to(backbone.device)
            out.append(causal_choice_scores(backbone, prompt(base.task_ids), base, choice_ids))
            continue
        base = collate(chunk, pad, seq2seq).to(backbone.device)
        prompts = prompt(base.task_ids)
        states, mask = backbone.encode(prompts, base)
        encoded = (states.repeat_interleave(len(choices), 0), mask.repeat_interleave(len(choices), 0))
        expanded = [replace(it, target_ids=ids) for it in chunk for ids in choice_ids]
        batch = collate(expanded, pad, seq2seq).to(backbone.device)
        outputs = backbone.forward(prompts.repeat_interleave(len(choices), 0), batch, encoded)
        out.append(backbone.sequence_logprobs(outputs, len(expanded)).view(len(chunk), len(choices)))
    return torch.cat(out) if out else torch.zeros(0, len(choices))


def generated_texts(backbone: Backbone, prompt, items: Sequence[Encoded], max_new_tokens: int,
                    batch_size: int = 32, progress: str | None = None) -> list[str]:
    """Greedy generations decoded to text (special tokens skipped, whitespace stripped)."""
    ids = generate(backbone, prompt, items, max_new_tokens, batch_size, progress=progress)
    return [text.strip() for text in backbone.tokenizer.batch_decode(ids, skip_special_tokens=True)]


@dataclass(frozen=True)
class Prediction:
    """One item's prediction: `value` (the class index, STS-B's number, or the generated text) and,
    for classification, `scores`: the log-likelihood of each of its task's choices, in choice order."""

    value: int | float | str
    scores: tuple[float, ...] | None = None


def predictions(backbone: Backbone, prompt, task: Task, items: Sequence[Encoded], batch_size: int = 32,
                progress: str | None = None) -> list:
    """The predicted label (classification) or generated text of every item, in order, on every process.

    Items are predicted longest first (batches of similar lengths); each process predicts its
    `distributed.eval_range` of that order; the lists are gathered and put back in the items' order.
    """
    return [p.value for p in mixed_predictions(backbone, prompt, [task] * len(items), items, batch_size, progress)]


def mixed_predictions(backbone: Backbone, prompt, tasks: Sequence[Task], items: Sequence[Encoded],
                      batch_size: int = 32, progress: str | None = None,
                      max_padding: float = 1.0, fixed_positions: int = 0) -> list[Prediction]:
    """`predictions` of items of several tasks (`tasks[i]` is item i's), with their choice scores.

    The same order, batches and gathering as `predictions` (which is this function for one task):
    longest first, whole batches per process, whatever the tasks of a batch; see `predict_batch`.
    max_padding < 1 also closes a batch early when more than that share of its input positions would
    be padding (`padded_batches`; prediction and serving, whose batches mix short and long tasks);
    `fixed_positions` (the prompt length l) counts positions every row has.
    """
    order = length_order(items)
    lo, hi = distributed.eval_range(len(items), batch_size)
    progress = progress if distributed.is_main() else None
    mine: list[Prediction] = []
    lengths = [fixed_positions + len(items[i].input_ids) for i in order[lo:hi]]
    for start, end in tqdm(padded_batches(lengths, batch_size, max_padding), desc=progress,
                           disable=progress is None, leave=False):
        chunk = order[lo + start:lo + end]
        mine += predict_batch(backbone, prompt, [tasks[i] for i in chunk], [items[i] for i in chunk])
    out: list = [None] * len(items)
    for i, pred in zip(order, distributed.gather_lists(mine)):
        out[i] = pred
    return out


def scoring_groups(backbone: Backbone, tasks: Sequence[Task]) -> list[tuple[tuple, list[int]]]:
    """The rows of one batch grouped by how they are scored: [(key, rows)], key ('generate', max_new_tokens)
    or ('choices', label words). A decoder-only batch whose label words, all tasks together, are distinct
    single tokens is one group scored on the union of its tasks' words (one forward pass)."""
    groups: dict[tuple, list[int]] = {}
    for row, task in enumerate(tasks):
        key = ("choices", task.choices) if task.is_classification else ("generate", task.max_new_tokens)
        groups.setdefault(key, []).append(row)
    choice_keys = [k for k in groups if k[0] == "choices"]
    if len(choice_keys) > 1 and not backbone.is_seq2seq:
        union = tuple(dict.fromkeys(word for k in choice_keys for word in k[1]))
        if _single_token_choices(tokenize_targets(backbone.tokenizer, union, False)) is not None:
            rows = sorted(r for k in choice_keys for r in groups.pop(k))
            groups[("choices", union)] = rows
    return list(groups.items())


@torch.no_grad()
def predict_batch(backbone: Backbone, prompt, tasks: Sequence[Task], items: Sequence[Encoded]) -> list[Prediction]:
    """Predictions of one batch whose rows may belong to different tasks (`tasks[i]`: row i's).

    Each group of `scoring_groups` runs once: rank classification on the group's label words
    (`choice_scores`), each row then taking the argmax over its own task's words, or greedy generation
    (`generated_texts`). `prompt` maps the items' task ids [B] -> prompts [B, l, d], one per row.
    """
    out: list = [None] * len(items)
    for (kind, arg), rows in scoring_groups(backbone, tasks):
        group = [items[r] for r in rows]
        if kind == "generate":
            for r, text in zip(rows, generated_texts(backbone, prompt, group, arg, len(group))):
                out[r] = Prediction(text)
            continue
        scores = choice_scores(backbone, prompt, group, arg, len(group))  # [n, C]
        for r, row_scores in zip(rows, scores):
            task = tasks[r]
            own = row_scores[[arg.index(c) for c in task.choices]]
            out[r] = Prediction(task.decode(int(own.argmax())), tuple(own.tolist()))
    return out


def length_order(items: Sequence[Encoded]) -> list[int]:
    """Indices of the items, longest input first (ties keep their order)."""
    return sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))


def evaluate_items(backbone: Backbone, prompt, task: Task, items: Sequence[Encoded], labels: Sequence,
                   batch_size: int = 32, progress: str | None = None) -> dict[str, float]:
    """The task's metrics: rank classification, or generation for tasks without choices.

    Generation tasks also report "empty_generations", the number of empty predictions.
    """
    return scores_of(task, predictions(backbone, prompt, task, items, batch_size, progress), labels)


def scores_of(task: Task, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """The task's metrics of these predictions (and, for generation, the count of empty ones)."""
    if not task.is_classification:
        return {**score(task, preds, list(labels)), "empty_generations": sum(not t for t in preds)}
    return score(task, preds, list(labels))
