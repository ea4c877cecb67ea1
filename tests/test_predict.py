"""`Predictor`: predictions on raw rows equal `mptune evaluate`'s on the same prompts and inputs, mixed-task
batches included, on the tiny Llama and T5; bad rows are one clear error."""

from __future__ import annotations

import csv
import dataclasses
import random
from pathlib import Path

import pytest
import torch

from mptune.checkpoint import load_prompt, save_prompt
from mptune.config import RunConfig
from mptune.errors import MptuneError
from mptune.evaluate import choice_scores, scores_of
from mptune.predict import Predictor, file_prompts
from mptune.prompts import SoftPrompt, vocab_init
from mptune.stages import evaluate_prompt
from mptune.task_data import load_tasks
from mptune.tasks import get_task, registry, superglue
from mptune.tasks.custom import CustomTaskSpec, register_custom

TASKS = ("rte", "mrpc", "cola", "wnli")
FOLDERS = {"rte": "RTE", "mrpc": "MRPC", "cola": "CoLA", "wnli": "WNLI"}
MULTI = "multiword"
"""A custom task whose label words are several tokens: it is scored in its own group of a mixed batch."""


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))


def random_prompts(backbone, names, length: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: vocab_init(backbone.embeddings, length, g) * 3 for n in names}


def official_rows(data_dir: Path, task: str) -> list[dict]:
    """dev.tsv of a tiny GLUE task by header name, as the official test files are read (CoLA is headerless
    there: its rows get the test file's header, index and sentence)."""
    path = data_dir / "glue" / FOLDERS[task] / "dev.tsv"
    with path.open(encoding="utf-8-sig", newline="") as fh:
        if task == "cola":
            return [{"index": i, "sentence": r[3]} for i, r in enumerate(csv.reader(fh, delimiter="\t"))]
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_rows_of(data_dir: Path, task: str, cfg: RunConfig) -> list[dict]:
    """The raw rows of a task's test split (the split `mptune evaluate` scores), in its order."""
    t = get_task(task)
    by_text = {t.read_row(r, "dev.tsv", i)[0].input_text: r for i, r in enumerate(official_rows(data_dir, task))}
    return [{"task": task, **by_text[e.input_text]} for e in t.load(data_dir, "test", cfg.data.split_seed)]


test_rows_of.__test__ = False


def multiword_task(tmp_path: Path) -> None:
    rows = ["text,label"] + [f"the cat sees a dog today number {i},{'ab'[i % 2]}" for i in range(12)]
    (tmp_path / "mw.csv").write_text("\n".join(rows) + "\n")
    register_custom(CustomTaskSpec(name=MULTI, train=tmp_path / "mw.csv", test=tmp_path / "mw.csv",
                                   text_columns=("text",), label_column="label",
                                   label_words={"a": "the cat", "b": "a dog today"}))


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_predictions_equal_evaluate_on_mixed_batches(family, request, data_dir, tmp_path):
    backbone = request.getfixturevalue(f"{family}_backbone")
    multiword_task(tmp_path)
    names = [*TASKS, MULTI]
    prompts = random_prompts(backbone, names)
    cfg = RunConfig(sources=["rte"], targets=["rte"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data_dir), eval_examples=0))
    rows = {t: test_rows_of(data_dir, t, cfg) for t in TASKS}
    rows[MULTI] = [{"task": MULTI, "text": e.input_text.split("\n")[0][len("text: "):]}
                   for e in get_task(MULTI).load(data_dir, "test", cfg.data.split_seed)]
    mixed = [(t, i) for t in names for i in range(len(rows[t]))]
    random.Random(0).shuffle(mixed)
    predictor = Predictor(backbone, prompts, batch_size=5)  # every batch mixes tasks
    out = predictor.predict([rows[t][i] for t, i in mixed], scores=True)
    got = {t: [None] * len(rows[t]) for t in names}
    for (t, i), o in zip(mixed, out):
        assert o["task"] == t
        got[t][i] = o
    for task in names:
        path = save_prompt(SoftPrompt(prompts[task]), [task], tmp_path / f"{task}.safetensors")
        data = load_tasks(cfg, backbone, [task], "test", prompt_length=4, with_train=False)[0]
        choices = data.task.choices
        index = [choices.index(o["prediction"]) for o in got[task]]
        assert scores_of(data.task, index, data.eval_labels) == evaluate_prompt(cfg, backbone, str(path), task, "test")
        expected = choice_scores(backbone, lambda ids: prompts[task].expand(len(ids), -1, -1), data.eval, choices)
        scores = torch.tensor([[o["scores"][c] for c in choices] for o in got[task]])
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
        assert index == expected.argmax(-1).tolist()


