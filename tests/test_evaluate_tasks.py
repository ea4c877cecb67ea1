"""`mptune evaluate` (stages.evaluate_prompt) on every registered task, with the tiny Llama.

Tasks with files in the shared data are scored on them; the others on the fixture files the task
tests write in each dataset's official layout. The prompt is an untrained random one: the test
checks that loading, formatting, rank classification or generation and scoring run end to end
and give the task's metrics, not their values.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from mptune import stages
from mptune.checkpoint import save_prompt
from mptune.config import DataArgs, ModelArgs, RunConfig
from mptune.prompts import SoftPrompt
from mptune.tasks import get_task, task_names

from conftest import TINY_TASKS, write_tiny_glue
from test_tasks import _find_data
from test_tasks_generation import MRQA, write_e2e, write_mrqa, write_record, write_squad, write_webnlg
from test_tasks_others import WRITERS

GENERATION_WRITERS = {"squad": write_squad, "record": write_record, "e2e": write_e2e, "webnlg": write_webnlg,
                      **{name: lambda root, subset=subset: write_mrqa(root, subset) for name, subset in MRQA.items()}}
FIXTURE_TASKS = {*TINY_TASKS, *WRITERS, *GENERATION_WRITERS}
"""Scored on fixture files: no data for them in the shared data (rte, mrpc, cola, wnli: the tiny GLUE tree)."""
SHARED_TASKS = {"sst2", "qqp", "stsb", "mnli", "qnli", "boolq", "cb", "copa", "multirc", "rte_sg", "wsc"}


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> Path:
    root = write_tiny_glue(tmp_path_factory.mktemp("every-task"))
    for write in (*WRITERS.values(), *GENERATION_WRITERS.values()):
        write(root)
    return root


def test_every_task_is_covered():
    assert FIXTURE_TASKS | SHARED_TASKS == set(task_names()) and not FIXTURE_TASKS & SHARED_TASKS


@pytest.mark.parametrize("name", task_names())
def test_evaluate_works_on_every_task(name, fixture_data, llama_backbone, tmp_path):
    data = fixture_data if name in FIXTURE_TASKS else _find_data()
    if data is None:
        pytest.skip("no shared data: set MPTUNE_DATA_DIR or place it at ../shared/data next to the project")
    torch.manual_seed(0)
    prompt = save_prompt(SoftPrompt(0.02 * torch.randn(1, 4, llama_backbone.dim)), [name], tmp_path / "p.safetensors")
    cfg = RunConfig(data=DataArgs(data_dir=str(data), eval_examples=4))
    metrics = stages.evaluate_prompt(cfg, llama_backbone, str(prompt), name, "test")
    task = get_task(name)
    expected = [task.metric, *task.extra_metrics, *([] if task.is_classification else ["empty_generations"])]
    assert list(metrics) == expected and all(math.isfinite(v) for v in metrics.values())
    if not task.is_classification:
        assert 0 <= metrics["empty_generations"] <= 4


def test_evaluate_reads_no_train_file_and_warns_when_inputs_are_cut(tmp_path, llama_backbone, capsys):
    write_record(tmp_path, n_train=3, n_val=4)
    (tmp_path / "superglue/ReCoRD/train.jsonl").unlink()  # test = the official validation file alone
    prompt = save_prompt(SoftPrompt(torch.zeros(1, 4, llama_backbone.dim)), ["record"], tmp_path / "p.safetensors")
    cfg = RunConfig(model=ModelArgs(max_input_tokens=32), data=DataArgs(data_dir=str(tmp_path), eval_examples=0))
    assert stages.evaluate_prompt(cfg, llama_backbone, str(prompt), "record", "test")["empty_generations"] <= 4
    assert ("mptune: warning: task record: 4 of 4 test inputs reach model.max_input_tokens (32) and lose their "
            "middle") in capsys.readouterr().err
    stages.evaluate_prompt(cfg, llama_backbone, str(prompt), "record", "test")  # same cut again: said once
    assert "warning" not in capsys.readouterr().err
    cfg = dataclasses.replace(cfg, model=ModelArgs(max_input_tokens=512))
    stages.evaluate_prompt(cfg, llama_backbone, str(prompt), "record", "test")
    assert "warning" not in capsys.readouterr().err
