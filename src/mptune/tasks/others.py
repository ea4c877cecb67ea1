"""The paper's "other" classification tasks: WinoGrande, Yelp-2, SciTail and PAWS.

Design decisions
- Each task reads its dataset's official release, unpacked under the data directory as shipped:
  - winogrande: `winogrande_1.1/{train_xl,dev}.jsonl` (WinoGrande 1.1; the XL training size, as
    in the literature): a sentence with one "_", option1, option2, answer "1" or "2".
  - yelp_polarity: `yelp_review_polarity_csv/{train,test}.csv` (Zhang et al. 2015): CSV without
    header, every field quoted, internal quotes doubled; columns class (1 = negative,
    2 = positive) and review text, whose newlines are written as a backslash and "n".
  - scitail: `SciTailV1.1/tsv_format/scitail_1.0_{train,dev,test}.tsv`: TSV without header;
    premise, hypothesis, label 'entails' or 'neutral'.
  - paws: `paws/final/{train,dev,test}.tsv` (PAWS-Wiki Labeled Final): TSV with header id,
    sentence1, sentence2, label 0/1.
- Label words and templates are shared with the GLUE task asking the same question, so prompts
  transfer: Yelp-2 uses SST-2's template and "negative"/"positive"; SciTail RTE's template and
  "yes"/"no" (entails / not); PAWS MRPC's template and "no"/"yes". WinoGrande answers "1"/"2"
  like COPA. Every task is scored by accuracy.
- Splits (`tasks/splits.py`, as in ATTEMPT and MPT): WinoGrande and Yelp-2 have no labelled
  official test set and over 10,000 training rows, so dev = 1,000 held out of train and test =
  the official dev set (WinoGrande) or the labelled official test set (Yelp-2). SciTail and PAWS
  ship labelled train/dev/test files, used as they are.
- The TSV/CSV tasks reuse the GLUE reader (`GlueSpec`, `read_tsv`, `example_from_values`); TSVs
  are read without quote handling like GLUE's, the Yelp CSV with standard CSV quoting. Yelp's
  escapes (backslash-n, and backslash-quote as other Yelp readers also undo) are undone before
  whitespace normalisation.
- Without any local file of a task its hub copy is read (`tasks/hub.py`) and each hub row goes
  through the same parser. The Yelp hub text is the raw CSV field (doubled quotes kept), so
  doubled quotes are undone first; both routes give the same example.
- Prediction (`Task.read_row`) reads one row by field name, label not read: WinoGrande's JSONL
  fields (sentence, option1, option2; through `winogrande_row`), Yelp's `text` (its CSV has no
  header: the hub copy's name; escapes undone as in the file), SciTail's and PAWS's as the GLUE
  tasks (`glue.row_reader`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from mptune.tasks import hub
from mptune.tasks.base import Example, Task, files_doc
from mptune.tasks.glue import (
    BINARY,
    ENTAIL,
    NO_YES,
    PARAPHRASE,
    SENTIMENT,
    YES_NO,
    GlueSpec,
    example_from_values,
    hub_reader,
    hub_values,
    normalize,
    read_examples,
    read_tsv,
    row_reader,
)
from mptune.tasks.splits import describe, select, select_given
from mptune.tasks.superglue import Row, get, label_of, no_label, read_jsonl

FAMILY = "others"
WINOGRANDE = "sentence: {0}\n1: {1}\n2: {2}\nWhich option fills the blank (_)?\nAnswer:"
WINOGRANDE_CHOICES = ("1", "2")
WINOGRANDE_SOURCE = "official WinoGrande"
WINOGRANDE_FIELDS = ("sentence", "option1", "option2")

YELP = GlueSpec("yelp_polarity", "yelp_review_polarity_csv", (1, 0), SENTIMENT, ("negative", "positive"),
                {"1": 0, "2": 1}, "accuracy", 560_000, width=2, hub_columns=("text", "label"),
                source="official Yelp polarity")
SCITAIL = GlueSpec("scitail", "SciTailV1.1/tsv_format", (0, 1, 2), ENTAIL, YES_NO, {"entails": 0, "neutral": 1},
                   "accuracy", 23_596, width=3, hub_columns=("premise", "hypothesis", "label"),
                   source="official SciTail")
PAWS = GlueSpec("paws", "paws/final", ("sentence1", "sentence2", "label"), PARAPHRASE, NO_YES, BINARY,
                "accuracy", 49_401, hub_columns=("sentence1", "sentence2", "label"), source="official PAWS")


def winogrande_row(row: Row, where: Path | str, line: int, labels: Callable = label_of) -> list[Example]:
    """One WinoGrande row (official JSONL or hub: same fields) as an example; `labels` reads its answer
    (`no_label`: a test row, for prediction)."""
    sentence, option1, option2 = (normalize(str(get(row, k, where, line, WINOGRANDE_SOURCE)))
                                  for k in WINOGRANDE_FIELDS)
    label = labels(row, {"1": 0, "2": 1}, where, line, key="answer", what=WINOGRANDE_SOURCE)
    target = "" if label is None else WINOGRANDE_CHOICES[label]
    return [Example(WINOGRANDE.format(sentence, option1, option2), target, label, "winogrande")]


def winogrande_read_row(row: Mapping[str, Any], where: str, line: int) -> list[Example]:
    """`Task.read_row` of WinoGrande: a row of the JSONL files (sentence, option1, option2), answer not read."""
    return winogrande_row(row, where, line, no_label)


def read_winogrande(path: Path) -> list[Example]:
    """All examples of an official WinoGrande JSONL file."""
    return [ex for line, row in read_jsonl(path, WINOGRANDE_SOURCE) for ex in winogrande_row(row, path, line)]


def unescape_yelp(text: str) -> str:
    """Undo the Yelp CSV escapes inside a field: backslash-n is a newline, backslash-quote a quote."""
    return text.replace('\\"', '"').replace("\\n", "\n")


def read_yelp(path: Path) -> list[Example]:
    """All examples of an official Yelp polarity CSV file."""
    rows = read_tsv(path, YELP.columns, YELP.width, delimiter=",", what=YELP.source)
    return [example_from_values(YELP, [unescape_yelp(text), label], path, line) for line, (text, label) in rows]


def yelp_row(row: Row, where: str, line: int) -> list[Example]:
    """One hub Yelp row (the raw CSV field as text, label 0/1) as an example."""
    text, label = hub_values(YELP, row, where, line)
    return [example_from_values(YELP, [unescape_yelp(text.replace('""', '"')), label], where, line)]


def make_task(name: str, folder: str, files: dict[str, tuple[str, str]], read_file: Callable[[Path], list[Example]],
              hub_row: hub.RowReader, choices: tuple[str, ...], official_train: int, doc: str,
              read_row: hub.RowReader, fields: tuple[str, ...]) -> Task:
    """A `Task` over `<data_dir>/<folder>/`: roles train+validation use `select`, train+dev+test `select_given`.

    `files` maps each role to (official file name, hub split name); `hub_row` reads a row of the hub copy,
    `read_row` a row by the field names `fields`, label not read (`Task.read_row`: prediction).
    """

    def load_split(data_dir: Path, split: str, seed: int) -> list[Example]:
        found = hub.loaders(name, Path(data_dir) / folder, files, read_file, hub_row)
        if "dev" in found:
            return select_given(split, seed, found["train"], found["dev"], found["test"])
        return select(split, seed, official_train, found["train"], found["validation"])

    source = files_doc([f"{folder}/{file}" for file, _ in files.values()])
    return Task(name=name, family=FAMILY, choices=choices, metric="accuracy", load_split=load_split, splits_doc=doc,
                source=source, read_row=read_row, input_fields=fields)


def official_three(spec: GlueSpec, prefix: str, sizes: tuple[int, int, int]) -> Task:
    """A TSV task shipping labelled train/dev/test files `<prefix>{train,dev,test}.tsv`, used as they are."""
    files = {role: (f"{prefix}{role}.tsv", hub_split)
             for role, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test"))}
    doc = "train/dev/test: official train ({:,}), dev ({:,}) and test ({:,})".format(*sizes)
    return make_task(spec.name, spec.dir, files, lambda path: read_examples(path, spec), hub_reader(spec),
                     spec.choices, spec.official_train, doc, row_reader(spec), spec.input_fields)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        make_task("winogrande", "winogrande_1.1",
                  {"train": ("train_xl.jsonl", "train"), "validation": ("dev.jsonl", "validation")},
                  read_winogrande, winogrande_row, WINOGRANDE_CHOICES, 40_398,
                  describe(40_398, validation="official dev (1,267)", train="official train_xl"),
                  winogrande_read_row, WINOGRANDE_FIELDS),
        make_task(YELP.name, YELP.dir, {"train": ("train.csv", "train"), "validation": ("test.csv", "test")},
                  read_yelp, yelp_row, YELP.choices, YELP.official_train,
                  describe(YELP.official_train, validation="official test (38,000)"),
                  row_reader(YELP, unescape_yelp), YELP.input_fields),
        official_three(SCITAIL, "scitail_1.0_", (23_596, 1_304, 2_126)),
        official_three(PAWS, "", (49_401, 8_000, 8_000)),
    )
}
