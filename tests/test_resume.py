"""A killed unit of work resumes from its last step checkpoint and ends bit for bit where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import pytest
import torch

import mptune.stages as stages
import mptune.train as train_loop
from mptune.checkpoint import load_prompt
from mptune.config import LossArgs, RunConfig, TrainArgs
from mptune.data import encode
from mptune.errors import MptuneError
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.resume import PREV_STATE_FILE, STATE_FILE, read_state, restore_state, save_state
from mptune.stages import train_distill, train_plm
from mptune.task_data import TaskData
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


def _trained(backbone, data, folder: Path, desc: str) -> SoftPrompt:
    """The prompt train_plm (ARGS, seed 0) ends with in `folder`: a fresh run, or a resumed one."""
    prompt = _prompt(backbone)
    folder.mkdir(exist_ok=True)
    train_plm(backbone, prompt, data, ARGS, 2, 0, folder, desc)
    return prompt


class Killed(Exception):
    pass


def _kill_after(monkeypatch, step_to_die: int):
    """Make the loop die right after `step_to_die` finished steps (as a SIGKILL would, nothing saved after)."""
    real = train_loop.check_finite

    def dying(loss, stage, step, tasks=()):
        if step == step_to_die + 1:
            raise Killed
        real(loss, stage, step, tasks)

    monkeypatch.setattr(train_loop, "check_finite", dying)


@pytest.mark.parametrize("die_after", [1, 3, 4, 6])
def test_train_plm_resumes_bitwise(backbone, data_dir, tmp_path, monkeypatch, die_after):
    data = _data(backbone, data_dir)
    whole = _trained(backbone, data, tmp_path / "a", "whole")

    folder = tmp_path / "b"
    folder.mkdir()
    _kill_after(monkeypatch, die_after)
    with pytest.raises(Killed):
        train_plm(backbone, _prompt(backbone), data, ARGS, 2, 0, folder, "killed")
    assert (folder / STATE_FILE).exists() == (die_after >= 2)
    monkeypatch.undo()
    assert torch.equal(_trained(backbone, data, folder, "resumed").prompt, whole.prompt)
    steps = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, ARGS.steps + 1))


@pytest.mark.parametrize("ahead", [0, 12, 128])  # teachers per drawn batch; windows of 3 steps (resumed
def test_train_distill_resumes_bitwise(llama_backbone, data_dir, tmp_path, monkeypatch, ahead):  # mid-window); 1
    backbone = llama_backbone
    data = _data(backbone, data_dir, ("rte", "mrpc", "cola"))
    cfg = RunConfig(sources=["rte", "mrpc", "cola"], distill=ARGS, loss=LossArgs(teacher_ahead=ahead))
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


def _infinite_loss_at(monkeypatch, bad_step: int):
    """Make the loss of step `bad_step` infinite (its label-token count becomes 0), as a diverging run's would."""
    real, calls = stages.label_tokens, iter(range(1, 10**6))  # called once per step (one micro-batch)
    monkeypatch.setattr(stages, "label_tokens", lambda items: 0 if next(calls) == bad_step else real(items))


def test_infinite_loss_stops_naming_stage_step_task_and_keeps_the_last_checkpoint(llama_backbone, data_dir, tmp_path,
                                                                                   monkeypatch):
    backbone, data = llama_backbone, _data(llama_backbone, data_dir)
    whole = _trained(backbone, data, tmp_path / "a", "whole")
    folder = tmp_path / "b"
    _infinite_loss_at(monkeypatch, 6)
    message = r"^teach rte: loss is inf at step 6 on a batch of rte; lower the learning rate, in a new --out_dir \("
    with pytest.raises(MptuneError, match=message):
        train_plm(backbone, _prompt(backbone), data, ARGS, 2, 0, folder, "teach rte")
    monkeypatch.undo()
    assert [read_state(folder / f)["step"] for f in (STATE_FILE, PREV_STATE_FILE)] == [4, 2]
    # the kept checkpoint is good: resuming from it ends as the uninterrupted run
    assert torch.equal(_trained(backbone, data, folder, "resumed").prompt, whole.prompt)


