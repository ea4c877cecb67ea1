"""Evaluation throughput: rank classification against free greedy generation, on the same examples.

For each task (default: 64 SST-2 and 64 RTE test examples, the seeded sample mptune scores), the
same prompt and batches of 32 are scored two ways:

- rank classification (`mptune.evaluate.choice_scores`, what every mptune stage reports): each
  label word is scored given prompt + input and the best one is the prediction. With single-token
  label words (SST-2, RTE) that is ONE forward pass per batch.
- free greedy generation (`mptune.generate.generate`, KV cache) of up to N new tokens (--max-new-tokens,
  default 1 and 8; a row stops at the end token), decoded; the prediction is the label word the
  text starts with (case-insensitive), or none ("invalid").

Each method is timed in --repeats passes over all examples (default 3) and the fastest counts, so
the first pass doubles as warm-up and a busy machine disturbs the ratio less.
Reported: examples/s and the ratio to rank classification, accuracy of both (an invalid answer
counts as wrong), the share of valid generations and how often the two predictions agree.

Prompts come from a quality.py run when there is one (--run, default benchmarks/runs/quality/seed0:
the MPT target prompt adapt/mpt/TASK, else the teacher teach/TASK); otherwise an untrained prompt
of sampled vocabulary rows is used and the output says so (throughput is the same, agreement is not
meaningful then).

    python benchmarks/eval_speed.py [--tasks sst2,rte] [--examples 64] [--max-new-tokens 1,8] [--run DIR]

writes benchmarks/results/eval_speed.{json,md}; a task already in the JSON with the same settings is skipped.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from mptune.checkpoint import PROMPT_FILE, prompt_row
from mptune.data import encode
from mptune.evaluate import choice_scores, generated_texts
from mptune.models import load_backbone
from mptune.prompts import SoftPrompt, vocab_init
from mptune.rundir import RunDir
from mptune.tasks import get_task, resolve_data_dir

import common


def find_prompt(run: Path, task: str) -> Path | None:
    """The trained prompt of `task` in a quality.py run directory: MPT target, else teacher."""
    run_dir = RunDir(run)
    for candidate in (run_dir.adapted("mpt", task) / PROMPT_FILE, run_dir.teacher(task) / PROMPT_FILE):
        if candidate.exists():
            return candidate
    return None


def describe(run: Path, task: str, length: int) -> str:
    path = find_prompt(run, task)
    return str(path) if path else f"untrained (vocabulary rows, l = {length})"


def load_prompt_fn(backbone, run: Path, task: str, length: int):
    """The prompt function ids -> [B, l, d] that `describe` names."""
    path = find_prompt(run, task)
    if path is None:
        soft = SoftPrompt(vocab_init(backbone.embeddings, length, torch.Generator().manual_seed(0)))
        return lambda ids: soft(torch.zeros_like(ids))
    module, row = prompt_row(str(path), task, backbone.dim)
    return lambda ids: module(torch.full_like(ids, row))


def sample(backbone, task_name: str, examples: int, split_seed: int = 42) -> tuple[list, list]:
    """The seeded test sample mptune's stages score (data.eval_examples = examples), tokenised."""
    task = get_task(task_name)
    rows = task.load(resolve_data_dir(None), "test", split_seed)
    if len(rows) > examples:
        rows = random.Random(split_seed).sample(rows, examples)
    items = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, 0)
    return items, [r.label for r in rows]


def parse(text: str, choices: tuple[str, ...]) -> int | None:
    """The label word a generation starts with (longest match, case-insensitive), or None."""
    text = text.strip().lower()
    hits = [i for i, c in enumerate(choices) if text.startswith(c.lower())
            and (len(text) == len(c) or not text[len(c)].isalnum())]
    return max(hits, key=lambda i: len(choices[i])) if hits else None


