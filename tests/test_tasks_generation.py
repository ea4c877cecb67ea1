"""SQuAD, MRQA (NQ, HotpotQA, SearchQA, NewsQA), ReCoRD, E2E and WebNLG on fixture files in their official formats.

None of these datasets is in the shared data, so each test writes a few rows in the official
layout to tmp_path (the large QA tasks get just over 1,000 training questions, enough for the
held-out dev split). The hub tests replace `hub.load_from_hub` with in-memory hub rows.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mptune.errors import MptuneError
from mptune.tasks import Example, get_task, hub, task_names
from mptune.tasks.splits import HELD_OUT

from test_tasks_others import fake_hub

QA_TASKS = ("squad", "nq", "hotpotqa", "searchqa", "newsqa", "record")
NLG_TASKS = ("e2e", "webnlg")
MRQA = {"nq": "NaturalQuestionsShort", "hotpotqa": "HotpotQA", "searchqa": "SearchQA", "newsqa": "NewsQA"}
EXTRA = 5  # training questions left after holding out dev


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# --- fixtures in the official layouts -----------------------------------------------------------

def _squad_doc(n: int, answers_per_question: int, prefix: str) -> dict:
    paragraphs = []
    for i in range(0, n, 2):  # two questions per paragraph
        context = f"Architecturally,  the school {prefix}{i} has a Catholic character. Saint Bernadette appeared."
        qas = [{"answers": [{"answer_start": 68, "text": "Saint Bernadette"},
                            {"answer_start": 68, "text": "Bernadette"},
                            {"answer_start": 74, "text": " Bernadette "}][:answers_per_question],
                "question": f"Who appeared  {prefix}{j}?", "id": f"{prefix}{j}"} for j in range(i, min(i + 2, n))]
        paragraphs.append({"context": context, "qas": qas})
    return {"data": [{"title": "University_of_Notre_Dame", "paragraphs": paragraphs}], "version": "1.1"}


def write_squad(root: Path, n_train: int = HELD_OUT + EXTRA, n_dev: int = 6) -> None:
    _write(root / "squad/train-v1.1.json", json.dumps(_squad_doc(n_train, 1, "t")))
    _write(root / "squad/dev-v1.1.json", json.dumps(_squad_doc(n_dev, 3, "d")))


def _mrqa_lines(subset: str, split: str, n: int) -> list[dict]:
    rows: list[dict] = [{"header": {"dataset": subset, "split": split}}]
    for i in range(0, n, 2):
        context = f"[PAR] [TLE] Lourdes [SEP] Saint  Bernadette saw a vision {split}{i} ."
        qas = [{"qid": f"{split}{j}", "question": f"who saw a vision {j}", "question_tokens": [["who", 0]],
                "answers": ["Saint Bernadette", "Bernadette Soubirous"],
                "detected_answers": [{"text": "Saint Bernadette", "char_spans": [[20, 35]], "token_spans": [[4, 5]]}]}
               for j in range(i, min(i + 2, n))]
        rows.append({"id": f"{split}{i}", "context": context, "context_tokens": [["[PAR]", 0]], "qas": qas})
    return rows


def write_mrqa(root: Path, subset: str, n_train: int = HELD_OUT + EXTRA, n_dev: int = 6,
               layout: str = "nested") -> None:
    for split, n in (("train", n_train), ("dev", n_dev)):
        rel = f"mrqa/{subset}/{split}.jsonl.gz" if layout == "nested" else f"mrqa/{split}/{subset}.jsonl.gz"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(_jsonl(_mrqa_lines(subset, split, n)))


RECORD_TEXT = ("The  Vatican said on Monday that Pope Francis met Obama.\n@highlight\nPope Francis met Obama\n"
               "@highlight\nThey talked in Rome")


def _record_row(i: int) -> dict:
    def span(word: str, nth: int = 0) -> dict:
        start = RECORD_TEXT.index(word) if nth == 0 else RECORD_TEXT.index(word, RECORD_TEXT.index(word) + 1)
        return {"start": start, "end": start + len(word) - 1}  # inclusive end, as in ReCoRD

    entities = [span("Pope Francis", 1), span("Obama"), span("Vatican"), span("Pope Francis"), span("Rome")]
    answers = [{**span("Pope Francis", 1), "text": "Pope Francis"}, {**span("Pope Francis"), "text": "Pope Francis"},
               {**span("Francis"), "text": "Francis"}]
    qas = [{"query": f"@placeholder met the US president {i}", "answers": answers, "idx": i}]
    return {"source": "Daily mail", "passage": {"text": RECORD_TEXT, "entities": entities}, "qas": qas, "idx": i}


def write_record(root: Path, n_train: int = HELD_OUT + EXTRA, n_val: int = 4) -> None:
    _write(root / "superglue/ReCoRD/train.jsonl", _jsonl(_record_row(i) for i in range(n_train)))
    _write(root / "superglue/ReCoRD/val.jsonl", _jsonl(_record_row(10_000 + i) for i in range(n_val)))


E2E_MR = "name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]"


def write_e2e(root: Path) -> None:
    train = ['mr,ref', f'"{E2E_MR}","The Vaults pub near Café Adriatic has prices over £30."',
             '"name[Alimentum], area[city centre]","Alimentum is in the  ""city centre""."',
             '"name[Alimentum], area[city centre]","There is Alimentum in the city centre."']
    dev = ['mr,ref', f'"{E2E_MR}","Ref one."', '"name[Zizzi]","Zizzi is here."', f'"{E2E_MR}","Ref two."',
           f'"{E2E_MR}","Ref one."']
    test = ['mr,ref', '"name[Zizzi], food[Thai]","Zizzi serves Thai food."',
            '"name[Zizzi], food[Thai]","Thai food at Zizzi."']
    for name, lines in (("trainset", train), ("devset", dev), ("testset_w_refs", test)):
        _write(root / f"e2e/{name}.csv", "\n".join(lines) + "\n")


def _webnlg_entry(n: int, triples: list[tuple[str, str, str]], lexes: list[tuple[str, str]]) -> dict:
    entry = {"category": "Airport", "dbpediaLinks": [], "links": [], "shape": "(X (X))", "shape_type": "NA",
             "size": str(len(triples)), "xml_id": f"Id{n}", "originaltriplesets": {"originaltripleset": []},
             "modifiedtripleset": [{"subject": s, "property": p, "object": o} for s, p, o in triples],
             "lexicalisations": [{"comment": c, "lang": "", "lex": text, "xml_id": f"Id{k}"}
                                 for k, (text, c) in enumerate(lexes)]}
    return {str(n): entry}


ABILENE = [("Abilene,_Texas", "cityServed", "Abilene_Regional_Airport")]
AARHUS = [("Aarhus_Airport", "cityServed", '"Aarhus, Denmark"'),
          ("Aarhus_Airport", "elevationAboveTheSeaLevel", "25.0")]


def write_webnlg(root: Path) -> None:
    files = {
        "train": [_webnlg_entry(1, ABILENE, [("Abilene, Texas is served by the Abilene regional airport.", "good"),
                                             ("Abilene Regional Airport serves the city of Abilene in Texas.", "good"),
                                             ("Abilene  airport, bad text.", "toFix")]),
                  _webnlg_entry(2, AARHUS, [("Aarhus Airport serves Aarhus, Denmark.", "good")])],
        "dev": [_webnlg_entry(1, AARHUS, [("Aarhus airport is 25 metres above sea level.", "good"),
                                          ("The airport of Aarhus lies 25 metres high.", "")])],
        "test": [_webnlg_entry(1, ABILENE, [("Abilene is served by its airport.", "good")]),
                 _webnlg_entry(2, AARHUS, [("Aarhus airport serves Aarhus.", "good")])],
    }
    for split, entries in files.items():
        _write(root / f"webnlg/{split}.json", json.dumps({"entries": entries}))


# --- registry ---------------------------------------------------------------------------------

def test_registered_as_generation_tasks():
    assert set(QA_TASKS + NLG_TASKS) <= set(task_names())
    for name in QA_TASKS + NLG_TASKS:
        task = get_task(name)
        assert task.choices == () and not task.is_classification and task.splits_doc, name
        if name in QA_TASKS:
            assert (task.metric, task.extra_metrics, task.max_new_tokens) == ("squad_f1", ("squad_em",), 32)
        else:
            extra = ("ter", "rouge_l") if name == "webnlg" else ("rouge_l",)
            assert (task.metric, task.extra_metrics, task.max_new_tokens) == ("bleu", extra, 128)
    assert get_task("record").family == "superglue" and get_task("nq").family == "qa"
    assert get_task("e2e").family == "nlg"
    assert all(get_task(name).read_row is not None and get_task(name).input_fields for name in QA_TASKS + NLG_TASKS)
    assert "dev: those 1,000; test: official dev (10,570)" in get_task("squad").splits_doc
    assert "official MRQA dev (12,836)" in get_task("nq").splits_doc
    assert hub.HUB_IDS["squad"] == ("rajpurkar/squad", "plain_text")
    assert hub.HUB_IDS["record"] == ("aps/super_glue", "record")
    assert all(hub.HUB_IDS[n] == ("mrqa-workshop/mrqa", None) for n in MRQA)
    assert "webnlg" not in hub.HUB_IDS


# --- QA ---------------------------------------------------------------------------------------

def test_squad_format_labels_and_splits(tmp_path):
    write_squad(tmp_path)
    task = get_task("squad")
    train, dev, test = (task.load(tmp_path, s, 42) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (EXTRA, HELD_OUT, 6)
    first = test[0]
    assert first.input_text == ("question: Who appeared d0?\ncontext: Architecturally, the school d0 has a Catholic "
                                "character. Saint Bernadette appeared.\nAnswer:")
    assert first.target_text == "Saint Bernadette" and first.task == "squad"
    assert first.label == ("Saint Bernadette", "Bernadette", "Bernadette")  # all gold answers, whitespace-normalised
    assert all(e.label == (e.target_text,) for e in train + dev)  # train questions have one answer
    ids = lambda rows: {e.input_text for e in rows}  # noqa: E731
    assert not ids(train) & ids(dev) and len(ids(train) | ids(dev)) == HELD_OUT + EXTRA
    assert task.load(tmp_path, "dev", 42) == dev and task.load(tmp_path, "dev", 7) != dev


@pytest.mark.parametrize("name", sorted(MRQA))
def test_mrqa_format_and_splits(tmp_path, name):
    write_mrqa(tmp_path, MRQA[name])
    task = get_task(name)
    train, dev, test = (task.load(tmp_path, s, 0) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (EXTRA, HELD_OUT, 6)  # header line skipped, two questions per line
    assert test[1].input_text == ("question: who saw a vision 1\ncontext: [PAR] [TLE] Lourdes [SEP] Saint Bernadette "
                                  "saw a vision dev0 .\nAnswer:")
    assert test[1].target_text == "Saint Bernadette" and test[1].label == ("Saint Bernadette", "Bernadette Soubirous")
    other = next(n for n in MRQA if n != name)
    with pytest.raises(MptuneError, match=rf"mrqa/{MRQA[other]}/train\.jsonl\.gz does not exist"):
        get_task(other).load(tmp_path, "train")


def test_mrqa_download_layout(tmp_path):
    write_mrqa(tmp_path / "nested", "HotpotQA")
    write_mrqa(tmp_path / "download", "HotpotQA", layout="download")
    assert (tmp_path / "download/mrqa/train/HotpotQA.jsonl.gz").is_file()
    for split in ("train", "test"):
        assert get_task("hotpotqa").load(tmp_path / "download", split) == get_task("hotpotqa").load(
            tmp_path / "nested", split)


def test_record_format_labels_and_splits(tmp_path):
    write_record(tmp_path)
    task = get_task("record")
    train, dev, test = (task.load(tmp_path, s, 1) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (EXTRA, HELD_OUT, 4)
    ex = test[0]
    assert ex.input_text == ("query: @placeholder met the US president 10000\n"
                             "entities: Vatican, Pope Francis, Obama, Rome\n"  # distinct, in passage order
                             "passage: The Vatican said on Monday that Pope Francis met Obama. Pope Francis met Obama. "
                             "They talked in Rome\nAnswer:")
    assert ex.label == ("Francis", "Pope Francis") and ex.target_text == "Francis"  # distinct answers, sorted


# --- NLG --------------------------------------------------------------------------------------

def test_e2e_rows_and_grouped_references(tmp_path):
    write_e2e(tmp_path)
    task = get_task("e2e")
    train, dev, test = (task.load(tmp_path, s) for s in ("train", "dev", "test"))
    assert len(train) == 3 and all(len(e.label) == 1 for e in train)
    assert train[0] == Example(f"meaning: {E2E_MR}\nText:", "The Vaults pub near Café Adriatic has prices over £30.",
                               ("The Vaults pub near Café Adriatic has prices over £30.",), "e2e")
    assert train[1].target_text == 'Alimentum is in the "city centre".'  # CSV quotes undone, spaces normalised
    assert [(e.input_text, e.target_text, e.label) for e in dev] == [
        (f"meaning: {E2E_MR}\nText:", "Ref one.", ("Ref one.", "Ref two.")),  # one example per MR
        ("meaning: name[Zizzi]\nText:", "Zizzi is here.", ("Zizzi is here.",))]
    assert len(test) == 1 and test[0].label == ("Zizzi serves Thai food.", "Thai food at Zizzi.")


def test_webnlg_triples_lexicalisations_and_grouping(tmp_path):
    write_webnlg(tmp_path)
    task = get_task("webnlg")
    train, dev, test = (task.load(tmp_path, s) for s in ("train", "dev", "test"))
    abilene = "triples: Abilene, Texas : cityServed : Abilene Regional Airport\nText:"
    aarhus = ('triples: Aarhus Airport : cityServed : "Aarhus, Denmark" | '
              "Aarhus Airport : elevationAboveTheSeaLevel : 25.0\nText:")
    assert [(e.input_text, e.target_text) for e in train] == [
        (abilene, "Abilene, Texas is served by the Abilene regional airport."),
        (abilene, "Abilene Regional Airport serves the city of Abilene in Texas."),  # 'toFix' text dropped
        (aarhus, "Aarhus Airport serves Aarhus, Denmark.")]
    assert [(e.input_text, e.label) for e in dev] == [
        (aarhus, ("Aarhus airport is 25 metres above sea level.", "The airport of Aarhus lies 25 metres high."))]
    assert [e.label for e in test] == [("Abilene is served by its airport.",), ("Aarhus airport serves Aarhus.",)]


def test_few_shot_generation_tasks_sample_2k(tmp_path):
    write_squad(tmp_path)
    write_e2e(tmp_path)
    train = get_task("squad").load(tmp_path, "train", 42)
    few = get_task("squad@2").load(tmp_path, "train", 42)
    assert len(few) == 4 and {e.input_text for e in few} <= {e.input_text for e in train}
    assert {e.task for e in few} == {"squad@2"}
    assert get_task("squad@2").load(tmp_path, "train", 42) == few
    assert [e.input_text for e in get_task("squad@2").load(tmp_path, "dev", 42)] == \
        [e.input_text for e in get_task("squad").load(tmp_path, "dev", 42)]
    assert "4 uniformly" in get_task("squad@2").splits_doc
    assert len(get_task("e2e@1").load(tmp_path, "train")) == 2


# --- single rows (prediction) -----------------------------------------------------------------

def _unlabelled(obj, *keys: str):
    """A copy of a JSON object without the answer/reference fields `keys`, at any depth (a test row)."""
    if isinstance(obj, list):
        return [_unlabelled(v, *keys) for v in obj]
    if isinstance(obj, dict):
        return {k: _unlabelled(v, *keys) for k, v in obj.items() if k not in keys}
    return obj


def _rows(name: str) -> tuple[str, list[tuple[dict, slice]]]:
    """(what to write, [(a row by the official field names, the test examples it gives)]) of each task."""
    if name == "squad":
        paragraph = _squad_doc(6, 3, "d")["data"][0]["paragraphs"][1]
        flat = {"question": paragraph["qas"][1]["question"], "context": paragraph["context"], "id": "d3"}
        return "squad", [(paragraph, slice(2, 4)), (_unlabelled(paragraph, "answers"), slice(2, 4)),
                         (flat, slice(3, 4))]
    if name == "newsqa":
        line = _mrqa_lines("NewsQA", "dev", 6)[2]  # the second context: questions 2 and 3
        flat = {"question": line["qas"][0]["question"], "context": line["context"]}
        return "newsqa", [(line, slice(2, 4)), (_unlabelled(line, "answers", "detected_answers"), slice(2, 4)),
                          (flat, slice(2, 3))]
    if name == "record":
        row = _record_row(10_001)
        return "record", [(row, slice(1, 2)), (_unlabelled(row, "answers"), slice(1, 2))]
    if name == "e2e":
        return "e2e", [({"mr": "name[Zizzi], food[Thai]", "ref": "Thai food at Zizzi."}, slice(0, 1)),
                       ({"mr": "name[Zizzi],  food[Thai]"}, slice(0, 1))]
    entry = _webnlg_entry(2, AARHUS, [("Aarhus airport serves Aarhus.", "good")])["2"]
    return "webnlg", [(entry, slice(1, 2)), (_unlabelled(entry, "lexicalisations"), slice(1, 2))]


@pytest.mark.parametrize("name", ["squad", "newsqa", "record", "e2e", "webnlg"])
def test_read_row_gives_the_inputs_of_the_files_without_their_answers(tmp_path, name):
    """A row by the official field names (answers present or not) reads as the file reader reads its test examples."""
    {"squad": write_squad, "newsqa": lambda root: write_mrqa(root, "NewsQA"), "record": write_record,
     "e2e": write_e2e, "webnlg": write_webnlg}[name](tmp_path)
    task = get_task(name)
    test = task.load(tmp_path, "test")
    for row, expected in _rows(name)[1]:
        got = task.read_row(row, "in.jsonl", 3)
        assert [e.input_text for e in got] == [e.input_text for e in test[expected]], row
        assert all(e.label is None and e.target_text == "" and e.task == name for e in got)
    assert set(task.input_fields) & set(_rows(name)[1][0][0])


@pytest.mark.parametrize("name,row,words", [
    ("squad", {"question": "who ?"}, "in.jsonl line 2 has no field 'context'"),
    ("squad", {"context": "c", "qas": [{"id": "1"}]}, "in.jsonl line 2 qas[0] has no field 'question'"),
    ("nq", {"question": ["who"], "context": "c"}, "in.jsonl line 2 field 'question' is not a string"),
    ("record", {"passage": {"text": "Obama", "entities": [{"start": 0, "end": 9}]}, "qas": [{"query": "q"}]},
     "in.jsonl line 2 passage.entities[0] span 0..9 lies outside the passage"),
    ("record", {"passage": {"text": "Obama"}, "qas": []}, "in.jsonl line 2 has no field 'entities'"),
    ("e2e", {"ref": "x"}, "in.jsonl line 2 has no field 'mr'; task e2e reads mr"),
    ("e2e", {"mr": "  "}, "in.jsonl line 2 has an empty mr"),
    ("webnlg", {"modifiedtripleset": []}, "in.jsonl line 2 has an empty modifiedtripleset"),
])
def test_bad_single_rows_name_the_row_and_the_field(name, row, words):
    with pytest.raises(MptuneError) as err:
        get_task(name).read_row(row, "in.jsonl", 2)
    assert words in str(err.value), str(err.value)


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,rel", [("squad", "squad/train-v1.1.json"),
                                      ("nq", "mrqa/NaturalQuestionsShort/train.jsonl.gz"),
                                      ("record", "superglue/ReCoRD/train.jsonl"), ("e2e", "e2e/trainset.csv"),
                                      ("webnlg", "webnlg/train.json")])
def test_missing_file_names_it(tmp_path, name, rel):
    with pytest.raises(MptuneError, match=rf"{tmp_path}/{rel} does not exist"):
        get_task(name).load(tmp_path, "train")


def _squad_error(tmp_path: Path, doc) -> str:
    _write(tmp_path / "squad/dev-v1.1.json", doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(MptuneError) as err:
        get_task("squad").load(tmp_path, "test")
    return str(err.value)


def test_bad_squad_files(tmp_path):
    path = tmp_path / "squad/dev-v1.1.json"
    assert _squad_error(tmp_path, '{"data": [\n  {"title": }') == f"{path} line 2 is not valid JSON (Expecting value)."
    assert _squad_error(tmp_path, {"version": "1.1"}) == \
        f"{path} has no field 'data'; expected the official SQuAD v1.1 fields."
    doc = _squad_doc(4, 1, "d")
    del doc["data"][0]["paragraphs"][1]["qas"][1]["question"]
    assert _squad_error(tmp_path, doc) == (f"{path} data[0].paragraphs[1].qas[1] has no field 'question'; "
                                           "expected the official SQuAD v1.1 fields.")
    doc = _squad_doc(2, 1, "d")
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    assert "data[0].paragraphs[0].qas[0] has no gold answer" in _squad_error(tmp_path, doc)
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"] = {"text": "x"}
    assert "qas[0] field 'answers' is not a list" in _squad_error(tmp_path, doc)
    assert "is not a JSON object" in _squad_error(tmp_path, [1, 2])


def test_bad_mrqa_files(tmp_path):
    path = tmp_path / "mrqa/NewsQA/dev.jsonl.gz"
    _write(path, "not gzip at all")
    with pytest.raises(MptuneError, match=rf"{path} could not be read as the official MRQA 2019 JSONL"):
        get_task("newsqa").load(tmp_path, "test")
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(_jsonl(_mrqa_lines("NewsQA", "dev", 2)) + "{broken\n")
    with pytest.raises(MptuneError, match=rf"{path} line 3 is not valid JSON"):
        get_task("newsqa").load(tmp_path, "test")
    rows = _mrqa_lines("NewsQA", "dev", 2)
    del rows[1]["qas"][1]["answers"]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(_jsonl(rows))
    with pytest.raises(MptuneError, match=rf"{path} line 2 qas\[1\] has no field 'answers'"):
        get_task("newsqa").load(tmp_path, "test")


def test_bad_record_rows(tmp_path):
    path = tmp_path / "superglue/ReCoRD/val.jsonl"
    row = _record_row(0)
    row["passage"]["entities"][2] = {"start": 5, "end": 999}
    _write(path, _jsonl([_record_row(1), row]))
    with pytest.raises(MptuneError, match=rf"{path} line 2 passage.entities\[2\] span 5..999 lies outside the passage"):
        get_task("record").load(tmp_path, "test")
    row = _record_row(0)
    row["qas"][0]["answers"] = []
    _write(path, _jsonl([row]))
    with pytest.raises(MptuneError, match=rf"{path} line 1 qas\[0\] has no gold answer"):
        get_task("record").load(tmp_path, "test")
    _write(path, _jsonl([{"passage": {"text": "x", "entities": []}}]))
    with pytest.raises(MptuneError, match=rf"{path} line 1 has no field 'qas'"):
        get_task("record").load(tmp_path, "test")


def test_bad_e2e_files(tmp_path):
    write_e2e(tmp_path)
    path = tmp_path / "e2e/devset.csv"
    _write(path, 'mr,reference\n"name[Zizzi]","Zizzi."\n')
    with pytest.raises(MptuneError, match=rf"{path} has no column\(s\) ref"):
        get_task("e2e").load(tmp_path, "dev")
    _write(path, 'mr,ref\n"name[Zizzi]","Zizzi."\n"name[Zizzi]","a","b"\n')
    with pytest.raises(MptuneError, match=rf"{path} line 3 has 3 comma-separated fields; expected 2"):
        get_task("e2e").load(tmp_path, "dev")
    _write(path, 'mr,ref\n"name[Zizzi]",""\n')
    with pytest.raises(MptuneError, match=rf"{path} line 2 has an empty mr or ref"):
        get_task("e2e").load(tmp_path, "dev")


def test_bad_webnlg_files(tmp_path):
    path = tmp_path / "webnlg/test.json"
    _write(path, json.dumps({"entries": [_webnlg_entry(1, ABILENE, [("x", "good")]), {"2": {}, "3": {}}]}))
    with pytest.raises(MptuneError, match=rf"{path} entries\[1\] is not an object with one key"):
        get_task("webnlg").load(tmp_path, "test")
    entry = _webnlg_entry(1, ABILENE, [("x", "good")])
    del entry["1"]["modifiedtripleset"][0]["property"]
    _write(path, json.dumps({"entries": [entry]}))
    with pytest.raises(MptuneError,
                       match=rf"{path} entries\[0\]\['1'\].modifiedtripleset\[0\] has no field 'property'"):
        get_task("webnlg").load(tmp_path, "test")
    _write(path, '{"entries": [}')
    with pytest.raises(MptuneError, match=rf"{path} line 1 is not valid JSON"):
        get_task("webnlg").load(tmp_path, "test")


# --- the hub copies ---------------------------------------------------------------------------

def _squad_hub_rows(doc: dict) -> list[dict]:
    return [{"id": qa["id"], "title": article["title"], "context": p["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in doc["data"] for p in article["paragraphs"] for qa in p["qas"]]


def _mrqa_hub_rows(subset: str, lines: list[dict]) -> list[dict]:
    return [{"subset": subset, "context": line["context"].strip(), "context_tokens": {}, "qid": qa["qid"],
             "question": qa["question"], "question_tokens": {}, "detected_answers": {}, "answers": qa["answers"]}
            for line in lines[1:] for qa in line["qas"]]


def _record_hub_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        text = row["passage"]["text"]
        spans = sorted(({"text": text[e["start"]:e["end"] + 1], "start": e["start"], "end": e["end"]}
                        for e in row["passage"]["entities"]), key=lambda e: e["start"])
        for qa in row["qas"]:
            out.append({"passage": text, "query": qa["query"], "entities": list({s["text"] for s in spans}),
                        "entity_spans": {k: [s[k] for s in spans] for k in ("text", "start", "end")},
                        "answers": sorted({a["text"] for a in qa["answers"]}), "idx": {"passage": 0, "query": 0}})
    return out


def test_hub_rows_give_the_same_examples_as_the_official_files(tmp_path, monkeypatch):
    write_squad(tmp_path / "local", n_train=4)
    write_mrqa(tmp_path / "local", "SearchQA", n_train=4)
    write_record(tmp_path / "local", n_train=4)
    write_e2e(tmp_path / "local")
    hotpot = _mrqa_hub_rows("HotpotQA", _mrqa_lines("HotpotQA", "dev", 2))  # another subset: skipped
    cases = [
        ("squad", "validation", _squad_hub_rows(_squad_doc(6, 3, "d"))),
        ("searchqa", "validation", hotpot + _mrqa_hub_rows("SearchQA", _mrqa_lines("SearchQA", "dev", 6)) + hotpot),
        ("record", "validation", _record_hub_rows([_record_row(10_000 + i) for i in range(4)])),
        ("e2e", "test", [{"meaning_representation": "name[Zizzi], food[Thai]", "human_reference": ref}
                         for ref in ("Zizzi serves Thai food.", "Thai food at Zizzi.")]),
    ]
    for name, hub_split, rows in cases:
        expected = get_task(name).load(tmp_path / "local", "test")
        with monkeypatch.context() as m:
            calls = fake_hub(m, name, hub_split, rows)
            assert get_task(name).load(tmp_path / "empty", "test") == expected, name
            assert calls == [(*hub.HUB_IDS[name], hub_split)]


def test_hub_row_missing_field_names_the_row(tmp_path, monkeypatch):
    fake_hub(monkeypatch, "squad", "validation", [{"id": "1", "context": "c", "answers": {"text": ["a"]}}])
    with pytest.raises(MptuneError, match=r"rajpurkar/squad \(plain_text\) validation split row 1 has no field "
                                          r"'question'"):
        get_task("squad").load(tmp_path, "test")
