"""Prediction files: rows streamed from a file, predicted in chunks, written in input order, resumably.

Decisions
- Input is read one row at a time (`tasks.superglue.iter_jsonl`, `tasks.glue.iter_records`): .jsonl
  (one object per line, each naming its "task", or all of one --task), .csv (a header row) and .tsv
  (the official GLUE files, a header row). Memory holds one chunk of rows (`CHUNK`), whatever the
  file's size; within a chunk the rows are predicted longest first, mixed across tasks, and written
  back in input order.
- Output: JSONL (one object per input row: its line, its id when the row has one, the task, the
  prediction and, with --scores, each label word's log-likelihood) or CSV, chosen by the output's
  extension; the leaderboard files are further `Sink`s (`leaderboard`).
- Resumable and never half-written: OUT is written as OUT.partial beside OUT.progress.json, which
  records the input's path, the rows done and the bytes written (written atomically, `rundir.write_json`).
  Each chunk is appended to the partial file and fsynced before the progress file moves on; a rerun
  cuts the partial file back to the recorded bytes and skips the rows done; the finished file is
  renamed to OUT. So OUT appears only complete, a rerun with OUT present does nothing, and no saved
  prediction is ever overwritten.
- A bad row (unknown task, missing field, damaged line) stops the command with one `MptuneError`
  naming the file and the line; the chunks before it stay saved, so a rerun after the fix resumes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

from tqdm.auto import tqdm

from mptune.errors import MptuneError
from mptune.files import read_json
from mptune.predict import Predictor
from mptune.rundir import write_json
from mptune.tasks.glue import iter_records
from mptune.tasks.superglue import iter_jsonl

CHUNK = 256
"""Rows read, predicted and written at a time (what memory holds of the input)."""
ID_FIELDS = ("idx", "index", "id")
"""Fields that identify a row in the official files (SuperGLUE idx, GLUE index, QQP id)."""
INPUTS = {".jsonl": "JSONL", ".csv": "CSV", ".tsv": "TSV"}


def read_input(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of an input file, one at a time, by its extension (.jsonl, .csv, .tsv)."""
    what = "prediction input"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return iter_jsonl(path, what)
    if suffix in (".csv", ".tsv"):
        return iter_records(path, "," if suffix == ".csv" else "\t", what)
    raise MptuneError(f"input file {path} must end in {', '.join(INPUTS)}")


def count_rows(path: Path) -> int:
    """Rows of an input file (its non-empty lines, less the header of a CSV/TSV): the progress bar's total.
    A quoted CSV field spanning lines counts as more, which only misleads the bar."""
    with path.open("rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    return max(0, lines - (path.suffix.lower() != ".jsonl"))


def row_id(row: Mapping[str, Any]) -> Any:
    """The row's own id (idx, index or id), or None."""
    return next((row[k] for k in ID_FIELDS if k in row), None)


class Sink(Protocol):
    """How predictions become lines of one output file."""

    def header(self) -> str:
        """Text written before the first row ('' for none)."""

    def line(self, number: int, row: Mapping[str, Any], record: Mapping[str, Any]) -> str:
        """The output text of one input row (its line number, the row, the Predictor's record)."""


class JsonlSink:
    """One JSON object per input row: line, id (when the row has one), task, prediction[, scores]."""

    def header(self) -> str:
        return ""

    def line(self, number: int, row: Mapping[str, Any], record: Mapping[str, Any]) -> str:
        ident = row_id(row)
        head = {"line": number, **({} if ident is None else {"id": ident})}
        return json.dumps({**head, **record}, ensure_ascii=False) + "\n"


class CsvSink:
    """A CSV with the columns line, id, task, prediction and scores (JSON text; empty without --scores)."""

    COLUMNS = ("line", "id", "task", "prediction", "scores")

    def _row(self, values) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        return buffer.getvalue()

    def header(self) -> str:
        return self._row(self.COLUMNS)

    def line(self, number: int, row: Mapping[str, Any], record: Mapping[str, Any]) -> str:
        pred = record["prediction"]
        scores = record.get("scores")
        return self._row([number, "" if row_id(row) is None else row_id(row), record["task"],
                          json.dumps(pred) if isinstance(pred, list) else pred,
                          "" if scores is None else json.dumps(scores)])


OUTPUTS: dict[str, type] = {".jsonl": JsonlSink, ".csv": CsvSink}


def sink_for(path: Path) -> Sink:
    """The sink of an output file, by its extension."""
    sink = OUTPUTS.get(path.suffix.lower())
    if sink is None:
        raise MptuneError(f"output file {path} must end in {' or '.join(OUTPUTS)}")
    return sink()


def partial_paths(out: Path) -> tuple[Path, Path]:
    """OUT.partial (the predictions so far) and OUT.progress.json (how far they go)."""
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".progress.json")


