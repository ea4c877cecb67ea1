"""Data parallelism: 2 real processes (gloo, CPU) give what 1 process gives; gradient accumulation too.

The same `_scenarios` run in this process (world size 1) and in 2 processes started with
torch.multiprocessing.spawn on the tiny Llama saved to disk; every rank saves what it got, and the
tests compare. `test_launched_cli_run_matches_one_process` runs the real launchers (torchrun,
accelerate) on `mptune run`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mptune.train as train_loop
from mptune import distributed
from mptune.checkpoint import load_prompt
from mptune.config import LossArgs, RunConfig, TrainArgs
from mptune.data import collate, encode, label_tokens, sequence_tokens
from mptune.errors import MptuneError
from mptune.evaluate import evaluate_items, predictions
from mptune.models import load_backbone
from mptune.prompts import MultitaskPrompt, SoftPrompt
from mptune.stages import train_distill, train_plm
from mptune.task_data import TaskData
from mptune.tasks import Task, get_task

WORLD = 2
TASKS = ("rte", "mrpc", "cola")
ARGS = TrainArgs(steps=5, batch_size=4, warmup_steps=2, checkpoint_every=2)
EVAL_SIZES = (13, 3)
"""Evaluation sets scored with batches of 4: 13 = batches 4+4 | 4+1 over the two ranks, 3 = one batch, rank 1 idle."""
QA = Task("tiny_qa", "qa", (), "squad_f1", lambda d, s, n: [], extra_metrics=("squad_em",), max_new_tokens=4)


def _data(backbone, data_dir: Path) -> list[TaskData]:
    """Tiny GLUE tasks whose training targets are 1-4 tokens long (the first words of the input), so
    shards hold different numbers of label tokens and a wrong normalisation shows."""
    out = []
    for task_id, name in enumerate(TASKS):
        rows = get_task(name).load(data_dir, "train", 42)
        enc = encode(rows, backbone.tokenizer, backbone.is_seq2seq, 128, task_id)
        train = [replace(e, target_ids=e.input_ids[: 1 + i % 4]) for i, e in enumerate(enc)]
        out.append(TaskData(get_task(name), train, enc[:13], [r.label for r in rows[:13]]))
    return out


def _soft(backbone) -> SoftPrompt:
    return SoftPrompt(torch.randn(len(TASKS), 3, backbone.dim, generator=torch.Generator().manual_seed(1)) * 0.1)


class Killed(Exception):
    pass


def _dying_at_step_4(real):
    """train_loop.check_finite that stops the loop at step 4 in every process (as a kill would)."""
    def check(loss, stage, step, tasks=()):
        if step == 4:
            raise Killed
        real(loss, stage, step, tasks)
    return check


def _scenarios(backbone, data_dir: Path, out: Path) -> dict:
    """Everything compared between 1 and 2 processes; `out` is the run folder (only rank 0 writes)."""
    data = _data(backbone, data_dir)
    got = {"init": _soft(backbone).prompt.detach().clone()}
    for name, args in (("plm", ARGS), ("plm_accum", replace(ARGS, grad_accum=2))):
        prompt = _soft(backbone)
        train_plm(backbone, prompt, data, args, 3, 0, out / name, name)
        got[name] = prompt.prompt.detach().clone()

    real, train_loop.check_finite = train_loop.check_finite, _dying_at_step_4(train_loop.check_finite)
    try:
        train_plm(backbone, _soft(backbone), data, ARGS, 3, 0, out / "resumed", "killed")
    except Killed:  # every rank stops at step 4, after rank 0 saved step 2
        pass
    finally:
        train_loop.check_finite = real
    prompt = _soft(backbone)
    train_plm(backbone, prompt, data, ARGS, 3, 0, out / "resumed", "resumed")
    got["plm_resumed"] = prompt.prompt.detach().clone()

    for name, positions in (("distill", "labels"), ("distill_sequence", "sequence")):
        cfg = RunConfig(sources=list(TASKS), distill=ARGS, loss=LossArgs(hidden_positions=positions))
        student = MultitaskPrompt(torch.ones(3, backbone.dim) * 0.05, len(TASKS))
        train_distill(cfg, backbone, student, _soft(backbone), data, out / name)
        got[name] = [p.detach().clone() for p in student.parameters()]

    prompt = _soft(backbone)
    for n in EVAL_SIZES:
        items, labels = data[0].eval[:n], data[0].eval_labels[:n]
        got[f"preds{n}"] = predictions(backbone, prompt, data[0].task, items, batch_size=4)
        got[f"metric{n}"] = evaluate_items(backbone, prompt, data[0].task, items, labels, batch_size=4)
        got[f"texts{n}"] = predictions(backbone, prompt, QA, items, batch_size=4)
    return got


def _worker(rank: int, port: int, model_dir: str, data_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (rank, WORLD, rank == 0)
    got = _scenarios(load_backbone(model_dir, "fp32"), Path(data_dir), Path(out) / "run")
    torch.save(got, Path(out) / f"rank{rank}.pt")
    distributed.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, saved_models, data_dir) -> dict:
    """{'one': results of 1 process, 'ranks': [results of rank 0, rank 1], 'out': run folders of 1 and 2 processes}."""
    import torch.multiprocessing as mp

    model = saved_models["llama"]
    one_out = tmp_path_factory.mktemp("one") / "run"
    one = _scenarios(load_backbone(str(model), "fp32"), data_dir, one_out)
    out = tmp_path_factory.mktemp("two")
    mp.spawn(_worker, args=(_free_port(), str(model), str(data_dir), str(out)), nprocs=WORLD)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return {"one": one, "ranks": ranks, "out": [one_out, out / "run"]}


def test_two_processes_train_plm_like_one(runs):
    for got in runs["ranks"]:
        assert torch.allclose(got["plm"], runs["one"]["plm"], atol=1e-6)
    assert not torch.allclose(runs["one"]["plm"], runs["one"]["init"], atol=1e-3)  # it did train
    assert torch.equal(runs["ranks"][0]["plm"], runs["ranks"][1]["plm"])  # the ranks stay identical


@pytest.mark.parametrize("name", ["distill", "distill_sequence"])
def test_two_processes_train_distill_like_one(runs, name):
    for got in runs["ranks"]:
        for a, b in zip(got[name], runs["one"][name]):
            assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(runs["ranks"][0][name], runs["ranks"][1][name]))
    if name == "distill_sequence":  # the sequence-level L_hidden changes the update
        assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(runs["one"][name], runs["one"]["distill"]))


def test_grad_accum_two_equals_one_in_one_and_two_processes(runs):
    assert torch.allclose(runs["one"]["plm_accum"], runs["one"]["plm"], atol=1e-6)
    for got in runs["ranks"]:  # each rank: 2 micro-batches of 1 example
        assert torch.allclose(got["plm_accum"], runs["one"]["plm"], atol=1e-6)


def test_two_processes_resume_bitwise_from_rank0_checkpoint(runs):
    """Stopped at step 4, resumed from the step-2 checkpoint rank 0 wrote and broadcast."""
    for got in [runs["one"], *runs["ranks"]]:
        assert torch.equal(got["plm_resumed"], got["plm"])


@pytest.mark.parametrize("n", EVAL_SIZES)
def test_two_processes_evaluate_exactly_like_one(runs, n):
    """Odd eval set sizes: uneven shards (8 + 5 items) and an idle rank (3 items, one batch)."""
    one = runs["one"]
    assert len(one[f"preds{n}"]) == n and len(one[f"texts{n}"]) == n
    for got in runs["ranks"]:
        assert got[f"preds{n}"] == one[f"preds{n}"] and got[f"texts{n}"] == one[f"texts{n}"]
        assert got[f"metric{n}"] == one[f"metric{n}"]


def test_only_rank0_writes_and_logs_the_whole_batch_loss(runs):
    """One log line per step (rank 1 wrote none), holding the loss terms of the whole batch."""
    one, two = runs["out"]
    for name in ("plm", "plm_accum", "resumed", "distill"):
        rows = [[json.loads(line) for line in (d / name / "log.jsonl").read_text().splitlines()] for d in (one, two)]
        assert [r["step"] for r in rows[1]] == list(range(1, ARGS.steps + 1)), name
        for a, b in zip(*rows):
            assert all(a[k] == pytest.approx(b[k], abs=2e-5) for k in ("loss", "ce", "kl", "mse") if k in a), name
    assert {p.name for p in (two / "plm").iterdir()} == {"log.jsonl", "state.pt", "state.prev.pt"}


# --- without processes -------------------------------------------------------------------------

def test_shards_and_micro_batches_cover_the_batch_in_order():
    items = list(range(12))
    for world in (1, 2, 3, 4):
        for accum in (1, 2, 3):
            parts = [distributed.shard(items, accum, r, world) for r in range(world)]
            assert all(len(p) == accum for p in parts)
            assert [x for p in parts for mb in p for x in mb] == items
            assert max(map(len, parts[0])) - min(map(len, parts[0])) <= 1
    assert distributed.shard(items) == [items]  # one process: the whole batch, untouched


def test_batch_not_divisible_by_processes_is_a_user_error():
    with pytest.raises(MptuneError, match="teach.batch_size 6 is not divisible by the 4 processes"):
        distributed.check_batch(6, 1, "teach.batch_size", world=4)
    with pytest.raises(MptuneError, match="2 examples per process, fewer than grad_accum 3"):
        distributed.shard(list(range(4)), 3, 0, 2)
    with pytest.raises(MptuneError, match="grad_accum"):
        TrainArgs(batch_size=4, grad_accum=5)
    with pytest.raises(MptuneError, match="grad_accum"):
        TrainArgs(grad_accum=0)


@pytest.mark.parametrize("n, batch_size, world", [(13, 4, 2), (3, 4, 2), (200, 32, 3), (1, 32, 4), (64, 32, 2)])
def test_eval_ranges_are_contiguous_whole_batches(n, batch_size, world):
    ranges = [distributed.eval_range(n, batch_size, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(lo % batch_size == 0 for lo, _ in ranges)
    sizes = [-(-(hi - lo) // batch_size) for lo, hi in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_helpers_do_nothing():
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    t = torch.ones(3)
    distributed.all_reduce_sum([t])
    assert torch.equal(t, torch.ones(3))
    assert distributed.gather_lists([1, 2]) == [1, 2] and distributed.from_main(lambda: 7) == 7
    distributed.init_from_env()  # WORLD_SIZE unset: no process group
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_label_and_sequence_tokens_count_the_rows_of_forward(request, data_dir, family):
    backbone = request.getfixturevalue(f"{family}_backbone")
    items = _data(backbone, data_dir)[0].train[:5]
    batch = collate(items, backbone.tokenizer.pad_token_id, backbone.is_seq2seq)
    out = backbone.forward(_soft(backbone)(batch.task_ids), batch, states=True)
    assert label_tokens(items) == out.targets.numel()
    assert sequence_tokens(items) == out.states.shape[0] > label_tokens(items)


@pytest.mark.parametrize("positions", ["labels", "sequence"])
def test_grad_accum_equals_one_batch_for_distill(llama_backbone, data_dir, tmp_path, positions):
    backbone = llama_backbone
    data = _data(backbone, data_dir)
    got = []
    for accum in (1, 4):
        cfg = RunConfig(sources=list(TASKS), distill=replace(ARGS, grad_accum=accum),
                        loss=LossArgs(hidden_positions=positions))
        student = MultitaskPrompt(torch.ones(3, backbone.dim) * 0.05, len(TASKS))
        train_distill(cfg, backbone, student, _soft(backbone), data, tmp_path / str(accum))
        got.append(list(student.parameters()))
    for a, b in zip(*got):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.equal(got[0][0], torch.ones(3, backbone.dim) * 0.05)


# --- the real launcher -------------------------------------------------------------------------

LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # accelerate's --cpu launcher starts a single process (several need mpirun); --multi_gpu is its
    # torchrun-based launcher, which starts the 2 processes on CPU too (mptune then uses gloo)
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launched_cli_run_matches_one_process(tmp_path, llama_dir, data_dir, capsys, launcher):
    """`torchrun ... -m mptune run` and `accelerate launch ... -m mptune run` (2 CPU processes) write
    what one process writes."""
    from test_cli import cli, flags

    one, two = (["run", *flags(tmp_path / d, llama_dir, data_dir, "--teach.checkpoint_every", "1")]
                for d in ("one", "two"))
    assert cli(capsys, *one)[0] == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = [str(_free_port())] if launcher == "accelerate" else []
    proc = subprocess.run([sys.executable, *LAUNCHERS[launcher], *port, "-m", "mptune", *two], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| **average** |") == 1  # rank 0 alone prints the table
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    prompts = [f for f in files if f.suffix == ".safetensors"]
    assert len(prompts) >= 8
    for f in prompts:
        a, b = load_prompt(tmp_path / "one" / f)[0], load_prompt(tmp_path / "two" / f)[0]
        for x, y in zip(a.parameters(), b.parameters()):
            assert torch.allclose(x, y, atol=1e-6), f
    for f in [f for f in files if f.name == "log.jsonl"]:
        assert len((tmp_path / "two" / f).read_text().splitlines()) == 3, f
    for d, processes in (("one", 1), ("two", 2)):  # the launcher really started two processes
        assert json.loads((tmp_path / d / "distill" / "metrics.json").read_text())["processes"] == processes
    table = [json.loads((tmp_path / d / "results.json").read_text())["targets"] for d in ("one", "two")]
    assert table[0] == table[1]
