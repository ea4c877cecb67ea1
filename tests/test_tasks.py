"""Tasks on the real shared data: row counts, labels, splits, few-shot sampling, bad input."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

from mptune.errors import MptuneError
from mptune.tasks import Example, get_task, resolve_data_dir, task_names
from mptune.tasks import glue, superglue
from mptune.tasks.fewshot import kshot
from mptune.tasks.splits import HELD_OUT, halves, partition, select


def _find_data() -> Path | None:
    env = os.environ.get("MPTUNE_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="module")
def data() -> Path:
    path = _find_data()
    if path is None:
        pytest.skip("no task data: set MPTUNE_DATA_DIR or place it at ../shared/data next to the project")
    return path


# Official rows per file (superglue MultiRC counts paragraphs); samples noted.
FILE_ROWS = {
    "glue/CoLA/train.tsv": 8551, "glue/CoLA/dev.tsv": 1043,
    "glue/SST-2/train.tsv": 67349, "glue/SST-2/dev.tsv": 872,
    "glue/MRPC/train.tsv": 3667, "glue/MRPC/dev.tsv": 408,  # official train has 3,668; one pair missing here
    "glue/QQP/train.tsv": 9999,  # sample
    "glue/STS-B/train.tsv": 5749, "glue/STS-B/dev.tsv": 1500,
    "glue/MNLI/train.tsv": 9999,  # sample
    "glue/QNLI/train.tsv": 9999, "glue/QNLI/dev.tsv": 5463,  # train is a sample
    "glue/RTE/train.tsv": 2490, "glue/RTE/dev.tsv": 277,
    "glue/WNLI/train.tsv": 635, "glue/WNLI/dev.tsv": 71,
    "superglue/BoolQ/val.jsonl": 3270, "superglue/BoolQ/FewGLUE_32dev/train.jsonl": 32,
    "superglue/CB/train.jsonl": 250, "superglue/CB/val.jsonl": 56,
    "superglue/COPA/train.jsonl": 400, "superglue/COPA/val.jsonl": 100,
    "superglue/MultiRC/train.jsonl": 456, "superglue/MultiRC/val.jsonl": 83,
    "superglue/RTE/train.jsonl": 2490, "superglue/RTE/val.jsonl": 277,
    "superglue/WSC/train.jsonl": 554, "superglue/WSC/val.jsonl": 104,
}

# (train, dev, test) sizes of every task on the shared data with seed 0.
SPLIT_SIZES = {
    "cola": (8551, 521, 522), "sst2": (66349, 1000, 872), "mrpc": (3667, 204, 204),
    "qqp": (7999, 1000, 1000), "stsb": (5749, 750, 750), "mnli": (7999, 1000, 1000),
    "qnli": (8999, 1000, 5463), "rte": (2490, 138, 139), "wnli": (635, 35, 36),
    "boolq": (32, 1635, 1635), "cb": (250, 28, 28), "copa": (400, 50, 50),
    "multirc": (26243, 1000, 4848), "rte_sg": (2490, 138, 139), "wsc": (554, 52, 52),
}

_cache: dict[tuple[str, str, int], list[Example]] = {}


def load(data: Path, name: str, split: str, seed: int = 0) -> list[Example]:
    key = (name, split, seed)
    if key not in _cache:
        _cache[key] = get_task(name).load(data, split, seed)
    return _cache[key]


def texts(examples) -> collections.Counter:
    return collections.Counter((e.input_text, e.target_text) for e in examples)


# ---------------------------------------------------------------- real data


@pytest.mark.parametrize("rel", sorted(FILE_ROWS))
def test_official_file_row_counts(data, rel):
    path = data / rel
    if not path.is_file():
        pytest.skip(f"{rel} not present")
    if path.suffix == ".tsv":  # CoLA train/dev have no header; the others have one
        rows = glue.read_tsv(path, (), width=4 if "CoLA" in rel else None)
    else:
        rows = superglue.read_jsonl(path)
    assert len(rows) == FILE_ROWS[rel]


# Registered tasks with no files in the shared data (tested on fixtures in test_tasks_others.py and,
# for the generation tasks, test_tasks_generation.py).
NOT_SHARED = ("paws", "scitail", "wic", "winogrande", "yelp_polarity",
              "squad", "nq", "hotpotqa", "searchqa", "newsqa", "record", "e2e", "webnlg")


def test_registry_lists_every_task():
    assert task_names() == sorted([*SPLIT_SIZES, *NOT_SHARED])


@pytest.mark.parametrize("name", sorted(SPLIT_SIZES))
def test_split_sizes_labels_and_format(data, name):
    task = get_task(name)
    sizes = tuple(len(load(data, name, s)) for s in ("train", "dev", "test"))
    assert sizes == SPLIT_SIZES[name]
    for split in ("train", "dev", "test"):
        for e in load(data, name, split):
            assert e.input_text.endswith("\nAnswer:") and e.task == name
            assert "  " not in e.input_text
            if task.regression:
                assert isinstance(e.label, float) and 0.0 <= e.label <= 5.0
                assert e.target_text in task.choices and abs(float(e.target_text) - e.label) <= 0.1 + 1e-9
            else:
                assert e.target_text == task.choices[e.label]
    if not task.regression:
        assert {e.label for e in load(data, name, "train")} == set(range(len(task.choices)))


def test_label_words_and_metrics():
    expect = {
        "mnli": ("yes", "maybe", "no"), "cb": ("yes", "no", "maybe"), "rte": ("yes", "no"),
        "rte_sg": ("yes", "no"), "qnli": ("yes", "no"), "sst2": ("negative", "positive"),
        "cola": ("no", "yes"), "mrpc": ("no", "yes"), "qqp": ("no", "yes"), "wnli": ("no", "yes"),
        "boolq": ("no", "yes"), "wsc": ("no", "yes"), "multirc": ("no", "yes"), "copa": ("1", "2"),
    }
    for name, words in expect.items():
        assert get_task(name).choices == words, name
    stsb = get_task("stsb")
    assert stsb.regression and len(stsb.choices) == 26 and stsb.choices[0] == "0.0" and stsb.choices[-1] == "5.0"
    assert stsb.decode(13) == 2.6 and get_task("rte").decode(1) == 1
    assert (stsb.metric, stsb.extra_metrics) == ("pearson", ("spearman",))
    assert get_task("cola").metric == "matthews" and get_task("multirc").metric == "f1"
    assert get_task("cb").extra_metrics == ("macro_f1",) and get_task("qqp").extra_metrics == ("f1",)


def test_known_labels_on_real_rows(data):
    rte = load(data, "rte", "train")
    assert rte[0].target_text == "no"  # row 0: not_entailment
    assert collections.Counter(e.label for e in rte) == {0: 1249, 1: 1241}
    cb = collections.Counter(e.target_text for e in load(data, "cb", "train"))
    assert cb == {"no": 119, "yes": 115, "maybe": 16}
    stsb = load(data, "stsb", "train")[0]
    assert stsb.label == 5.0 and stsb.target_text == "5.0"
    assert glue.stsb_bin(3.8) == "3.8" and glue.stsb_bin(0.1) == "0.2" and glue.stsb_bin(4.75) == "4.8"


@pytest.mark.parametrize("name,n_val", [("rte", 277), ("cb", 56), ("stsb", 1500), ("wnli", 71), ("copa", 100)])
def test_small_task_dev_test_are_halves_of_validation(data, name, n_val):
    dev, test = load(data, name, "dev"), load(data, name, "test")
    assert (len(dev), len(test)) == (n_val // 2, n_val - n_val // 2)
    assert not set(texts(dev)) & set(texts(test))
    assert load(data, name, "train") == get_task(name).load(data, "train", 1)  # train = official train


@pytest.mark.parametrize("name", ["mnli", "qqp", "qnli", "sst2"])
def test_large_task_held_out_dev_is_disjoint_from_train(data, name):
    train, dev, test = (load(data, name, s) for s in ("train", "dev", "test"))
    assert len(dev) == HELD_OUT
    if name in ("mnli", "qnli", "qqp"):  # these samples have no duplicate rows
        assert not set(texts(dev)) & set(texts(train))
        if name != "qnli":
            assert not set(texts(test)) & set(texts(train)) and not set(texts(dev)) & set(texts(test))
    held = len(test) if name in ("mnli", "qqp") else 0  # offline: test held out of train too
    assert len(train) + len(dev) + held == {"mnli": 9999, "qqp": 9999, "qnli": 9999, "sst2": 67349}[name]


def test_splits_are_deterministic_per_seed(data):
    for name in ("rte", "mnli"):
        assert load(data, name, "dev", 0) == get_task(name).load(data, "dev", 0)
        assert texts(load(data, name, "dev", 0)) != texts(load(data, name, "dev", 1))
    assert texts(load(data, "mnli", "train", 0)) != texts(load(data, "mnli", "train", 1))


def test_boolq_uses_fewglue_train_offline(data):
    if (data / "superglue/BoolQ/train.jsonl").is_file():
        pytest.skip("full BoolQ train present")
    assert "FewGLUE_32dev" in get_task("boolq").splits_doc
    assert len(load(data, "boolq", "train")) == 32


def test_multirc_one_example_per_answer(data):
    rows = superglue.read_jsonl(data / "superglue/MultiRC/val.jsonl")
    answers = sum(len(q["answers"]) for _, r in rows for q in r["passage"]["questions"])
    test = load(data, "multirc", "test")
    assert len(test) == answers == 4848
    assert not any("<br>" in e.input_text for e in test)


# ---------------------------------------------------------------- few-shot


def test_kshot_real_class_balance_and_determinism(data):
    cb16 = get_task("cb@16")
    assert cb16.name == "cb@16" and cb16.choices == get_task("cb").choices
    train = cb16.load(data, "train", 0)
    assert collections.Counter(e.label for e in train) == {0: 16, 1: 16, 2: 16}
    assert all(e.task == "cb@16" for e in train)
    assert train == cb16.load(data, "train", 0)
    assert train != cb16.load(data, "train", 1)
    # sample_seed draws another k-shot sample from the same split; dev/test do not depend on it
    assert cb16.load(data, "train", 0, sample_seed=5) == cb16.load(data, "train", 0, sample_seed=5) != train
    assert cb16.load(data, "train", 0, sample_seed=0) == train
    assert cb16.load(data, "test", 0, sample_seed=5) == cb16.load(data, "test", 0)
    assert texts(cb16.load(data, "dev", 0)) == texts(load(data, "cb", "dev"))
    assert texts(cb16.load(data, "test", 0)) == texts(load(data, "cb", "test"))
    full = set(texts(load(data, "cb", "train")))
    assert set(texts(train)) <= full
    stsb = get_task("stsb@8").load(data, "train", 3)
    assert len(stsb) == 16 and stsb == get_task("stsb@8").load(data, "train", 3)
    sst = get_task("sst2@4").load(data, "train", 0)
    assert collections.Counter(e.label for e in sst) == {0: 4, 1: 4}
    assert set(texts(sst)) <= set(texts(load(data, "sst2", "train")))  # never drawn from held-out dev


def _synthetic(n_per_class: dict[int, int]) -> list[Example]:
    return [Example(f"x{c}-{i}", str(c), c) for c, n in n_per_class.items() for i in range(n)]


def test_kshot_function():
    pool = _synthetic({0: 50, 1: 30, 2: 5})
    sample = kshot(pool, 8, seed=7, choices=("a", "b", "c"))
    assert collections.Counter(e.label for e in sample) == {0: 8, 1: 8, 2: 5}
    assert sample == kshot(pool, 8, seed=7, choices=("a", "b", "c"))
    assert sample != kshot(pool, 8, seed=8, choices=("a", "b", "c"))
    assert len(set(sample)) == len(sample)
    assert len(kshot(pool, 8, seed=7, choices=())) == 16


@pytest.mark.parametrize("bad", ["cb@0", "cb@-1", "cb@1.5", "cb@x", "cb@", "cb@²"])
def test_bad_k_is_an_error(bad):
    with pytest.raises(MptuneError, match="few-shot"):
        get_task(bad)


def test_unknown_task_lists_known_names():
    with pytest.raises(MptuneError, match="known tasks: boolq, cb, cola"):
        get_task("nope")
    with pytest.raises(MptuneError, match="'nope'"):
        get_task("nope@16")


# ---------------------------------------------------------------- split logic


def test_partition_and_halves():
    items = list(range(11))
    dev, test = halves(items, 3)
    assert (len(dev), len(test)) == (5, 6) and sorted(dev + test) == items
    assert (dev, test) == halves(items, 3) and dev == sorted(dev)
    a, b, rest = partition(list(range(100)), [10, 20], 0)
    assert (len(a), len(b), len(rest)) == (10, 20, 70) and sorted(a + b + rest) == list(range(100))
    with pytest.raises(MptuneError):
        partition([1, 2], [3], 0)


def test_select_rules_follow_official_size():
    train = lambda: list(range(3000))  # noqa: E731
    val = lambda: list(range(-100, 0))  # noqa: E731
    # small official size: halves of validation, even though the local file is large
    assert select("train", 0, 9_999, train, val) == list(range(3000))
    assert len(select("dev", 0, 9_999, train, val)) == 50
    # large official size: 1,000 held out of train, test = validation
    dev = select("dev", 0, 10_000, train, val)
    rest = select("train", 0, 10_000, train, val)
    assert len(dev) == 1000 and len(rest) == 2000 and not set(dev) & set(rest)
    assert select("test", 0, 10_000, train, val) == val()
    # large without validation: dev and test both held out, same dev as above
    assert select("dev", 0, 10_000, train, None) == dev
    test = select("test", 0, 10_000, train, None)
    assert len(test) == 1000 and not set(test) & set(dev)
    assert len(select("train", 0, 10_000, train, None)) == 1000
    # MNLI with both validation files
    mm = lambda: ["mm"]  # noqa: E731
    assert select("dev", 0, 392_702, train, val, mm) == ["mm"] and select("test", 0, 392_702, train, val, mm) == val()
    assert len(select("train", 0, 392_702, train, val, mm)) == 3000
    with pytest.raises(MptuneError, match="split"):
        select("validation", 0, 10, train, val)


# ---------------------------------------------------------------- bad input


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def test_missing_file_names_it(tmp_path):
    _write(tmp_path / "glue/RTE/dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n")
    with pytest.raises(MptuneError, match=r"glue/RTE/train\.tsv"):
        get_task("rte").load(tmp_path, "train")
    with pytest.raises(MptuneError, match=r"superglue/CB/val\.jsonl"):
        get_task("cb").load(tmp_path, "dev")


def test_wrong_columns_name_the_file(tmp_path):
    bad = _write(tmp_path / "glue/RTE/train.tsv", "index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n")
    with pytest.raises(MptuneError, match=rf"{bad}.*label"):
        get_task("rte").load(tmp_path, "train")
    _write(bad, RTE_HEADER + "0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(MptuneError, match=rf"{bad} line 3 has 2"):
        get_task("rte").load(tmp_path, "train")
    cola = _write(tmp_path / "glue/CoLA/train.tsv", "gj04\t1\t\tGood.\ngj04\t0\tBad.\n")
    with pytest.raises(MptuneError, match=rf"{cola} line 2"):
        get_task("cola").load(tmp_path, "train")
    wsc = _write(tmp_path / "superglue/WSC/train.jsonl", json.dumps({"text": "t", "label": True}) + "\n")
    with pytest.raises(MptuneError, match=rf"{wsc} line 1 has no field 'target'"):
        get_task("wsc").load(tmp_path, "train")
    broken = _write(tmp_path / "superglue/COPA/train.jsonl", "{not json\n")
    with pytest.raises(MptuneError, match=rf"{broken} line 1 is not valid JSON"):
        get_task("copa").load(tmp_path, "train")


def test_unknown_label_names_file_and_value(tmp_path):
    bad = _write(tmp_path / "glue/RTE/train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    with pytest.raises(MptuneError, match=rf"{bad} line 3 has unknown label 'maybe'"):
        get_task("rte").load(tmp_path, "train")
    sts = _write(tmp_path / "glue/STS-B/train.tsv",
                 "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                 "0\tg\tf\ty\t0\tn\tn\ta\tb\t7.5\n")
    with pytest.raises(MptuneError, match=rf"{sts} line 2 has unknown label '7.5'"):
        get_task("stsb").load(tmp_path, "train")
    cb = _write(tmp_path / "superglue/CB/train.jsonl",
                json.dumps({"premise": "p", "hypothesis": "h", "label": "not_entailment"}) + "\n")
    with pytest.raises(MptuneError, match=rf"{cb} line 1 has unknown label 'not_entailment'"):
        get_task("cb").load(tmp_path, "train")
    copa = _write(tmp_path / "superglue/COPA/train.jsonl", json.dumps(
        {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}) + "\n")
    with pytest.raises(MptuneError, match=rf"{copa} line 1 has unknown label 2"):
        get_task("copa").load(tmp_path, "train")


def test_small_tree_reads_and_normalises(tmp_path):
    _write(tmp_path / "glue/MRPC/train.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
           '1\t1\t2\t" He said  so .\t He  said so . \n')
    (ex,) = get_task("mrpc").load(tmp_path, "train")
    assert ex.input_text == 'sentence1: " He said so .\nsentence2: He said so .\nDo they mean the same thing?\nAnswer:'
    assert (ex.target_text, ex.label) == ("yes", 1)
    _write(tmp_path / "superglue/MultiRC/val.jsonl", json.dumps({"passage": {
        "text": "One.<br>Two.", "questions": [{"question": "Q?", "answers": [
            {"text": "A", "label": 1}, {"text": "B", "label": 0}]}]}}) + "\n")
    exs = get_task("multirc").load(tmp_path, "test")  # test = official validation (large task)
    assert [e.label for e in exs] == [1, 0] and "paragraph: One. Two.\nquestion: Q?\nanswer: A\n" in exs[0].input_text


def test_mnli_uses_official_validation_files_when_present(tmp_path):
    cols = "index\tsentence1\tsentence2\tgold_label\n"
    _write(tmp_path / "glue/MNLI/train.tsv", cols + "0\ta\tb\tneutral\n1\tc\td\tentailment\n")
    _write(tmp_path / "glue/MNLI/dev_matched.tsv", cols + "0\tm\tn\tcontradiction\n")
    _write(tmp_path / "glue/MNLI/dev_mismatched.tsv", cols + "0\tx\ty\tentailment\n")
    mnli = get_task("mnli")
    assert [e.target_text for e in mnli.load(tmp_path, "train")] == ["maybe", "yes"]
    assert [e.input_text.split("\n")[0] for e in mnli.load(tmp_path, "dev")] == ["premise: x"]
    assert [(e.label, e.target_text) for e in mnli.load(tmp_path, "test")] == [(2, "no")]


# ---------------------------------------------------------------- data dir


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MPTUNE_DATA_DIR", raising=False)
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    with pytest.raises(MptuneError, match="MPTUNE_DATA_DIR"):
        resolve_data_dir(None)
    monkeypatch.setenv("MPTUNE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    missing = tmp_path / "nowhere"
    with pytest.raises(MptuneError, match=str(missing)):
        resolve_data_dir(str(missing))