def predict_file(predictor: Predictor, source: Path, out: Path, sink: Sink, default_task: str | None = None,
                 scores: bool = False, chunk: int = CHUNK, fields: Mapping[str, str] | None = None,
                 desc: str | None = None) -> dict[str, Any]:
    """Predict every row of `source` into `out` (see the decisions): {"rows", "skipped", "done"}.

    `fields` renames a row's fields before reading ({"sentence1": "premise"}: AX-b read as RTE).
    Rows already written by an interrupted call are skipped ("skipped"); "done" is False when `out` was
    already complete and nothing ran.
    """
    source, out = Path(source), Path(out)
    if out.exists():
        return {"rows": None, "skipped": 0, "done": False}
    partial, progress = partial_paths(out)
    identity = {"input": str(source.resolve())}
    state = resume_state(partial, progress, identity)
    out.parent.mkdir(parents=True, exist_ok=True)
    skip = state["rows"]
    with open(partial, "ab") as fh:
        if state["bytes"] == 0:
            state = append(fh, sink.header(), 0, state, progress)
        rows = read_input(source)
        total = count_rows(source) if source.is_file() else None
        with tqdm(total=total, initial=skip, desc=desc, disable=desc is None, unit="row") as bar:
            pending: list[tuple[int, dict]] = []
            for index, (line, row) in enumerate(rows):
                if index < skip:
                    continue
                pending.append((line, {fields.get(k, k): v for k, v in row.items()} if fields else row))
                if len(pending) == chunk:
                    state = write_chunk(predictor, pending, fh, sink, state, progress, str(source), default_task,
                                        scores)
                    bar.update(len(pending))
                    pending = []
            if pending:
                state = write_chunk(predictor, pending, fh, sink, state, progress, str(source), default_task, scores)
                bar.update(len(pending))
    os.replace(partial, out)
    progress.unlink()
    return {"rows": state["rows"], "skipped": skip, "done": True}


def resume_state(partial: Path, progress: Path, identity: dict) -> dict:
    """The progress of an interrupted call on the same input (its partial file cut back to the bytes
    recorded), or a fresh start; MptuneError when the partial file belongs to another input."""
    if progress.is_file() and partial.is_file():
        state = read_json(progress, "the progress record of an interrupted `mptune predict` (a JSON object)",
                          fix=f"remove it and {partial.name} to start again")
        if {k: state.get(k) for k in identity} != identity:
            raise MptuneError(f"{partial} holds predictions of another input ({state.get('input')}); "
                              "remove it and its .progress.json, or choose another --out")
        with open(partial, "r+b") as fh:
            fh.truncate(state["bytes"])
        return state
    partial.unlink(missing_ok=True)
    return {**identity, "rows": 0, "bytes": 0}


def write_chunk(predictor: Predictor, pending: list[tuple[int, dict]], fh, sink: Sink, state: dict,
                progress: Path, where: str, default_task: str | None, scores: bool) -> dict:
    """Predict a chunk of (line, row) and append its lines; the progress file follows the fsynced bytes."""
    encoded = [predictor.encode_row(row, where, line, default_task) for line, row in pending]
    records = predictor.predict_encoded(encoded, scores)
    text = "".join(sink.line(line, row, rec) for (line, row), rec in zip(pending, records))
    return append(fh, text, len(pending), state, progress)


def append(fh, text: str, rows: int, state: dict, progress: Path) -> dict:
    """Append `text` (durably), then record the new row count and size in the progress file."""
    data = text.encode("utf-8")
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())
    state = {**state, "rows": state["rows"] + rows, "bytes": state["bytes"] + len(data)}
    write_json(progress, state)
    return state
