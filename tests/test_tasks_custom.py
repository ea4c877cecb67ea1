"""A user's own task from CSV/JSONL files: spec validation, YAML, rows, labels, splits, bad input."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from mptune.errors import MptuneError
from mptune.tasks import get_task, registry, task_names
from mptune.tasks.custom import CustomTaskSpec, load_custom_yaml, register_custom
from mptune.tasks.splits import HELD_OUT


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Each test registers into a copy of the registry, so custom tasks never leak into other tests."""
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _csv(n: int, start: int = 0) -> str:
    rows = [f'{i},"Is {i}, really,\n  ""odd""?",{("neg", "pos", "mixed")[i % 3]},extra{i}\n'
            for i in range(start, start + n)]
    return "id,question,label,note\n" + "".join(rows)


def _spec(tmp_path: Path, **changes) -> CustomTaskSpec:
    fields = dict(name="mood", train=tmp_path / "train.csv", text_columns=["question"], label_column="label",
                  label_words={"neg": "negative", "pos": "positive", "mixed": "mixed"})
    return CustomTaskSpec(**{**fields, **changes})


# ---------------------------------------------------------------- spec


def test_spec_defaults_and_normalisation(tmp_path):
    spec = _spec(tmp_path, text_columns="question", label_words={0: "no", True: "yes"})
    assert spec.text_columns == ("question",) and spec.label_words == {"0": "no", "true": "yes"}
    assert spec.template == "question: {question}\nAnswer:" and spec.metric == "accuracy"
    two = _spec(tmp_path, text_columns=["a", "b"], label_column="l")
    assert two.template == "a: {a}\nb: {b}\nAnswer:"
    assert isinstance(spec.train, Path) and spec.dev is None and spec.test is None


@pytest.mark.parametrize("changes,problem", [
    (dict(metric="bleu"), "metric 'bleu' is not one of accuracy"),
    (dict(metric="f1"), "'f1' needs exactly two labels"),
    (dict(label_words={}), "at least two label values"),
    (dict(label_words={"a": "x"}), "at least two label values"),
    (dict(label_words={"a": "x", "b": "x"}), "must differ"),
    (dict(label_words={"a": "x", "b": " "}), "must be text, got ''"),
    (dict(label_words={1: "x", "1": "y"}), "repeat a label value"),
    (dict(text_columns=[]), "text_columns must list"),
    (dict(text_columns=["q", "q"]), "repeat a column"),
    (dict(label_column="question"), "label_column must name"),
    (dict(template="{question} {answer}\nAnswer:"), r"template field \{answer\} is not a text column"),
    (dict(template="{}\nAnswer:"), r"template field \{\} is not a text column"),
    (dict(template="{question\nAnswer:"), "not a valid format string"),
    (dict(train="data.txt"), r"train file data\.txt must end in \.csv or \.jsonl"),
    (dict(dev=""), "dev must be a file path"),
    (dict(name="Mood"), "name must be lower case"),
    (dict(name="mood@4"), "without '@'"),
])
def test_bad_spec_is_an_error(tmp_path, changes, problem):
    with pytest.raises(MptuneError, match=rf"Custom task .*: .*{problem}"):
        _spec(tmp_path, **changes)


# ---------------------------------------------------------------- registry and rows


def test_register_and_read_csv(tmp_path):
    _write(tmp_path / "train.csv", _csv(6))
    task = register_custom(_spec(tmp_path, dev=tmp_path / "train.csv", test=tmp_path / "train.csv"))
    assert "mood" in task_names() and get_task("mood") is task
    assert (task.family, task.choices, task.metric) == ("custom", ("negative", "positive", "mixed"), "accuracy")
    examples = task.load(tmp_path, "train")
    assert len(examples) == 6
    first = examples[0]
    assert first.input_text == 'question: Is 0, really, "odd"?\nAnswer:'
    assert (first.target_text, first.label, first.task) == ("negative", 0, "mood")
    assert [e.label for e in examples] == [0, 1, 2, 0, 1, 2]
    assert task.splits_doc == "train: train.csv; dev: train.csv; test: train.csv"
    assert task.source == ", ".join([str(tmp_path / "train.csv")] * 3)


