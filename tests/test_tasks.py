"""Tasks on the real shared data: row counts, labels, splits, few-shot sampling, bad input."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

from mptune.errors import MptuneError
from mptune.tasks import Example, get_task, glue, hub, resolve_data_dir, superglue, task_names
from mptune.tasks.fewshot import kshot
from mptune.tasks.splits import HELD_OUT, halves, partition, select

from test_tasks_others import MNLI_COLUMNS


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

# Label words over train + dev + test (= every labelled row of the files read), seed 0. They are the official
# class counts: e.g. CoLA train 6,023/2,528 + dev 721/322; SST-2 train 37,569/29,780 + dev 444/428; RTE train
# 1,249/1,241 + dev 146/131; CB train 115/119/16 + val 23/28/5; BoolQ val 2,033/1,237 + FewGLUE train 18/14.
# MNLI, QQP and QNLI train are the 9,999-row samples; MRPC train lacks one positive pair (see FILE_ROWS).
LABEL_COUNTS = {
    "cola": {"no": 2850, "yes": 6744}, "sst2": {"negative": 30208, "positive": 38013},
    "mrpc": {"no": 1323, "yes": 2752}, "qqp": {"no": 6370, "yes": 3629},
    "mnli": {"maybe": 3313, "no": 3278, "yes": 3408}, "qnli": {"no": 7733, "yes": 7729},
    "rte": {"no": 1372, "yes": 1395}, "wnli": {"no": 363, "yes": 343}, "boolq": {"no": 1251, "yes": 2051},
    "cb": {"maybe": 21, "no": 147, "yes": 138}, "copa": {"1": 250, "2": 250},
    "multirc": {"no": 17991, "yes": 14100}, "rte_sg": {"no": 1372, "yes": 1395}, "wsc": {"no": 361, "yes": 297},
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


# The first train example (seed 0) of every task on the shared data: (input start, input end, target).
FIRST_TRAIN = {
    "cola": ("sentence: Our friends won't buy this analysis, let alone the next one we propose.\n",
             "Is this sentence grammatical?\nAnswer:", "yes"),
    "sst2": ("sentence: hide new secretions from the parental units\n",
             "Is the sentiment positive or negative?\nAnswer:", "negative"),
    "mrpc": ('sentence1: Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his '
             'evidence .\nsentence2: Referring to him as only " the witness " , Amrozi',
             "distorting his evidence .\nDo they mean the same thing?\nAnswer:", "yes"),
    "qqp": ("sentence1: How do I get inside University College London being an Indian?\nsentence2: Which is better",
            "for a foreigner (Indian National)?\nDo they mean the same thing?\nAnswer:", "no"),
    "stsb": ("sentence1: A plane is taking off.\nsentence2: An air plane is taking off.\n",
             "How similar are they from 0 to 5?\nAnswer:", "5.0"),
    "mnli": ("premise: Our hearts are particularly heavy this year as we look back at those we've lost, the Globe "
             "writes lovingly.\nhypothesis: We are especially sad this year because we lost a lot of people.\n",
             "Does the premise entail the hypothesis?\nAnswer:", "yes"),
    "qnli": ("question: What sector has expanded radiply by selling outsourcing services to North America and "
             "Europe?\nsentence: The IT sector", "Does the sentence answer the question?\nAnswer:", "no"),
    "rte": ("premise: No Weapons of Mass Destruction Found in Iraq Yet.\nhypothesis: Weapons of Mass Destruction "
            "Found in Iraq.\n", "Does the premise entail the hypothesis?\nAnswer:", "no"),
    "wnli": ("premise: I stuck a pin through a carrot. When I pulled the pin out, it had a hole.\n"
             "hypothesis: The carrot had a hole.\n", "Does the premise entail the hypothesis?\nAnswer:", "yes"),
    "boolq": ("passage: Ghost in the Shell -- Animation studio Production I.G has produced",
              "\nquestion: is ghost in the shell based on the anime?\nAnswer:", "no"),
    "cb": ("premise: It was a complex language. Not written down but handed down. One might say it was peeled "
           "down.\nhypothesis: the language was peeled down\n", "Does the premise entail the hypothesis?\nAnswer:",
           "yes"),
    "copa": ("premise: My body cast a shadow over the grass.\nWhat was the cause?\n",
             "1: The sun was rising.\n2: The grass was cut.\nAnswer:", "1"),
    "multirc": ("paragraph: While this process moved along, diplomacy continued its rounds.",
                "\nquestion: What did the high-level effort to persuade Pakistan include?\nanswer: Children, Gerd, "
                "or Dorian Popa\nIs the answer correct?\nAnswer:", "no"),
    "rte_sg": ("premise: No Weapons of Mass Destruction Found in Iraq Yet.\nhypothesis: Weapons of Mass "
               "Destruction Found in Iraq.\n", "Does the premise entail the hypothesis?\nAnswer:", "no"),
    "wsc": ("text: Mark told Pete many lies about himself, which Pete included in his book. He should have been more "
            "skeptical.\n", "Does 'He' refer to 'Mark'?\nAnswer:", "no"),
}


@pytest.mark.parametrize("name", sorted(FIRST_TRAIN))
def test_first_train_example_is_formatted(data, name):
    first = load(data, name, "train")[0]
    start, end, target = FIRST_TRAIN[name]
    assert first.input_text.startswith(start) and first.input_text.endswith(end)
    assert first.target_text == target


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


@pytest.mark.parametrize("name", sorted(LABEL_COUNTS))
def test_label_counts_over_all_splits(data, name):
    counts = collections.Counter(e.target_text for split in ("train", "dev", "test") for e in load(data, name, split))
    assert counts == LABEL_COUNTS[name]
    assert set(counts) == set(get_task(name).choices)  # the official label set, every class present


def test_multirc_labels_name_their_question(data):
    test = load(data, "multirc", "test")  # the official validation set: 953 questions, 4,848 answers
    assert len({e.label.group for e in test}) == 953
    train = load(data, "multirc", "train") + load(data, "multirc", "dev")
    assert len({e.label.group for e in train}) == 5131


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


MNLI_TRAIN_COLUMNS = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                      "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")


def _mnli_row(i: int, premise: str, hypothesis: str, label: str, dev: bool) -> str:
    labels = [label] * (5 if dev else 1)
    return "\t".join([str(i), str(100 + i), f"{100 + i}n", "fiction", "( a )", "( b )", "(a)", "(b)",
                      premise, hypothesis, *labels, label]) + "\n"


def write_mnli(root: Path) -> None:
    """glue/MNLI/{train,dev_matched,dev_mismatched}.tsv in the official column layouts."""
    _write(root / "glue/MNLI/train.tsv", MNLI_TRAIN_COLUMNS + _mnli_row(0, "a", "b", "neutral", False)
           + _mnli_row(1, "c", "d", "entailment", False))
    _write(root / "glue/MNLI/dev_matched.tsv", MNLI_COLUMNS + _mnli_row(0, "m", "n", "contradiction", True))
    _write(root / "glue/MNLI/dev_mismatched.tsv", MNLI_COLUMNS + _mnli_row(0, "x", "y", "entailment", True)
           + _mnli_row(1, "u", "v", "neutral", True))


def test_mnli_uses_official_validation_files_when_present(tmp_path):
    write_mnli(tmp_path)
    mnli = get_task("mnli")
    assert [e.target_text for e in mnli.load(tmp_path, "train")] == ["maybe", "yes"]  # train = official train
    assert [e.input_text.split("\n")[0] for e in mnli.load(tmp_path, "dev")] == ["premise: x", "premise: u"]
    assert [(e.input_text.split("\n")[0], e.label, e.target_text) for e in mnli.load(tmp_path, "test")] == [
        ("premise: m", 2, "no")]  # test = matched
    assert "dev: validation_mismatched; test: validation_matched" in mnli.splits_doc


def test_mnli_hub_copy_gives_dev_mismatched_and_test_matched(tmp_path, monkeypatch):
    write_mnli(tmp_path / "local")
    rows = {"train": [("a", "b", 1), ("c", "d", 0)], "validation_matched": [("m", "n", 2)],
            "validation_mismatched": [("x", "y", 0), ("u", "v", 1)]}
    calls = []

    def load(dataset_id, config, split, revision=None):
        calls.append((dataset_id, config, split, revision))
        return [{"premise": p, "hypothesis": h, "label": y, "idx": i} for i, (p, h, y) in enumerate(rows[split])]

    monkeypatch.setattr(hub, "load_from_hub", load)
    monkeypatch.delenv("MPTUNE_OFFLINE")
    for split in ("train", "dev", "test"):
        assert get_task("mnli").load(tmp_path / "empty", split) == get_task("mnli").load(tmp_path / "local", split)
    assert {c[2] for c in calls} == {"train", "validation_matched", "validation_mismatched"}
    assert all(c[:2] == ("nyu-mll/glue", "mnli") and c[3] == hub.REVISIONS["nyu-mll/glue"] for c in calls)


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
