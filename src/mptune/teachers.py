"""The teachers' outputs in distillation, computed ahead for a window of steps.

Decisions
- Teachers are frozen while the student trains, so a teacher's outputs for an example depend on
  the example alone, not on the batch it was drawn in. Running the teachers on each drawn batch
  pays for that batch's padding: the paper's mixed-task batches put short and long inputs side by
  side (41% of the tokens of the default run's SST-2/QNLI/QQP batches of 8 are padding). Instead
  the stage reads `ahead` examples' worth of steps of the batch stream in advance and runs the
  teachers over the window's distinct examples longest first, in batches of the micro-batch size
  (6% padding); the student still trains on the batches as drawn, so the paper's sampling stays.
- Windows start at fixed steps (0, w, 2w, ... batches into the stream), so a unit resumed at
  step s recomputes the window holding s from the same batches: its teacher outputs, and so its
  updates, are bitwise those of the uninterrupted run.
- The outputs differ from the drawn-batch ones only by the rounding of another batch shape (the
  size of the difference bf16 autocast or another attention kernel makes), so `ahead` is not part
  of a run's identity; `ahead = 0` computes them in each drawn micro-batch, as before.
- A window holds, per example, logits [n, V] and hidden states [n, d] at its n label tokens in
  fp32: 128 examples with one label token each and V = 49,152 take 25 MB. For the sequence-level
  L_hidden it also holds the states [m, d] at the example's m real tokens (128 examples of 60
  tokens at d = 576: 18 MB).
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Sequence

import torch

from mptune.backbone import Backbone
from mptune.data import Encoded, collate, sequence_tokens
from mptune.resume import skip


class Teacher(NamedTuple):
    """A teacher's outputs for a micro-batch, in the order `Backbone.forward` gives the student's:
    logits [N, V] and hidden states [N, d] at the label positions; states [M, d] at every real
    token (None unless asked for)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    states: torch.Tensor | None


class TeacherOutputs:
    """The teacher prompts' outputs for the examples of the current window of training steps."""

    def __init__(self, backbone: Backbone, teachers: torch.nn.Module, ahead: int, states: bool = False):
        """teachers: a prompt module whose row k is the teacher of task id k; ahead: examples per
        window (0: compute in each drawn micro-batch); states: also the states at every real token."""
        self.backbone, self.teachers, self.ahead, self.states = backbone, teachers, ahead, states
        self.window: dict[int, Teacher] = {}
        """id(example) -> its own outputs (logits [n, V], hidden [n, d], states [m, d] or None)."""

    def stream(self, batches: Iterator[list[Encoded]], start: int, batch_size: int,
               parts: Callable[[list[Encoded]], list[list[Encoded]]]) -> Iterator[list[Encoded]]:
        """The batches (of batch_size examples) after the first `start`, each window's teacher
        outputs computed before its first batch is yielded. parts(batch): this process's shards of it
        (the examples it trains; the largest sets the teachers' batch size)."""
        steps = max(1, self.ahead // batch_size) if self.ahead else 0
        if not steps:
            yield from skip(batches, start)
            return
        position = start - start % steps
        batches = skip(batches, position)
        while True:
            window = [next(batches) for _ in range(steps)]
            micro = [part for items in window for part in parts(items)]
            self.compute([e for part in micro for e in part], max(map(len, micro)))
            yield from window[max(0, start - position):]
            position += steps

    def compute(self, examples: Sequence[Encoded], batch_size: int) -> None:
        """Replace the window with the outputs of these examples (each distinct one once), run
        longest first in batches of batch_size."""
        distinct = list({id(e): e for e in examples}.values())
        distinct.sort(key=lambda e: -(len(e.input_ids) + len(e.target_ids)))
        self.window = {}
        for i in range(0, len(distinct), batch_size):
            chunk = distinct[i:i + batch_size]
            out = self._forward(chunk)
            sizes = [len(e.target_ids) for e in chunk]
            states = out.states.split([sequence_tokens([e]) for e in chunk]) if self.states else [None] * len(chunk)
            for e, z, h, s in zip(chunk, out.logits.split(sizes), out.hidden.split(sizes), states):
                self.window[id(e)] = Teacher(z, h, s)

    def __call__(self, part: Sequence[Encoded]) -> Teacher:
        """The teachers' outputs for a micro-batch."""
        if not all(id(e) in self.window for e in part):
            return self._forward(part)
        outputs = [self.window[id(e)] for e in part]
        return Teacher(*(torch.cat(parts) if parts[0] is not None else None for parts in zip(*outputs)))

    def _forward(self, items: Sequence[Encoded]) -> Teacher:
        tokenizer, backbone = self.backbone.tokenizer, self.backbone
        batch = collate(items, tokenizer.pad_token_id, backbone.is_seq2seq).to(backbone.device)
        with torch.no_grad():
            out = backbone.forward(self.teachers(batch.task_ids), batch, states=self.states)
        return Teacher(out.logits, out.hidden, out.states)