def test_infinite_distill_loss_names_the_tasks_of_the_batch(llama_backbone, data_dir, tmp_path, monkeypatch):
    names = ("rte", "mrpc", "cola")
    data = _data(llama_backbone, data_dir, names)
    cfg = RunConfig(sources=list(names), distill=ARGS)
    third = list(islice(train_loop.batch_stream([d.train for d in data], ARGS, 3, cfg.seed), 3))[-1]
    tasks = [names[t] for t in sorted({e.task_id for e in third})]
    assert len(tasks) >= 2  # a multitask batch: K >= 2 tasks
    _infinite_loss_at(monkeypatch, 3)
    with pytest.raises(MptuneError, match=f"^distill: loss is inf at step 3 on a batch of {', '.join(tasks)};"):
        train_distill(cfg, llama_backbone, MultitaskPrompt(torch.ones(3, llama_backbone.dim) * 0.05, 3),
                      _prompt(llama_backbone, 3), data, tmp_path)
    assert read_state(tmp_path / STATE_FILE)["step"] == 2


def test_checkpoint_restores_the_rng_states(llama_backbone, tmp_path):
    """state.pt carries torch's and Python's RNG states; resuming puts both back."""
    prompt = _prompt(llama_backbone)
    opt, sched = train_loop.make_optimizer(prompt, ARGS)
    torch.manual_seed(5)
    random.seed(5)
    save_state(tmp_path, 3, prompt, opt, sched)
    expected = torch.rand(4), random.random()
    torch.manual_seed(6)
    random.seed(6)
    assert restore_state(tmp_path, prompt, opt, sched) == 3
    assert torch.equal(torch.rand(4), expected[0]) and random.random() == expected[1]


