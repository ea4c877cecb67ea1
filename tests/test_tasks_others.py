"""WiC, WinoGrande, Yelp-2, SciTail and PAWS on fixture files in their official formats, and the hub route.

None of these datasets is in the shared data, so each test writes a few rows in the official
layout to tmp_path. The hub tests never touch the network: they replace `hub.load_from_hub` with
in-memory hub rows (the hub copies' field names and label encodings).
"""

from __future__ import annotations

import collections
import json
import re
import sys
import types
from pathlib import Path

import pytest

from mptune.errors import MptuneError
from mptune.tasks import get_task, hub, task_names
from mptune.tasks.splits import HELD_OUT

NEW = ("paws", "scitail", "wic", "winogrande", "yelp_polarity")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _wic(i: int, label: bool) -> dict:
    return {"word": "place", "sentence1": f"Do you want to come over to my place {i}?",
            "sentence2": "A political system with no  place for the less prominent groups.",
            "idx": i, "label": label, "start1": 31, "start2": 27, "end1": 36, "end2": 32, "version": 1.1}


def _wino(i: int, answer: str | None = None) -> dict:
    row = {"qID": f"3QHITW7OYO7Q6B6ISU2UMJB84ZLAQE-{i}", "option1": "Ian", "option2": "Dennis",
           "sentence": f"Ian volunteered to eat Dennis's menudo {i} because _ despised eating intestine."}
    return row if answer is None else {**row, "answer": answer}


def write_wic(root: Path, n_train: int = 6, n_val: int = 9) -> None:
    _write(root / "superglue/WiC/train.jsonl", _jsonl(_wic(i, i % 2 == 0) for i in range(n_train)))
    _write(root / "superglue/WiC/val.jsonl", _jsonl(_wic(100 + i, i % 2 == 1) for i in range(n_val)))


def write_winogrande(root: Path, n_train: int = HELD_OUT + 40, n_dev: int = 7) -> None:
    folder = root / "winogrande_1.1"
    _write(folder / "train_xl.jsonl", _jsonl(_wino(i, "12"[i % 2]) for i in range(n_train)))
    _write(folder / "dev.jsonl", _jsonl(_wino(10_000 + i, "21"[i % 2]) for i in range(n_dev)))
    _write(folder / "test.jsonl", _jsonl(_wino(20_000 + i) for i in range(3)))  # unlabelled, never read


def _yelp_line(i: int) -> str:
    label = 1 + i % 2
    return f'"{label}","Review {i}: the ""best"" tacos.\\nWould  go again."\n'


def write_yelp(root: Path, n_train: int = HELD_OUT + 30, n_test: int = 8) -> None:
    folder = root / "yelp_review_polarity_csv"
    _write(folder / "train.csv", "".join(_yelp_line(i) for i in range(n_train)))
    _write(folder / "test.csv", "".join(_yelp_line(50_000 + i) for i in range(n_test)))


def write_scitail(root: Path) -> None:
    folder = root / "SciTailV1.1/tsv_format"
    for split, n in (("train", 6), ("dev", 4), ("test", 5)):
        rows = [f'Pluto is a "dwarf" planet {split} {i}.\tPluto  is small.\t{("entails", "neutral")[i % 2]}\n'
                for i in range(n)]
        _write(folder / f"scitail_1.0_{split}.tsv", "".join(rows))


def write_paws(root: Path) -> None:
    for split, n in (("train", 6), ("dev", 4), ("test", 5)):
        rows = [f"{i + 1}\tIn Paris , in October 1560 , he met {split} {i} .\t"
                f"In October 1560 , he met {split} {i} in Paris .\t{i % 2}\n" for i in range(n)]
        _write(root / f"paws/final/{split}.tsv", "id\tsentence1\tsentence2\tlabel\n" + "".join(rows))


WRITERS = {"wic": write_wic, "winogrande": write_winogrande, "yelp_polarity": write_yelp,
           "scitail": write_scitail, "paws": write_paws}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("others")
    for write in WRITERS.values():
        write(root)
    return root


def texts(examples) -> list[tuple[str, str]]:
    return [(e.input_text, e.target_text) for e in examples]


