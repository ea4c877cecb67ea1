"""Model selection on dev (TrainArgs.eval_every): the unit ends with the best-scoring prompt of its
evaluation steps, the choice survives a resume, and it is scored on the dev split only."""

from __future__ import annotations

import json

import pytest
import torch

import mptune.train as train_loop
from mptune import stages
from mptune.config import DataArgs, RunConfig, TrainArgs
from mptune.data import encode
from mptune.errors import MptuneError
from mptune.prompts import SoftPrompt
from mptune.stages import train_plm
from mptune.task_data import TaskData
from mptune.tasks import get_task

ARGS = TrainArgs(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=2, eval_every=2)


def _data(backbone, data_dir):
    rows = get_task("rte").load(data_dir, "train", 42)
    enc = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, 0)
    return [TaskData(get_task("rte"), enc, enc[:4], [r.label for r in rows[:4]])]


def _prompt(backbone):
    return SoftPrompt(torch.randn(1, 3, backbone.dim, generator=torch.Generator().manual_seed(1)) * 0.1)


def test_the_best_scoring_evaluation_is_kept(backbone, data_dir, tmp_path):
    prompt, seen = _prompt(backbone), []
    scores = iter([0.2, 0.9, 0.5])  # at steps 2, 4, 6: step 4 wins

    def select():
        seen.append(prompt.prompt.detach().clone())
        return next(scores)

    metrics = train_plm(backbone, prompt, _data(backbone, data_dir), ARGS, 2, 0, tmp_path, "teach", select=select)
    assert len(seen) == 3 and not torch.equal(seen[1], seen[2])
    assert torch.equal(prompt.prompt, seen[1])
    assert metrics["selected"]["step"] == 4 and metrics["selected"]["dev_score"] == 0.9
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "dev" in r] == [2, 4, 6] and rows[3]["dev"] == 0.9


def test_without_eval_every_the_last_step_stays(llama_backbone, data_dir, tmp_path):
    calls = []
    prompt = _prompt(llama_backbone)
    args = TrainArgs(steps=4, batch_size=4, warmup_steps=1)
    metrics = train_plm(llama_backbone, prompt, _data(llama_backbone, data_dir), args, 2, 0, tmp_path, "teach",
                        select=lambda: calls.append(1) or 0.0)
    assert calls == [] and "selected" not in metrics
    again = _prompt(llama_backbone)
    train_plm(llama_backbone, again, _data(llama_backbone, data_dir), args, 2, 0, tmp_path / "b", "teach")
    assert torch.equal(prompt.prompt, again.prompt)


def test_a_resumed_unit_selects_what_an_uninterrupted_one_selects(llama_backbone, data_dir, tmp_path, monkeypatch):
    data = _data(llama_backbone, data_dir)

    def run(folder):
        prompt = _prompt(llama_backbone)
        score = lambda: -float(prompt.prompt.detach().norm())  # noqa: E731 - a function of the prompt: equal in both runs
        return prompt, train_plm(llama_backbone, prompt, data, ARGS, 2, 0, folder, "teach", select=score)

    whole, whole_metrics = run(tmp_path / "a")
    real = train_loop.check_finite

    def dying(loss, stage, step, tasks=()):  # killed during step 6, after the step-4 checkpoint
        if step == 6:
            raise KeyboardInterrupt
        real(loss, stage, step, tasks)

    monkeypatch.setattr(train_loop, "check_finite", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.undo()
    resumed, resumed_metrics = run(tmp_path / "b")
    assert torch.equal(whole.prompt, resumed.prompt)
    assert whole_metrics["selected"]["step"] == resumed_metrics["selected"]["step"]
    assert whole_metrics["selected"]["dev_score"] == resumed_metrics["selected"]["dev_score"]


def test_teach_selects_on_dev_never_on_test(llama_backbone, data_dir, tmp_path, monkeypatch):
    cfg = RunConfig(sources=["rte"], targets=["mrpc"], out_dir=str(tmp_path / "run"),
                    data=DataArgs(data_dir=str(data_dir), eval_examples=4, dev_examples=3),
                    teach=TrainArgs(steps=2, batch_size=2, warmup_steps=0, eval_every=1))
    splits = []
    real = stages.load_tasks

    def recording(cfg, backbone, names, split, *args, **kwargs):
        splits.append((split, kwargs.get("with_train", True), kwargs.get("examples")))
        return real(cfg, backbone, names, split, *args, **kwargs)

    monkeypatch.setattr(stages, "load_tasks", recording)
    metrics = stages.teach(cfg, llama_backbone)["rte"]
    assert ("dev", False, 3) in splits and all(s == "test" for s, with_train, _ in splits if with_train)
    assert metrics["selected"]["step"] in (1, 2)
    saved = json.loads((tmp_path / "run" / "teach" / "rte" / "metrics.json").read_text())
    assert saved["selected"] == metrics["selected"]


@pytest.mark.parametrize("build,match", [(lambda: TrainArgs(eval_every=-1), "eval_every"),
                                         (lambda: DataArgs(dev_examples=-1), "dev_examples")])
def test_bad_selection_settings(build, match):
    with pytest.raises(MptuneError, match=match):
        build()
