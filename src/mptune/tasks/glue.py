"""GLUE tasks read from the official GLUE TSV files under `<data_dir>/glue/<DIR>/`.

Design decisions
- Files are parsed with `csv` using `quoting=csv.QUOTE_NONE`: GLUE TSVs contain unbalanced
  quote characters that the default dialect would glue across lines.
- Columns are found by header name, so the 9,999-row MNLI/QQP/QNLI samples (official columns,
  some left empty) and the full official files read the same way. CoLA train/dev have no
  header; they are read by position (source, label, original mark, sentence). MRPC headers
  start with a byte-order mark, so files are opened as 'utf-8-sig'.
- Every data row must have as many fields as the header (or 4 for CoLA); a row that does not,
  a missing column, an unknown label or a missing file raises `MptuneError` naming the file.
- Text fields are whitespace-normalised; labels map to class indices in the official label
  order, and `target_text` is the shared label word (see `tasks/base.py`).
- STS-B is regression: the label is the gold score, the 26 choices are the bins 0.0 ... 5.0,
  and `target_text` is the score rounded (half up) to the nearest 0.2.
- Official test files are unlabelled and never read; splits follow `tasks/splits.py`.
- Without any local file of a task, the nyu-mll/glue hub copy is read instead (`tasks/hub.py`):
  each hub row is turned back into the official TSV values and parsed by the same code.
- `read_tsv` also reads comma-separated files (`delimiter=','`, standard CSV quoting) for the
  other tasks' official CSVs and users' own files; `what` names the source in its messages.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from mptune.errors import MptuneError
from mptune.tasks import hub
from mptune.tasks.base import Example, Task, files_doc, row_texts
from mptune.tasks.splits import describe, select

ENTAIL = "premise: {0}\nhypothesis: {1}\nDoes the premise entail the hypothesis?\nAnswer:"
PARAPHRASE = "sentence1: {0}\nsentence2: {1}\nDo they mean the same thing?\nAnswer:"
SENTIMENT = "sentence: {0}\nIs the sentiment positive or negative?\nAnswer:"
YES_NO = ("yes", "no")
NO_YES = ("no", "yes")
BINARY = {"0": 0, "1": 1}
STSB_CHOICES = tuple(f"{i / 5:.1f}" for i in range(26))


@dataclass(frozen=True)
class GlueSpec:
    """How to read one GLUE task."""

    name: str
    dir: str
    columns: tuple[str | int, ...]
    """Text columns then the label column: header names, or positions for headerless files."""
    template: str
    choices: tuple[str, ...]
    labels: dict[str, int] | None
    """Raw label -> class index; None for regression (STS-B)."""
    metric: str
    official_train: int
    extra_metrics: tuple[str, ...] = ()
    width: int | None = None
    """Fields per row of a headerless file (CoLA); None when the file has a header."""
    validation: str = "dev.tsv"
    optional_validation: bool = False
    """True when the official validation file may be absent (train sample only on disk)."""
    mismatched: str | None = None
    hub_columns: tuple[str, ...] = ()
    """Field names of `columns` in the hub copy (text fields then the label)."""
    source: str = "official GLUE"
    """Names the expected files in error messages ('expected the official GLUE TSV there')."""

    @property
    def input_fields(self) -> tuple[str, ...]:
        """Header names of the text columns in the official (test) files: `columns` less the label, or the hub
        names for a headerless train file (CoLA's test.tsv has the header index, sentence)."""
        named = tuple(c for c in self.columns[:-1] if isinstance(c, str))
        return named if len(named) == len(self.columns) - 1 else tuple(self.hub_columns[:-1])


def normalize(text: str) -> str:
    """Collapse runs of whitespace to single spaces and strip the ends."""
    return " ".join(text.split())


def read_tsv(path: Path, columns: Sequence[str | int], width: int | None = None, *,
             delimiter: str = "\t", what: str = "official GLUE") -> list[tuple[int, list[str]]]:
    """Rows of a TSV (or, with `delimiter=','`, a quoted CSV) as (line number, values of `columns`).

    `columns` are header names, or positions when `width` (fields per row) is given for a
    headerless file. `what` names the expected source in error messages.
    """
    kind = "TSV" if delimiter == "\t" else "CSV"
    if not path.is_file():
        raise MptuneError(f"Data file {path} does not exist; expected the {what} {kind} there.")
    try:
        return _read_rows(path, columns, width, delimiter, what, kind)
    except UnicodeDecodeError as err:
        raise MptuneError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                          f"expected the {what} {kind}.") from None


