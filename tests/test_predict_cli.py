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
    assert "ReCoRD.jsonl (no prompt for task record)" in stdout and "CB.jsonl (no prompt for task cb)" in stdout


def write_record_test(root: Path) -> list[dict]:
    """An unlabelled superglue/ReCoRD/test.jsonl in the official layout: passage {text, entities (inclusive
    ends)}, qas [{query, idx}], idx; passage 0 has one query (idx 0), passage 1 two (idx 10, 11)."""
    text = f"{S1}\n@highlight\n{S2}"

    def entity(words: str) -> dict:
        start = text.index(words)
        return {"start": start, "end": start + len(words) - 1}

    passage = {"text": text, "entities": [entity("The cat"), entity("A dog")]}
    rows = [{"idx": p, "source": "Daily mail", "passage": passage,
             "qas": [{"query": f"@placeholder sees the ball {q}", "idx": 10 * p + q} for q in range(p + 1)]}
            for p in range(2)]
    (root / "superglue" / "ReCoRD").mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "superglue" / "ReCoRD" / "test.jsonl", rows)
    return rows


def test_record_leaderboard_file(tmp_path, capsys, llama_dir, llama_backbone):
    """ReCoRD.jsonl: one {"idx": the query's idx, "label": the generated answer} per query, as jiant writes it."""
    data = tmp_path / "data"
    rows = write_record_test(data)
    g = torch.Generator().manual_seed(4)
    prompt = save_prompt(SoftPrompt(vocab_init(llama_backbone.embeddings, 4, g) * 3), ["record"],
                         tmp_path / "record.safetensors")
    board = tmp_path / "superglue"
    code, stdout, err = cli(capsys, *base_flags(llama_dir, prompt, data, "--format", "superglue", "--out", str(board)))
    assert code == 0, err
    assert [p.name for p in board.iterdir()] == ["ReCoRD.jsonl"]
    assert "ReCoRD.jsonl: 2 rows" in stdout and "ReCoRD" not in stdout.split("still missing")[1]
    golden = [json.loads(x) for x in (GOLDEN / "superglue" / "ReCoRD.jsonl").read_text().splitlines()]
    lines = (board / "ReCoRD.jsonl").read_text().splitlines()
    got = [json.loads(x) for x in lines]
    assert [list(x) for x in got] == [list(golden[0])] * 3 == [["idx", "label"]] * 3
    assert [x["idx"] for x in got] == [0, 10, 11] and all(isinstance(x["label"], str) for x in got + golden)
    expected = Predictor(llama_backbone, file_prompts(prompt)).predict([{"task": "record", **r} for r in rows])
    assert [x["label"] for x in got] == [expected[0]["prediction"], *expected[1]["prediction"]]
    assert lines == [json.dumps({"idx": x["idx"], "label": x["label"]}) for x in got]  # one compact object a line
    write_jsonl(data / "superglue" / "ReCoRD" / "test.jsonl", [{**rows[0], "qas": [{"query": "@placeholder eats"}]}])
    code, _, err = cli(capsys, *base_flags(llama_dir, prompt, data, "--format", "superglue", "--out",
                                           str(tmp_path / "again")))
    assert_user_error(code, err, "superglue/ReCoRD/test.jsonl line 1 has no 'idx' in qas[0]", one_line=False)


# --- --seed: the prompts of one seed of a run directory ------------------------------------------

def seeded_run(root: Path, backbone) -> dict[int, dict[str, torch.Tensor]]:
    """A run directory whose targets rte and cola were adapted with PT once per seed (compare.seeds 1, 2):
    {seed: {target: its prompt}}."""
    from mptune.config import CompareArgs, RunConfig, save_yaml
    from mptune.rundir import PROMPT_FILE, RunDir

    cfg = RunConfig(sources=["rte"], targets=["rte", "cola"], out_dir=str(root),
                    compare=CompareArgs(methods=["pt"], seeds=[1, 2]))
    root.mkdir(parents=True)
    save_yaml(cfg, root / "config.yaml")
    run = RunDir(root, cfg.compare.seeds)
    g = torch.Generator().manual_seed(6)
    prompts = {seed: {t: vocab_init(backbone.embeddings, 4, g) * 3 for t in cfg.targets} for seed in (1, 2)}
    for seed, by_target in prompts.items():
        for target, prompt in by_target.items():
            save_prompt(SoftPrompt(prompt), [target], run.adapted("pt", target, seed) / PROMPT_FILE)
    return prompts


def test_seed_picks_one_seed_of_a_run_and_a_seed_it_lacks_is_one_error(tmp_path, capsys, llama_dir, data_dir,
                                                                       llama_backbone, prompt_file):
    from mptune.cli import main
    from mptune.predict import load_prompts

    run = tmp_path / "run"
    prompts = seeded_run(run, llama_backbone)
    for seed, chosen in ((None, 1), (1, 1), (2, 2)):  # the first seed by default
        loaded = load_prompts([run], method="pt", seed=seed)
        assert all(torch.equal(loaded[t], prompts[chosen][t]) for t in ("rte", "cola"))
    rows = [r for r in mixed_rows(8) if r["task"] != "mrpc"]
    source, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    flags = ["--prompts", str(run), "--method", "pt", "--model.name", str(llama_dir), "--model.precision", "fp32",
             "--data.data_dir", str(data_dir)]
    code, _, err = cli(capsys, "predict", *flags, "--seed", "2", "--input", str(source), "--out", str(out), "--scores")
    assert code == 0, err
    got = [json.loads(x) for x in out.read_text().splitlines()]
    for seed in (1, 2):
        expected = Predictor(llama_backbone, prompts[seed]).predict(rows, scores=True)
        close = all(abs(g["scores"][w] - e["scores"][w]) < 1e-4 for g, e in zip(got, expected) for w in e["scores"])
        assert close == (seed == 2)
    for command, extra in (("predict", ["--input", str(source), "--out", str(tmp_path / "o.jsonl")]), ("serve", [])):
        code, _, err = cli(capsys, command, *flags, "--seed", "7", *extra)
        assert_user_error(code, err, f"the run in {run} has no seed 7: it adapted its targets with seeds 1, 2")
        assert not (tmp_path / "o.jsonl").exists()
    code, _, err = cli(capsys, *base_flags(llama_dir, prompt_file, data_dir, "--seed", "1", "--input", str(source),
                                           "--out", str(tmp_path / "o.jsonl")))
    assert_user_error(code, err, "--seed 1 picks the prompts of one seed of a run directory, and --prompts names none")
    with pytest.raises(SystemExit) as stop:
        main(["predict", *flags, "--seed", "two", "--input", str(source), "--out", str(tmp_path / "o.jsonl")])
    assert stop.value.code == 2 and "argument --seed: invalid int value: 'two'" in capsys.readouterr().err