def squad_test_rows(data_dir: Path, cfg: RunConfig) -> list[dict]:
    """The raw rows ({"task", "question", "context"}) of the tiny SQuAD's test split, in its order."""
    import json

    doc = json.loads((data_dir / "squad" / "dev-v1.1.json").read_text())
    flat = [{"task": "squad", "question": qa["question"], "context": p["context"]}
            for article in doc["data"] for p in article["paragraphs"] for qa in p["qas"]]
    task = get_task("squad")
    by_text = {task.read_row(r, "dev", 1)[0].input_text: r for r in flat}
    return [by_text[e.input_text] for e in task.load(data_dir, "test", cfg.data.split_seed)]


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_generation_predictions_equal_evaluate_alone_and_mixed_with_classification(family, request, tmp_path,
                                                                                    data_dir):
    """A generation task predicts on raw rows the texts `mptune evaluate` generates on the same inputs (same
    metric), and the same texts when its rows share calls and batches with a classification task's."""
    from mptune.evaluate import predictions
    from mptune.tasks.splits import HELD_OUT

    from conftest import write_tiny_squad

    backbone = request.getfixturevalue(f"{family}_backbone")
    data = write_tiny_squad(tmp_path / "data", n_train=HELD_OUT + 2, n_dev=6)
    cfg = RunConfig(sources=["rte"], targets=["squad"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data), eval_examples=0))
    prompts = random_prompts(backbone, ["squad", "rte"], seed=4)
    rows = squad_test_rows(data, cfg)
    got = Predictor(backbone, {"squad": prompts["squad"]}, cfg.model.max_input_tokens).predict(rows, scores=True)
    assert [o["task"] for o in got] == ["squad"] * 6 and all(list(o) == ["task", "prediction"] for o in got)
    texts = [o["prediction"] for o in got]
    loaded = load_tasks(cfg, backbone, ["squad"], "test", prompt_length=4, with_train=False)[0]
    assert texts == predictions(backbone, lambda ids: prompts["squad"].expand(len(ids), -1, -1), loaded.task,
                                loaded.eval)
    assert any(texts)  # random prompts still generate something to compare
    path = save_prompt(SoftPrompt(prompts["squad"]), ["squad"], tmp_path / "squad.safetensors")
    assert scores_of(loaded.task, texts, loaded.eval_labels) == evaluate_prompt(cfg, backbone, str(path), "squad",
                                                                                "test")
    rte = test_rows_of(data_dir, "rte", cfg)
    mixed = [r for pair in zip(rte, rows) for r in pair]
    both = Predictor(backbone, prompts, cfg.model.max_input_tokens, batch_size=4).predict(mixed)
    alone = Predictor(backbone, {"rte": prompts["rte"]}, cfg.model.max_input_tokens).predict(rte)
    assert [o["prediction"] for o in both if o["task"] == "squad"] == texts
    assert [o["prediction"] for o in both if o["task"] == "rte"] == [o["prediction"] for o in alone]


def test_predictor_reads_prompt_files_and_describes_its_tasks(llama_backbone, tmp_path):
    prompts = random_prompts(llama_backbone, ["rte", "cola@4"])
    module = SoftPrompt(torch.stack(list(prompts.values())))
    path = save_prompt(module, list(prompts), tmp_path / "p.safetensors")
    loaded = file_prompts(path, llama_backbone.dim)
    assert list(loaded) == ["rte", "cola@4"] and torch.equal(loaded["rte"], prompts["rte"])
    predictor = Predictor(llama_backbone, loaded)
    tasks = {d["task"]: d for d in predictor.describe()}
    assert set(tasks) == {"rte", "cola"} and tasks["cola"]["prompt"] == "cola@4"
    assert tasks["rte"]["fields"] == ["sentence1", "sentence2"] and tasks["rte"]["label_words"] == ["yes", "no"]
    assert tasks["rte"]["parameters"] == 4 * llama_backbone.dim
    out = predictor.predict([{"task": "cola@4", "sentence": "The cat sees the ball ."},
                             {"sentence1": "A dog eats .", "sentence2": "A dog eats again ."}], default_task="rte")
    assert [o["task"] for o in out] == ["cola", "rte"] and out[1]["prediction"] in ("yes", "no")
    assert "scores" not in out[0]