def test_jsonl_with_template_and_json_labels(tmp_path):
    rows = [{"q": "Sky  blue?", "ctx": "Noon.", "gold": True}, {"q": "Grass red?", "ctx": 3, "gold": False}]
    _write(tmp_path / "qa.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = register_custom(CustomTaskSpec(
        name="facts", train="qa.jsonl", dev="qa.jsonl", test="qa.jsonl", text_columns=["ctx", "q"],
        label_column="gold", label_words={"false": "no", "true": "yes"}, metric="f1",
        template="context: {ctx}\nquestion: {q}\nIs it true?\nAnswer:"))
    examples = task.load(tmp_path, "test")  # relative paths resolve against the data directory
    assert [(e.input_text, e.target_text, e.label) for e in examples] == [
        ("context: Noon.\nquestion: Sky blue?\nIs it true?\nAnswer:", "yes", 1),
        ("context: 3\nquestion: Grass red?\nIs it true?\nAnswer:", "no", 0)]


def test_builtin_names_are_refused_and_custom_names_replaced(tmp_path):
    with pytest.raises(MptuneError, match="'rte' is a built-in task"):
        register_custom(_spec(tmp_path, name="rte"))
    register_custom(_spec(tmp_path))
    again = register_custom(_spec(tmp_path, metric="macro_f1"))
    assert get_task("mood") is again and again.metric == "macro_f1"


def test_kshot_variant(tmp_path):
    _write(tmp_path / "train.csv", _csv(60))
    register_custom(_spec(tmp_path))
    few = get_task("mood@3")
    train = few.load(tmp_path, "train", 1)
    assert collections.Counter(e.label for e in train) == {0: 3, 1: 3, 2: 3}
    assert train == few.load(tmp_path, "train", 1) and all(e.task == "mood@3" for e in train)


# ---------------------------------------------------------------- splits


def _texts(examples):
    return {e.input_text for e in examples}


