"""Greedy generation with soft prompts, for the generation tasks (extractive QA, data-to-text).

Decisions
- Greedy decoding: the argmax token at every step, as prompt-tuning papers evaluate QA and NLG.
  No sampling, beams or length penalty, so a prompt's score is deterministic.
- Decoder-only models generate a batch LEFT-padded: [pads, prompt, input]. Every row's last real
  token then sits in the last column, so one step appends one column for the whole batch.
  Position ids count real tokens only (cumulative sum of the mask), so each row sees exactly the
  positions it has in training and in `Backbone.forward` (prompt at 0..l-1, the input after it),
  and a batch generates what each example generates alone.
- Both families use the model's KV cache. Decoder-only: the first call reads prompt + input as
  `inputs_embeds`, later calls feed only the new token's id. Encoder-decoder: the encoder runs
  once with the prompt (`Backbone.encode`), then the decoder runs one token at a time from the
  model's decoder start token. The cache keyword is `cache` in recent transformers and
  `past_key_values` before; the one the model's forward accepts is used.
- Logits come from `Backbone.head`, the head of `Backbone.forward` (T5's tied head scales by
  d^-0.5), so generation takes the argmax of the distribution training fits.
- A row stops at the end token (`tokenizer.eos_token_id`: the token `data.encode` appends to the
  targets of generation tasks); the returned ids exclude it. A batch stops when every row has
  stopped or after `max_new_tokens` steps; rows that already stopped are fed pad tokens, whose
  outputs are discarded.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from mptune.backbone import Backbone, Batch
from mptune.data import Encoded, collate

Step = Callable[[torch.Tensor | None], torch.Tensor]
"""step(None) -> logits [B, V] of the first new token; step(tokens [B]) -> logits after appending them."""


def cache_keyword(module: torch.nn.Module) -> str:
    """Name of the KV-cache argument (and output field) of `module.forward`."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def left_pad(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the right padding of embeddings [B, L, d] and mask [B, L] to the left of each row."""
    length = mask.shape[1]
    pads = length - mask.sum(1, keepdim=True)
    index = (torch.arange(length, device=mask.device) - pads) % length
    return x.gather(1, index[..., None].expand_as(x)), mask.gather(1, index)


def prefill(backbone: Backbone, prompts: torch.Tensor, batch: Batch):
    """Decoder-only: run [pads, prompt, input] once with the KV cache.

    -> (the base model's output, whose cache is `out[cache_keyword(model)]`, and the left-padded
    mask [B, l+n]); the last column of `out.last_hidden_state` is every row's last real token.
    """
    model = backbone.body
    with backbone.compute():
        x, mask = left_pad(*backbone.with_prompt(prompts, batch))
        out = model(inputs_embeds=x, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                    use_cache=True)
    return out, mask


def causal_stepper(backbone: Backbone, prompts: torch.Tensor, batch: Batch) -> Step:
    """Greedy steps of a decoder-only model over [pads, prompt, input] with the KV cache."""
    model = backbone.body
    key = cache_keyword(model)
    state = {}

    def step(tokens: torch.Tensor | None) -> torch.Tensor:
        with backbone.compute():
            if tokens is None:
                out, state["mask"] = prefill(backbone, prompts, batch)
            else:
                state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(len(tokens), 1)], 1)
                out = model(input_ids=tokens[:, None], position_ids=state["mask"].sum(1, keepdim=True) - 1,
                            attention_mask=state["mask"], use_cache=True, **{key: state[key]})
            state[key] = out[key]
            return backbone.head(out.last_hidden_state[:, -1]).float()

    return step


def seq2seq_stepper(backbone: Backbone, prompts: torch.Tensor, batch: Batch) -> Step:
    """Greedy steps of an encoder-decoder model: encode once, then decode with the KV cache."""
    decoder = backbone.decoder
    key = cache_keyword(decoder)
    states, mask = backbone.encode(prompts, batch)
    start = backbone.decoder_start_token_id
    state = {key: None}

    def step(tokens: torch.Tensor | None) -> torch.Tensor:
        ids = torch.full((len(batch), 1), start, device=states.device) if tokens is None else tokens[:, None]
        with backbone.compute():
            out = decoder(input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=mask,
                          use_cache=True, **{key: state[key]})
            state[key] = out[key]
            return backbone.head(out.last_hidden_state[:, -1]).float()

    return step


def greedy(step: Step, rows: int, max_new_tokens: int, eos_id: int, pad_id: int) -> list[list[int]]:
    """Token ids generated for `rows` examples by `step`, each up to its first eos (excluded)."""
    out: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    logits = step(None)
    for t in range(max_new_tokens):
        tokens = logits.argmax(-1)
        for i, tok in enumerate(tokens.tolist()):
            if not done[i]:
                done[i] = tok == eos_id
                if not done[i]:
                    out[i].append(tok)
        if all(done) or t == max_new_tokens - 1:
            break
        logits = step(torch.where(torch.tensor(done, device=tokens.device), pad_id, tokens))
    return out


@torch.no_grad()
def generate(backbone: Backbone, prompt, items: Sequence[Encoded], max_new_tokens: int, batch_size: int = 32,
             eos_id: int | None = None, progress: str | None = None) -> list[list[int]]:
    """Greedy continuations of every item's prompt + input: token ids, without the end token.

    `prompt` maps task ids [B] -> prompts [B, l, d]; `eos_id` defaults to the tokenizer's end token.
    """
    tok = backbone.tokenizer
    eos = tok.eos_token_id if eos_id is None else eos_id
    stepper = seq2seq_stepper if backbone.is_seq2seq else causal_stepper
    out: list[list[int]] = []
    for start in tqdm(range(0, len(items), batch_size), desc=progress, disable=progress is None, leave=False):
        chunk = [replace(it, target_ids=[]) for it in items[start:start + batch_size]]
        batch = collate(chunk, tok.pad_token_id, backbone.is_seq2seq).to(backbone.device)
        step = stepper(backbone, prompt(batch.task_ids), batch)
        out.extend(greedy(step, len(chunk), max_new_tokens, eos, tok.pad_token_id))
    return out
