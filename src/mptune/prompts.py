"""Soft prompts: the only trainable tensors in mptune.

Two modules, one contract: `prompt(task_ids [B]) -> [B, l, d]`, one prompt per example, so a batch
may mix tasks.

- `SoftPrompt` holds one free l x d matrix per task: `prompt` [T, l, d]. Teachers (one task each),
  the PT baseline and SPoT are SoftPrompts.
- `MultitaskPrompt` is MPT's decomposition P_k = P* o (u_k v_k^T): `shared` [l, d] is P*,
  `u` [T, l, r] and `v` [T, r, d] are the task factors (rank r; the paper uses r = 1, where
  u_k v_k^T is the outer product of u_k in R^l and v_k in R^d).

Decisions
- Task factors start at u = 1, v = 1/r, so u_k v_k^T is the all-ones matrix and every task
  prompt starts equal to P*. Tasks move apart only through their own gradients.
- Initialisers return plain tensors (`vocab_init`, `text_init`); modules take them as arguments,
  so every way of starting a prompt is one function away from every module.
- Rows are gathered with `torch.index_select`, not `table[task_ids]`: on CPU the backward of
  advanced indexing sums repeated task ids in a thread-dependent order, so two runs with the same
  seed drifted apart after a few Adam steps; index_select's backward is deterministic.
- Parameter counts are properties of the modules (`num_parameters`) and closed-form functions of
  the paper (`mpt_target_parameters`); tests check the two agree.
"""

from __future__ import annotations

import torch
from torch import nn

from mptune.errors import MptuneError


class SoftPrompt(nn.Module):
    """One free prompt per task: `prompt` [T, l, d]."""

    def __init__(self, init: torch.Tensor):
        """init: [l, d] (one task) or [T, l, d]."""
        super().__init__()
        if init.dim() == 2:
            init = init.unsqueeze(0)
        if init.dim() != 3:
            raise MptuneError(f"a soft prompt needs shape [l, d] or [T, l, d], got {list(init.shape)}")
        self.prompt = nn.Parameter(init.detach().clone().float())

    @property
    def num_tasks(self) -> int:
        return self.prompt.shape[0]

    @property
    def length(self) -> int:
        return self.prompt.shape[1]

    @property
    def dim(self) -> int:
        return self.prompt.shape[2]

    def task_prompts(self) -> torch.Tensor:
        """All task prompts: [T, l, d]."""
        return self.prompt

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        """task_ids [B] -> prompts [B, l, d]."""
        return torch.index_select(self.prompt, 0, task_ids)


class MultitaskPrompt(nn.Module):
    """MPT prompts P_k = P* o (u_k v_k^T): `shared` [l, d], `u` [T, l, r], `v` [T, r, d]."""

    def __init__(self, shared: torch.Tensor, num_tasks: int, rank: int = 1,
                 u: torch.Tensor | None = None, v: torch.Tensor | None = None):
        """shared: [l, d]; u: [T, l, r] and v: [T, r, d] (default: u = 1, v = 1/r)."""
        super().__init__()
        if shared.dim() != 2:
            raise MptuneError(f"the shared prompt P* needs shape [l, d], got {list(shared.shape)}")
        if num_tasks < 1 or rank < 1:
            raise MptuneError(f"a multitask prompt needs num_tasks >= 1 and rank >= 1, got {num_tasks}, {rank}")
        l, d = shared.shape
        u = torch.ones(num_tasks, l, rank, dtype=shared.dtype, device=shared.device) if u is None else u
        v = torch.full((num_tasks, rank, d), 1.0 / rank, dtype=shared.dtype, device=shared.device) if v is None else v
        if tuple(u.shape) != (num_tasks, l, rank) or tuple(v.shape) != (num_tasks, rank, d):
            raise MptuneError(
                f"task factors must be u [{num_tasks}, {l}, {rank}] and v [{num_tasks}, {rank}, {d}], "
                f"got u {list(u.shape)} and v {list(v.shape)}")
        self.shared = nn.Parameter(shared.detach().clone().float())
        self.u = nn.Parameter(u.detach().clone().float())
        self.v = nn.Parameter(v.detach().clone().float())

    @property
    def num_tasks(self) -> int:
        return self.u.shape[0]

    @property
    def rank(self) -> int:
        return self.u.shape[2]

    @property
    def length(self) -> int:
        return self.shared.shape[0]

    @property
    def dim(self) -> int:
        return self.shared.shape[1]

    def task_prompts(self) -> torch.Tensor:
        """All task prompts P* o (u_k v_k^T): [T, l, d]."""
        return self.shared.unsqueeze(0) * torch.bmm(self.u, self.v)

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        """task_ids [B] -> prompts [B, l, d]."""
        u, v = torch.index_select(self.u, 0, task_ids), torch.index_select(self.v, 0, task_ids)
        return self.shared.unsqueeze(0) * torch.bmm(u, v)

    def merged(self) -> SoftPrompt:
        """The trained prompts as plain l x d matrices (one per task): inference needs nothing else."""
        with torch.no_grad():
            return SoftPrompt(self.task_prompts())


def num_parameters(module: nn.Module) -> int:
    """Trainable parameters of a prompt module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def mpt_target_parameters(length: int, dim: int, num_targets: int = 1, rank: int = 1) -> int:
    """MPT target adaptation: l*d + (l + d)*tau for rank 1 (the paper's 77.6K for l=100, d=768, tau=1)."""
    return length * dim + (length + dim) * rank * num_targets


# --- initialisers: each returns a plain tensor [l, d] ---------------------------------------

def vocab_init(embeddings: torch.Tensor, length: int, generator: torch.Generator,
               top_k: int = 5000) -> torch.Tensor:
    """Rows sampled (without replacement) from the first `top_k` vocabulary embeddings [V, d].

    Lester et al. (2021) sample from the 5,000 most common tokens; BPE vocabularies are ordered
    roughly by merge frequency, so the first ids are the common ones.
    """
    pool = min(top_k, embeddings.shape[0])
    if length > pool:
        raise MptuneError(f"prompt length {length} exceeds the {pool} vocabulary rows to sample from")
    ids = torch.randperm(pool, generator=generator)[:length]
    return embeddings[ids].detach().float().clone()


def text_init(embeddings: torch.Tensor, token_ids: list[int], length: int) -> torch.Tensor:
    """The embeddings of a text's tokens, repeated to fill `length` rows: [l, d]."""
    if not token_ids:
        raise MptuneError("prompt init text is empty after tokenisation")
    reps = -(-length // len(token_ids))
    ids = torch.tensor((token_ids * reps)[:length])
    return embeddings[ids].detach().float().clone()


def target_from_source(source: MultitaskPrompt, num_targets: int = 1, factors: str = "mean") -> MultitaskPrompt:
    """A target prompt started from a distilled source: P* with the mean source u, v or fresh ones.

    factors: 'mean' (average of the source tasks' u and v) or 'fresh' (u = 1, v = 1/r).
    """
    if factors == "mean":
        u = source.u.detach().mean(0, keepdim=True).expand(num_targets, -1, -1)
        v = source.v.detach().mean(0, keepdim=True).expand(num_targets, -1, -1)
        return MultitaskPrompt(source.shared, num_targets, source.rank, u, v)
    if factors == "fresh":
        return MultitaskPrompt(source.shared, num_targets, source.rank)
    raise MptuneError(f"unknown target factor init {factors!r}: expected 'mean' or 'fresh'")