# ---------------------------------------------------------------- registry


def test_registry_and_hub_table_cover_the_new_tasks():
    assert set(NEW) <= set(task_names())
    # every built-in task has a hub copy, except WebNLG (see tasks/generation.py)
    assert set(hub.HUB_IDS) == set(task_names()) - {"webnlg"}
    assert hub.HUB_IDS["winogrande"] == ("allenai/winogrande", "winogrande_xl")
    assert hub.HUB_IDS["wic"] == ("aps/super_glue", "wic") and hub.HUB_IDS["rte"] == ("nyu-mll/glue", "rte")


def test_label_words_metric_family_and_docs():
    expect = {"wic": ("no", "yes"), "winogrande": ("1", "2"), "yelp_polarity": ("negative", "positive"),
              "scitail": ("yes", "no"), "paws": ("no", "yes")}
    for name, words in expect.items():
        task = get_task(name)
        assert task.choices == words and task.metric == "accuracy" and not task.regression, name
        assert task.splits_doc, name
    assert get_task("yelp_polarity").choices == get_task("sst2").choices
    assert get_task("wic").family == "superglue" and get_task("paws").family == "others"
    assert "official dev (1,267)" in get_task("winogrande").splits_doc
    assert "official test (38,000)" in get_task("yelp_polarity").splits_doc


# ---------------------------------------------------------------- rows


def test_row_texts(data):
    (wic,) = [e for e in get_task("wic").load(data, "train") if "place 1?" in e.input_text]
    assert wic.input_text == ("sentence1: Do you want to come over to my place 1?\n"
                              "sentence2: A political system with no place for the less prominent groups.\n"
                              "Does 'place' mean the same thing in both sentences?\nAnswer:")
    assert (wic.target_text, wic.label, wic.task) == ("no", 0, "wic")
    wino = get_task("winogrande").load(data, "test")[0]
    assert wino.input_text == ("sentence: Ian volunteered to eat Dennis's menudo 10000 because _ despised "
                               "eating intestine.\n1: Ian\n2: Dennis\nWhich option fills the blank (_)?\nAnswer:")
    assert (wino.target_text, wino.label) == ("2", 1)
    yelp = get_task("yelp_polarity").load(data, "test")[0]
    assert yelp.input_text == ('sentence: Review 50000: the "best" tacos. Would go again.\n'
                               "Is the sentiment positive or negative?\nAnswer:")
    assert (yelp.target_text, yelp.label) == ("negative", 0)
    sci = get_task("scitail").load(data, "test")[1]
    assert sci.input_text == ('premise: Pluto is a "dwarf" planet test 1.\nhypothesis: Pluto is small.\n'
                              "Does the premise entail the hypothesis?\nAnswer:")
    assert (sci.target_text, sci.label) == ("no", 1)
    paws = get_task("paws").load(data, "dev")[1]
    assert paws.input_text == ("sentence1: In Paris , in October 1560 , he met dev 1 .\n"
                               "sentence2: In October 1560 , he met dev 1 in Paris .\n"
                               "Do they mean the same thing?\nAnswer:")
    assert (paws.target_text, paws.label) == ("yes", 1)


def test_winogrande_and_yelp_read_single_rows_as_their_files(data):
    """`read_row` (prediction) of a test row gives the input of the same row read from the file, label or not."""
    wino, yelp = get_task("winogrande"), get_task("yelp_polarity")
    expected = get_task("winogrande").load(data, "test")[0].input_text
    for row in (_wino(10_000), _wino(10_000, "2")):
        (ex,) = wino.read_row(row, "test.jsonl", 1)
        assert (ex.input_text, ex.target_text, ex.label, ex.task) == (expected, "", None, "winogrande")
    assert wino.input_fields == ("sentence", "option1", "option2")
    field = _yelp_line(50_000)[5:-2].replace('""', '"')  # the CSV's text field, its backslash-n escape kept
    (ex,) = yelp.read_row({"text": field}, "in.csv", 2)
    assert ex.input_text == yelp.load(data, "test")[0].input_text and ex.label is None
    assert yelp.input_fields == ("text",)
    with pytest.raises(MptuneError, match="in.jsonl line 4 has no field 'option2'"):
        wino.read_row({"sentence": "a _", "option1": "x"}, "in.jsonl", 4)
    with pytest.raises(MptuneError, match="in.csv line 2 has no field 'text'; task yelp_polarity reads text"):
        yelp.read_row({"review": "good"}, "in.csv", 2)


