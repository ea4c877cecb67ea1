"""`mptune run` end to end with a generation target: tiny SQuAD-format data, the tiny Llama, tiny budgets."""

from __future__ import annotations

import json

from mptune.tasks.splits import HELD_OUT

from conftest import write_tiny_glue, write_tiny_squad
from test_cli import cli, flags


def test_run_with_a_squad_target(tmp_path, capsys, llama_dir):
    data = write_tiny_squad(write_tiny_glue(tmp_path / "data"), n_train=HELD_OUT + 12, n_dev=6)
    out = tmp_path / "run"
    argv = [*flags(out, llama_dir, data, "--data.eval_examples", "4"), "--targets", "squad"]
    code, stdout, err = cli(capsys, "run", *argv)
    assert code == 0, err
    table = json.loads((out / "results.json").read_text())
    assert table["targets"]["squad"]["metric"] == "squad_f1"
    assert all(0.0 <= table["targets"]["squad"][m] <= 100.0 for m in ("pt", "spot", "mpt"))
    assert "| squad | squad_f1 |" in (out / "results.md").read_text()
    scores = json.loads((out / "adapt" / "pt" / "squad" / "metrics.json").read_text())["scores"]["squad"]
    assert set(scores) == {"squad_f1", "squad_em", "empty_generations"} and 0 <= scores["empty_generations"] <= 4

    code, _, err = cli(capsys, "report", str(out))
    assert code == 0, err
    report = (out / "report" / "report.md").read_text()
    assert f"squad squad_f1 {scores['squad_f1']:.1f}, squad_em {scores['squad_em']:.1f}, " \
           f"empty_generations {scores['empty_generations']} |" in report  # invalid generations counted

    prompt = out / "adapt" / "mpt" / "squad" / "prompt.safetensors"
    code, stdout, err = cli(capsys, "evaluate", "--prompt", str(prompt), "--task", "squad", *argv)
    assert code == 0, err
    assert set(json.loads(stdout)) == {"squad_f1", "squad_em", "empty_generations"}