def test_an_interrupted_checkpoint_write_leaves_the_last_checkpoint_and_no_tmp(llama_backbone, tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C while state.pt.tmp is written: the exception propagates, the half-written file is
    removed, and state.pt still holds the last finished checkpoint."""
    prompt = _prompt(llama_backbone)
    opt, sched = train_loop.make_optimizer(prompt, ARGS)
    save_state(tmp_path, 3, prompt, opt, sched)
    before = (tmp_path / STATE_FILE).read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("mptune.resume.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, 4, prompt, opt, sched)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]
    assert (tmp_path / STATE_FILE).read_bytes() == before
    monkeypatch.undo()
    assert restore_state(tmp_path, prompt, opt, sched) == 3


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "flipped_byte": lambda data: data[:999] + bytes([data[999] ^ 0xFF]) + data[1000:],  # one byte inside the payload
    "empty": lambda data: b"",
    "foreign": lambda data: b"not a checkpoint",
}


@pytest.mark.parametrize("both", [False, True], ids=["latest", "latest_and_previous"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoint_is_reported_and_resume_still_ends_bitwise(llama_backbone, data_dir, tmp_path, monkeypatch,
                                                                      capsys, damage, both):
    """A damaged state.pt is named in a warning and state.prev.pt (step 2) takes over; with both damaged
    the unit restarts from step 0. Either way the prompt ends bit for bit as in an uninterrupted run."""
    backbone, data = llama_backbone, _data(llama_backbone, data_dir)
    whole = _trained(backbone, data, tmp_path / "a", "whole")
    folder = tmp_path / "b"
    _kill_after(monkeypatch, 5)
    with pytest.raises(Killed):
        train_plm(backbone, _prompt(backbone), data, ARGS, 2, 0, folder, "killed")
    monkeypatch.undo()
    assert [read_state(folder / f)["step"] for f in (STATE_FILE, PREV_STATE_FILE)] == [4, 2]
    damaged = [folder / STATE_FILE, folder / PREV_STATE_FILE][: 1 + both]
    for path in damaged:
        path.write_bytes(DAMAGE[damage](path.read_bytes()))
        with pytest.raises(MptuneError, match=f"checkpoint {path} is damaged"):
            read_state(path)

    capsys.readouterr()
    resumed = _trained(backbone, data, folder, "resumed")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mptune: warning")]
    assert torch.equal(resumed.prompt, whole.prompt)
    assert [f"checkpoint {path} is damaged" in w for path, w in zip(damaged, warnings)] == [True] * len(damaged)
    assert ("restarts from step 0" if both else f"{folder / PREV_STATE_FILE} (step 2)") in warnings[-1]
    steps = [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, ARGS.steps + 1))


def test_finished_unit_removes_its_checkpoint(tmp_path, llama_dir, data_dir, capsys):
    from test_cli import cli, flags

    out = tmp_path / "run"
    argv = flags(out, llama_dir, data_dir, "--sources", "rte", "--teach.steps", "5", "--teach.checkpoint_every", "2")
    assert cli(capsys, "teach", *argv)[0] == 0
    assert not list((out / "teach" / "rte").glob("state*"))  # state.pt and state.prev.pt (steps 4, 2) removed


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


# --- real SIGKILLs inside and around checkpoint writes -----------------------------------------

KILL_STEPS, KILL_EVERY = "200", "4"
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

DIE_IN_SAVE = '''"""`mptune ARGS`, SIGKILLed by itself inside save_state, at POINT of the NTH write reaching it.

usage: python die_in_save.py POINT NTH ARGS...
"""
import os
import signal
import sys
from pathlib import Path

point, nth = sys.argv[1], int(sys.argv[2])
seen = 0


def dying(real, here):
    def call(*args):
        global seen
        if here(*args):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    return call


if point == "fsync":  # state.pt.tmp written, not yet flushed to disk
    os.fsync = dying(os.fsync, lambda fd: os.readlink(f"/proc/self/fd/{fd}").endswith("state.pt.tmp"))
elif point == "rotate":  # state.pt.tmp complete, state.pt not yet renamed to state.prev.pt
    os.replace = dying(os.replace, lambda src, dst: Path(dst).name == "state.prev.pt")
else:  # "rename": state.pt renamed to state.prev.pt, state.pt.tmp not yet renamed to state.pt
    os.replace = dying(os.replace, lambda src, dst: Path(dst).name == "state.pt")

from mptune.cli import main  # noqa: E402

sys.exit(main(sys.argv[3:]))
'''


def _teach_argv(out: Path, llama_dir: Path, data_dir: Path) -> list[str]:
    from test_cli import flags

    return ["teach", *flags(out, llama_dir, data_dir, "--sources", "rte", "--teach.steps", KILL_STEPS,
                            "--teach.checkpoint_every", KILL_EVERY)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, saved_models, data_dir) -> torch.Tensor:
    """The teacher prompt of one uninterrupted `mptune teach`, the reference of the kill trials."""
    from mptune.cli import main

    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main(_teach_argv(out, saved_models["llama"], data_dir)) == 0
    return load_prompt(out / "teach" / "rte" / "prompt.safetensors")[0].prompt


def _finish_and_compare(out: Path, llama_dir: Path, data_dir: Path, reference: torch.Tensor) -> None:
    from mptune.cli import main

    assert main(_teach_argv(out, llama_dir, data_dir)) == 0
    assert torch.equal(load_prompt(out / "teach" / "rte" / "prompt.safetensors")[0].prompt, reference)


def test_sigkill_inside_checkpoint_writes_then_resume_matches(tmp_path, llama_dir, data_dir, uninterrupted):
    """Three processes SIGKILLed inside save_state, each resuming the last one's run directory: before
    the new file is flushed, before state.pt is rotated, and between the two renames (no state.pt on
    disk, only state.prev.pt). The fourth run finishes with the uninterrupted run's tensors."""
    script = tmp_path / "die_in_save.py"
    script.write_text(DIE_IN_SAVE)
    out = tmp_path / "run"
    unit = out / "teach" / "rte"
    for point, nth in (("fsync", 2), ("rotate", 1), ("rename", 2)):
        proc = subprocess.run([sys.executable, str(script), point, str(nth), *_teach_argv(out, llama_dir, data_dir)],
                              env=SUBPROCESS_ENV, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        assert (unit / f"{STATE_FILE}.tmp").exists() and not (unit / "metrics.json").exists()
        assert (unit / STATE_FILE).exists() == (point != "rename")
    _finish_and_compare(out, llama_dir, data_dir, uninterrupted)


def _checkpoint_step(path: Path) -> int:
    try:
        return read_state(path)["step"]
    except (OSError, MptuneError):  # between the two renames, or not written yet
        return 0


def test_sigkill_loop_at_random_moments_then_resume_matches(tmp_path, llama_dir, data_dir, uninterrupted):
    """Three processes SIGKILLed from outside, each at a random moment (0-20 ms) after it wrote a newer
    checkpoint than the last one, each resuming the last one's run directory; the fourth finishes with
    the uninterrupted run's tensors."""
    rng = random.Random(0)
    out = tmp_path / "run"
    state = out / "teach" / "rte" / STATE_FILE
    last = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "mptune", *_teach_argv(out, llama_dir, data_dir)],
                                env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and _checkpoint_step(state) <= last:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        last = _checkpoint_step(state) or _checkpoint_step(state.with_name(PREV_STATE_FILE))
        assert 0 < last < int(KILL_STEPS)
    _finish_and_compare(out, llama_dir, data_dir, uninterrupted)
