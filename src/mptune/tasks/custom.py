"""A user's own classification task, declared by a spec or a small YAML file instead of code.

Design decisions
- `CustomTaskSpec` names the files (CSV with a header row, or JSONL; chosen by extension), the
  text columns, the label column and the label words. `label_words` maps each label VALUE to its
  word; its order is the class order (class index 0 is the first entry). Label values are
  compared as text: JSON true/false become "true"/"false", numbers their decimal text.
- Validation happens in `__post_init__`, so a bad spec fails the same way from Python or YAML:
  unknown metric, fewer than two labels, empty or repeated label words, a template naming a
  column that is not a text column, a file that is neither .csv nor .jsonl.
- The template fills `{column}` fields with whitespace-normalised cell text. The default lists
  the columns ("col1: {col1}\\ncol2: {col2}\\nAnswer:"), ending with the answer cue like every
  built-in task (see `tasks/base.py`).
- Files are read lazily, when a split is loaded: a missing file, an empty file, a missing
  column or an unknown label raises `MptuneError` naming the file, the line and the value.
- Splits (`tasks/splits.select_given`): given dev/test files are used as they are; a missing one
  is held out of train (min(1,000, 10% of train), seeded).
- Relative paths in a spec are resolved against the data directory when a split is loaded (like
  the built-in tasks' files); `load_custom_yaml` resolves them against the YAML file's folder.
- The YAML reader treats only true/false as booleans (YAML 1.2), so label words such as yes, no,
  on and off stay words instead of turning into booleans.
- `register_custom` adds the task to the registry (family 'custom'), so NAME@K works for it; it
  may replace an earlier custom task of the same name, never a built-in task.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Sequence

import yaml

from mptune.errors import MptuneError
from mptune.files import read_yaml
from mptune.tasks import registry
from mptune.tasks.base import Example, Task, row_texts
from mptune.tasks.glue import normalize, read_tsv
from mptune.tasks.splits import select_given
from mptune.tasks.superglue import get, read_jsonl

METRICS = ("accuracy", "f1", "macro_f1", "matthews")
"""Metrics a custom classification task may use (f1 scores class 1 of a two-class task)."""
FORMATS = (".csv", ".jsonl")
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def label_key(value: Any) -> str:
    """A label value as the text it is compared by (JSON true -> 'true', 1 -> '1', ' a ' -> 'a')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def default_template(columns: Sequence[str]) -> str:
    """'col1: {col1}\\ncol2: {col2}\\nAnswer:' for the given text columns."""
    return "\n".join(f"{c}: {{{c}}}" for c in columns) + "\nAnswer:"


