"""Serving and batch prediction: a bounded load test of `mptune serve` on loopback, and `mptune predict` against
`mptune evaluate` on a full test file.

Load test: a real uvicorn server on 127.0.0.1 (one frozen model, one prompt per task) receives
--requests one-row requests for 3+ tasks, mixed in a seeded order, from --clients concurrent clients
(each sends its next request when the last is answered). Three batching policies of `mptune.serve`:

- dynamic: rows of any tasks that arrive together share a batch (serve.max_batch, serve.max_wait_ms),
  run longest first in model batches split where over --max-padding of the positions would be padding
  (serve.max_padding, default 0.3);
- dynamic, batches unsplit: the same with serve.max_padding 1 (each batch runs as one, padded to its longest row);
- one task per batch: only rows of the oldest row's task join its batch (what per-task adapters allow);
- one at a time: every row alone (max_batch 1).

Each policy runs --repeats times (default 2), the policies alternating, and its fastest run counts (a
busy machine disturbs the comparison less). Reported per policy: throughput (requests/s), p50 and p95
latency, the batches the model ran, and whether every answer equals `mptune evaluate`'s prediction on
the same input (`evaluate.predictions` per task on the rows read by the task's reader).

Batch prediction: the rows of one official test file (--predict-task, default CoLA's test.tsv, all
1,063 rows) through `prediction_files.predict_file` (what `mptune predict` runs after loading the
model: streaming, chunks, resumable file) against `evaluate.predictions` on the same inputs held in
memory (what `mptune evaluate` runs after loading its split); examples/s of each and whether the
predictions agree.

Prompts are untrained (sampled vocabulary rows, l = --length): speed does not depend on the values,
and agreement with evaluate is checked on the same prompts. The model is the embedded SmolLM2-135M
(--model). Figures on the shared 2-core development machine are rough.

    MPTUNE_DATA_DIR=/work/shared/data python benchmarks/serve.py [--requests 96] [--clients 8]
        [--tasks sst2,rte,cola,cb] [--max-batch 32] [--max-wait-ms 20] [--predict-task cola] [--predict-limit 0]
        [--precision auto] [--repeats 2] [--name serve]

writes benchmarks/results/serve.{json,md,png} (--name: another stem).
"""

from __future__ import annotations

import json
import random
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

from mptune.config import ServeArgs
from mptune.evaluate import Prediction, predictions
from mptune.leaderboard import GLUE, SUPERGLUE
from mptune.models import EMBEDDED, load_backbone
from mptune.predict import Predictor, output
from mptune.prediction_files import JsonlSink, predict_file, read_input
from mptune.prompts import vocab_init
from mptune.serve import build_app
from mptune.tasks import resolve_data_dir

import common

POLICIES = {"dynamic": dict(mix_tasks=True), "dynamic, batches unsplit": dict(mix_tasks=True, max_padding=1.0),
            "one task per batch": dict(mix_tasks=False),
            "one at a time": dict(mix_tasks=True, max_batch=1, max_wait_ms=0.0)}


def test_file(data_dir: Path, task: str) -> Path:
    """The official test file of a task (the leaderboard's)."""
    board = next(b for b in (*GLUE, *SUPERGLUE) if b.task == task and "AX" not in b.name)
    return data_dir / board.input


def rows_of(data_dir: Path, task: str, limit: int) -> list[dict]:
    rows = []
    for _, row in read_input(test_file(data_dir, task)):
        rows.append({"task": task, **row})
        if limit and len(rows) == limit:
            break
    return rows


