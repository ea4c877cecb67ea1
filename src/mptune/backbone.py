"""The frozen language model, with prompts prepended to its input embeddings.

One wrapper serves both model families:
- encoder-decoder (T5, flan-T5, T5 v1.1): the prompt is prepended to the encoder input, as in the
  paper; targets are the decoder's labels.
- decoder-only (Llama/SmolLM2, GPT-2): the prompt is prepended to the sequence input + target; a
  target token at position t is predicted from the hidden state at t - 1.

Decisions
- The backbone never trains: every parameter has requires_grad=False and the model stays in eval
  mode (no dropout), so the only randomness in training is the data order.
- Logits are computed only at label positions: the LM head runs on the gathered hidden states
  [N, d] (N = target tokens in the batch), never on the whole sequence.
- No KV cache in `forward` (`use_cache=False`): a training or scoring pass never decodes further,
  and under no_grad (evaluation, the teacher in distillation) building the cache cost ~20% of a
  bare forward of 32 x 100 tokens and 13% of rank-classifying 64 RTE test examples (nothing on
  short SST-2 sentences; SmolLM2-135M, best of 3). `generate` keeps its cache.
- `Outputs.hidden` holds those same final hidden states (the LM head's input); the hidden-state
  distillation loss compares them (see `losses`). `forward(..., states=True)` also returns
  `Outputs.states`, the final hidden states at every real token of the sequence (the paper's
  sequence-level L_hidden, `loss.hidden_positions sequence`): decoder-only, the last layer's states
  at each input and target token; encoder-decoder, the encoder's last-layer states at each input
  token followed by the decoder's at each target position. Prompt positions and padding are left
  out: the prompts are what differ between teacher and student, not what should match.
- bf16 autocast is used where it is faster on this machine: precision 'auto' times bf16 against
  fp32 where the hardware has bf16 instructions (CPUs with AVX512-BF16/AMX, CUDA devices with bf16;
  `kernels.choose_precision`), since instructions alone do not make it faster (on a 2-core Xeon
  with AVX512-BF16 but no AMX a bf16 training step took 1.6x fp32's). The prompts and the loss
  stay in fp32. `load_backbone` stores the linear
  layers' weights in bf16 once (`kernels.store_linear_weights`: bitwise the same outputs as
  autocast over fp32 weights, without casting them on every call). Under `accelerate launch`,
  precision 'auto' follows its `--mixed_precision` (environment ACCELERATE_MIXED_PRECISION): bf16
  -> bf16, no -> fp32. fp16 (and fp8) are refused with a user error: fp16 autocast needs loss
  scaling, which would make the update differ from the bf16/fp32 one and skip steps on overflow;
  bf16 has fp32's range and needs none. An explicit 'bf16' or 'fp32' wins over the launcher.
- Every forward runs inside `compute()`: autocast and the attention implementation chosen for its
  kind (`attention["train"]` with gradients, `attention["infer"]` without; `mptune.kernels`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mptune import kernels
from mptune.errors import MptuneError


@dataclass
class Batch:
    """Token ids of a batch, right-padded.

    input_ids [B, n]: causal: input then target tokens; seq2seq: encoder input.
    attention_mask [B, n]: 1 on real tokens.
    labels [B, m]: target token ids, -100 elsewhere (causal: m = n, aligned with input_ids;
        seq2seq: the decoder's labels).
    task_ids [B]: index of each example's task in the prompt module.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    task_ids: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.task_ids)))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class Outputs:
    """Model outputs at the label positions, in batch order (row-major over [B, m]).

    logits [N, V], hidden [N, d], targets [N], rows [N] (the example each label token belongs to).
    states [M, d] (with `forward(..., states=True)`): final hidden states at the M real tokens of the
        sequence, example by example (`sequence_tokens` of the items counts them).
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    states: torch.Tensor | None = None


def _example_major(first: torch.Tensor, first_rows: torch.Tensor, second: torch.Tensor,
                   second_rows: torch.Tensor) -> torch.Tensor:
    """Rows of two example-major tensors [M1, d], [M2, d] interleaved so each example's rows of
    `first` are followed by its rows of `second`: [M1 + M2, d]."""
    order = torch.argsort(torch.cat([first_rows, second_rows]), stable=True)
    return torch.cat([first, second])[order]


def cpu_has_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512-BF16 or AMX); whether they are faster
    than fp32 is measured (`kernels.choose_precision`)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


LAUNCHER_PRECISION = {"bf16": "bf16", "no": "fp32"}
"""mptune's precision for each `accelerate launch --mixed_precision` value it supports."""


def launcher_precision() -> str | None:
    """The precision `accelerate launch --mixed_precision` passes on (ACCELERATE_MIXED_PRECISION), or None."""
    value = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if value is None:
        return None
    if value.lower() not in LAUNCHER_PRECISION:
        raise MptuneError(f"accelerate's mixed precision {value!r} is not supported: mptune trains with bf16 "
                          f"autocast or in fp32; launch with --mixed_precision bf16 or no, or set --model.precision")
    return LAUNCHER_PRECISION[value.lower()]


def precision_candidates(precision: str, device: torch.device) -> list[str]:
    """The precisions a `--model.precision` setting may compute in on `device`: an explicit one, or for
    'auto' the launcher's mixed precision if one is set, else fp32 and, where the hardware has bf16
    instructions, bf16 too (`kernels.choose_precision` times the two on the model: instructions alone
    do not make bf16 faster). A CPU without them emulates bf16 hundreds of times slower, so it is no
    candidate there."""
    if precision != "auto":
        return [precision]
    if launched := launcher_precision():
        return [launched]
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    return ["fp32", "bf16"] if native else ["fp32"]


class Backbone:
    """A frozen Hugging Face model and its tokenizer; prompts go in, label-position outputs come out."""

    def __init__(self, model: nn.Module, tokenizer, precision: str = "fp32", name: str = "",
                 attention: str | dict[str, str] = "sdpa"):
        """precision: 'fp32' or 'bf16' (`load_backbone` resolves 'auto'). attention: one of
        `kernels.ATTENTION` for every forward, or {"train": ..., "infer": ...} (`kernels.choose_attention`
        measures the fastest)."""
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "")
        self.is_seq2seq = bool(model.config.is_encoder_decoder)
        self.device = next(model.parameters()).device
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"Backbone computes in 'fp32' or 'bf16', not {precision!r} "
                             f"(load_backbone resolves 'auto' by measurement)")
        self.precision = precision
        if self.precision == "fp32" and any(p.dtype != torch.float32 for p in model.parameters()):
            raise MptuneError("precision fp32 needs a model whose weights are all fp32 (this one stores some "
                              "in bf16); load it again with load_backbone(name, 'fp32')")
        self.attention = attention if isinstance(attention, dict) else {mode: attention for mode in kernels.MODES}
        self._active_attention = getattr(model.config, "_attn_implementation", None)
        self.compiled = False
        """Set by `kernels.compile_model`."""
        self.lm_head = model.get_output_embeddings()
        self.scale_decoder = self.is_seq2seq and getattr(
            model.config, "scale_decoder_outputs", getattr(model.config, "tie_word_embeddings", True))

    @property
    def kernels(self) -> dict:
        """How this backbone computes, as a unit's metrics.json records it: precision, attention per
        kind of forward, whether the model is compiled."""
        return {"precision": self.precision, "attention": dict(self.attention), "compiled": self.compiled}

    @property
    def dim(self) -> int:
        """Width d of the input embeddings (and of every prompt row)."""
        return self.embeddings.shape[1]

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model has positions for (GPT-2's n_positions, Llama's context), None for
        T5's relative positions."""
        return getattr(self.model.config, "max_position_embeddings", None)

    @property
    def embeddings(self) -> torch.Tensor:
        """The input embedding matrix [V, d]."""
        return self.model.get_input_embeddings().weight

    @contextlib.contextmanager
    def compute(self):
        """Autocast (bf16 precision) and the attention implementation of this kind of forward: every
        call of the model runs inside it."""
        impl = self.attention["train" if torch.is_grad_enabled() else "infer"]
        if impl != self._active_attention:
            kernels.set_hf_attention(self.model, impl)
            self._active_attention = impl
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"), \
                kernels.attention_context(impl):
            yield

    def assert_frozen(self) -> None:
        """Fail loudly if anything in the backbone would be trained."""
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        assert not trainable, f"backbone parameters require grad: {trainable[:3]}"

    @property
    def body(self) -> nn.Module:
        """Decoder-only: the transformer without its LM head (called with inputs_embeds, returns
        last_hidden_state; `generate` and `evaluate` run it with the KV cache)."""
        return self.model.base_model

    @property
    def decoder(self) -> nn.Module:
        """Seq2seq: the decoder stack (called with encoder_hidden_states)."""
        return self.model.get_decoder()

    @property
    def decoder_start_token_id(self) -> int | None:
        """Seq2seq: the token the decoder starts from."""
        return self.model.config.decoder_start_token_id

    def with_prompt(self, prompts: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepend prompts [B, l, d] to the input embeddings: -> embeddings [B, l+n, d], mask [B, l+n]."""
        embeds = self.model.get_input_embeddings()(batch.input_ids)
        x = torch.cat([prompts.to(embeds.dtype), embeds], dim=1)
        ones = batch.attention_mask.new_ones(prompts.shape[:2])
        return x, torch.cat([ones, batch.attention_mask], dim=1)

    def encode(self, prompts: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Seq2seq only: encoder states [B, l+n, d] and their mask [B, l+n]."""
        x, mask = self.with_prompt(prompts, batch)
        with self.compute():
            states = self.model.get_encoder()(inputs_embeds=x, attention_mask=mask).last_hidden_state
        return states, mask

    def forward(self, prompts: torch.Tensor, batch: Batch,
                encoded: tuple[torch.Tensor, torch.Tensor] | None = None, states: bool = False) -> Outputs:
        """prompts [B, l, d] + batch -> Outputs at the N label positions.

        encoded: precomputed `encode()` result to reuse (seq2seq rank classification).
        states: also return the final hidden states at every real token, `Outputs.states` [M, d].
        """
        rows, cols = (batch.labels != -100).nonzero(as_tuple=True)
        length, real = prompts.shape[1], batch.attention_mask.bool()
        with self.compute():
            if self.is_seq2seq:
                enc, mask = encoded if encoded is not None else self.encode(prompts, batch)
                decoder_input = self.model._shift_right(batch.labels)
                h = self.decoder(input_ids=decoder_input, encoder_hidden_states=enc,
                                 encoder_attention_mask=mask, use_cache=False).last_hidden_state
                hidden = h[rows, cols]
                seq = _example_major(enc[:, length:][real], real.nonzero()[:, 0], hidden, rows) if states else None
            else:
                x, mask = self.with_prompt(prompts, batch)
                h = self.body(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
                hidden = h[rows, length + cols - 1]
                seq = h[:, length:][real] if states else None
            logits = self.head(hidden)
        return Outputs(logits.float(), hidden.float(), batch.labels[rows, cols], rows,
                       seq.float() if states else None)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [N, V] of final hidden states [N, d] (T5's tied head first scales them by d^-0.5)."""
        return self.lm_head(hidden * self.dim**-0.5 if self.scale_decoder else hidden)

    def sequence_logprobs(self, outputs: Outputs, batch_size: int) -> torch.Tensor:
        """Sum of target-token log-probabilities per example: [B]."""
        logp = torch.log_softmax(outputs.logits, dim=-1).gather(1, outputs.targets[:, None]).squeeze(1)
        return torch.zeros(batch_size, device=logp.device).index_add_(0, outputs.rows, logp)
