"""The files the GLUE and SuperGLUE leaderboards accept: one per benchmark task, named and formatted as
their servers read them.

    GLUE       CoLA.tsv SST-2.tsv MRPC.tsv QQP.tsv STS-B.tsv MNLI-m.tsv MNLI-mm.tsv QNLI.tsv RTE.tsv
               WNLI.tsv AX.tsv: a header `index<TAB>prediction`, then one row per test row
    SuperGLUE  BoolQ.jsonl CB.jsonl COPA.jsonl MultiRC.jsonl ReCoRD.jsonl RTE.jsonl WiC.jsonl WSC.jsonl
               AX-b.jsonl AX-g.jsonl: one object per test row, {"idx": ..., "label": ...}

Decisions
- Each file is the prediction of one task's official, unlabelled test file under the data directory,
  streamed and resumable like any prediction file (`prediction_files.predict_file`, with a leaderboard
  `Sink`), so a file appears only complete.
- Labels are the official label strings of the task's files: GLUE's from the label values its
  reader knows (`tasks.glue.GlueSpec.labels`: "entailment"/"not_entailment", "0"/"1" for the binary
  tasks, MNLI's three names), STS-B the predicted score; SuperGLUE's "true"/"false" (BoolQ, WiC),
  "True"/"False" (WSC), "entailment"/"contradiction"/"neutral" (CB), "entailment"/"not_entailment"
  (RTE, AX-b, AX-g), the alternative's index 0/1 (COPA) and, for MultiRC, one nested object per
  paragraph with each answer's 0/1 under its question and answer idx.
- ReCoRD is a generation task: its file has one {"idx": the query's idx, "label": the generated answer
  text} per query (jiant's submission formatter writes the same), so one passage row of test.jsonl
  gives as many lines as it has queries, in their order.
- The diagnostics are predicted with a target's prompt: AX with MNLI's, AX-b and AX-g with SuperGLUE
  RTE's (AX-b's sentence1/sentence2 read as RTE's premise/hypothesis).
- GLUE rows are numbered by their `index` column (QQP: `id`), SuperGLUE objects by their `idx`.
- What is missing is said per file: no prompt for its task, or no test file. A test row without the idx
  its line needs is one error naming the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mptune.errors import MptuneError
from mptune.predict import Predictor
from mptune.prediction_files import predict_file, row_id
from mptune.tasks import glue, superglue


@dataclass(frozen=True)
class BoardFile:
    """One leaderboard file: its name, the task and test file it predicts, its label strings."""

    name: str
    """File name the server expects, e.g. 'RTE.tsv'."""
    task: str
    """mptune task whose prompt predicts it."""
    input: str
    """The official test file, under the data directory."""
    labels: tuple | None = None
    """Official label by class index; None: the prediction itself (STS-B's number, ReCoRD's text)."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """Test-file field -> the field the task reads (AX-b's sentence1 -> premise)."""


def glue_labels(task: str) -> tuple[str, ...] | None:
    """A GLUE task's official label values by class index (None for STS-B's scores)."""
    spec = next(s for s in glue.SPECS if s.name == task)
    return None if spec.labels is None else tuple(sorted(spec.labels, key=spec.labels.get))


def _glue(name: str, task: str, folder: str, file: str = "test.tsv") -> BoardFile:
    return BoardFile(name, task, f"glue/{folder}/{file}", glue_labels(task))


GLUE = (
    _glue("CoLA.tsv", "cola", "CoLA"), _glue("SST-2.tsv", "sst2", "SST-2"), _glue("MRPC.tsv", "mrpc", "MRPC"),
    _glue("QQP.tsv", "qqp", "QQP"), _glue("STS-B.tsv", "stsb", "STS-B"),
    _glue("MNLI-m.tsv", "mnli", "MNLI", "test_matched.tsv"),
    _glue("MNLI-mm.tsv", "mnli", "MNLI", "test_mismatched.tsv"),
    _glue("QNLI.tsv", "qnli", "QNLI"), _glue("RTE.tsv", "rte", "RTE"), _glue("WNLI.tsv", "wnli", "WNLI"),
    _glue("AX.tsv", "mnli", "diagnostic", "diagnostic.tsv"),
)
TRUE_FALSE = ("false", "true")
RTE_STRINGS = tuple(superglue.RTE_LABELS)
SUPERGLUE = (
    BoardFile("BoolQ.jsonl", "boolq", "superglue/BoolQ/test.jsonl", TRUE_FALSE),
    BoardFile("CB.jsonl", "cb", "superglue/CB/test.jsonl", tuple(superglue.CB_LABELS)),
    BoardFile("COPA.jsonl", "copa", "superglue/COPA/test.jsonl", (0, 1)),
    BoardFile("MultiRC.jsonl", "multirc", "superglue/MultiRC/test.jsonl", (0, 1)),
    BoardFile("ReCoRD.jsonl", "record", "superglue/ReCoRD/test.jsonl"),
    BoardFile("RTE.jsonl", "rte_sg", "superglue/RTE/test.jsonl", RTE_STRINGS),
    BoardFile("WiC.jsonl", "wic", "superglue/WiC/test.jsonl", TRUE_FALSE),
    BoardFile("WSC.jsonl", "wsc", "superglue/WSC/test.jsonl", ("False", "True")),
    BoardFile("AX-b.jsonl", "rte_sg", "superglue/AX-b/AX-b.jsonl", RTE_STRINGS,
              {"sentence1": "premise", "sentence2": "hypothesis"}),
    BoardFile("AX-g.jsonl", "rte_sg", "superglue/AX-g/AX-g.jsonl", RTE_STRINGS),
)
BENCHMARKS: dict[str, tuple[BoardFile, ...]] = {"glue": GLUE, "superglue": SUPERGLUE}


def official(board: BoardFile, prediction: Any, choices: tuple[str, ...]) -> Any:
    """The label string (or number) the server expects for one predicted label word (or STS-B score)."""
    return prediction if board.labels is None else board.labels[choices.index(prediction)]


class GlueSink:
    """`index<TAB>prediction` rows (GLUE's TSV)."""

    def __init__(self, board: BoardFile, choices: tuple[str, ...]):
        self.board, self.choices, self.position = board, choices, 0

    def header(self) -> str:
        return "index\tprediction\n"

    def line(self, number: int, row: Mapping[str, Any], record: Mapping[str, Any]) -> str:
        index = row_id(row)
        self.position += 1
        label = official(self.board, record["prediction"], self.choices)
        return f"{self.position - 1 if index is None else index}\t{label}\n"


def as_list(prediction: Any) -> list:
    """The predictions of a row's examples: a row of one example has one prediction, not a list."""
    return prediction if isinstance(prediction, list) else [prediction]


class SuperGlueSink:
    """{"idx", "label"} objects (SuperGLUE's JSONL); MultiRC's nested per paragraph, question and answer; ReCoRD's
    one per query."""

    def __init__(self, board: BoardFile, choices: tuple[str, ...]):
        self.board, self.choices = board, choices

    def header(self) -> str:
        return ""

    def line(self, number: int, row: Mapping[str, Any], record: Mapping[str, Any]) -> str:
        if self.board.task == "multirc":
            return json.dumps(self.multirc(row, number, record["prediction"])) + "\n"
        if self.board.task == "record":
            return self.record(row, number, record["prediction"])
        label = official(self.board, record["prediction"], self.choices)
        return json.dumps({"idx": self.idx(row, number), "label": label}) + "\n"

    def idx(self, obj: Mapping[str, Any], number: int, what: str = "") -> Any:
        """obj["idx"]: what the server matches a prediction by; MptuneError naming the test file's line without it."""
        if "idx" not in obj:
            raise MptuneError(f"{self.board.input} line {number} has no 'idx'{what}; {self.board.name} numbers "
                              "its predictions by the test file's idx")
        return obj["idx"]

    def multirc(self, row: Mapping[str, Any], number: int, predictions) -> dict:
        """One paragraph: each question's answers' labels, in the order `tasks.superglue.read_multirc` reads them."""
        preds = iter(as_list(predictions))
        questions = [{"idx": q.get("idx", qi),
                      "answers": [{"idx": a.get("idx", ai), "label": official(self.board, next(preds), self.choices)}
                                  for ai, a in enumerate(q["answers"])]}
                     for qi, q in enumerate(row["passage"]["questions"])]
        return {"idx": self.idx(row, number), "passage": {"questions": questions}}

    def record(self, row: Mapping[str, Any], number: int, predictions) -> str:
        """One line per query of a passage, in the order `tasks.generation.record_rows` reads them: {"idx": the
        query's idx, "label": the generated answer}."""
        return "".join(json.dumps({"idx": self.idx(qa, number, f" in qas[{q}]"), "label": text}) + "\n"
                       for q, (qa, text) in enumerate(zip(row["qas"], as_list(predictions))))


SINKS = {"glue": GlueSink, "superglue": SuperGlueSink}


def write_board(predictor: Predictor, data_dir: Path, benchmark: str, out_dir: Path,
                desc: bool = True) -> dict[str, Any]:
    """Write every file of `benchmark` that the predictor's prompts and the data directory allow into
    `out_dir` -> {"written": {file: rows}, "kept": [files already there], "missing": {file: why}}."""
    if benchmark not in BENCHMARKS:
        raise MptuneError(f"unknown leaderboard {benchmark!r}; expected {' or '.join(BENCHMARKS)}")
    written, kept, missing = {}, [], {}
    out_dir = Path(out_dir)
    for board in BENCHMARKS[benchmark]:
        target = out_dir / board.name
        source = Path(data_dir) / board.input
        if target.exists():
            kept.append(board.name)
            continue
        if board.task not in predictor.tasks:
            missing[board.name] = f"no prompt for task {board.task}"
        elif not source.is_file():
            missing[board.name] = f"no test file {source}"
        if board.name in missing:
            continue
        task = predictor.tasks[board.task]
        sink = SINKS[benchmark](board, task.choices)
        done = predict_file(predictor, source, target, sink, default_task=board.task, fields=board.fields,
                            desc=board.name if desc else None)
        written[board.name] = done["rows"]
    return {"written": written, "kept": kept, "missing": missing}