@pytest.mark.parametrize("row,words", [
    ({"task": "sst2", "sentence": "x"}, ["task 'sst2'", "no prompt here", "rte, cola"]),
    ({"sentence1": "x", "sentence2": "y"}, ["names no task", "'task'"]),
    ({"task": "rte", "sentence1": "x"}, ["no field 'sentence2'", "rte reads sentence1, sentence2"]),
    ({"task": "rte", "sentence1": "x", "sentence2": {"a": 1}}, ["field 'sentence2'", "expected text"]),
    (["rte", "x"], ["not an object"]),
])
def test_bad_rows_are_one_clear_error(llama_backbone, row, words):
    predictor = Predictor(llama_backbone, random_prompts(llama_backbone, ["rte", "cola"]))
    with pytest.raises(MptuneError) as err:
        predictor.predict([row], where="in.jsonl")
    assert "in.jsonl line 1" in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_bad_prompts_are_refused(llama_backbone):
    d = llama_backbone.dim
    with pytest.raises(MptuneError, match="lengths"):
        Predictor(llama_backbone, {"rte": torch.zeros(4, d), "cola": torch.zeros(5, d)})
    with pytest.raises(MptuneError, match="two prompts for task cola"):
        Predictor(llama_backbone, {"cola": torch.zeros(4, d), "cola@4": torch.zeros(4, d)})
    with pytest.raises(MptuneError, match=r"expected \[l, 32\]"):
        Predictor(llama_backbone, {"rte": torch.zeros(4, 8)})
    registry.TASKS["noreader"] = dataclasses.replace(get_task("rte"), name="noreader", read_row=None)
    with pytest.raises(MptuneError, match="task noreader cannot read single rows .* every built-in task and every "
                                          "custom task can"):
        Predictor(llama_backbone, {"noreader": torch.zeros(4, d)})
    with pytest.raises(MptuneError, match="positions"):
        Predictor(llama_backbone, {"rte": torch.zeros(500, d)})


def test_prompts_of_a_run_directory(llama_backbone, tmp_path):
    from mptune.config import save_yaml
    from mptune.predict import load_prompts, run_config
    from mptune.prompts import MultitaskPrompt
    from mptune.rundir import PROMPT_FILE, RunDir

    cfg = RunConfig(sources=["rte"], targets=["cola@4", "wnli"], out_dir=str(tmp_path))
    save_yaml(cfg, tmp_path / "config.yaml")
    run = RunDir(tmp_path)
    shared = random_prompts(llama_backbone, ["p"])["p"]
    g = torch.Generator().manual_seed(1)
    for target in cfg.targets:
        u, v = torch.rand(1, 4, 1, generator=g), torch.rand(1, 1, llama_backbone.dim, generator=g)
        save_prompt(MultitaskPrompt(shared, 1, 1, u, v), [target], run.adapted("mpt", target) / PROMPT_FILE)
        save_prompt(SoftPrompt(shared), [target], run.adapted("pt", target) / PROMPT_FILE)
    assert run_config([str(tmp_path)]) == tmp_path / "config.yaml"
    mpt = load_prompts([tmp_path], llama_backbone.dim)
    assert list(mpt) == ["cola@4", "wnli"] and not torch.equal(mpt["wnli"], shared)
    module, _ = load_prompt(run.adapted("mpt", "wnli") / PROMPT_FILE)
    torch.testing.assert_close(mpt["wnli"], module.task_prompts()[0].detach())
    assert torch.equal(load_prompts([tmp_path], method="pt")["cola@4"], shared)
    with pytest.raises(MptuneError, match="not spot-fixed"):
        load_prompts([tmp_path], method="spot-fixed")
    (run.adapted("mpt", "wnli") / PROMPT_FILE).unlink()
    with pytest.raises(MptuneError, match="target wnli .* has no mpt prompt yet"):
        load_prompts([tmp_path])