def test_train_only_holds_out_ten_percent(tmp_path):
    _write(tmp_path / "train.csv", _csv(95))
    task = register_custom(_spec(tmp_path))
    train, dev, test = (task.load(tmp_path, s, 0) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (77, 9, 9)
    assert not (_texts(train) & _texts(dev)) and not (_texts(train) & _texts(test)) and not (_texts(dev) & _texts(test))
    assert dev == task.load(tmp_path, "dev", 0) and _texts(dev) != _texts(task.load(tmp_path, "dev", 1))


def test_large_train_holds_out_1000_and_given_files_keep_their_role(tmp_path):
    _write(tmp_path / "train.csv", _csv(12_000))
    _write(tmp_path / "dev.csv", _csv(5, start=50_000))
    task = register_custom(_spec(tmp_path, dev=tmp_path / "dev.csv"))
    train, dev, test = (task.load(tmp_path, s, 0) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (12_000 - HELD_OUT, 5, HELD_OUT)
    assert "Is 50000" in dev[0].input_text and not (_texts(train) & _texts(test))
    assert task.splits_doc.startswith("train: train.csv; dev: dev.csv; test: held out of train")


def test_too_small_train_is_an_error(tmp_path):
    train = _write(tmp_path / "train.csv", _csv(9))
    task = register_custom(_spec(tmp_path))
    for split in ("train", "dev", "test"):
        with pytest.raises(MptuneError, match=rf"{train} has only 9 examples, too few to hold out dev and test "
                                              r"\(10% each\); give at least 10 examples, or dev and test files"):
            task.load(tmp_path, split)


# ---------------------------------------------------------------- bad files


def test_bad_files_name_file_line_and_value(tmp_path):
    task = register_custom(_spec(tmp_path, dev=tmp_path / "dev.csv", test=tmp_path / "test.jsonl"))
    missing = tmp_path / "train.csv"
    with pytest.raises(MptuneError, match=rf"{missing} does not exist; expected the custom task 'mood' CSV"):
        task.load(tmp_path, "train")
    dev = _write(tmp_path / "dev.csv", "id,text,label\n1,hi,neg\n")
    with pytest.raises(MptuneError, match=rf"{dev} has no column\(s\) question in its header"):
        task.load(tmp_path, "dev")
    _write(dev, _csv(2) + '9,"Fine?",neutral,x\n')  # rows of _csv span two physical lines each
    with pytest.raises(MptuneError, match=rf"{dev} line 6 has unknown label 'neutral' in column 'label'; "
                                          "expected one of neg, pos, mixed"):
        task.load(tmp_path, "dev")
    _write(dev, "")
    with pytest.raises(MptuneError, match=rf"{dev} is empty"):
        task.load(tmp_path, "dev")
    _write(dev, "id,question,label\n")
    with pytest.raises(MptuneError, match=rf"{dev} has no examples"):
        task.load(tmp_path, "dev")
    test = _write(tmp_path / "test.jsonl",
                  json.dumps({"question": "q", "label": "neg"}) + "\n" + json.dumps({"label": "pos"}) + "\n")
    with pytest.raises(MptuneError, match=rf"{test} line 2 has no field 'question'; expected the custom task 'mood'"):
        task.load(tmp_path, "test")
    _write(test, json.dumps({"question": None, "label": "neg"}) + "\n")
    with pytest.raises(MptuneError, match=rf"{test} line 1 column 'question' holds None; expected text"):
        task.load(tmp_path, "test")
    _write(test, json.dumps({"question": "q", "label": 2}) + "\n")
    with pytest.raises(MptuneError, match=rf"{test} line 1 has unknown label 2 in column 'label'"):
        task.load(tmp_path, "test")


# ---------------------------------------------------------------- YAML


YAML = """\
name: polar
train: data/train.csv
test: {test}
text_columns: [question]
label_column: label
label_words:
  neg: no
  pos: yes
  mixed: off
metric: macro_f1
"""


def test_yaml_spec(tmp_path):
    _write(tmp_path / "cfg/data/train.csv", _csv(30))
    _write(tmp_path / "elsewhere/test.csv", _csv(3, start=100))
    path = _write(tmp_path / "cfg/task.yaml", YAML.format(test=tmp_path / "elsewhere/test.csv"))
    spec = load_custom_yaml(path)
    assert spec.label_words == {"neg": "no", "pos": "yes", "mixed": "off"}  # YAML 1.1 would make these booleans
    assert spec.train == tmp_path / "cfg/data/train.csv" and spec.metric == "macro_f1"
    task = register_custom(spec)
    assert len(task.load(tmp_path / "unrelated", "test")) == 3 and task.choices == ("no", "yes", "off")


def test_yaml_keeps_true_false_labels_and_resolves_relative_yaml_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "t/train.jsonl", json.dumps({"s": "ok", "y": True}) + "\n")
    _write(tmp_path / "t/task.yaml", "name: tf\ntrain: train.jsonl\ntext_columns: s\nlabel_column: y\n"
                                     "label_words: {false: no, true: yes}\n")
    spec = load_custom_yaml("t/task.yaml")
    assert spec.label_words == {"false": "no", "true": "yes"} and spec.train == tmp_path / "t/train.jsonl"


@pytest.mark.parametrize("text,problem", [
    ("name: x\ntrain: a.csv\ntext_columns: [q]\nlabel_column: l\nlabel_words: {a: x, b: y}\nmetrics: f1\n",
     "unknown field 'metrics'"),
    ("name: x\ntrain: a.csv\ntext_columns: [q]\nlabel_column: l\n", "no field 'label_words'"),
    ("- just a list\n", "holds a list; expected a custom task: a mapping"),
    ("name: [unclosed\n", "is not valid YAML"),
    ("name: x\ntrain: a.csv\ntext_columns: [q]\nlabel_column: l\nlabel_words: {a: x, b: y}\nmetric: bleu\n",
     "Custom task 'x': metric 'bleu'"),
])
def test_bad_yaml_names_the_file(tmp_path, text, problem):
    path = _write(tmp_path / "task.yaml", text)
    with pytest.raises(MptuneError, match=rf"{path}.*{problem}"):
        load_custom_yaml(path)
    with pytest.raises(MptuneError, match="does not exist"):
        load_custom_yaml(tmp_path / "missing.yaml")