@pytest.mark.parametrize("name", NEW)
def test_every_example_is_well_formed(data, name):
    task = get_task(name)
    for split in ("train", "dev", "test"):
        examples = task.load(data, split)
        assert examples and all(e.input_text.endswith("\nAnswer:") and "  " not in e.input_text for e in examples)
        assert all(e.target_text == task.choices[e.label] and e.task == name for e in examples)
    assert {e.label for e in task.load(data, "train")} == {0, 1}


# ---------------------------------------------------------------- splits


def test_small_task_wic_halves_validation(data):
    wic = get_task("wic")
    dev, test = wic.load(data, "dev"), wic.load(data, "test")
    assert (len(wic.load(data, "train")), len(dev), len(test)) == (6, 4, 5)
    assert not set(texts(dev)) & set(texts(test))
    assert texts(dev) + texts(test) != texts(wic.load(data, "dev", 1)) + texts(wic.load(data, "test", 1))


@pytest.mark.parametrize("name,n_train,n_test", [("winogrande", HELD_OUT + 40, 7), ("yelp_polarity", HELD_OUT + 30, 8)])
def test_large_tasks_hold_dev_out_of_train(data, name, n_train, n_test):
    task = get_task(name)
    train, dev, test = (task.load(data, s, 3) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (n_train - HELD_OUT, HELD_OUT, n_test)
    assert not set(texts(train)) & set(texts(dev)) and not set(texts(test)) & set(texts(train))
    assert texts(dev) == texts(task.load(data, "dev", 3)) and texts(dev) != texts(task.load(data, "dev", 4))


@pytest.mark.parametrize("name,sizes", [("scitail", (6, 4, 5)), ("paws", (6, 4, 5))])
def test_official_dev_and_test_are_used_as_they_are(data, name, sizes):
    task = get_task(name)
    for split, size in zip(("train", "dev", "test"), sizes):
        examples = task.load(data, split, 0)
        assert len(examples) == size and f" {split} 0" in examples[0].input_text
        assert examples == task.load(data, split, 7)  # no seeded shuffling


@pytest.mark.parametrize("name", NEW)
def test_kshot_variants(data, name):
    few = get_task(f"{name}@2")
    train = few.load(data, "train", 5)
    assert few.name == f"{name}@2" and collections.Counter(e.label for e in train) == {0: 2, 1: 2}
    assert train == few.load(data, "train", 5) and all(e.task == f"{name}@2" for e in train)
    assert set(texts(train)) <= set(texts(get_task(name).load(data, "train", 5)))
    assert texts(few.load(data, "test", 5)) == texts(get_task(name).load(data, "test", 5))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name,split,missing", [
    ("wic", "dev", "superglue/WiC/val.jsonl"), ("winogrande", "test", "winogrande_1.1/dev.jsonl"),
    ("yelp_polarity", "train", "yelp_review_polarity_csv/train.csv"),
    ("scitail", "dev", "SciTailV1.1/tsv_format/scitail_1.0_dev.tsv"), ("paws", "test", "paws/final/test.tsv"),
])
def test_missing_file_names_it_when_offline(tmp_path, monkeypatch, name, split, missing):
    monkeypatch.setenv("MPTUNE_OFFLINE", "1")
    with pytest.raises(MptuneError, match=rf"{tmp_path / missing} does not exist"):
        get_task(name).load(tmp_path, split)


def test_hf_hub_offline_also_keeps_the_missing_file_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MPTUNE_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "load_from_hub", lambda *a, **k: pytest.fail("hub read while offline"))
    with pytest.raises(MptuneError, match=r"paws/final/train\.tsv does not exist; expected the official PAWS TSV"):
        get_task("paws").load(tmp_path, "train")