def _read_rows(path: Path, columns: Sequence[str | int], width: int | None, delimiter: str, what: str,
               kind: str) -> list[tuple[int, list[str]]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        if width is None:
            header = next(reader, None)
            if header is None:
                raise MptuneError(f"{path} is empty; expected the {what} {kind} with a header row.")
            twice = sorted({c for c in columns if header.count(c) > 1})
            if twice:
                raise MptuneError(f"{path} has the column(s) {', '.join(map(str, twice))} more than once in its "
                                  f"header {header!r}; expected the {what} columns, each once.")
            missing = [c for c in columns if c not in header]
            if missing:
                raise MptuneError(
                    f"{path} has no column(s) {', '.join(map(str, missing))} in its header "
                    f"{header!r}; expected the {what} columns."
                )
            index = [header.index(c) for c in columns]
            width = len(header)
        else:
            index = list(columns)
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != width:
                sep = "tab" if delimiter == "\t" else "comma"
                raise MptuneError(
                    f"{path} line {reader.line_num} has {len(fields)} {sep}-separated fields; "
                    f"expected {width}."
                )
            rows.append((reader.line_num, [fields[i] for i in index]))
    return rows


def iter_records(path: Path, delimiter: str = "\t", what: str = "official GLUE") -> Iterator[tuple[int, dict]]:
    """Rows of a TSV (or CSV) with a header, one at a time, as (line number, {column: value}): files too big
    to hold are streamed (prediction). Read as `read_tsv` reads; a row with another number of fields than
    the header raises `MptuneError` naming its line when it is reached."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    if not path.is_file():
        raise MptuneError(f"Data file {path} does not exist; expected the {what} {kind} there.")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
            header = next(reader, None)
            if header is None:
                raise MptuneError(f"{path} is empty; expected the {what} {kind} with a header row.")
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise MptuneError(f"{path} line {reader.line_num} has {len(fields)} fields; expected "
                                      f"{len(header)} (its header {header!r}).")
                yield reader.line_num, dict(zip(header, fields))
    except UnicodeDecodeError as err:
        raise MptuneError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); "
                          f"expected the {what} {kind}.") from None


def stsb_bin(score: float) -> str:
    """The STS-B choice nearest to `score`: rounded half up to a multiple of 0.2, one decimal."""
    return f"{math.floor(round(score * 5, 6) + 0.5) / 5:.1f}"


def parse_label(spec: GlueSpec, raw: str, path: Path, line: int) -> int | float:
    """Class index (or STS-B score) of a raw label; MptuneError naming file and line if unknown."""
    if spec.labels is not None:
        if raw in spec.labels:
            return spec.labels[raw]
        expected = ", ".join(spec.labels)
    else:
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if 0.0 <= score <= 5.0:
            return score
        expected = "a similarity score from 0 to 5"
    raise MptuneError(f"{path} line {line} has unknown label {raw!r}; expected {expected}.")


def input_text(spec: GlueSpec, texts: Sequence[str]) -> str:
    """The model input of one row's text values."""
    return spec.template.format(*(normalize(v) for v in texts))


def example_from_values(spec: GlueSpec, values: Sequence[str], where: Path | str, line: int) -> Example:
    """The example of one row given as the values of `spec.columns` (texts, then the raw label)."""
    label = parse_label(spec, values[-1], where, line)
    target = stsb_bin(label) if spec.labels is None else spec.choices[label]
    return Example(input_text(spec, values[:-1]), target, label, spec.name)


def row_reader(spec: GlueSpec,
               clean: Callable[[str], str] = str) -> Callable[[Mapping[str, Any], str, int], list[Example]]:
    """`Task.read_row` of a GLUE-format task: a row by header name, unlabelled (a label column is not read).
    `clean` undoes the escapes of the task's files in each text, as its file reader does (Yelp's)."""
    def read(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
        texts = [clean(t) for t in row_texts(row, spec.input_fields, where, line, spec.name)]
        return [Example(input_text(spec, texts), "", None, spec.name)]

    return read


def read_examples(path: Path, spec: GlueSpec) -> list[Example]:
    """All labelled examples of one TSV file of `spec` (GLUE, or another task in the GLUE format)."""
    rows = read_tsv(path, spec.columns, spec.width, what=spec.source)
    return [example_from_values(spec, values, path, line) for line, values in rows]


def hub_values(spec: GlueSpec, row: dict, where: str, line: int) -> list[str]:
    """A hub row as the official TSV values: texts, then the raw label (class index -> official name)."""
    *texts, label = hub.fields(row, spec.hub_columns, where, line)
    names = {index: raw for raw, index in spec.labels.items()} if spec.labels is not None else {}
    return [str(t) for t in texts] + [names.get(label, str(label))]


def hub_reader(spec: GlueSpec) -> Callable[[dict, str, int], list[Example]]:
    """Row reader of the hub copy: hub row -> official values -> the same example as the TSV row."""
    return lambda row, where, line: [example_from_values(spec, hub_values(spec, row, where, line), where, line)]


def make_task(spec: GlueSpec) -> Task:
    """A `Task` whose splits follow `tasks/splits.py`."""
    files = {"train": ("train.tsv", "train"), "validation": (spec.validation, "validation")}
    optional = {"validation"} if spec.optional_validation else set()
    if spec.mismatched:
        files = {**files, "validation": (spec.validation, "validation_matched"),
                 "mismatched": (spec.mismatched, "validation_mismatched")}
        optional |= {"mismatched"}

    def load_split(data_dir: Path, split: str, seed: int) -> list[Example]:
        root = Path(data_dir) / "glue" / spec.dir
        found = hub.loaders(spec.name, root, files, lambda path: read_examples(path, spec), hub_reader(spec), optional)
        return select(split, seed, spec.official_train, found["train"], found["validation"], found.get("mismatched"))

    if spec.mismatched:
        doc = ("train: official train (392,702; a 9,999-row sample offline); dev: validation_mismatched; "
               "test: validation_matched; without those files dev and test are 1,000 each held out of train (seeded)")
    else:
        doc = describe(spec.official_train, offline_test=spec.optional_validation)
    return Task(
        name=spec.name, family="glue", choices=spec.choices, metric=spec.metric,
        load_split=load_split, splits_doc=doc, extra_metrics=spec.extra_metrics,
        regression=spec.labels is None, source=files_doc([f"glue/{spec.dir}/{name}" for name, _ in files.values()]),
        read_row=row_reader(spec), input_fields=spec.input_fields,
    )


SPECS = (
    GlueSpec("cola", "CoLA", (3, 1), "sentence: {0}\nIs this sentence grammatical?\nAnswer:",
             NO_YES, BINARY, "matthews", 8_551, width=4, hub_columns=("sentence", "label")),
    GlueSpec("sst2", "SST-2", ("sentence", "label"), SENTIMENT,
             ("negative", "positive"), BINARY, "accuracy", 67_349, hub_columns=("sentence", "label")),
    GlueSpec("mrpc", "MRPC", ("#1 String", "#2 String", "Quality"), PARAPHRASE,
             NO_YES, BINARY, "accuracy", 3_668, extra_metrics=("f1",),
             hub_columns=("sentence1", "sentence2", "label")),
    GlueSpec("qqp", "QQP", ("question1", "question2", "is_duplicate"), PARAPHRASE,
             NO_YES, BINARY, "accuracy", 363_846, extra_metrics=("f1",), optional_validation=True,
             hub_columns=("question1", "question2", "label")),
    GlueSpec("stsb", "STS-B", ("sentence1", "sentence2", "score"),
             "sentence1: {0}\nsentence2: {1}\nHow similar are they from 0 to 5?\nAnswer:",
             STSB_CHOICES, None, "pearson", 5_749, extra_metrics=("spearman",),
             hub_columns=("sentence1", "sentence2", "label")),
    GlueSpec("mnli", "MNLI", ("sentence1", "sentence2", "gold_label"), ENTAIL,
             ("yes", "maybe", "no"), {"entailment": 0, "neutral": 1, "contradiction": 2},
             "accuracy", 392_702, validation="dev_matched.tsv", optional_validation=True,
             mismatched="dev_mismatched.tsv", hub_columns=("premise", "hypothesis", "label")),
    GlueSpec("qnli", "QNLI", ("question", "sentence", "label"),
             "question: {0}\nsentence: {1}\nDoes the sentence answer the question?\nAnswer:",
             YES_NO, {"entailment": 0, "not_entailment": 1}, "accuracy", 104_743,
             optional_validation=True, hub_columns=("question", "sentence", "label")),
    GlueSpec("rte", "RTE", ("sentence1", "sentence2", "label"), ENTAIL,
             YES_NO, {"entailment": 0, "not_entailment": 1}, "accuracy", 2_490,
             hub_columns=("sentence1", "sentence2", "label")),
    GlueSpec("wnli", "WNLI", ("sentence1", "sentence2", "label"), ENTAIL,
             NO_YES, BINARY, "accuracy", 635, hub_columns=("sentence1", "sentence2", "label")),
)

TASKS: dict[str, Task] = {spec.name: make_task(spec) for spec in SPECS}
