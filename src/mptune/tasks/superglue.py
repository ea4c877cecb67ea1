"""SuperGLUE tasks read from the official JSONL files under `<data_dir>/superglue/<DIR>/`.

Design decisions
- One JSON object per line; a line that is not a JSON object, a missing field, an unknown label
  or a missing file raises `MptuneError` naming the file (and the line).
- Labels map to class indices in the official label order; `target_text` is the shared label
  word (CB uses the same "yes"/"maybe"/"no" words as MNLI, BoolQ/WSC/MultiRC "no"/"yes").
- MultiRC becomes one binary example per (paragraph, question, answer); its headline metric is
  F1 over all answers (F1a), next to exact match over questions (EM: every answer of a question
  right), for which each label is a `GroupedLabel` naming its (paragraph idx, question idx).
  Paragraph HTML tags such as <br> become spaces. Splits work on these answer rows, as the
  prompt-transfer literature does with the Hugging Face rows, so one question's answers can fall
  on both sides of the held-out dev split (and a sampled evaluation set, data.eval_examples > 0,
  can hold part of a question's answers): EM is exact on the test split, the official validation
  set scored whole.
- BoolQ's official train (9,427 rows) is often absent offline: `train.jsonl` is used when
  present, otherwise the 32-example `FewGLUE_32dev/train.jsonl`. The split rule still follows
  the official size (< 10K: dev/test are halves of the official validation set).
- WiC asks whether the target word means the same in both sentences ("no"/"yes"); the word's
  character offsets (start1/end1, start2/end2) are not used.
- Official test files are unlabelled and never read; splits follow `tasks/splits.py`.
- Without any local file of a task, the aps/super_glue hub copy is read instead (`tasks/hub.py`):
  a `hub_row` function turns each hub row back into the official JSON object (class indices to
  the official label values; MultiRC's flat answer rows and WSC's flat spans to the nested
  form), which the same row reader then parses.
- Each row reader takes the function that reads a label (`label_of`); `Task.read_row` passes
  `no_label`, so the same reader reads unlabelled test rows (label None) for prediction, and a
  label present is ignored.
- `read_jsonl`, `get` and `label_of` also serve the other JSONL tasks (WinoGrande, MRQA's
  gzipped JSONL, users' own files): `what` names the expected source in messages, `key` the label field.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mptune.errors import MptuneError
from mptune.tasks import hub
from mptune.tasks.base import Example, GroupedLabel, Task, files_doc
from mptune.tasks.glue import normalize
from mptune.tasks.splits import describe, select

TAG = re.compile(r"<[^>]*>")
BOOL = {False: 0, True: 1}
Row = dict[str, Any]


def read_jsonl(path: Path, what: str = "official SuperGLUE") -> list[tuple[int, Row]]:
    """Rows of a JSONL file (gzipped when its name ends in .gz) as (line number, object).

    `what` names the expected source in messages.
    """
    return list(iter_jsonl(path, what))


def iter_jsonl(path: Path, what: str = "official SuperGLUE") -> Iterator[tuple[int, Row]]:
    """`read_jsonl` one row at a time (a file too big to hold is streamed); errors are raised on reaching them."""
    if not path.is_file():
        raise MptuneError(f"Data file {path} does not exist; expected the {what} JSONL there.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise MptuneError(f"{path} line {line} is not valid JSON ({exc.msg}).") from None
                if not isinstance(row, dict):
                    raise MptuneError(f"{path} line {line} is not a JSON object.")
                yield line, row
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # not gzip, truncated, or not UTF-8
        raise MptuneError(f"{path} could not be read as the {what} JSONL ({exc}).") from None


def get(row: Row, key: str, path: Path, line: int, what: str = "official SuperGLUE") -> Any:
    """row[key]; MptuneError naming file, line and field when it is missing."""
    if key not in row:
        raise MptuneError(f"{path} line {line} has no field {key!r}; expected the {what} fields.")
    return row[key]


def label_of(row: Row, labels: dict, path: Path, line: int, key: str = "label",
             what: str = "official SuperGLUE") -> int:
    """Class index of row[key]; MptuneError naming file and line if unknown."""
    raw = get(row, key, path, line, what)
    if type(raw) in {type(k) for k in labels} and raw in labels:
        return labels[raw]
    expected = ", ".join(json.dumps(k) for k in labels)
    raise MptuneError(f"{path} line {line} has unknown label {raw!r}; expected one of {expected}.")


def no_label(row: Row, labels: dict, path: Path, line: int, key: str = "label",
             what: str = "official SuperGLUE") -> None:
    """In place of `label_of` for prediction: the label is not read (test rows have none)."""
    return None


def pair_task(premise: str, hypothesis: str, labels: dict, template: str) -> Callable:
    """Row reader for premise/hypothesis style tasks."""

    def read(row: Row, path: Path, line: int, label_of: Callable = label_of) -> list[tuple[str, int]]:
        label = label_of(row, labels, path, line)
        text = template.format(normalize(str(get(row, premise, path, line))),
                               normalize(str(get(row, hypothesis, path, line))))
        return [(text, label)]

    return read


ENTAIL = "premise: {0}\nhypothesis: {1}\nDoes the premise entail the hypothesis?\nAnswer:"
RTE_LABELS = {"entailment": 0, "not_entailment": 1}


def read_boolq(row: Row, path: Path, line: int, label_of: Callable = label_of) -> list[tuple[str, int]]:
    """BoolQ: passage and question; the question gets one trailing '?'."""
    question = normalize(str(get(row, "question", path, line))).rstrip("?")
    passage = normalize(str(get(row, "passage", path, line)))
    return [(f"passage: {passage}\nquestion: {question}?\nAnswer:", label_of(row, BOOL, path, line))]


def read_copa(row: Row, path: Path, line: int, label_of: Callable = label_of) -> list[tuple[str, int]]:
    """COPA: premise, 'cause'/'effect' question and two numbered alternatives."""
    f = [normalize(str(get(row, k, path, line))) for k in ("premise", "question", "choice1", "choice2")]
    text = f"premise: {f[0]}\nWhat was the {f[1]}?\n1: {f[2]}\n2: {f[3]}\nAnswer:"
    return [(text, label_of(row, {0: 0, 1: 1}, path, line))]


def read_wsc(row: Row, path: Path, line: int, label_of: Callable = label_of) -> list[tuple[str, int]]:
    """WSC: does the pronoun (span2) refer to the candidate (span1)?"""
    target = get(row, "target", path, line)
    if not isinstance(target, dict):
        raise MptuneError(f"{path} line {line} field 'target' is not an object with span texts.")
    span1 = normalize(str(get(target, "span1_text", path, line)))
    span2 = normalize(str(get(target, "span2_text", path, line)))
    text = normalize(str(get(row, "text", path, line)))
    return [(f"text: {text}\nDoes '{span2}' refer to '{span1}'?\nAnswer:", label_of(row, BOOL, path, line))]


def read_wic(row: Row, path: Path, line: int, label_of: Callable = label_of) -> list[tuple[str, int]]:
    """WiC: does the target word mean the same thing in both sentences?"""
    word, s1, s2 = (normalize(str(get(row, k, path, line))) for k in ("word", "sentence1", "sentence2"))
    text = f"sentence1: {s1}\nsentence2: {s2}\nDoes '{word}' mean the same thing in both sentences?\nAnswer:"
    return [(text, label_of(row, BOOL, path, line))]


def read_multirc(row: Row, path: Path, line: int, label_of: Callable = label_of) -> list[tuple[str, int]]:
    """MultiRC: one example per (paragraph, question, answer); the label names its question."""
    passage = get(row, "passage", path, line)
    if not isinstance(passage, dict):
        raise MptuneError(f"{path} line {line} field 'passage' is not an object with text and questions.")
    paragraph = normalize(TAG.sub(" ", str(get(passage, "text", path, line))))
    out = []
    for position, q in enumerate(get(passage, "questions", path, line)):
        question = normalize(TAG.sub(" ", str(get(q, "question", path, line))))
        group = f"{row.get('idx', line)}/{q.get('idx', position)}"  # (paragraph, question) ids
        for a in get(q, "answers", path, line):
            answer = normalize(TAG.sub(" ", str(get(a, "text", path, line))))
            text = (f"paragraph: {paragraph}\nquestion: {question}\nanswer: {answer}\n"
                    "Is the answer correct?\nAnswer:")
            label = label_of(a, {0: 0, 1: 1}, path, line)
            out.append((text, None if label is None else GroupedLabel(label, group)))
    return out


def relabel(names: Sequence[Any]) -> Callable[[Row], Row]:
    """Hub row -> official row for tasks whose hub label is an index into the official `names`."""

    def convert(row: Row) -> Row:
        label = row.get("label")
        return {**row, "label": names[label]} if isinstance(label, int) and 0 <= label < len(names) else row

    return convert


def pick(row: Row, **names: str) -> Row:
    """{official field: row[hub field]} for the hub fields present (absent ones fail later, by name)."""
    return {official: row[field] for official, field in names.items() if field in row}


def hub_multirc(row: Row) -> Row:
    """A flat hub MultiRC row (paragraph, question, answer, label, idx) as a one-answer official row."""
    idx = row.get("idx") if isinstance(row.get("idx"), dict) else {}
    question = {**pick(row, question="question"), **pick(idx, idx="question"),
                "answers": [pick(row, text="answer", label="label")]}
    return {**pick(idx, idx="paragraph"), "passage": {**pick(row, text="paragraph"), "questions": [question]}}


def hub_wsc(row: Row) -> Row:
    """A flat hub WSC row (text, span1_text, span2_text, label index) as an official row."""
    target = pick(row, span1_text="span1_text", span2_text="span2_text")
    return {**relabel((False, True))(row), "target": target}


def make_task(name: str, folder: str, choices: tuple[str, ...], read: Callable, official_train: int,
              metric: str = "accuracy", extra_metrics: tuple[str, ...] = (),
              fallback_train: str | None = None, hub_row: Callable[[Row], Row] = dict,
              fields: tuple[str, ...] = ()) -> Task:
    """A `Task` reading `<data_dir>/superglue/<folder>/{train,val}.jsonl` (or the hub copy via `hub_row`)."""

    def to_examples(row: Row, where: Path | str, line: int, labels: Callable = label_of) -> list[Example]:
        return [Example(text, "" if label is None else choices[label], label, name)
                for text, label in read(row, where, line, labels)]

    def read_row(row: Row, where: str, line: int) -> list[Example]:
        return to_examples(row, where, line, no_label)

    def examples(path: Path) -> list[Example]:
        return [ex for line, row in read_jsonl(path) for ex in to_examples(row, path, line)]

    def from_hub(row: Row, where: str, line: int) -> list[Example]:
        return to_examples(hub_row(row), where, line)

    def load_split(data_dir: Path, split: str, seed: int) -> list[Example]:
        root = Path(data_dir) / "superglue" / folder
        train = "train.jsonl"
        if fallback_train and not (root / train).is_file() and (root / fallback_train).is_file():
            train = fallback_train
        files = {"train": (train, "train"), "validation": ("val.jsonl", "validation")}
        found = hub.loaders(name, root, files, examples, from_hub)
        return select(split, seed, official_train, found["train"], found["validation"])

    doc = describe(official_train)
    if fallback_train:
        doc = doc.replace(f"({official_train:,})", f"({official_train:,}; {fallback_train} when train.jsonl is absent)")
    source = files_doc([f"superglue/{folder}/{file}" for file in ("train.jsonl", "val.jsonl")])
    return Task(name=name, family="superglue", choices=choices, metric=metric, load_split=load_split,
                splits_doc=doc, extra_metrics=extra_metrics, source=source, read_row=read_row, input_fields=fields)


CB_LABELS = {"entailment": 0, "contradiction": 1, "neutral": 2}
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        make_task("boolq", "BoolQ", ("no", "yes"), read_boolq, 9_427,
                  fallback_train="FewGLUE_32dev/train.jsonl", hub_row=relabel((False, True)),
                  fields=("passage", "question")),
        make_task("cb", "CB", ("yes", "no", "maybe"), pair_task("premise", "hypothesis", CB_LABELS, ENTAIL),
                  250, extra_metrics=("macro_f1",), hub_row=relabel(tuple(CB_LABELS)),
                  fields=("premise", "hypothesis")),
        make_task("copa", "COPA", ("1", "2"), read_copa, 400,
                  fields=("premise", "question", "choice1", "choice2")),
        make_task("multirc", "MultiRC", ("no", "yes"), read_multirc, 27_243, metric="f1",
                  extra_metrics=("question_em",), hub_row=hub_multirc, fields=("passage",)),
        make_task("rte_sg", "RTE", ("yes", "no"), pair_task("premise", "hypothesis", RTE_LABELS, ENTAIL), 2_490,
                  hub_row=relabel(tuple(RTE_LABELS)), fields=("premise", "hypothesis")),
        make_task("wic", "WiC", ("no", "yes"), read_wic, 5_428, hub_row=relabel((False, True)),
                  fields=("word", "sentence1", "sentence2")),
        make_task("wsc", "WSC", ("no", "yes"), read_wsc, 554, hub_row=hub_wsc, fields=("text", "target")),
    )
}