def test_wrong_columns_name_the_file(tmp_path):
    paws = _write(tmp_path / "paws/final/train.tsv", "id\tsentence1\tsentence2\tgold\n1\ta\tb\t0\n")
    with pytest.raises(MptuneError, match=rf"{paws} has no column\(s\) label .*official PAWS columns"):
        get_task("paws").load(tmp_path, "train")
    sci = _write(tmp_path / "SciTailV1.1/tsv_format/scitail_1.0_train.tsv", "p\th\tentails\np\tneutral\n")
    with pytest.raises(MptuneError, match=rf"{sci} line 2 has 2 tab-separated fields; expected 3"):
        get_task("scitail").load(tmp_path, "train")
    yelp = _write(tmp_path / "yelp_review_polarity_csv/test.csv", '"1","fine"\n"2","good","extra"\n')
    with pytest.raises(MptuneError, match=rf"{yelp} line 2 has 3 comma-separated fields; expected 2"):
        get_task("yelp_polarity").load(tmp_path, "test")
    wino = _write(tmp_path / "winogrande_1.1/dev.jsonl",
                  _jsonl([{"sentence": "_ ran.", "option1": "A", "answer": "1"}]))
    with pytest.raises(MptuneError, match=rf"{wino} line 1 has no field 'option2'; expected the official WinoGrande"):
        get_task("winogrande").load(tmp_path, "test")
    empty = _write(tmp_path / "paws/final/dev.tsv", "")
    with pytest.raises(MptuneError, match=rf"{empty} is empty"):
        get_task("paws").load(tmp_path, "dev")


@pytest.mark.parametrize("name,split,rel,text,value", [
    ("scitail", "train", "SciTailV1.1/tsv_format/scitail_1.0_train.tsv", "p\th\tcontradiction\n", "'contradiction'"),
    ("paws", "test", "paws/final/test.tsv", "id\tsentence1\tsentence2\tlabel\n1\ta\tb\t2\n", "'2'"),
    ("yelp_polarity", "test", "yelp_review_polarity_csv/test.csv", '"3","meh"\n', "'3'"),
    ("winogrande", "test", "winogrande_1.1/dev.jsonl", _jsonl([_wino(0, "3")]), "'3'"),
    ("winogrande", "test", "winogrande_1.1/dev.jsonl", _jsonl([_wino(0, 2)]), "2"),
    ("wic", "train", "superglue/WiC/train.jsonl", _jsonl([{**_wic(0, True), "label": "true"}]), "'true'"),
])
def test_unknown_label_names_file_line_and_value(tmp_path, name, split, rel, text, value):
    bad = _write(tmp_path / rel, text)
    line = 2 if rel.startswith("paws") else 1
    with pytest.raises(MptuneError, match=rf"{bad} line {line} has unknown label {value}"):
        get_task(name).load(tmp_path, split)


# ---------------------------------------------------------------- hub route (no network)

RTE_TSV = "index\tsentence1\tsentence2\tlabel\n0\tA man  sleeps.\tA man rests.\tentailment\n1\tX.\tY.\tnot_entailment\n"
MNLI_COLUMNS = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
                "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n")
MULTIRC = {"idx": 0, "version": 1.1, "passage": {"text": "P one.<br>P two.", "questions": [
    {"question": "Q?", "idx": 0,
     "answers": [{"text": "A", "idx": 0, "label": 1}, {"text": "B", "idx": 1, "label": 0}]}]}}
WSC_TEXT = ("Mark told Pete many lies about himself, which Pete included in his book. "
            "He should have been more skeptical.")

