"""`--dry-run` prints the plan of a training command without loading the model or writing anything;
`--preset paper` is the paper's T5-Base setting, whose plan is checked here on a CPU machine."""

from __future__ import annotations

import pytest

from mptune.config import RunConfig, with_overrides
from mptune.errors import MptuneError
from mptune.presets import PAPER_DISTILL_STEPS, PAPER_SOURCES, PAPER_TARGETS, preset

from test_cli import cli, flags


def _rows(out: str, stage: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith(f"| {stage} |")]


def test_paper_preset_dry_run_is_the_papers_plan_and_writes_nothing(tmp_path, capsys):
    out_dir = tmp_path / "paper"
    code, out, err = cli(capsys, "run", "--preset", "paper", "--dry-run", "--out_dir", str(out_dir))
    assert code == 0, err
    assert not out_dir.exists()  # nothing written, not even the run directory
    assert "model google-t5/t5-base on cuda" in out  # not loaded: tests run offline, the hub is unreachable
    assert "prompt length 100, rank 1" in out
    teach = _rows(out, "teach")
    assert [r[1] for r in teach] == PAPER_SOURCES
    assert all(r[2] == "30,000 x 32 (960,000 examples)" and r[3] == "0.3" for r in teach)
    assert all(r[4] == "best on dev every 1,000 steps (all examples per task)" for r in teach)
    (distill,) = _rows(out, "distill")
    assert distill[2].startswith(f"{PAPER_DISTILL_STEPS:,} x 32") and distill[3] == "0.3, u/v 0.03"
    adapt = _rows(out, "adapt")
    methods, seeds = ("pt", "spot", "spot-fixed", "mpt"), (0, 1, 2)
    assert [r[1] for r in adapt] == [f"{m}/seed{s}/{t}" for m in methods for s in seeds for t in PAPER_TARGETS]
    assert all(r[2] == "5,000 x 32 (160,000 examples)" and r[5] == "all test examples per task" for r in adapt)
    assert {r[3] for r in adapt if r[1].startswith("mpt/")} == {"0.3, u/v 0.03"}
    assert {r[6] for r in teach + adapt} == {"to train"}
    assert f"{len(teach) + 1 + len(adapt)} units, {len(teach) + 1 + len(adapt)} to train" in out


def test_flags_override_the_preset(tmp_path, capsys):
    code, out, err = cli(capsys, "teach", "--preset", "paper", "--dry-run", "--out_dir", str(tmp_path / "x"),
                         "--teach.steps", "10", "--sources", "mnli,rte")
    assert code == 0, err
    assert [r[1:3] for r in _rows(out, "teach")] == [[t, "10 x 32 (320 examples)"] for t in ("mnli", "rte")]
    assert not _rows(out, "adapt") and not _rows(out, "distill")  # teach plans its own stage only


def test_dry_run_marks_finished_units_and_leaves_the_run_untouched(tmp_path, capsys, llama_dir, data_dir):
    out_dir = tmp_path / "run"
    code, _, err = cli(capsys, "teach", *flags(out_dir, llama_dir, data_dir))
    assert code == 0, err
    before = {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    code, out, err = cli(capsys, "run", *flags(out_dir, llama_dir, data_dir), "--dry-run")
    assert code == 0, err
    assert {r[6] for r in _rows(out, "teach")} == {"done"}
    assert {r[6] for r in _rows(out, "distill") + _rows(out, "adapt")} == {"to train"}
    assert {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()} == before
    # other settings in the same directory: refused as the command itself would refuse them
    code, _, err = cli(capsys, "run", *flags(out_dir, llama_dir, data_dir), "--seed", "3", "--dry-run")
    assert code == 2 and "different config: seed: saved 0, now 3" in err
    assert {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()} == before


def test_dry_run_checks_the_settings_first(tmp_path, capsys):
    code, _, err = cli(capsys, "run", "--dry-run", "--out_dir", str(tmp_path / "x"), "--teach.steps", "0")
    assert code == 2 and "steps" in err and not (tmp_path / "x").exists()


def test_presets_in_python_and_unknown_names():
    cfg = with_overrides(RunConfig(), preset("paper"))
    assert cfg.sources == PAPER_SOURCES and cfg.targets == PAPER_TARGETS and cfg.compare.seeds == [0, 1, 2]
    assert cfg.prompt.length == 100 and cfg.model.name == "google-t5/t5-base"
    with pytest.raises(MptuneError, match="unknown preset 'papers'; known presets: paper"):
        preset("papers")
