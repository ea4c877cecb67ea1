"""`mptune serve`: one frozen model serving every task's prompt over HTTP, with dynamic batching.

    POST /predict   {"task": NAME, FIELD: ...} or a list of them (?scores=true adds each label word's
                    log-likelihood) -> the prediction(s), as `Predictor.predict` gives them
    GET  /tasks     the tasks served: fields, label words, prompt parameters; the model; the batching
    GET  /health    {"status": "ok", ...}

Decisions
- One `Predictor` (the object of `mptune predict`) holds the model and every prompt; requests carry
  rows, never prompts. Rows of different tasks share a batch: each row brings its own l x d prompt.
- Dynamic batching (`Batcher`): rows wait in one queue; a batch closes when it holds
  serve.max_batch examples or when its oldest row has waited serve.max_wait_ms, and runs while the
  next one fills, longest first, in model batches split where more than serve.max_padding of their
  positions would be padding (`Predictor`). `mix_tasks=False` (one task per batch: only rows of the
  oldest row's task join) and max_batch 1 (one row at a time) are the baselines of benchmarks/serve.py.
- The model and the tokenizer are used by one worker thread only (reading rows tokenises them, so it
  runs there too): the event loop never blocks on the model, and the Rust tokenizer is never entered
  from two threads at once.
- Bad requests get a 4xx and one message, {"error": "..."}, and the server keeps running: malformed
  JSON or a body that is neither a row nor a list of rows (400), a body over serve.max_body_bytes
  or more rows than serve.max_rows (413), an unknown task or a missing field (422, the message
  of `Predictor.encode_row`, naming the row), an unknown path or method (404, 405), a bad query
  parameter (422). Each request is read whole before any row joins the queue, so a bad row fails
  its request alone.
- Graceful shutdown (SIGINT/SIGTERM via uvicorn): the server stops accepting connections, the rows
  already queued are still predicted and answered, then the worker stops.
- FastAPI and uvicorn are the optional extra `serve` (pip install 'mptune[serve]'); nothing else in
  mptune imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mptune.config import ServeArgs
from mptune.data import Encoded
from mptune.errors import MptuneError
from mptune.predict import Predictor
from mptune.tasks import Task


@dataclass
class Entry:
    """One queued row: its task, its examples and the future its request awaits."""

    task: Task
    items: list[Encoded]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Rows from every request, batched: at most `max_batch` examples, the oldest waiting at most `max_wait_s`."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait_s: float, mix_tasks: bool = True):
        self.predictor, self.max_batch, self.max_wait_s, self.mix_tasks = predictor, max_batch, max_wait_s, mix_tasks
        self.pending: deque[Entry] = deque()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="mptune-model")
        self.batches = 0
        self.examples = 0
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Answer what is queued, then stop the worker."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self.worker.shutdown(wait=True)

    async def run_on_worker(self, fn, *args):
        """`fn(*args)` on the model's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def submit(self, rows: list[tuple[Task, list[Encoded]]]) -> list[dict[str, Any]]:
        """Queue rows (already read) and await their outputs, in order."""
        loop = asyncio.get_running_loop()
        entries = [Entry(task, items, loop.create_future()) for task, items in rows]
        self.pending.extend(entries)
        self._arrived.set()
        return list(await asyncio.gather(*(e.future for e in entries)))

    def _eligible(self) -> list[Entry]:
        if self.mix_tasks:
            return list(self.pending)
        first = self.pending[0].task.name
        return [e for e in self.pending if e.task.name == first]

    def _take(self) -> list[Entry]:
        """The next batch: eligible rows, oldest first, up to max_batch examples (at least one row)."""
        batch, size = [], 0
        for entry in self._eligible():
            if batch and size + len(entry.items) > self.max_batch:
                break
            batch.append(entry)
            size += len(entry.items)
        for entry in batch:
            self.pending.remove(entry)
        return batch

    async def _wait_for_rows(self) -> None:
        """Until the oldest row's wait is over or the batch is full."""
        while not self._closing:
            left = self.pending[0].arrived + self.max_wait_s - time.monotonic()
            if left <= 0 or sum(len(e.items) for e in self._eligible()) >= self.max_batch:
                return
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def _loop(self) -> None:
        while True:
            while not self.pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._wait_for_rows()
            batch = self._take()
            try:
                outputs = await self.run_on_worker(self.predictor.predict_encoded,
                                                   [(e.task, e.items) for e in batch], True)
            except Exception as err:  # a bug, not a bad request: the requests get a 500, the server goes on
                for e in batch:
                    if not e.future.done():
                        e.future.set_exception(err)
                continue
            self.batches += 1
            self.examples += sum(len(e.items) for e in batch)
            for e, out in zip(batch, outputs):
                if not e.future.done():
                    e.future.set_result(out)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def parse_body(body: bytes, args: ServeArgs) -> tuple[list[dict], bool]:
    """(rows, whether the body was a list) of a request; (status, message) raised as `BadRequest`."""
    if len(body) > args.max_body_bytes:
        raise BadRequest(413, f"request body of {len(body):,} bytes is over serve.max_body_bytes "
                              f"({args.max_body_bytes:,})")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"request body is not valid JSON ({getattr(err, 'msg', err)})") from None
    rows = data if isinstance(data, list) else [data]
    if not isinstance(data, (list, dict)) or not rows or not all(isinstance(r, dict) for r in rows):
        raise BadRequest(400, 'expected a row {"task": NAME, FIELD: ...} or a non-empty list of rows')
    if len(rows) > args.max_rows:
        raise BadRequest(413, f"{len(rows):,} rows in one request, over serve.max_rows ({args.max_rows})")
    return rows, isinstance(data, list)