# task, split, local file, its official text, hub split, the same rows as the hub copy holds them
HUB_CASES = [
    ("rte", "train", "glue/RTE/train.tsv", RTE_TSV, "train",
     [{"sentence1": "A man  sleeps.", "sentence2": "A man rests.", "label": 0, "idx": 0},
      {"sentence1": "X.", "sentence2": "Y.", "label": 1, "idx": 1}]),
    ("mnli", "test", "glue/MNLI/dev_matched.tsv",
     MNLI_COLUMNS + "0\t1\t1n\tfiction\t( a )\t( b )\t(a)\t(b)\tThe cat sat.\tA cat moved.\tneutral\t\t\t\t\tneutral\n",
     "validation_matched", [{"premise": "The cat sat.", "hypothesis": "A cat moved.", "label": 1, "idx": 0}]),
    ("stsb", "train", "glue/STS-B/train.tsv",
     "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
     "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\tAn air plane is taking off.\t3.800\n",
     "train",
     [{"sentence1": "A plane takes off.", "sentence2": "An air plane is taking off.", "label": 3.8, "idx": 0}]),
    ("cola", "train", "glue/CoLA/train.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\n",
     "train", [{"sentence": "Our friends won't buy this analysis.", "label": 1, "idx": 0}]),
    ("cb", "train", "superglue/CB/train.jsonl",
     _jsonl([{"premise": "P.", "hypothesis": "H.", "label": "neutral", "idx": 0}]),
     "train", [{"premise": "P.", "hypothesis": "H.", "idx": 0, "label": 2}]),
    ("boolq", "train", "superglue/BoolQ/train.jsonl",
     _jsonl([{"question": "is it wet?", "passage": "Water is wet.", "idx": 0, "label": True}]),
     "train", [{"question": "is it wet?", "passage": "Water is wet.", "idx": 0, "label": 1}]),
    ("multirc", "test", "superglue/MultiRC/val.jsonl", _jsonl([MULTIRC]), "validation",
     [{"paragraph": "P one.<br>P two.", "question": "Q?", "answer": a, "label": lab,
       "idx": {"paragraph": 0, "question": 0, "answer": i}} for i, (a, lab) in enumerate((("A", 1), ("B", 0)))]),
    ("wsc", "train", "superglue/WSC/train.jsonl",
     _jsonl([{"text": WSC_TEXT, "idx": 0, "label": False,
              "target": {"span2_index": 13, "span1_index": 0, "span1_text": "Mark", "span2_text": "He"}}]),
     "train", [{"text": WSC_TEXT, "span1_index": 0, "span2_index": 13, "span1_text": "Mark", "span2_text": "He",
                "idx": 0, "label": 0}]),
    ("wic", "train", "superglue/WiC/train.jsonl", _jsonl([_wic(0, True)]),
     "train", [{**_wic(0, True), "label": 1}]),
    ("winogrande", "test", "winogrande_1.1/dev.jsonl", _jsonl([_wino(0, "2")]),
     "validation", [{k: v for k, v in _wino(0, "2").items() if k != "qID"}]),
    ("yelp_polarity", "test", "yelp_review_polarity_csv/test.csv", _yelp_line(0) + _yelp_line(1),
     "test", [{"text": _yelp_line(i)[5:-2], "label": i % 2} for i in range(2)]),  # the hub's raw CSV field
    ("scitail", "dev", "SciTailV1.1/tsv_format/scitail_1.0_dev.tsv", "Pluto  orbits.\tPluto moves.\tentails\n",
     "validation", [{"premise": "Pluto  orbits.", "hypothesis": "Pluto moves.", "label": "entails"}]),
    ("paws", "test", "paws/final/test.tsv", "id\tsentence1\tsentence2\tlabel\n1\tA b .\tB a .\t1\n",
     "test", [{"id": 1, "sentence1": "A b .", "sentence2": "B a .", "label": 1}]),
]


def fake_hub(monkeypatch, task: str, split: str, rows: list[dict]) -> list:
    """Replace the hub with `rows` for (task's hub id, split); return the list of calls made."""
    calls = []

    def load(dataset_id, config, hub_split, revision=None):
        calls.append((dataset_id, config, hub_split))
        assert (dataset_id, config) == hub.HUB_IDS[task] and hub_split == split
        assert revision == hub.REVISIONS[dataset_id]  # every hub read is pinned
        return iter(rows)

    monkeypatch.setattr(hub, "load_from_hub", load)
    monkeypatch.delenv("MPTUNE_OFFLINE")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return calls


