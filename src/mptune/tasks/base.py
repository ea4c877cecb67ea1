"""What a task is: examples in text-to-text form, their label words, splits and a metric.

Design decisions
- A task turns raw rows into `Example`s: one `input_text` for the model and one `target_text`
  (the verbalized label). The same text serves encoder-decoder models (input to the encoder,
  target to the decoder) and decoder-only models (target appended after the input).
- Classification tasks list their label words in `choices`; evaluation scores every choice
  (rank classification) instead of generating. Generation tasks (`choices` empty: QA, NLG) are
  scored on greedy generations (`mptune.generate`), against a label that is the tuple of every
  acceptable gold string (answers, references). Label words are short, mostly single tokens,
  and shared across related tasks ("yes"/"no"/"maybe" for every entailment-style task) so a
  prompt learned on one source task can transfer to a target that asks a similar question.
- The input ends with a cue ("Answer:") so a decoder-only model reads the label word next.
- Splits follow the prompt-transfer literature (ATTEMPT, MPT): see `tasks/splits.py`.
- Prediction reads one row at a time (`Task.read_row`), by the official field names of the task's
  files, through the same reader as its splits; the label fields may be absent (official test files
  are unlabelled), and the examples then have label None and an empty target.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mptune.errors import MptuneError
from mptune.tasks.fewshot import kshot


class GroupedLabel(int):
    """A class index that also names the group its example belongs to (MultiRC: the question).

    It is the int everywhere (metrics, label words, k-shot classes); group metrics such as
    MultiRC's exact match (`metrics.question_em`) read `group`.
    """

    group: str

    def __new__(cls, value: int, group: str) -> "GroupedLabel":
        label = super().__new__(cls, value)
        label.group = group
        return label

    def __getnewargs__(self) -> tuple[int, str]:
        return int(self), self.group


@dataclass(frozen=True)
class Example:
    """One example in text-to-text form."""

    input_text: str
    """The model input, ending with the answer cue, e.g. 'premise: ...\\nhypothesis: ...\\nAnswer:'."""
    target_text: str
    """The gold output text (the label word for classification, the answer for QA)."""
    label: int | float | str | tuple[str, ...]
    """The gold label the metric compares against: class index, score, or tuple of gold strings."""
    task: str = ""
    """Name of the task this example belongs to."""


@dataclass(frozen=True)
class Task:
    """A named task: how to read its rows, its label words and its metric."""

    name: str
    """Registry name, lower case (e.g. 'sst2', 'rte', 'cb')."""
    family: str
    """Benchmark family: 'glue', 'superglue', 'others' (`tasks/others.py`), 'qa', 'nlg', 'custom', ..."""
    choices: tuple[str, ...]
    """Label words by class index for classification; empty for generation tasks."""
    metric: str
    """Name of the headline metric in `mptune.metrics.METRICS` (e.g. 'accuracy', 'f1')."""
    load_split: Callable[[Path, str, int], list[Example]]
    """(data_dir, split, seed) -> examples of split 'train', 'dev' or 'test' (labelled)."""
    splits_doc: str = ""
    """One line on where each split comes from (shown by `mptune tasks`)."""
    source: str = ""
    """The files read under the data directory, e.g. 'glue/RTE/{train.tsv,dev.tsv}' (see `files_doc`)."""
    extra_metrics: tuple[str, ...] = field(default_factory=tuple)
    """Further metrics reported next to the headline metric."""
    regression: bool = False
    """True when `choices` are numeric bins of a real-valued label (STS-B); see `decode`."""
    max_new_tokens: int = 64
    """Generation tasks: most tokens generated per example at evaluation."""
    shots: int = 0
    """Few-shot variant ('name@k'): train on k examples per class (2k for regression/generation); 0 = full train."""
    read_row: Callable[[Mapping[str, Any], str, int], list[Example]] | None = None
    """(row, where, line) -> the examples of one row given by the official field names of the task's files (a
    JSONL object, a TSV/CSV row by its header), label fields optional: what `mptune predict` and `mptune serve`
    read. None: the task cannot read single rows."""
    input_fields: tuple[str, ...] = ()
    """The fields `read_row` reads (besides the label)."""

    @property
    def is_classification(self) -> bool:
        return bool(self.choices)

    def decode(self, index: int) -> int | float:
        """The prediction for choice `index`: the class index, or the choice's number for regression."""
        return float(self.choices[index]) if self.regression else index

    def load(self, data_dir: Path | str, split: str, seed: int = 0, sample_seed: int | None = None) -> list[Example]:
        """Examples of one split ('train', 'dev' or 'test'), each tagged with this task's name.

        `seed` fixes the splits; `sample_seed` (default: `seed`) draws a few-shot task's k-shot
        train sample, so repeated runs can draw new samples while dev and test stay fixed.
        """
        rows = self.load_split(Path(data_dir), split, seed)
        if self.shots and split == "train":
            choices = () if self.regression else self.choices
            rows = kshot(rows, self.shots, seed if sample_seed is None else sample_seed, choices)
        return [Example(e.input_text, e.target_text, e.label, self.name) for e in rows]


def files_doc(paths: Sequence[str]) -> str:
    """Relative file paths in one line: 'glue/RTE/{train.tsv,dev.tsv}' for files sharing a folder."""
    if len(paths) == 1:
        return paths[0]
    folder = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    names = ",".join(posixpath.relpath(p, folder) for p in paths)
    return f"{folder}/{{{names}}}" if folder else f"{{{names}}}"


def row_texts(row: Mapping[str, Any], fields: Sequence[str], where: str, line: int, task: str) -> list[str]:
    """The text of each of `fields` in one row; MptuneError naming the row and the field if one is missing
    or is not text (a number is taken as its text)."""
    out = []
    for name in fields:
        if name not in row:
            raise MptuneError(f"{where} line {line} has no field {name!r}; task {task} reads {', '.join(fields)}.")
        value = row[name]
        if value is None or isinstance(value, (dict, list, bool)):
            raise MptuneError(f"{where} line {line} field {name!r} holds {value!r}; expected text.")
        out.append(str(value))
    return out
