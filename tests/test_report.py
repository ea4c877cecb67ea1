"""Step logs (log.jsonl, TensorBoard events) and `mptune report` on tiny runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mptune.cli import main
from mptune.errors import MptuneError
from mptune.logs import StepLog, read_log, summary_writer_class
from mptune.report import write_report
from mptune.rundir import RunDir

from test_cli import SOURCES, TARGETS, assert_user_error, cli, flags

UNITS = [f"teach/{s}" for s in SOURCES] + ["distill"] + [f"adapt/{m}/{t}" for m in ("pt", "spot", "mpt")
                                                          for t in TARGETS]
PLOTS = ("teach.png", "distill.png", "adapt.png", "results.png")


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard log directory, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    rows = read_log(path)
    return {key: [(r["step"], r[key]) for r in rows] for key in rows[0] if key != "step"}


def assert_same_series(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key in ours:
        assert [s for s, _ in theirs[key]] == [s for s, _ in ours[key]], key
        assert [v for _, v in theirs[key]] == pytest.approx([v for _, v in ours[key]], rel=1e-6, abs=1e-7), key


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, saved_models, data_dir) -> Path:
    """A whole tiny run (teach, distill, adapt, table) with TensorBoard logging on."""
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["run", *flags(out, saved_models["llama"], data_dir, "--loggers", "tensorboard")]) == 0
    return out


def test_tensorboard_scalars_match_the_jsonl_log(tiny_run):
    for unit in UNITS:
        ours = jsonl_series(tiny_run / unit / "log.jsonl")
        assert_same_series(ours, scalars(tiny_run / "tensorboard" / unit))
    assert {"loss", "ce", "kl", "mse", "lr", "examples_per_s"} == set(jsonl_series(tiny_run / "distill" / "log.jsonl"))


def test_resumed_step_log_replaces_the_tensorboard_steps_after_the_checkpoint(tmp_path):
    run = RunDir(tmp_path, loggers=("tensorboard",))
    unit = run.teacher("rte")
    unit.mkdir(parents=True)
    assert run.tensorboard_dir(unit) == tmp_path / "tensorboard" / "teach" / "rte"
    log = StepLog(unit / "log.jsonl", tensorboard=run.tensorboard_dir(unit))
    for step in range(1, 5):
        log.write(step, 4, 0.1, loss=torch.tensor(10.0 + step))
    log.close()
    # killed after step 4, resumed from the step-2 checkpoint by a later process (event files are read
    # in name order, which starts with the writer's creation time in seconds)
    time.sleep(1.1)
    log = StepLog(unit / "log.jsonl", kept_steps=2, tensorboard=run.tensorboard_dir(unit))
    for step in (3, 4):
        log.write(step, 4, 0.1, loss=torch.tensor(20.0 + step))
    log.close()
    assert [r["loss"] for r in read_log(unit / "log.jsonl")] == [11.0, 12.0, 23.0, 24.0]
    assert_same_series(jsonl_series(unit / "log.jsonl"), scalars(tmp_path / "tensorboard" / "teach" / "rte"))


def test_step_log_outside_a_run_writes_jsonl_only(tmp_path):
    log = StepLog(tmp_path / "log.jsonl")
    log.write(1, 4, 0.1, loss=torch.tensor(1.0))
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_missing_tensorboard_is_one_clear_error(tmp_path, monkeypatch, capsys, llama_dir, data_dir):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(MptuneError, match=r"pip install 'mptune\[tensorboard\]'"):
        summary_writer_class()
    argv = flags(tmp_path / "run", llama_dir, data_dir, "--sources", "rte")
    code, _, err = cli(capsys, "teach", *argv, "--loggers", "tensorboard")
    assert_user_error(code, err, "pip install 'mptune[tensorboard]'")
    code, _, err = cli(capsys, "teach", *argv)  # no logger selected: trains and logs to log.jsonl
    assert code == 0, err
    assert len(read_log(tmp_path / "run" / "teach" / "rte" / "log.jsonl")) == 3
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_loggers_do_not_change_a_runs_identity(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte")
    assert cli(capsys, "teach", *argv)[0] == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["loggers"]  # a run directory made before the setting existed
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = cli(capsys, "teach", *argv, "--loggers", "tensorboard")
    assert code == 0, err
    code, _, err = cli(capsys, "teach", *argv, "--loggers", "wandb")
    assert_user_error(code, err, "loggers must be among tensorboard")


def test_report_of_a_whole_run(tiny_run, capsys):
    code, stdout, err = cli(capsys, "report", str(tiny_run))
    assert code == 0, err
    report = tiny_run / "report"
    assert str(report / "report.md") in stdout
    markdown = (report / "report.md").read_text()
    for plot in PLOTS:
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in markdown
    assert (tiny_run / "results.md").read_text().strip() in markdown
    assert "Every unit is finished." in markdown
    table = json.loads((tiny_run / "results.json").read_text())
    assert f"| adapt | 6 of 6 | {table['seconds']['adapt']} |" in markdown
    mpt = json.loads((tiny_run / "adapt" / "mpt" / "cola" / "metrics.json").read_text())
    assert f"| adapt/mpt/cola | done | 3 | {mpt['train_seconds']} | {mpt['train_examples_per_s']} |" in markdown
    assert f"| {mpt['parameters']:,} |" in markdown


def test_report_of_a_partial_run_says_what_is_missing(tmp_path, capsys, llama_dir, data_dir):
    out = tmp_path / "run"
    assert cli(capsys, "teach", *flags(out, llama_dir, data_dir))[0] == 0
    (out / "distill").mkdir()
    (out / "distill" / "log.jsonl").write_text('{"step": 1, "loss": 2.0, "ce": 1.0, "kl": 0.5, "mse": 0.5}\n{"st')
    markdown = write_report(out).read_text()
    assert (out / "report" / "teach.png").is_file() and (out / "report" / "distill.png").is_file()
    assert not (out / "report" / "adapt.png").exists() and not (out / "report" / "results.png").exists()
    assert "- distill: in progress (1 of 3 steps)" in markdown
    assert "- adapt/mpt/wnli: missing" in markdown and "results.json: not written yet" in markdown
    assert "| teach | 2 of 2 |" in markdown and "No target is finished yet." in markdown


def test_adapt_plot_of_a_partial_run_has_a_panel_per_started_target(tmp_path, capsys, llama_dir, data_dir):
    """Targets with no adapt log yet get no empty panel (targets cola, wnli; only cola started)."""
    out = tmp_path / "run"
    assert cli(capsys, "teach", *flags(out, llama_dir, data_dir))[0] == 0
    (out / "adapt" / "pt" / "cola").mkdir(parents=True)
    (out / "adapt" / "pt" / "cola" / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    write_report(out)
    from matplotlib.image import imread

    height, width = imread(out / "report" / "adapt.png").shape[:2]
    assert width == 5.0 * 110 and height == round(4.2 * 110)  # one panel of new_figure(1, width=5.0) at 110 dpi


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    code, _, err = cli(capsys, "report", str(tmp_path))
    assert_user_error(code, err, "not an mptune run directory", str(tmp_path))
    code, _, err = cli(capsys, "report", str(tmp_path / "nowhere"))
    assert_user_error(code, err, "does not exist")


def test_report_of_a_run_with_target_seeds(tmp_path, capsys, llama_dir, data_dir):
    """compare.seeds nests adapt units by seed; the report finds all of them and reads the mean table."""
    out = tmp_path / "seeds"
    code, _, err = cli(capsys, "run", *flags(out, llama_dir, data_dir, "--compare.seeds", "3,4",
                                             "--compare.methods", "pt,mpt"))
    assert code == 0, err
    code, _, err = cli(capsys, "report", str(out))
    assert code == 0, err
    markdown = (out / "report" / "report.md").read_text()
    assert "Every unit is finished." in markdown and "| adapt | 8 of 8 |" in markdown
    for seed in (3, 4):
        assert f"| adapt/pt/seed{seed}/cola | done | 3 |" in markdown
    assert (out / "results.md").read_text().strip() in markdown and " ± " in markdown
    assert (out / "report" / "results.png").is_file() and (out / "report" / "adapt.png").is_file()
    # before results.json, with seed 4 unfinished: seed 3's table and intervals, not seed 4's scores
    (out / "results.json").unlink()
    (out / "adapt" / "mpt" / "seed4" / "cola" / "metrics.json").unlink()
    markdown = write_report(out).read_text()
    pt = json.loads((out / "adapt" / "pt" / "seed3" / "cola" / "metrics.json").read_text())["scores"]["cola"]
    assert "The seeds finished so far (1 of 2; no results.json yet)" in markdown and "| MPT - PT |" in markdown
    assert f"| cola | matthews | {pt['matthews']:.1f} |" in markdown and "1 seed(s)" in markdown