class BadRequest(Exception):
    """A request the server refuses: its status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def build_app(predictor: Predictor, args: ServeArgs, mix_tasks: bool = True) -> FastAPI:
    """The FastAPI app around one Predictor (see the module's decisions)."""
    batcher = Batcher(predictor, args.max_batch, args.max_wait_ms / 1000, mix_tasks)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mptune", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return error(422, f"bad request parameter ({where})")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "tasks": len(predictor.tasks), "queued": len(batcher.pending),
                "batches": batcher.batches, "examples": batcher.examples}

    @app.get("/tasks")
    async def tasks() -> dict:
        return {"model": predictor.backbone.name, "prompt_length": predictor.length, "tasks": predictor.describe(),
                "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "mix_tasks": mix_tasks,
                             "max_padding": predictor.max_padding},
                "limits": {"max_rows": args.max_rows, "max_body_bytes": args.max_body_bytes}}

    @app.post("/predict")
    async def predict(request: Request, scores: bool = False):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > args.max_body_bytes:
            return error(413, f"request body of {int(length):,} bytes is over serve.max_body_bytes "
                              f"({args.max_body_bytes:,})")
        try:
            rows, many = parse_body(await request.body(), args)
            encoded = await batcher.run_on_worker(read_rows, predictor, rows)
        except BadRequest as bad:
            return error(bad.status, bad.message)
        except MptuneError as err:
            return error(422, str(err))
        outputs = await batcher.submit(encoded)
        if not scores:
            outputs = [{k: v for k, v in out.items() if k != "scores"} for out in outputs]
        return outputs if many else outputs[0]

    return app


def read_rows(predictor: Predictor, rows: list[dict]) -> list[tuple[Task, list[Encoded]]]:
    """Every row of a request read and tokenised (MptuneError naming the first bad one: 'request row N')."""
    return [predictor.encode_row(row, "request", line) for line, row in enumerate(rows, 1)]


def serve(predictor: Predictor, args: ServeArgs) -> None:
    """Run the server until SIGINT/SIGTERM (graceful: queued rows are answered first)."""
    import uvicorn

    uvicorn.run(build_app(predictor, args), host=args.host, port=args.port, log_level="info")