@pytest.mark.parametrize("name,split,rel,text,hub_split,rows", HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_hub_rows_give_the_same_examples_as_the_official_file(tmp_path, monkeypatch, name, split, rel, text,
                                                              hub_split, rows):
    local = tmp_path / "local"
    _write(local / rel, text)
    expected = get_task(name).load(local, split)
    assert expected
    calls = fake_hub(monkeypatch, name, hub_split, rows)
    got = get_task(name).load(tmp_path / "empty", split)
    assert got == expected
    groups = lambda examples: [getattr(e.label, "group", None) for e in examples]  # noqa: E731 (MultiRC questions)
    assert groups(got) == groups(expected)
    assert calls == [(*hub.HUB_IDS[name], hub_split)]


def test_hub_is_not_used_when_any_local_file_exists(tmp_path, monkeypatch):
    fake_hub(monkeypatch, "winogrande", "train", [])
    monkeypatch.setattr(hub, "load_from_hub", lambda *a, **k: pytest.fail("hub read with local files present"))
    _write(tmp_path / "winogrande_1.1/dev.jsonl", _jsonl([_wino(0, "1")]))
    with pytest.raises(MptuneError, match=r"winogrande_1\.1/train_xl\.jsonl does not exist"):
        get_task("winogrande").load(tmp_path, "train")


def test_hub_without_datasets_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MPTUNE_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(MptuneError, match="pip install datasets"):
        hub.load_from_hub("allenai/scitail", "tsv_format", "train")
    with pytest.raises(MptuneError, match=rf"Task 'scitail' has no data files under {tmp_path}.*pip install datasets"):
        get_task("scitail").load(tmp_path, "train")


def test_hub_allowed_reads_the_offline_switches(monkeypatch):
    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    assert hub.hub_allowed()
    for value, allowed in (("1", False), ("true", False), ("0", True), ("", True)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub.hub_allowed() is allowed


def test_every_hub_copy_is_pinned_and_the_pin_can_be_overridden(tmp_path, monkeypatch):
    for task, (dataset_id, _) in hub.HUB_IDS.items():
        revision = hub.REVISIONS[dataset_id]
        assert re.fullmatch(r"[0-9a-f]{40}", revision) or revision == "refs/convert/parquet", task
    assert hub.describe("rte") == "nyu-mll/glue (rte) @bcdcba79d07b" and hub.describe("webnlg") == "none"
    assert hub.describe("e2e") == "tuetschek/e2e_nlg @refs/convert/parquet"
    fake_hub(monkeypatch, "paws", "train", [])
    seen = []
    monkeypatch.setattr(hub, "load_from_hub", lambda d, c, s, revision=None: seen.append((d, revision)) or iter([]))
    monkeypatch.setenv(hub.REVISIONS_ENV, " google-research-datasets/paws = main , allenai/scitail=abc")
    assert hub.hub_revision("allenai/scitail") == "abc" and hub.hub_revision(hub.GLUE) == hub.REVISIONS[hub.GLUE]
    assert get_task("paws").load(tmp_path, "train") == [] and seen == [("google-research-datasets/paws", "main")]
    assert hub.describe("paws") == "google-research-datasets/paws (labeled_final) @main"
    monkeypatch.setenv(hub.REVISIONS_ENV, "nyu-mll/glue")
    with pytest.raises(MptuneError, match=r"MPTUNE_HUB_REVISIONS entry 'nyu-mll/glue' is not 'dataset_id=revision'"):
        hub.hub_revision(hub.GLUE)


def test_hub_failure_names_the_revision(monkeypatch):
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    pin = hub.REVISIONS["allenai/scitail"]
    with pytest.raises(MptuneError, match=rf"at revision {pin} .*ConnectionError: no network.*MPTUNE_HUB_REVISIONS"):
        hub.load_from_hub("allenai/scitail", "tsv_format", "train", pin)
    assert calls == [(("allenai/scitail", "tsv_format"), {"split": "train", "revision": pin})]


def test_hub_row_missing_field_names_the_row(tmp_path, monkeypatch):
    fake_hub(monkeypatch, "paws", "train", [{"id": 1, "sentence1": "a", "label": 0}])
    with pytest.raises(MptuneError, match=r"google-research-datasets/paws \(labeled_final\) train split row 1 "
                                          r"has no field\(s\) sentence2"):
        get_task("paws").load(tmp_path, "train")
