"""`mptune predict` end to end: mixed-task JSONL and CSV in input order, resuming an interrupted file, bad
input as one error line, and the GLUE/SuperGLUE leaderboard files in their exact format (tests/golden/)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mptune.checkpoint import save_prompt
from mptune.predict import Predictor, file_prompts
from mptune.prompts import SoftPrompt, vocab_init

from test_cli import assert_user_error, cli

GOLDEN = Path(__file__).parent / "golden"
TASKS = ["rte", "cola", "mrpc", "rte_sg", "boolq", "multirc"]
S1, S2 = "The cat sees the ball today .", "A dog eats some bread again ."


@pytest.fixture
def prompt_file(tmp_path, llama_backbone) -> Path:
    g = torch.Generator().manual_seed(3)
    table = torch.stack([vocab_init(llama_backbone.embeddings, 4, g) * 3 for _ in TASKS])
    return save_prompt(SoftPrompt(table), TASKS, tmp_path / "prompts.safetensors")


def base_flags(llama_dir: Path, prompt: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["predict", "--prompts", str(prompt), "--model.name", str(llama_dir), "--model.precision", "fp32",
            "--data.data_dir", str(data_dir), *extra]


def mixed_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"task": "rte", "idx": i, "sentence1": S1, "sentence2": f"{S2} number {i}"})
        elif i % 3 == 1:
            rows.append({"task": "cola", "sentence": f"{S1} {'again ' * i}"})
        else:
            rows.append({"task": "mrpc", "#1 String": S2, "#2 String": f"{S1} {i}"})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_predict_mixed_jsonl_and_csv_in_input_order(tmp_path, capsys, llama_dir, data_dir, prompt_file,
                                                    llama_backbone):
    rows = mixed_rows(11)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, stdout, err = cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--input", str(source),
                                                "--out", str(out), "--scores", "--predict.chunk", "4",
                                                "--predict.batch_size", "3"))
    assert code == 0, err
    assert "predictions of 11 rows written" in stdout
    got = [json.loads(line) for line in out.read_text().splitlines()]
    expected = Predictor(llama_backbone, file_prompts(prompt_file)).predict(rows, scores=True)
    assert [g["line"] for g in got] == list(range(1, 12)) and [g["task"] for g in got] == [r["task"] for r in rows]
    assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
    assert got[0]["id"] == 0 and "id" not in got[1] and set(got[0]["scores"]) == {"yes", "no"}
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.progress.json"))

    table = tmp_path / "out.csv"
    code, _, err = cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--input", str(source),
                                           "--out", str(table)))
    assert code == 0, err
    with table.open() as fh:
        lines = list(csv.DictReader(fh))
    assert list(lines[0]) == ["line", "id", "task", "prediction", "scores"]
    assert [r["prediction"] for r in lines] == [e["prediction"] for e in expected] and lines[0]["scores"] == ""

    before = out.read_bytes()
    code, stdout, _ = cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--input", str(source),
                                              "--out", str(out)))
    assert code == 0 and "nothing to do" in stdout and out.read_bytes() == before


def test_a_damaged_line_stops_with_one_error_and_the_fixed_file_resumes(tmp_path, capsys, llama_dir, data_dir,
                                                                        prompt_file):
    rows = mixed_rows(9)
    whole = write_jsonl(tmp_path / "whole.jsonl", rows)
    reference = tmp_path / "reference.jsonl"
    assert cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--input", str(whole), "--out",
                                   str(reference)))[0] == 0
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, [*rows[:5], '{"task": "rte", "sentence1": ', *rows[6:]])
    flags = base_flags(llama_dir, prompt_file, data_dir, "--input", str(source), "--out", str(out),
                       "--predict.chunk", "2")
    code, _, err = cli(capsys, *flags)
    assert_user_error(code, err, "in.jsonl line 6 is not valid JSON", one_line=False)
    assert not out.exists()
    partial = tmp_path / "out.jsonl.partial"
    assert [json.loads(x)["line"] for x in partial.read_text().splitlines()] == [1, 2, 3, 4]
    write_jsonl(source, rows)  # fixed
    code, stdout, err = cli(capsys, *flags)
    assert code == 0, err
    assert "(4 saved by an earlier run)" in stdout
    assert out.read_text() == reference.read_text() and not partial.exists()


@pytest.mark.parametrize("row,words", [
    ({"task": "sst2", "sentence": S1}, ["in.jsonl line 2", "task 'sst2'", "no prompt here"]),
    ({"task": "rte", "sentence1": S1}, ["in.jsonl line 2", "no field 'sentence2'"]),
])
def test_bad_rows_are_one_error_line_and_keep_what_was_saved(tmp_path, capsys, llama_dir, data_dir, prompt_file,
                                                             row, words):
    source = write_jsonl(tmp_path / "in.jsonl", [mixed_rows(1)[0], row])
    out = tmp_path / "out.jsonl"
    out_flags = base_flags(llama_dir, prompt_file, data_dir, "--input", str(source), "--out", str(out),
                           "--predict.chunk", "1")
    code, _, err = cli(capsys, *out_flags)
    assert_user_error(code, err, *words, one_line=False)
    assert len((tmp_path / "out.jsonl.partial").read_text().splitlines()) == 1


def test_bad_arguments_are_refused_before_the_model_loads(tmp_path, capsys, llama_dir, data_dir, prompt_file):
    source = write_jsonl(tmp_path / "in.jsonl", mixed_rows(2))
    code, _, err = cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--input", str(source), "--out",
                                           str(tmp_path / "out.txt")))
    assert_user_error(code, err, "out.txt must end in .jsonl or .csv")
    code, _, err = cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--out", str(tmp_path / "o.jsonl")))
    assert_user_error(code, err, "needs --input")
    code, _, err = cli(capsys, *base_flags(llama_dir, tmp_path / "none.safetensors", data_dir, "--input",
                                           str(source), "--out", str(tmp_path / "o.jsonl")))
    assert_user_error(code, err, "none.safetensors does not exist")


# --- leaderboard files ---------------------------------------------------------------------------

def write_test_files(root: Path) -> Path:
    """Unlabelled test files in the official layouts for GLUE RTE, CoLA and SuperGLUE RTE, BoolQ, MultiRC, AX-b."""
    (root / "glue" / "RTE").mkdir(parents=True)
    (root / "glue" / "CoLA").mkdir(parents=True)
    (root / "glue" / "RTE" / "test.tsv").write_text(
        "index\tsentence1\tsentence2\n" + "".join(f"{i}\t{S1}\t{S2} {i}\n" for i in range(5)))
    (root / "glue" / "CoLA" / "test.tsv").write_text(
        "index\tsentence\n" + "".join(f"{i}\t{S1} {'again ' * i}\n" for i in range(4)))
    sg = root / "superglue"
    for folder in ("RTE", "BoolQ", "MultiRC", "AX-b"):
        (sg / folder).mkdir(parents=True)
    write_jsonl(sg / "RTE" / "test.jsonl", [{"premise": S1, "hypothesis": f"{S2} {i}", "idx": i} for i in range(3)])
    write_jsonl(sg / "AX-b" / "AX-b.jsonl", [{"sentence1": S2, "sentence2": f"{S1} {i}", "idx": i} for i in range(3)])
    write_jsonl(sg / "BoolQ" / "test.jsonl", [{"passage": S1, "question": f"who sees {i}", "idx": i}
                                              for i in range(3)])
    answers = lambda n: [{"text": f"the cat {j}", "idx": j} for j in range(n)]  # noqa: E731
    write_jsonl(sg / "MultiRC" / "test.jsonl", [
        {"idx": p, "passage": {"text": S1, "questions": [{"question": "who ?", "idx": q, "answers": answers(q + 2)}
                                                         for q in range(2)]}} for p in range(2)])
    return root


LABELS = {"RTE.tsv": {"entailment", "not_entailment"}, "CoLA.tsv": {"0", "1"},
          "RTE.jsonl": {"entailment", "not_entailment"}, "AX-b.jsonl": {"entailment", "not_entailment"},
          "BoolQ.jsonl": {"true", "false"}, "MultiRC.jsonl": {0, 1}}


def test_glue_leaderboard_files(tmp_path, capsys, llama_dir, prompt_file):
    data = write_test_files(tmp_path / "data")
    board = tmp_path / "glue"
    code, stdout, err = cli(capsys, *base_flags(llama_dir, prompt_file, data, "--format", "glue", "--out",
                                                str(board)))
    assert code == 0, err
    assert sorted(p.name for p in board.iterdir()) == ["CoLA.tsv", "RTE.tsv"]
    for name, rows in (("RTE.tsv", 5), ("CoLA.tsv", 4)):
        golden = (GOLDEN / "glue" / name).read_text().splitlines()
        lines = (board / name).read_text().splitlines()
        assert lines[0] == golden[0] == "index\tprediction"
        cells = [line.split("\t") for line in lines[1:]]
        assert [c[0] for c in cells] == [str(i) for i in range(rows)] and all(len(c) == 2 for c in cells)
        assert {c[1] for c in cells} <= LABELS[name] and {g.split("\t")[1] for g in golden[1:]} <= LABELS[name]
    assert "glue files still missing: SST-2.tsv (no prompt for task sst2); MRPC.tsv (no test file" in stdout
    assert "AX.tsv (no prompt for task mnli)" in stdout
    rte_out = tmp_path / "rte.jsonl"  # the same rows through the row format: the same predictions, as label strings
    cli(capsys, *base_flags(llama_dir, prompt_file, data, "--input", str(data / "glue/RTE/test.tsv"), "--task", "rte",
                            "--out", str(rte_out)))
    words = [json.loads(line)["prediction"] for line in rte_out.read_text().splitlines()]
    official = {"yes": "entailment", "no": "not_entailment"}
    assert [line.split("\t")[1] for line in (board / "RTE.tsv").read_text().splitlines()[1:]] == \
        [official[w] for w in words]
    code, stdout, _ = cli(capsys, *base_flags(llama_dir, prompt_file, data, "--format", "glue", "--out", str(board)))
    assert code == 0 and "RTE.tsv: already there, kept" in stdout


def test_superglue_leaderboard_files(tmp_path, capsys, llama_dir, prompt_file):
    data = write_test_files(tmp_path / "data")
    board = tmp_path / "superglue"
    code, stdout, err = cli(capsys, *base_flags(llama_dir, prompt_file, data, "--format", "superglue", "--out",
                                                str(board)))
    assert code == 0, err
    assert sorted(p.name for p in board.iterdir()) == ["AX-b.jsonl", "BoolQ.jsonl", "MultiRC.jsonl", "RTE.jsonl"]
    for name in ("RTE.jsonl", "AX-b.jsonl", "BoolQ.jsonl"):
        golden = [json.loads(x) for x in (GOLDEN / "superglue" / name).read_text().splitlines()]
        got = [json.loads(x) for x in (board / name).read_text().splitlines()]
        assert [list(g) for g in got] == [list(golden[0])] * 3 == [["idx", "label"]] * 3
        assert [g["idx"] for g in got] == [0, 1, 2]
        assert {g["label"] for g in got} <= LABELS[name] and {g["label"] for g in golden} <= LABELS[name]
    golden = json.loads((GOLDEN / "superglue" / "MultiRC.jsonl").read_text().splitlines()[0])
    got = [json.loads(x) for x in (board / "MultiRC.jsonl").read_text().splitlines()]
    assert [g["idx"] for g in got] == [0, 1]
    for paragraph in got:
        assert list(paragraph) == list(golden) and list(paragraph["passage"]) == list(golden["passage"])
        questions = paragraph["passage"]["questions"]
        assert [q["idx"] for q in questions] == [0, 1] and [len(q["answers"]) for q in questions] == [2, 3]
        for q in questions:
            assert [list(a) for a in q["answers"]] == [["idx", "label"]] * len(q["answers"])
            assert [a["idx"] for a in q["answers"]] == list(range(len(q["answers"])))
            assert {a["label"] for a in q["answers"]} <= LABELS["MultiRC.jsonl"]
    assert "ReCoRD.jsonl (mptune has no task for it)" in stdout and "CB.jsonl (no prompt for task cb)" in stdout