@dataclass(frozen=True, kw_only=True)
class CustomTaskSpec:
    """A classification task read from the user's own CSV or JSONL files."""

    name: str
    """Registry name: lower case letters, digits, '_', '-' or '.' (no '@', which marks NAME@K)."""
    train: Path
    """Training file (.csv with a header row, or .jsonl)."""
    dev: Path | None = None
    """Dev file; None holds dev out of train."""
    test: Path | None = None
    """Test file; None holds test out of train."""
    text_columns: tuple[str, ...]
    """Columns (CSV header names or JSON fields) filled into the template."""
    label_column: str
    """Column holding the label value."""
    label_words: Mapping[str, str]
    """Label value -> label word, in class order."""
    metric: str = "accuracy"
    """Headline metric: one of `METRICS`."""
    template: str | None = None
    """Input text with {column} fields; None uses `default_template(text_columns)`."""

    def __post_init__(self):
        self._fail_unless(isinstance(self.name, str) and NAME.fullmatch(self.name) is not None,
                          "name must be lower case letters, digits, '_', '-' or '.', without '@'")
        for attr in ("train", "dev", "test"):
            self._set(attr, self._path(attr))
        columns = [self.text_columns] if isinstance(self.text_columns, str) else list(self.text_columns or [])
        self._fail_unless(bool(columns) and all(isinstance(c, str) and c for c in columns),
                          "text_columns must list at least one column name")
        self._fail_unless(len(set(columns)) == len(columns), f"text_columns {columns} repeat a column")
        self._set("text_columns", tuple(columns))
        self._fail_unless(isinstance(self.label_column, str) and self.label_column not in ("", *columns),
                          "label_column must name one column that is not a text column")
        self._set("label_words", self._words())
        self._fail_unless(self.metric in METRICS, f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        self._fail_unless(self.metric != "f1" or len(self.label_words) == 2,
                          "metric 'f1' needs exactly two labels (the second is the positive class)")
        self._set("template", self._template())

    def _fail(self, problem: str) -> NoReturn:
        raise MptuneError(f"Custom task {self.name!r}: {problem}.")

    def _fail_unless(self, ok: bool, problem: str) -> None:
        if not ok:
            self._fail(problem)

    def _set(self, attr: str, value: Any) -> None:
        object.__setattr__(self, attr, value)

    def _path(self, attr: str) -> Path | None:
        value = getattr(self, attr)
        if value is None and attr != "train":
            return None
        self._fail_unless(isinstance(value, (str, Path)) and str(value) != "", f"{attr} must be a file path")
        path = Path(value).expanduser()
        self._fail_unless(path.suffix.lower() in FORMATS, f"{attr} file {path} must end in .csv or .jsonl")
        return path

    def _words(self) -> dict[str, str]:
        self._fail_unless(isinstance(self.label_words, Mapping) and len(self.label_words) >= 2,
                          "label_words must map at least two label values to words")
        words = {label_key(k): w.strip() if isinstance(w, str) else w for k, w in self.label_words.items()}
        self._fail_unless(len(words) == len(self.label_words), "label_words repeat a label value")
        for word in words.values():
            self._fail_unless(isinstance(word, str) and word != "", f"label words must be text, got {word!r}")
        self._fail_unless(len(set(words.values())) == len(words), "label words must differ from each other")
        return words

    def _template(self) -> str:
        template = self.template if self.template is not None else default_template(self.text_columns)
        self._fail_unless(isinstance(template, str) and template.strip() != "", "template must be text")
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            self._fail(f"template is not a valid format string ({exc})")
        for name in names:
            self._fail_unless(name in self.text_columns,
                              f"template field {{{name}}} is not a text column ({', '.join(self.text_columns)})")
        try:
            template.format_map({c: "" for c in self.text_columns})
        except (ValueError, KeyError, IndexError) as exc:
            self._fail(f"template cannot be filled ({exc})")
        return template

    def splits_doc(self) -> str:
        """Where each split comes from (shown by `mptune tasks`)."""
        held = "held out of train (min(1,000, 10%), seeded)"
        return (f"train: {self.train.name}; dev: {self.dev.name if self.dev else held}; "
                f"test: {self.test.name if self.test else held}")

    def read(self, path: Path) -> list[Example]:
        """All examples of one of this task's files."""
        columns = [*self.text_columns, self.label_column]
        what = f"custom task {self.name!r}"
        if path.suffix.lower() == ".csv":
            rows = read_tsv(path, columns, delimiter=",", what=what)
        else:
            rows = [(line, [get(row, c, path, line, what) for c in columns]) for line, row in read_jsonl(path, what)]
        if not rows:
            raise MptuneError(f"{path} has no examples; expected at least one row for {what}.")
        return [self.example(values, path, line) for line, values in rows]

    def example(self, values: Sequence[Any], path: Path, line: int) -> Example:
        """The example of one row given as the values of text_columns then label_column."""
        *texts, raw = values
        key = label_key(raw)
        if raw is None or key not in self.label_words:
            raise MptuneError(f"{path} line {line} has unknown label {raw!r} in column {self.label_column!r}; "
                              f"expected one of {', '.join(self.label_words)}.")
        for column, text in zip(self.text_columns, texts):
            if text is None or isinstance(text, (dict, list)):
                raise MptuneError(f"{path} line {line} column {column!r} holds {text!r}; expected text.")
        label = list(self.label_words).index(key)
        return Example(self.input_text(texts), self.label_words[key], label, self.name)

    def input_text(self, texts: Sequence[Any]) -> str:
        """The model input of one row's text_columns values."""
        return self.template.format_map({c: normalize(str(t)) for c, t in zip(self.text_columns, texts)})

    def read_row(self, row: Mapping[str, Any], where: str, line: int) -> list[Example]:
        """`Task.read_row`: one row by column name, unlabelled (label_column is not read)."""
        texts = row_texts(row, self.text_columns, where, line, self.name)
        return [Example(self.input_text(texts), "", None, self.name)]


def register_custom(spec: CustomTaskSpec) -> Task:
    """Add `spec` to the task registry (replacing an earlier custom task of that name) and return its Task."""
    existing = registry.TASKS.get(spec.name)
    if existing is not None and existing.family != "custom":
        raise MptuneError(f"Custom task name {spec.name!r} is a built-in task; choose another name.")

    def resolve(data_dir: Path, path: Path | None) -> Path | None:
        return None if path is None else path if path.is_absolute() else Path(data_dir) / path

    def loader(path: Path | None) -> Callable[[], list[Example]] | None:
        return None if path is None else lambda: spec.read(path)

    def load_split(data_dir: Path, split: str, seed: int) -> list[Example]:
        train, dev, test = (resolve(data_dir, p) for p in (spec.train, spec.dev, spec.test))
        return select_given(split, seed, loader(train), loader(dev), loader(test), train_name=str(train))

    task = Task(name=spec.name, family="custom", choices=tuple(spec.label_words.values()), metric=spec.metric,
                load_split=load_split, splits_doc=spec.splits_doc(),
                source=", ".join(str(p) for p in (spec.train, spec.dev, spec.test) if p is not None),
                read_row=spec.read_row, input_fields=spec.text_columns)
    registry.TASKS[spec.name] = task
    return task


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans (yes/no/on/off stay strings, as in YAML 1.2)."""


_BOOL = "tag:yaml.org,2002:bool"
_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_custom_yaml(path: str | Path) -> CustomTaskSpec:
    """The spec in a YAML file with the fields of `CustomTaskSpec`; relative file paths are taken from its folder."""
    path = Path(path).expanduser()
    known = [f.name for f in fields(CustomTaskSpec) if f.init]
    data = read_yaml(path, f"a custom task: a mapping with the fields {', '.join(known)}", loader=_Yaml12Loader)
    unknown = [k for k in data if k not in known]
    missing = [k for k in ("name", "train", "text_columns", "label_column", "label_words") if k not in data]
    if unknown or missing:
        problem = f"unknown field {unknown[0]!r}" if unknown else f"no field {missing[0]!r}"
        raise MptuneError(f"{path} has {problem}; expected the fields {', '.join(known)}.")
    for key in ("train", "dev", "test"):
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).expanduser().is_absolute():
            data[key] = path.absolute().parent / data[key]
    try:
        return CustomTaskSpec(**data)
    except MptuneError as exc:
        raise MptuneError(f"{path}: {exc}") from None


def register_custom_tasks(paths: Sequence[str]) -> None:
    """Add the tasks of these YAML files (data.custom_tasks) to the task registry; a task name declared
    twice (by two files, or one file listed twice) is an error naming both."""
    specs = [load_custom_yaml(path) for path in paths]
    first: dict[str, str] = {}
    for path, spec in zip(paths, specs):
        if spec.name in first:
            raise MptuneError(f"Custom task {spec.name!r} is defined twice, in {first[spec.name]} and {path}; "
                              f"data.custom_tasks must declare each task once.")
        first[spec.name] = str(path)
    for spec in specs:
        register_custom(spec)
