"""A killed unit of work resumes from its last step checkpoint and ends bit for bit where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mptune.stages as stages
from mptune.checkpoint import load_prompt
from mptune.config import DistillArgs, RunConfig, TrainArgs
from mptune.data import encode
from mptune.errors import MptuneError
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.resume import STATE_FILE
from mptune.stages import TaskData, train_distill, train_plm
from mptune.tasks import get_task

ARGS = TrainArgs(steps=7, batch_size=4, warmup_steps=2, checkpoint_every=2)


def _data(backbone, data_dir, names=("rte",)):
    out = []
    for task_id, name in enumerate(names):
        task = get_task(name)
        rows = task.load(data_dir, "train", 42)
        enc = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, task_id)
        out.append(TaskData(task, enc, enc[:4], [r.label for r in rows[:4]]))
    return out


def _prompt(backbone, tasks=1):
    return SoftPrompt(torch.randn(tasks, 3, backbone.dim, generator=torch.Generator().manual_seed(1)) * 0.1)


class Killed(Exception):
    pass


def _kill_after(monkeypatch, step_to_die: int):
    """Make the loop die right after `step_to_die` finished steps (as a SIGKILL would, nothing saved after)."""
    real = stages.check_finite

    def dying(loss, stage, step):
        if step == step_to_die + 1:
            raise Killed
        real(loss, stage, step)

    monkeypatch.setattr(stages, "check_finite", dying)


@pytest.mark.parametrize("die_after", [1, 3, 4, 6])
def test_train_plm_resumes_bitwise(backbone, data_dir, tmp_path, monkeypatch, die_after):
    data = _data(backbone, data_dir)
    whole = _prompt(backbone)
    (tmp_path / "a").mkdir()
    train_plm(backbone, whole, data, ARGS, 2, 0, tmp_path / "a", "whole")

    folder = tmp_path / "b"
    folder.mkdir()
    _kill_after(monkeypatch, die_after)
    with pytest.raises(Killed):
        train_plm(backbone, _prompt(backbone), data, ARGS, 2, 0, folder, "killed")
    assert (folder / STATE_FILE).exists() == (die_after >= 2)
    monkeypatch.undo()
    resumed = _prompt(backbone)
    train_plm(backbone, resumed, data, ARGS, 2, 0, folder, "resumed")
    assert torch.equal(resumed.prompt, whole.prompt)
    steps = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, ARGS.steps + 1))


def test_train_distill_resumes_bitwise(llama_backbone, data_dir, tmp_path, monkeypatch):
    backbone = llama_backbone
    data = _data(backbone, data_dir, ("rte", "mrpc", "cola"))
    cfg = RunConfig(sources=["rte", "mrpc", "cola"], distill=ARGS, mpt=DistillArgs(kappa=3))
    teachers = _prompt(backbone, 3)

    def student():
        return MultitaskPrompt(torch.ones(3, backbone.dim) * 0.05, 3)

    whole = student()
    (tmp_path / "a").mkdir()
    train_distill(cfg, backbone, whole, teachers, data, tmp_path / "a")
    (tmp_path / "b").mkdir()
    _kill_after(monkeypatch, 5)
    with pytest.raises(Killed):
        train_distill(cfg, backbone, student(), teachers, data, tmp_path / "b")
    monkeypatch.undo()
    resumed = student()
    train_distill(cfg, backbone, resumed, teachers, data, tmp_path / "b")
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_corrupt_checkpoint_is_reported(backbone, data_dir, tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(MptuneError, match=STATE_FILE):
        train_plm(backbone, _prompt(backbone), _data(backbone, data_dir), ARGS, 2, 0, tmp_path, "x")


def test_finished_unit_removes_its_checkpoint(tmp_path, llama_dir, data_dir, capsys):
    from test_cli import cli, flags

    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte", "--teach.steps", "5", "--teach.checkpoint_every", "2")
    assert cli(capsys, "teach", *argv)[0] == 0
    assert not (out / "teach" / "rte" / STATE_FILE).exists()


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, llama_dir, data_dir):
    """The real thing: `mptune teach` killed with SIGKILL mid-stage, rerun, same tensors as one clean run."""
    steps = "600"

    def argv(out: Path) -> list[str]:
        from test_cli import flags

        return [sys.executable, "-m", "mptune.cli", "teach",
                *flags(out, llama_dir, data_dir, "--sources", "rte", "--teach.steps", steps,
                       "--teach.checkpoint_every", "50")]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(argv(clean), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(argv(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "teach" / "rte" / STATE_FILE
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "teach" / "rte" / "metrics.json").exists()
    subprocess.run(argv(killed), check=True, env=env, capture_output=True)
    a, _ = load_prompt(clean / "teach" / "rte" / "prompt.safetensors")
    b, _ = load_prompt(killed / "teach" / "rte" / "prompt.safetensors")
    assert torch.equal(a.prompt, b.prompt)


def test_second_run_on_the_same_directory_is_refused(tmp_path, llama_dir, data_dir, capsys):
    import fcntl

    from test_cli import assert_user_error, cli, flags

    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte")
    assert cli(capsys, "teach", *argv)[0] == 0
    with open(out / ".lock", "w") as other:  # another process holding the run directory
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = cli(capsys, "teach", *flags(tmp_path / "run", llama_dir, data_dir, "--sources", "rte"))
    assert_user_error(code, err, "another mptune process", str(out))