def evaluate_predictions(predictor: Predictor, rows: list[dict]) -> list:
    """`mptune evaluate`'s predictions of the rows, task by task, with the same prompts (label words)."""
    out: list = [None] * len(rows)
    for name, task in predictor.tasks.items():
        index = [i for i, r in enumerate(rows) if r["task"] == name]
        items = [it for i in index for it in predictor.encode_row(rows[i], "bench", i)[1]]
        row = predictor.task_ids[name]
        prompt = lambda ids, row=row: predictor.module(torch.full_like(ids, row))  # noqa: E731
        for i, value in zip(index, predictions(predictor.backbone, prompt, task, items, predictor.batch_size)):
            out[i] = value if not task.is_classification or task.regression else task.choices[value]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(predictor: Predictor, rows: list[dict], clients: int, args: ServeArgs, mix_tasks: bool) -> dict:
    """Requests/s, latencies and answers of one policy on a fresh server."""
    app = build_app(predictor, args, mix_tasks)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{args.port}/predict"
    answers: list = [None] * len(rows)
    latency: list = [None] * len(rows)
    queue = iter(range(len(rows)))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    i = next(queue, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                answer = http.post(url, json=rows[i])
                latency[i] = time.perf_counter() - t0
                answers[i] = answer.json()["prediction"] if answer.status_code == 200 else answer.text

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))
    wall = time.perf_counter() - start
    batches = app.state.batcher.batches
    server.should_exit = True
    thread.join()
    ordered = sorted(latency)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"requests_per_s": len(rows) / wall, "p50_ms": pick(0.50), "p95_ms": pick(0.95), "batches": batches,
            "seconds": wall, "answers": answers}