SUPERGLUE_ROWS = {
    "boolq": {"passage": "A dog eats.", "question": "does a dog eat", "label": True},
    "cb": {"premise": "A dog eats.", "hypothesis": "A cat eats.", "label": "neutral"},
    "copa": {"premise": "A dog eats.", "question": "cause", "choice1": "a", "choice2": "b", "label": 1},
    "rte_sg": {"premise": "A dog eats.", "hypothesis": "A cat eats.", "label": "not_entailment"},
    "wic": {"word": "eats", "sentence1": "A dog eats.", "sentence2": "A cat eats.", "label": False},
    "wsc": {"text": "A dog eats.", "target": {"span1_text": "A dog", "span2_text": "it"}, "label": True},
    "multirc": {"idx": 3, "passage": {"text": "A dog eats.", "questions": [
        {"question": "who eats ?", "idx": 0,
         "answers": [{"text": "a dog", "label": 1}, {"text": "a cat", "label": 0}]}]}},
}


@pytest.mark.parametrize("name", sorted(SUPERGLUE_ROWS))
def test_superglue_rows_read_the_same_without_their_labels(name):
    """`read_row` of an unlabelled test row gives the labelled row's inputs, and the inputs the reader of the
    task's splits gives."""
    import json

    task, row = get_task(name), SUPERGLUE_ROWS[name]
    labelled = task.read_row(row, "val.jsonl", 1)  # a label present is ignored
    unlabelled = json.loads(json.dumps(row))
    unlabelled.pop("label", None)
    for q in unlabelled["passage"]["questions"] if name == "multirc" else []:
        for a in q["answers"]:
            a.pop("label")
    got = task.read_row(unlabelled, "test.jsonl", 1)
    assert [e.input_text for e in got] == [e.input_text for e in labelled]
    assert len(got) == (2 if name == "multirc" else 1)
    assert all(e.label is None and e.target_text == "" for e in got + labelled)
    assert set(task.input_fields) <= set(row)
    split_reader = {"boolq": superglue.read_boolq, "copa": superglue.read_copa, "wic": superglue.read_wic,
                    "wsc": superglue.read_wsc, "multirc": superglue.read_multirc}.get(name)
    if split_reader is None:  # the premise/hypothesis tasks
        split_reader = superglue.pair_task("premise", "hypothesis", superglue.CB_LABELS if name == "cb"
                                           else superglue.RTE_LABELS, superglue.ENTAIL)
    assert [text for text, _ in split_reader(row, "val.jsonl", 1)] == [e.input_text for e in got]


def test_padded_batches_split_where_padding_would_exceed_the_share():
    from mptune.data import padded_batches

    assert padded_batches([10] * 70, 32) == [(0, 32), (32, 64), (64, 70)]  # evaluation's fixed batches
    assert padded_batches([100, 90, 20, 20, 10], 32, 0.3) == [(0, 2), (2, 5)]
    assert padded_batches([100, 90, 20, 20, 10], 32) == [(0, 5)]
    assert padded_batches([5, 5, 5], 2, 0.0) == [(0, 2), (2, 3)] and padded_batches([], 4) == []


def test_split_batches_predict_what_fixed_batches_predict(llama_backbone):
    rows = [{"task": "rte", "sentence1": "The cat sees the ball ." * k, "sentence2": "A dog eats ."} for k in (1, 9)]
    rows += [{"task": "cola", "sentence": "The man takes a book ."}] * 3
    prompts = random_prompts(llama_backbone, ["rte", "cola"])
    fixed = Predictor(llama_backbone, prompts).predict(rows, scores=True)
    split = Predictor(llama_backbone, prompts, max_padding=0.2).predict(rows, scores=True)
    assert [o["prediction"] for o in split] == [o["prediction"] for o in fixed]
    for a, b in zip(split, fixed):
        assert all(abs(a["scores"][w] - b["scores"][w]) < 1e-4 for w in a["scores"])
