"""Data parallelism over processes started by `torchrun` or `accelerate launch`, with plain torch.distributed.

    torchrun --nproc_per_node 2 -m mptune run ...

Decisions
- The launchers describe the job in environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT). `init_from_env` starts the process group from them when
  WORLD_SIZE > 1: backend nccl when the device is CUDA (each process on cuda:LOCAL_RANK), gloo
  otherwise. Without them nothing is started and every helper here is a no-op, so one process
  runs exactly the code it always ran.
- Equivalence with one process (up to float rounding). Every rank draws the same global batch [B] from the seeded
  stream and keeps its contiguous shard of B / world examples (`shard`, which also cuts it into
  grad_accum micro-batches). Each part's loss is a sum over its label tokens divided by the label
  tokens of the WHOLE global batch, a count every rank reads off the token ids without any
  communication; so the gradients summed over micro-batches and ranks are the gradient of the
  one-process mean loss. Gradients are summed over ranks (`all_reduce_sum`), then every rank clips
  and steps on the same gradients, and the prompts stay equal on all ranks without broadcasts.
- Only rank 0 touches the run directory. It writes prompts, metrics, logs, checkpoints, config and
  results, and it alone reads them back: what it reads (a finished unit's metrics, a checkpoint,
  the teachers) reaches the other ranks by broadcast (`from_main`), which also makes them wait
  while it writes. Ranks therefore never disagree about the directory, and the nodes of a
  multi-node job need no shared filesystem for it (they do need the model and the data).
- Evaluation: each rank scores a contiguous run of whole evaluation batches (`eval_range`: the
  batches one process would form), and the predictions are gathered in rank order, so every rank
  scores the full list, in order, each batch computed as one process computes it.
- Precision is `model.precision`, the same in every process; its default 'auto' follows
  `accelerate launch --mixed_precision bf16|no` (fp16 is refused, see `backbone`).
- An error on one rank ends its process and the launcher stops the others; user errors met by
  rank 0 inside `from_main` are raised on every rank.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from mptune.errors import MptuneError

T = TypeVar("T")


def init_from_env(device: str = "cpu") -> None:
    """Join the process group the launcher's environment describes (once); nothing for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def close() -> None:
    """Leave the process group (the CLI calls it when a command ends)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that writes files and shows progress bars (rank 0)."""
    return rank() == 0


def check_batch(batch_size: int, grad_accum: int, key: str = "batch_size", world: int | None = None) -> None:
    """MptuneError unless a batch splits into equal shards, one per process, of at least grad_accum examples."""
    world = world_size() if world is None else world
    if batch_size % world:
        raise MptuneError(f"{key} {batch_size} is not divisible by the {world} processes; use a multiple of {world}")
    if batch_size // world < grad_accum:
        raise MptuneError(f"{key} {batch_size} gives {batch_size // world} examples per process, "
                          f"fewer than grad_accum {grad_accum}")


def shard(items: Sequence[T], grad_accum: int = 1, index: int | None = None,
          world: int | None = None) -> list[list[T]]:
    """This rank's part of a global batch [B]: its contiguous B / world items, as grad_accum contiguous
    micro-batches whose sizes differ by at most one. index (this rank) and world default to the process group's."""
    index, world = rank() if index is None else index, world_size() if world is None else world
    check_batch(len(items), grad_accum, world=world)
    size = len(items) // world
    mine = list(items[index * size:(index + 1) * size])
    cuts = [size * i // grad_accum for i in range(grad_accum + 1)]
    return [mine[a:b] for a, b in zip(cuts, cuts[1:])]


def eval_range(n: int, batch_size: int, index: int | None = None, world: int | None = None) -> tuple[int, int]:
    """This rank's items [lo, hi) of n evaluation items: a contiguous run of whole batches of
    batch_size; the runs of ranks 0, 1, ... follow each other and differ by at most one batch."""
    index, world = rank() if index is None else index, world_size() if world is None else world
    batches = -(-n // batch_size)
    first = batches * index // world
    last = batches * (index + 1) // world
    return min(n, first * batch_size), min(n, last * batch_size)


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over all ranks, in place (one collective for all of them)."""
    if world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    for t, summed in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(summed.view_as(t))


def gather_lists(part: list) -> list:
    """The ranks' lists concatenated in rank order; every rank gets the whole list."""
    if world_size() == 1:
        return part
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, part)
    return [x for p in parts for x in p]


def from_main(read: Callable[[], T]) -> T:
    """read() run by rank 0 only; every rank returns its result, or raises its user error or OSError."""
    if world_size() == 1:
        return read()
    box: list = [None, None]
    if is_main():
        try:
            box[0] = read()
        except (MptuneError, OSError) as err:
            box[1] = err
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1]
    return box[0]