def best_of(fn, repeats: int):
    """(fn's result, the fastest of `repeats` timed calls in seconds); the first call also warms up."""
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def measure_task(backbone, task_name: str, prompt, examples: int, max_new: list[int], batch: int,
                 repeats: int) -> dict:
    task = get_task(task_name)
    items, labels = sample(backbone, task_name, examples)
    scores, rank_s = best_of(lambda: choice_scores(backbone, prompt, items, task.choices, batch,
                                                   progress=f"rank {task_name}"), repeats)
    rank = scores.argmax(-1).tolist()
    rows = {"rank classification": {"seconds": round(rank_s, 2), "examples_per_s": round(len(items) / rank_s, 2),
                                    "vs_rank": 1.0, "accuracy": accuracy(rank, labels), "valid": 1.0, "agreement": 1.0}}
    for n in max_new:
        texts, sec = best_of(lambda: generated_texts(backbone, prompt, items, n, batch,
                                                     progress=f"generate {task_name} ({n})"), repeats)
        preds = [parse(t, task.choices) for t in texts]
        rows[f"greedy generation, <= {n} tokens"] = {
            "seconds": round(sec, 2), "examples_per_s": round(len(items) / sec, 2), "vs_rank": round(rank_s / sec, 3),
            "accuracy": accuracy(preds, labels), "valid": round(sum(p is not None for p in preds) / len(preds), 3),
            "agreement": round(sum(p == r for p, r in zip(preds, rank)) / len(preds), 3),
            "examples": [t[:40] for t in texts[:3]]}
    return {"examples": len(items), "rows": rows}


def accuracy(preds: list, labels: list) -> float:
    return round(100 * sum(p == y for p, y in zip(preds, labels)) / len(labels), 1)


def write(results: dict, stem: Path) -> str:
    table = []
    for task, r in results["tasks"].items():
        for method, row in r["rows"].items():
            table.append([task, method, row["examples_per_s"], row["seconds"], f"{row['vs_rank']}x",
                          row["accuracy"], f"{row['valid']:.0%}", f"{row['agreement']:.0%}"])
    markdown = common.md_table(["task", "method", "examples/s", "seconds", "speed vs rank classification",
                                "accuracy", "valid answers", "agrees with rank classification"], table)
    prompts = "; ".join(f"{t}: {r['prompt']}" for t, r in results["tasks"].items())
    settings = results["settings"]
    markdown += (f"\nSame examples (seeded test sample), prompt and batches of {settings['batch']} for both; "
                 f"fastest of {settings['repeats']} passes; {results['machine']}. Prompts: {prompts}.\n")
    return common.write_outputs(stem, results, markdown)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--tasks", default="sst2,rte", help="comma-separated classification tasks")
    parser.add_argument("--examples", type=int, default=64, help="test examples per task")
    parser.add_argument("--max-new-tokens", default="1,8", help="generation lengths to time (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per method (the fastest counts)")
    parser.add_argument("--batch", type=int, default=32, help="examples per batch (mptune's evaluation default)")
    parser.add_argument("--length", type=int, default=20, help="prompt length of the untrained fallback prompt")
    parser.add_argument("--run", default=str(common.RUNS / "quality" / "seed0"),
                        help="quality.py run with trained prompts")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--out", default=str(common.RESULTS / "eval_speed"), help="output path without suffix")
    args = parser.parse_args()
    common.setup(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    max_new = [int(n) for n in args.max_new_tokens.split(",")]
    settings = {"examples": args.examples, "max_new_tokens": max_new, "batch": args.batch, "precision": args.precision,
                "run": args.run, "repeats": args.repeats}
    stem = Path(args.out)
    results = common.read_json(common.stem_file(stem, ".json"), {})
    if results.get("settings") != settings:
        results = {"settings": settings, "tasks": {}}
    todo = [t for t in tasks if results["tasks"].get(t, {}).get("prompt") != describe(Path(args.run), t, args.length)]
    tokens = sum(common.task_tokens(t) + args.length for t in todo) * args.examples * args.repeats
    # rank classification and 1-token generation read each example once; decoding steps are ~4x cheaper
    passes = 1 + sum(1 + (n - 1) / 4 for n in max_new)
    print(f"== evaluation speed: rank classification vs greedy generation (<= {args.max_new_tokens} new tokens)")
    print(f"   tasks {', '.join(tasks)} ({len(todo)} to run), {args.examples} test examples each, "
          f"batches of {args.batch}")
    print(f"   estimated time: {common.duration(tokens * passes / common.EVAL_TOKENS_PER_S + 10)}")
    backbone = load_backbone(precision=args.precision)
    results["machine"] = f"{backbone.precision}, {torch.get_num_threads()} threads"
    for task in todo:
        where = describe(Path(args.run), task, args.length)
        print(f"   {task}: prompt {where}")
        prompt = load_prompt_fn(backbone, Path(args.run), task, args.length)
        results["tasks"][task] = {"prompt": where, **measure_task(backbone, task, prompt, args.examples, max_new,
                                                                   args.batch, args.repeats)}
        write(results, stem)
    print(write(results, stem))
    print(f"written: {stem}.json, .md")


if __name__ == "__main__":
    main()
