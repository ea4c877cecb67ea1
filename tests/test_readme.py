"""The README's Python API snippet runs as written (on the tiny model and data, with tiny budgets)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import mptune
from mptune.config import RunConfig, TrainArgs

from test_cli import LENGTH

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_TASKS = {"sst2": "cola", "qnli": "rte", "qqp": "mrpc", "sst2@16": "cola@4", "rte": "rte"}
"""The snippet's tasks -> tasks of the tiny data (the snippet's target rte stays rte)."""


def python_api_snippet() -> str:
    """The first python block of the README section '## Python API'."""
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def tiny_run_config(model: Path, data_dir: Path):
    """RunConfig as the snippet calls it, turned into a tiny run: model, data, tasks, budgets."""
    def build(sources, targets, **settings) -> RunConfig:
        cfg = RunConfig(sources=[TINY_TASKS[t] for t in sources], targets=[TINY_TASKS[t] for t in targets],
                        **settings)
        budget = TrainArgs(steps=2, batch_size=2, warmup_steps=0)
        return dataclasses.replace(
            cfg, teach=budget, distill=budget, adapt=budget,
            model=dataclasses.replace(cfg.model, name=str(model), precision="fp32"),
            data=dataclasses.replace(cfg.data, data_dir=str(data_dir), eval_examples=4),
            prompt=dataclasses.replace(cfg.prompt, length=LENGTH))
    return build


def test_python_api_snippet_runs_as_written(tmp_path, monkeypatch, llama_dir, data_dir):
    code = python_api_snippet()
    assert "from mptune import RunConfig, load_backbone, stages" in code  # what the patch below relies on
    monkeypatch.setattr(mptune, "RunConfig", tiny_run_config(llama_dir, data_dir))
    monkeypatch.chdir(tmp_path)  # the snippet writes runs/api/ relative to the working directory
    names: dict = {}
    exec(compile(code, f"{README}:Python API", "exec"), names)

    run = tmp_path / "runs" / "api"
    assert names["cfg"].sources == ["cola", "rte", "mrpc"] and names["cfg"].targets == ["cola@4", "rte"]
    assert set(names["results"]) == {"pt", "spot", "mpt"}
    assert set(names["table"]["targets"]) == {"cola@4", "rte"} and "| rte | accuracy |" in names["markdown"]
    saved = json.loads((run / "adapt" / "mpt" / "rte" / "metrics.json").read_text())
    assert names["results"]["mpt"]["rte"]["scores"]["rte"]["accuracy"] == saved["scores"]["rte"]["accuracy"]
    assert (run / "report" / "report.md").is_file() and (run / "report" / "results.png").is_file()
