"""Step time of an mptune MPT training step against prompt length, input length and batch size.

One step = `MultitaskPrompt` (P* o u v^T, two tasks) -> `Backbone.forward` (logits at the label
position only) -> L_PLM -> backward -> AdamW, on the embedded SmolLM2-135M-Instruct. Inputs are
synthetic so every example has exactly the stated length: token ids drawn (seeded) from the
first 5,000 vocabulary ids, one label token each, task ids alternating 0/1. Each axis is varied
around the point l = 20 prompt rows, 64 input tokens, batch 8 (the point itself is timed once):

- prompt length l in 10, 20, 50, 100
- input length n in 32, 64, 128, 256 tokens
- batch size B in 1, 4, 8, 16

Per point: one warm-up step, then --steps timed steps (default 3); the median counts (a few untimed
steps at the base point first warm up the process). Precision
bf16 autocast (and fp32 with --fp32). Also reported: tokens/s ((l + n + 1) x B per step) and the
fraction of the matmul rate measured in the same process (FLOPs as in speed.py: 2 forwards of
2 x non-embedding parameters x tokens).

    python benchmarks/scaling.py [--fp32] [--steps 3] [--quick]

writes benchmarks/results/scaling.{json,md,png}; points already in the JSON are skipped.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mptune.data import Encoded, collate
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, vocab_init

import common

BASE = {"length": 20, "input": 64, "batch": 8}
AXES = {"length": [10, 20, 50, 100], "input": [32, 64, 128, 256], "batch": [1, 4, 8, 16]}
QUICK_AXES = {"length": [10, 20], "input": [32, 64], "batch": [1, 8]}
TITLES = {"length": "prompt length l (rows)", "input": "input length n (tokens)", "batch": "batch size B"}
TOKENS_PER_S = {"bf16": 440.0, "fp32": 220.0}
"""Rough training-step token rates on 2 cores (speed.md), for the time estimate only."""


def points(axes: dict) -> list[dict]:
    """Every distinct (length, input, batch) point of the one-axis-at-a-time sweep."""
    out = []
    for axis, values in axes.items():
        for v in values:
            p = {**BASE, axis: v}
            if p not in out:
                out.append(p)
    return out


def key(precision: str, p: dict) -> str:
    return f"{precision} l={p['length']} n={p['input']} B={p['batch']}"


def synthetic_batch(backbone, p: dict):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (p["batch"], p["input"] + 1), generator=g).tolist()
    items = [Encoded(row[:-1], row[-1:], i % 2) for i, row in enumerate(ids)]
    return collate(items, backbone.tokenizer.pad_token_id, backbone.is_seq2seq)


def measure(backbone, p: dict, steps: int, peak_gflops: float) -> dict:
    init = vocab_init(backbone.embeddings, p["length"], torch.Generator().manual_seed(0))
    step = common.MptuneStep(backbone, MultitaskPrompt(init, 2))
    batch = synthetic_batch(backbone, p)
    seconds = statistics.median(common.time_steps(step, batch, warmup=1, timed=steps))
    tokens = (p["length"] + p["input"] + 1) * p["batch"]
    flops = common.step_flops(backbone, [batch], p["length"], teacher=False)
    return {**p, "seconds_per_step": round(seconds, 3), "examples_per_s": round(p["batch"] / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
            "fraction_of_matmul_peak": round(flops / seconds / 1e9 / peak_gflops, 3)}


def write(results: dict, axes: dict, stem: Path) -> str:
    rows = []
    for axis, values in axes.items():
        for precision in results["precisions"]:
            for v in values:
                r = results["points"].get(key(precision, {**BASE, axis: v}))
                if r:
                    rows.append([TITLES[axis], v, precision, r["seconds_per_step"], r["examples_per_s"],
                                 r["tokens_per_s"], f"{r['fraction_of_matmul_peak']:.0%}"])
    markdown = common.md_table(["varied", "value", "precision", "s/step", "examples/s", "tokens/s",
                                "fraction of matmul peak"], rows)
    markdown += (f"\nOthers fixed at l = {BASE['length']}, n = {BASE['input']}, B = {BASE['batch']}; median of "
                 f"{results['settings']['steps']} timed steps after one warm-up; matmul GFLOP/s "
                 f"{results['matmul_gflops']}; {results['machine']}.\n")
    fig, panels = common.figure(3, width=4.2)
    for ax, (axis, values) in zip(panels, axes.items()):
        for precision in results["precisions"]:
            got = [(v, results["points"][k]["seconds_per_step"]) for v in values
                   if (k := key(precision, {**BASE, axis: v})) in results["points"]]
            if got:
                ax.plot(*zip(*got), marker="o", label=precision)
        ax.set_xlabel(TITLES[axis])
        ax.set_ylabel("seconds per training step")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
    return common.write_outputs(stem, results, markdown, fig)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--fp32", action="store_true", help="also time fp32 (no autocast)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="two values per axis, results under benchmarks/runs/")
    args = parser.parse_args()
    common.setup(args.threads)
    axes = QUICK_AXES if args.quick else AXES
    precisions = ["bf16"] + (["fp32"] if args.fp32 else [])
    stem = (common.RUNS / "scaling-quick" / "results" if args.quick else common.RESULTS) / "scaling"
    settings = {"steps": args.steps, "base": BASE}
    results = common.read_json(common.stem_file(stem, ".json"), {})
    if results.get("settings") != settings:
        results = {"settings": settings, "points": {}, "matmul_gflops": {}}
    results["precisions"] = sorted(set(results.get("precisions", [])) | set(precisions), key=["bf16", "fp32"].index)
    results["machine"] = f"{torch.get_num_threads()} threads"
    todo = [(pr, p) for pr in precisions for p in points(axes) if key(pr, p) not in results["points"]]
    estimate = sum((args.steps + 1) * (p["length"] + p["input"]) * p["batch"] / TOKENS_PER_S[pr] for pr, p in todo)
    print(f"== MPT training-step time vs l, n, B ({', '.join(precisions)}): {len(todo)} points to time, "
          f"{args.steps} timed steps each")
    print(f"   estimated time: {common.duration(estimate + 15 * len(precisions))}")
    for precision in precisions:
        pending = [p for pr, p in todo if pr == precision]
        if not pending:
            continue
        backbone = load_backbone(precision=precision)
        dtype = torch.bfloat16 if backbone.precision == "bf16" else torch.float32
        results["matmul_gflops"][precision] = round(common.matmul_gflops(dtype), 1)
        measure(backbone, BASE, 1, 1.0)  # process warm-up (allocator, autocast caches), not recorded
        for p in tqdm(pending, desc=f"scaling {precision}", dynamic_ncols=True):
            results["points"][key(precision, p)] = measure(backbone, p, args.steps, results["matmul_gflops"][precision])
            write(results, axes, stem)
    print(write(results, axes, stem))
    print(f"written: {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