def predict_vs_evaluate(backbone, task: str, data_dir: Path, prompt: torch.Tensor, limit: int, batch: int,
                        max_padding: float) -> dict:
    """examples/s of predict_file (streamed from the file, written to JSONL) and of evaluate.predictions on
    the same inputs, and whether they agree."""
    predictor = Predictor(backbone, {task: prompt}, batch_size=batch, max_padding=max_padding)
    source = test_file(data_dir, task)
    rows = rows_of(data_dir, task, limit)
    with tempfile.TemporaryDirectory() as tmp:
        if limit:  # the first `limit` rows as their own file
            source = Path(tmp) / "rows.jsonl"
            source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = Path(tmp) / "out.jsonl"
        t0 = time.perf_counter()
        predict_file(predictor, source, out, JsonlSink(), default_task=task)
        predict_s = time.perf_counter() - t0
        got = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    t0 = time.perf_counter()
    items = [it for i, r in enumerate(rows) for it in predictor.encode_row(r, "bench", i)[1]]
    t = predictor.tasks[task]
    values = predictions(backbone, lambda ids: predictor.module(torch.zeros_like(ids)), t, items, batch)
    evaluate_s = time.perf_counter() - t0
    expected = [output(t, Prediction(v), False)["prediction"] for v in values]
    return {"task": task, "rows": len(rows), "predict_per_s": len(rows) / predict_s,
            "evaluate_per_s": len(rows) / evaluate_s, "predict_s": predict_s, "evaluate_s": evaluate_s,
            "identical": got == expected, "mismatches": sum(a != b for a, b in zip(got, expected))}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--model", default=EMBEDDED)
    p.add_argument("--precision", default="auto", help="model.precision: auto (bf16 where native), bf16, fp32")
    p.add_argument("--tasks", default="sst2,rte,cola,cb")
    p.add_argument("--requests", type=int, default=96)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=20.0)
    p.add_argument("--length", type=int, default=20)
    p.add_argument("--max-padding", type=float, default=0.3, help="serve.max_padding and predict.max_padding")
    p.add_argument("--predict-task", default="cola")
    p.add_argument("--predict-limit", type=int, default=0, help="rows of the predict test file (0 = all)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each policy (alternating); the fastest counts")
    p.add_argument("--name", default="serve", help="results file stem under benchmarks/results/")
    a = p.parse_args()
    common.setup(a.threads)
    data_dir = resolve_data_dir(None)
    backbone = load_backbone(a.model, a.precision)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    g = torch.Generator().manual_seed(0)
    prompts = {t: vocab_init(backbone.embeddings, a.length, g) for t in tasks}
    predictor = Predictor(backbone, prompts, batch_size=a.max_batch)
    per_task = -(-a.requests // len(tasks))
    rows = [r for t in tasks for r in rows_of(data_dir, t, per_task)][: a.requests]
    random.Random(0).shuffle(rows)
    expected = evaluate_predictions(predictor, rows)

    results: dict = {}
    for rep in range(a.repeats):  # the policies alternate, the fastest run of each counts
        names = list(POLICIES)[rep % len(POLICIES):] + list(POLICIES)[:rep % len(POLICIES)]
        for name in names:
            settings = {"max_batch": a.max_batch, "max_wait_ms": a.max_wait_ms, **POLICIES[name]}
            mix = settings.pop("mix_tasks")
            predictor.max_padding = settings.pop("max_padding", a.max_padding)
            run = load_test(predictor, rows, a.clients, ServeArgs(port=free_port(), **settings), mix)
            answers = run.pop("answers")
            run["identical_to_evaluate"] = answers == expected
            run["mismatches"] = sum(x != y for x, y in zip(answers, expected))
            print(name, {k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()}, flush=True)
            if name not in results or run["requests_per_s"] > results[name]["requests_per_s"]:
                results[name] = run
    results = {name: results[name] for name in POLICIES}
    batch = predict_vs_evaluate(backbone, a.predict_task, data_dir, prompts.get(a.predict_task, prompts[tasks[0]]),
                                a.predict_limit, a.max_batch, a.max_padding)
    print("predict vs evaluate", batch, flush=True)

    data = {"max_padding": a.max_padding, "model": a.model, "precision": backbone.precision,
            "threads": torch.get_num_threads(),
            "tasks": tasks, "requests": len(rows), "clients": a.clients, "max_batch": a.max_batch,
            "max_wait_ms": a.max_wait_ms, "prompt_length": a.length, "policies": results, "predict": batch}
    dynamic = results["dynamic"]["requests_per_s"]
    md = [f"# Serving: {len(rows)} one-row requests for {', '.join(tasks)} (mixed), {a.clients} concurrent clients",
          "", f"{a.model} ({backbone.precision}, {torch.get_num_threads()} threads), prompts l = {a.length}, "
          f"serve.max_batch {a.max_batch}, serve.max_wait_ms {a.max_wait_ms:g}, max_padding {a.max_padding:g}; "
          "loopback (127.0.0.1). "
          "The development machine is shared: figures are rough.", ""]
    md.append(common.md_table(
        ["policy", "requests/s", "vs dynamic", "p50 ms", "p95 ms", "batches", "answers = evaluate's"],
        [[name, f"{r['requests_per_s']:.1f}", f"{r['requests_per_s'] / dynamic:.2f}x", f"{r['p50_ms']:.0f}",
          f"{r['p95_ms']:.0f}", r["batches"], "yes" if r["identical_to_evaluate"] else f"no ({r['mismatches']})"]
         for name, r in results.items()]))
    md += ["", f"# Batch prediction: {batch['rows']:,} rows of the {batch['task']} test file", ""]
    md.append(common.md_table(
        ["path", "examples/s", "seconds"],
        [["mptune predict (predict_file: streamed, chunked, written)", f"{batch['predict_per_s']:.1f}",
          f"{batch['predict_s']:.1f}"],
         ["mptune evaluate (evaluate.predictions on the rows in memory)", f"{batch['evaluate_per_s']:.1f}",
          f"{batch['evaluate_s']:.1f}"]]))
    md.append(f"\nPredictions identical: {'yes' if batch['identical'] else 'no'} ({batch['mismatches']} differ).\n")
    fig, axes = common.figure(2)
    names = list(results)
    axes[0].bar(names, [results[n]["requests_per_s"] for n in names])
    axes[0].set_ylabel("requests/s")
    axes[0].set_title("throughput")
    for i, q in enumerate(("p50_ms", "p95_ms")):
        axes[1].bar([x + (i - 0.5) * 0.4 for x in range(len(names))], [results[n][q] for n in names], 0.4,
                    label=q.split("_")[0])
    axes[1].set_xticks(range(len(names)), names)
    axes[1].set_ylabel("latency (ms)")
    axes[1].set_title("latency")
    axes[1].legend()
    print(common.write_outputs(common.RESULTS / a.name, data, "\n".join(md), fig))


if __name__ == "__main__":
    main()
