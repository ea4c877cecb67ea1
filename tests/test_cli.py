"""The `mptune` command end to end on tiny saved models and tiny GLUE data: every stage, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mptune.checkpoint import load_prompt
from mptune.cli import main
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.tasks import get_task

SOURCES, TARGETS = ["rte", "mrpc"], ["cola", "wnli"]
LENGTH, DIM = 4, 32  # prompt length in these tests; hidden size of the tiny models


def flags(out_dir: Path, model: Path, data_dir: Path, *extra: str) -> list[str]:
    """Settings of a tiny run: tiny budgets, tiny prompt, the tiny data and model."""
    argv = ["--model.name", str(model), "--model.precision", "fp32", "--data.data_dir", str(data_dir),
            "--sources", ",".join(SOURCES), "--targets", ",".join(TARGETS), "--prompt.length", str(LENGTH),
            "--out_dir", str(out_dir)]
    for stage in ("teach", "distill", "adapt"):
        argv += [f"--{stage}.steps", "3", f"--{stage}.batch_size", "4", f"--{stage}.warmup_steps", "0"]
    return argv + list(extra)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *words: str, one_line: bool = True) -> None:
    """Exit status 2 and one error line `mptune: error: ...` naming `words`, last on stderr, no traceback.

    one_line: stderr holds nothing else (errors found before the model is loaded; loading it prints
    a progress bar).
    """
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("mptune: error: "), err
    assert sum("error" in line for line in lines) == 1, err
    if one_line:
        assert len(lines) == 1, err
    for w in words:
        assert w in lines[-1]


def assert_unit(folder: Path, steps: int = 3) -> dict:
    """A finished unit: prompt, metrics and a per-step log."""
    for name in ("prompt.safetensors", "metrics.json", "log.jsonl"):
        assert (folder / name).is_file(), folder / name
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, steps + 1))
    return json.loads((folder / "metrics.json").read_text())


def unit_mtimes(out_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(out_dir)): p.stat().st_mtime_ns
            for p in out_dir.rglob("*") if p.name in ("metrics.json", "prompt.safetensors", "log.jsonl")}


# --- every stage on its own --------------------------------------------------------------------

def test_stages_one_by_one_then_run_resumes(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir)

    code, stdout, err = cli(capsys, "teach", *argv)
    assert code == 0, err
    assert set(json.loads(stdout)) == set(SOURCES)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["sources"] == SOURCES and saved["teach"]["steps"] == 3 and saved["prompt"]["length"] == LENGTH
    for name in SOURCES:
        metrics = assert_unit(out / "teach" / name)
        assert metrics["parameters"] == LENGTH * DIM
        assert 0 <= metrics["scores"][name]["accuracy"] <= 100
        module, tasks = load_prompt(out / "teach" / name / "prompt.safetensors", DIM)
        assert isinstance(module, SoftPrompt) and tasks == [name] and module.length == LENGTH

    code, stdout, err = cli(capsys, "distill", *argv)
    assert code == 0, err
    metrics = assert_unit(out / "distill")
    assert set(SOURCES) <= set(metrics["scores"])
    log = json.loads((out / "distill" / "log.jsonl").read_text().splitlines()[0])
    assert {"loss", "ce", "kl", "mse"} <= set(log)
    module, tasks = load_prompt(out / "distill" / "prompt.safetensors", DIM)
    assert isinstance(module, MultitaskPrompt) and tasks == SOURCES and module.num_tasks == 2

    code, stdout, err = cli(capsys, "adapt", *argv)
    assert code == 0, err
    results = json.loads(stdout)
    assert set(results) == {"pt", "spot", "mpt"}
    for method in ("pt", "spot", "mpt"):
        for target in TARGETS:
            metrics = assert_unit(out / "adapt" / method / target)
            assert target in metrics["scores"]
    assert json.loads((out / "adapt" / "spot" / "cola" / "metrics.json").read_text())["spot_source"] in SOURCES
    assert json.loads((out / "adapt" / "mpt" / "cola" / "metrics.json").read_text())["parameters"] == \
        LENGTH * DIM + LENGTH + DIM
    assert not (out / "results.md").exists()

    prompt = out / "adapt" / "mpt" / "cola" / "prompt.safetensors"
    code, stdout, err = cli(capsys, "evaluate", "--prompt", str(prompt), "--task", "cola", *argv)
    assert code == 0, err
    assert set(json.loads(stdout)) == {"matthews"}
    code, stdout, err = cli(capsys, "evaluate", "--prompt", str(out / "teach" / "rte" / "prompt.safetensors"),
                            "--task", "rte", "--split", "dev", *argv)
    assert code == 0, err
    assert 0 <= json.loads(stdout)["accuracy"] <= 100

    # `run` on the same directory and config finds every unit done and only writes the table
    before = unit_mtimes(out)
    code, stdout, err = cli(capsys, "run", *argv)
    assert code == 0, err
    assert unit_mtimes(out) == before
    assert (out / "results.md").is_file() and (out / "results.json").is_file()


def test_run_writes_table_and_resumes(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir)
    code, stdout, err = cli(capsys, "run", *argv)
    assert code == 0, err
    assert (out / "config.yaml").is_file()
    for name in SOURCES:
        assert_unit(out / "teach" / name)
    assert_unit(out / "distill")
    for method in ("pt", "spot", "mpt"):
        for target in TARGETS:
            assert_unit(out / "adapt" / method / target)

    markdown = (out / "results.md").read_text()
    assert "| target | metric | PT | SPOT | MPT |" in markdown
    assert "| cola | matthews |" in markdown and "| wnli | accuracy |" in markdown and "**average**" in markdown
    assert markdown in stdout
    table = json.loads((out / "results.json").read_text())
    assert set(table["targets"]) == set(TARGETS)
    assert set(table["targets"]["cola"]) == {"metric", "pt", "spot", "mpt"}
    assert table["parameters"] == {"pt": LENGTH * DIM, "spot": LENGTH * DIM, "mpt": LENGTH * DIM + LENGTH + DIM}
    assert set(table["seconds"]) >= {"teach", "distill", "adapt", "total"}
    for method in ("pt", "spot", "mpt"):
        scores = [table["targets"][t][method] for t in TARGETS]
        assert table["average"][method] == pytest.approx(sum(scores) / len(scores))
    # the sources: teacher and P* scores as their units recorded them, beside the majority-label score
    for name in SOURCES:
        unit = json.loads((out / "teach" / name / "metrics.json").read_text())
        distilled = json.loads((out / "distill" / "metrics.json").read_text())
        row, metric = table["sources"][name], get_task(name).metric
        assert row["teacher"] == unit["scores"][name][metric] and row["distilled"] == distilled["scores"][name][metric]
        labels = json.loads((out / "teach" / name / "predictions.json").read_text())[name]["labels"]
        if metric == "accuracy":
            assert row["majority"] == pytest.approx(100 * max(map(labels.count, set(labels))) / len(labels))
        assert f"| {name} | {metric} | {row['teacher']:.1f} | {row['distilled']:.1f} |" in markdown
        gap = row["above_majority"]  # teacher minus the majority label, with its interval
        if metric == "accuracy":
            assert gap["diff"] == pytest.approx(row["teacher"] - row["majority"], abs=0.01)
        assert gap["low"] <= gap["diff"] <= gap["high"]
        assert f"{gap['diff']:+.1f} [{gap['low']:+.1f}, {gap['high']:+.1f}]" in markdown

    # a rerun skips every finished unit
    before = unit_mtimes(out)
    code, _, err = cli(capsys, "run", *argv)
    assert code == 0, err
    assert unit_mtimes(out) == before
    assert json.loads((out / "results.json").read_text())["targets"] == table["targets"]

    # an interrupted unit (no metrics.json) is trained again; the others are not
    (out / "adapt" / "pt" / "wnli" / "metrics.json").unlink()
    code, _, err = cli(capsys, "run", *argv)
    assert code == 0, err
    after = unit_mtimes(out)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == {f"adapt/pt/wnli/{n}" for n in ("metrics.json", "prompt.safetensors", "log.jsonl")}


def test_joint_target_adaptation(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "joint"
    code, stdout, err = cli(capsys, "run", *flags(out, llama_dir, data_dir, "--compare.joint", "true",
                                                  "--compare.methods", "pt,mpt"))
    assert code == 0, err
    metrics = assert_unit(out / "adapt" / "mpt-joint")
    assert set(TARGETS) <= set(metrics["scores"])
    assert metrics["parameters"] == LENGTH * DIM + (LENGTH + DIM) * len(TARGETS)
    module, tasks = load_prompt(out / "adapt" / "mpt-joint" / "prompt.safetensors", DIM)
    assert isinstance(module, MultitaskPrompt) and tasks == TARGETS and module.num_tasks == 2
    assert not (out / "adapt" / "mpt" / "cola").exists() and not (out / "adapt" / "spot").exists()
    table = json.loads((out / "results.json").read_text())
    assert table["parameters"]["mpt"] == metrics["parameters"]
    assert "| target | metric | PT | MPT |" in (out / "results.md").read_text()
    assert "all 2 targets" in (out / "results.md").read_text()

    # the merged l x d prompts score exactly like P* o u v^T
    merged = out / "adapt" / "mpt-joint" / "merged.safetensors"
    soft, merged_tasks = load_prompt(merged, DIM)
    assert isinstance(soft, SoftPrompt) and merged_tasks == TARGETS
    base = flags(out, llama_dir, data_dir, "--compare.joint", "true", "--compare.methods", "pt,mpt")
    scores = [json.loads(cli(capsys, "evaluate", "--prompt", str(path), "--task", TARGETS[1], *base)[1])
              for path in (merged, out / "adapt" / "mpt-joint" / "prompt.safetensors")]
    assert scores[0] == scores[1]


def test_repeated_few_shot_targets_report_mean_and_std(tmp_path, capsys, llama_dir, data_dir):
    """compare.seeds: one adaptation per seed (own k-shot sample and init), table cells 'mean ± std'."""
    out = tmp_path / "seeds"
    argv = flags(out, llama_dir, data_dir, "--targets", "cola,rte@4", "--compare.seeds", "3,4")
    code, stdout, err = cli(capsys, "run", *argv)
    assert code == 0, err
    for method in ("pt", "spot", "mpt"):
        for seed in (3, 4):
            for target in ("cola", "rte@4"):
                assert_unit(out / "adapt" / method / f"seed{seed}" / target)
    table = json.loads((out / "results.json").read_text())
    for method in ("pt", "spot", "mpt"):
        runs = [json.loads((out / "adapt" / method / f"seed{s}" / "rte@4" / "metrics.json").read_text())
                ["scores"]["rte@4"]["accuracy"] for s in (3, 4)]
        assert table["targets"]["rte@4"][method] == pytest.approx((runs[0] + runs[1]) / 2)
        assert table["targets"]["rte@4"]["std"][method] == pytest.approx(abs(runs[0] - runs[1]) / 2 ** 0.5)
    assert set(table["average_std"]) == {"pt", "spot", "mpt"}
    markdown = (out / "results.md").read_text()
    assert "| rte@4 | accuracy | " in markdown and markdown.count(" ± ") == 3 * 3  # 2 targets + average
    # each seed trained a different prompt (own init and sample)
    prompts = [load_prompt(out / "adapt" / "pt" / f"seed{s}" / "rte@4" / "prompt.safetensors")[0].prompt
               for s in (3, 4)]
    assert not prompts[0].equal(prompts[1])


def test_seq2seq_run(tmp_path, capsys, saved_models, data_dir):
    out = tmp_path / "t5"
    code, stdout, err = cli(capsys, "run", *flags(out, saved_models["t5"], data_dir))
    assert code == 0, err
    for name in SOURCES:
        assert_unit(out / "teach" / name)
    assert_unit(out / "distill")
    for method in ("pt", "spot", "mpt"):
        for target in TARGETS:
            assert_unit(out / "adapt" / method / target)
    assert "| target | metric | PT | SPOT | MPT |" in (out / "results.md").read_text()


def test_config_file_with_flag_overrides(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "from-yaml"
    settings = {"sources": ["rte"], "targets": ["wnli"], "out_dir": str(out), "seed": 3,
                "model": {"name": str(llama_dir), "precision": "fp32"}, "data": {"data_dir": str(data_dir)},
                "prompt": {"length": 2}, "teach": {"steps": 2, "batch_size": 4, "warmup_steps": 0}}
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    code, _, err = cli(capsys, "teach", "--config", str(path), "--seed", "5", "--teach.steps", "4")
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 5 and saved["teach"]["steps"] == 4 and saved["prompt"]["length"] == 2
    assert saved["teach"]["batch_size"] == 4 and saved["distill"]["steps"] == 150
    assert_unit(out / "teach" / "rte", steps=4)


# --- user errors: status 2, one line, no traceback ---------------------------------------------

def test_different_config_on_same_dir_is_refused(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir, "--sources", "rte"))
    assert code == 0, err
    saved = (out / "config.yaml").read_text()
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir, "--sources", "rte", "--seed", "1"))
    assert_user_error(code, err, "different config", str(out))
    assert (out / "config.yaml").read_text() == saved
    code, _, err = cli(capsys, "run", *flags(out, llama_dir, data_dir, "--prompt.length", "5"))
    assert_user_error(code, err, "different config")

    # a config.yaml written before a setting existed still matches (the setting takes its default)
    data = yaml.safe_load(saved)
    del data["compare"]["seeds"]
    (out / "config.yaml").write_text(yaml.safe_dump(data))
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir, "--sources", "rte"))
    assert code == 0, err

    # and one written by an earlier version, under the earlier names (sections mpt and target)
    data = yaml.safe_load(saved)
    data["target"] = data.pop("compare")
    loss = {k: v for k, v in data.pop("loss").items() if k != "hidden_positions"}  # a later setting
    data["mpt"] = {**loss, "kappa": data["data"].pop("kappa")}
    (out / "config.yaml").write_text(yaml.safe_dump(data))
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir, "--sources", "rte"), "--resume")
    assert code == 0, err
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir, "--sources", "rte", "--mpt.lam", "0.5"))
    assert_user_error(code, err, "different config")


def test_resume_flag_continues_an_interrupted_run_and_refuses_when_there_is_none(tmp_path, capsys, llama_dir,
                                                                                   data_dir, monkeypatch):
    import torch

    import mptune.train as train_loop
    from mptune.cli import build_parser
    from mptune.resume import STATE_FILE, read_state

    assert all(build_parser().parse_args([c, "--resume"]).resume for c in ("run", "teach", "distill", "adapt"))
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte", "--teach.steps", "6", "--teach.checkpoint_every", "2")
    code, _, err = cli(capsys, "teach", *argv, "--resume")
    assert_user_error(code, err, "nothing to resume", f"{out} does not exist", "drop --resume")
    assert not out.exists()
    out.mkdir()
    code, _, err = cli(capsys, "teach", *argv, "--resume")
    assert_user_error(code, err, "nothing to resume", f"{out} holds no run (no config.yaml)")

    real = train_loop.check_finite

    def interrupted_at_step_5(loss, stage, step, tasks=()):  # Ctrl-C after the step-4 checkpoint
        if step == 5:
            raise KeyboardInterrupt
        real(loss, stage, step, tasks)

    monkeypatch.setattr(train_loop, "check_finite", interrupted_at_step_5)
    assert cli(capsys, "teach", *argv)[0] == 130
    monkeypatch.undo()
    assert read_state(out / "teach" / "rte" / STATE_FILE)["step"] == 4
    code, _, err = cli(capsys, "teach", "--config", str(out / "config.yaml"), "--resume")  # the saved settings
    assert code == 0, err
    clean = tmp_path / "clean"
    assert cli(capsys, "teach", *flags(clean, llama_dir, data_dir, "--sources", "rte", "--teach.steps", "6"))[0] == 0
    prompts = [load_prompt(d / "teach" / "rte" / "prompt.safetensors")[0].prompt for d in (out, clean)]
    assert torch.equal(*prompts)

    code, _, err = cli(capsys, "teach", *argv, "--seed", "3", "--resume")
    assert_user_error(code, err, "different config", str(out))


def test_unknown_task(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "run", *flags(out, llama_dir, data_dir, "--targets", "cola,nosuchtask"))
    assert_user_error(code, err, "nosuchtask")
    # the typo leaves nothing behind that would block the corrected command
    assert not (out / "config.yaml").exists()
    code, _, err = cli(capsys, "teach", *flags(out, llama_dir, data_dir, "--sources", "rte"))
    assert code == 0, err


def test_missing_data_dir(tmp_path, capsys, llama_dir):
    missing = tmp_path / "no-data"
    code, _, err = cli(capsys, "teach", *flags(tmp_path / "run", llama_dir, missing))
    assert_user_error(code, err, str(missing))
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_missing_model_dir(tmp_path, capsys, data_dir):
    code, _, err = cli(capsys, "teach", *flags(tmp_path / "run", tmp_path / "no-model", data_dir))
    assert code == 2 and "Traceback" not in err
    assert "model directory" in err and str(tmp_path / "no-model") in err


def test_bad_setting_values(tmp_path, capsys, llama_dir, data_dir):
    code, _, err = cli(capsys, "teach", *flags(tmp_path / "run", llama_dir, data_dir, "--data.kappa", "1"))
    assert_user_error(code, err, "kappa")
    code, _, err = cli(capsys, "teach", *flags(tmp_path / "run", llama_dir, data_dir, "--teach.steps", "many"))
    assert_user_error(code, err, "teach.steps")
    code, _, err = cli(capsys, "teach", "--config", str(tmp_path / "none.yaml"))
    assert_user_error(code, err, "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teach:\n  stepz: 3\n")
    code, _, err = cli(capsys, "teach", "--config", str(bad))
    assert_user_error(code, err, "teach.stepz")


def test_unknown_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["teach", "--teach.stepz", "3"])
    assert exit_info.value.code == 2
    assert "--teach.stepz" in capsys.readouterr().err


def test_evaluate_errors(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte")
    assert cli(capsys, "teach", *argv)[0] == 0
    prompt = out / "teach" / "rte" / "prompt.safetensors"
    code, _, err = cli(capsys, "evaluate", "--prompt", str(prompt), "--task", "cola", *argv)
    assert_user_error(code, err, "rte", "cola")
    missing = tmp_path / "none.safetensors"
    code, _, err = cli(capsys, "evaluate", "--prompt", str(missing), "--task", "rte", *argv)
    assert_user_error(code, err, str(missing))


# --- help and the task list --------------------------------------------------------------------

def test_tasks_command(capsys):
    from mptune.tasks import task_names

    code, out, err = cli(capsys, "tasks")
    assert code == 0
    assert "| task | family | metrics | label words | splits | files (under the data dir) | hub copy |" in out
    rows = {line.split(" | ")[0][2:]: line for line in out.splitlines() if line.startswith("| ")}
    assert set(task_names()) <= set(rows)
    assert all(row.count(" | ") == 6 for name, row in rows.items() if name in task_names())
    assert rows["mnli"].endswith("| glue/MNLI/{train.tsv,dev_matched.tsv,dev_mismatched.tsv} "
                                 "| nyu-mll/glue (mnli) @bcdcba79d07b |")
    assert "| accuracy, f1 | no, yes |" in rows["qqp"] and "| f1, question_em |" in rows["multirc"]
    assert "| squad/{train-v1.1.json,dev-v1.1.json} | rajpurkar/squad (plain_text) @7b6d24c440a3 |" in rows["squad"]
    assert rows["webnlg"].endswith("| webnlg/{train.json,dev.json,test.json} | none |")
    assert "NAME@K" in out


def test_help_shows_field_docstrings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["teach", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--teach.steps" in out and "Optimizer steps." in out and "--data.kappa" in out
    assert "5% faster than fp32" in " ".join(out.split())  # a docstring's "%" is text, not a format field


def test_custom_task_from_yaml_as_a_target(tmp_path, capsys, llama_dir, data_dir, monkeypatch):
    from mptune.tasks import registry

    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    rows = [("the movie was good", "yes"), ("the movie was bad", "no")] * 15
    (tmp_path / "mine.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    (tmp_path / "mine.yaml").write_text("name: mine\ntrain: mine.csv\ntext_columns: [text]\n"
                                        "label_column: label\nlabel_words: {no: no, yes: yes}\n")
    out = tmp_path / "custom"
    argv = flags(out, llama_dir, data_dir, "--targets", "mine", "--compare.methods", "pt",
                 "--data.custom_tasks", str(tmp_path / "mine.yaml"))
    code, _, err = cli(capsys, "run", *argv)
    assert code == 0, err
    assert "mine" in json.loads((out / "results.json").read_text())["targets"]
    prompt = out / "adapt" / "pt" / "mine" / "prompt.safetensors"
    code, stdout, err = cli(capsys, "evaluate", "--prompt", str(prompt), "--task", "mine", *argv)
    assert code == 0, err
    assert "accuracy" in json.loads(stdout)
