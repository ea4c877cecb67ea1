"""How the frozen backbone computes: the dtype of its weights, its attention kernel, compilation.

The right choice differs between machines (on one 2-core Zen-5 bf16 halved a training step, on an
Intel Xeon with AMX it saved 14% and the CPU flash-attention backward took a third of the step, on
an Intel Xeon with AVX512-BF16 but no AMX it made the step 1.6x slower), so nothing here is a
constant: the precision and the attention kernel are chosen by timing the candidates on this
machine, and the choices are cached.

Decisions
- Precision 'auto', by measurement. Where the hardware has bf16 instructions (AVX512-BF16 or AMX,
  a CUDA device with bf16), `choose_precision` times the probe batch's training step and no-grad
  forward in fp32 and in bf16 (the linear weights stored in bf16 for the probe only) with the
  default attention kernel, and keeps fp32 unless bf16 is at least `MARGIN` faster on their sum,
  at a loss within bf16 rounding. Cached like the attention choice, under the key with precision
  'auto'. A CPU without bf16 instructions emulates it hundreds of times slower: bf16 is no
  candidate there and nothing is timed.
- bf16 weights, stored once. With precision bf16 every linear layer's weight and bias (the GEMMs:
  attention and MLP projections, the LM head; GPT-2's Conv1D too) is stored in bf16 when the
  backbone is made, instead of autocast casting the fp32 weights on every call. The input
  embeddings and the norms stay fp32, so the residual stream stays fp32 exactly as under autocast
  over fp32 weights, and the outputs are bitwise those of that path: autocast rounds the same fp32
  weights to the same bf16 values, only once per call. A tied LM head gets its own bf16 copy (the
  fp32 embedding table stays: prompts are initialised from it). Autocast stays on around every
  forward: it casts the fp32 activations into the bf16 GEMMs, and leaves bf16 weights as they are.
- Attention candidates: 'sdpa' (torch's scaled_dot_product_attention, whichever backend torch
  picks: flash attention on CPU), 'sdpa-math' (its reference math backend), 'eager' (the model's
  own matmul-softmax-matmul). All compute the same function; in bf16 they round differently, and
  each stays as close to the fp32 result as the others (SmolLM2-135M, a batch of 8 RTE examples:
  relative error of the prompt gradient 5.6% sdpa, 3.6% sdpa-math, 3.8% eager).
- 'auto' times the candidates on a synthetic batch of the model's own shapes (8 examples of
  `PROBE_TOKENS` tokens after a `PROBE_PROMPT`-row prompt), separately for training (forward +
  backward to the prompt) and inference (a no-grad forward, used by scoring and generation), and
  picks the fastest of each. The default kernel ('sdpa') gives way only to a candidate at least
  `MARGIN` faster: on a shared 2-core machine smaller gaps are noise (fp32 SmolLM2 inference:
  eager won a probe by 3% and then ran a distillation step 9% slower than sdpa). A candidate
  that fails, or whose loss is off the default kernel's by more than bf16 rounding, is skipped.
  The choice is cached in `$MPTUNE_CACHE/kernels.json` under a key of the device (CPU model and
  flags, or the CUDA device), the thread count, torch and transformers versions, the model's
  architecture and the precision: the same machine always makes the same choice, and the probe
  runs once (seconds for SmolLM2-135M on 2 cores); a cache entry measured under another MARGIN
  is measured again.
- Compilation (`torch.compile(dynamic=True)` of the base model) costs minutes the first time on
  a CPU and seconds once its kernels are in the inductor cache (kept in $MPTUNE_CACHE/inductor),
  and pays only over enough steps. 'on' compiles, and measures on the probe batch what compiling
  cost and what a forward saves, for each graph a command compiles: the training step (forward +
  backward) and the no-grad forward of scoring (the compile record, cached with the attention
  choice). 'auto' compiles only when that record says the command's planned training examples
  and scored examples repay both compiles (`compile_pays`: a command that trains also scores, so it
  pays both graphs); with no record (compile never measured on this machine), or one from before
  the scoring graph was measured, it does not compile. Greedy generation's cached-decoding graph
  is a third compile the record does not measure (it is not counted as saving either). With a
  warm cache the default run's stages compiled took 776 s against 760 s eager (training loops
  559 s against 637 s), so the default is 'off'.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from mptune import distributed
from mptune.files import write_json

ATTENTION = ("sdpa", "sdpa-math", "eager")
"""Attention implementations mptune can run ('auto' picks among them by measurement)."""
MODES = ("train", "infer")
"""The two kinds of forward an attention choice is made for: with gradients, and without."""
PROBE_ROWS, PROBE_TOKENS, PROBE_PROMPT, PROBE_REPEATS = 8, 108, 20, 3
"""Shape of the auto-selection probe: rows x (prompt + tokens), timed this many times per candidate."""
PROBE_SHAPE = {"rows": PROBE_ROWS, "tokens": PROBE_TOKENS, "prompt": PROBE_PROMPT, "repeats": PROBE_REPEATS}
"""The probe's shape as a cache entry records it."""
LOSS_TOLERANCE = 0.05
"""Largest relative loss difference from the default kernel a candidate may show (bf16 rounding)."""
MARGIN = 0.05
"""How much faster than the default kernel a candidate must be on the probe to replace it."""


def store_linear_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Store every linear layer's weight and bias (nn.Linear, transformers' Conv1D) in `dtype`.

    A weight shared with another module (a tied LM head) is replaced by a copy, so the shared
    tensor (the input embeddings) keeps its dtype. Returns the number of layers changed.
    """
    changed = 0
    for module in linear_layers(model):
        for name in ("weight", "bias"):
            param = getattr(module, name, None)
            if isinstance(param, torch.Tensor) and param.dtype != dtype:
                setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=False))
        changed += 1
    return changed


def linear_layers(model: nn.Module) -> list[nn.Module]:
    """The model's GEMM layers whose weights `store_linear_weights` stores: nn.Linear and transformers'
    Conv1D (GPT-2)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]


@contextlib.contextmanager
def linear_weights_in(model: nn.Module, dtype: torch.dtype):
    """Within the block the linear layers' weights are stored in `dtype` (`store_linear_weights`);
    afterwards the model holds its original tensors again (a tied LM head is tied again)."""
    saved = [(module, name, getattr(module, name)) for module in linear_layers(model)
             for name in ("weight", "bias") if isinstance(getattr(module, name, None), torch.Tensor)]
    store_linear_weights(model, dtype)
    try:
        yield model
    finally:
        for module, name, tensor in saved:
            setattr(module, name, tensor)


def attention_context(impl: str):
    """The context that selects the SDPA backend of `impl` ('sdpa-math'); a no-op for the others."""
    if impl == "sdpa-math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def hf_attention(impl: str) -> str:
    """The transformers attention implementation behind an mptune one ('sdpa-math' -> 'sdpa')."""
    return "eager" if impl == "eager" else "sdpa"


def set_hf_attention(model: nn.Module, impl: str) -> None:
    """Switch a transformers model (and its sub-models) to `impl` without reloading it."""
    target = hf_attention(impl)
    if getattr(model.config, "_attn_implementation", None) != target:
        model.set_attn_implementation(target)


def supported(model: nn.Module) -> list[str]:
    """The candidates this model can run: all of them with SDPA support, else eager alone."""
    return list(ATTENTION) if getattr(model, "_supports_sdpa", False) else ["eager"]


# --- the probe ---------------------------------------------------------------------------------

def device_description(device: torch.device) -> str:
    """What the kernels' speed depends on: the CPU model and its matrix flags, or the CUDA device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
    return f"{name} [{' '.join(f for f in wanted if f in flags)}]"


def probe_key(backbone) -> str:
    """Cache key of a backbone's kernel choice (device, threads, versions, architecture, precision)."""
    return _key(backbone.model, backbone.device, backbone.precision)


def precision_key(model: nn.Module) -> str:
    """Cache key of the choice `--model.precision auto` makes for a model on this machine: the
    kernel-choice key with precision 'auto'."""
    return _key(model, next(model.parameters()).device, "auto")


def _key(model: nn.Module, device: torch.device, precision: str) -> str:
    import transformers

    arch = {k: v for k, v in model.config.to_dict().items()
            if not k.startswith("_") and k != "transformers_version"}
    parts = {"device": device_description(device), "threads": torch.get_num_threads(),
             "torch": torch.__version__, "transformers": transformers.__version__, "precision": precision,
             "architecture": hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:16]}
    return json.dumps(parts, sort_keys=True)


def cache_file() -> Path:
    """Where kernel choices are kept: kernels.json beside the dequantized models."""
    from mptune.models import cache_root

    return cache_root() / "kernels.json"


def read_cache() -> dict:
    """All cached choices (an unreadable or damaged file counts as empty: the probe just runs again)."""
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(key: str, fields: dict) -> None:
    """Set `fields` in the cache entry `key` (its other fields stay), atomically (a kill never
    leaves half a file)."""
    path = cache_file()
    data = read_cache()
    entry = data.get(key)
    data[key] = {**(entry if isinstance(entry, dict) else {}), **fields}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data)
    except OSError:  # a read-only cache only costs a probe next time
        pass


def probe_batch(backbone):
    """A synthetic batch of the probe's shape: random token ids, one label token per row."""
    from mptune.backbone import Batch

    g = torch.Generator().manual_seed(0)
    vocab = backbone.embeddings.shape[0]
    ids = torch.randint(0, vocab, (PROBE_ROWS, PROBE_TOKENS), generator=g)
    labels = torch.full_like(ids, -100)
    if backbone.is_seq2seq:
        labels = ids[:, :2].clone()
    else:
        labels[:, -1] = ids[:, -1]
    prompts = backbone.embeddings[torch.randint(0, vocab, (PROBE_PROMPT,), generator=g)].detach().float()
    batch = Batch(ids, torch.ones_like(ids), labels, torch.zeros(PROBE_ROWS, dtype=torch.long))
    return prompts.expand(PROBE_ROWS, -1, -1).contiguous().to(backbone.device), batch.to(backbone.device)


def _timed(fn, device: torch.device) -> tuple[float, float]:
    """(seconds, value) of one call of fn, synchronised on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def probe_steps(backbone):
    """The two timed probe calls on `backbone`: (training step: forward + backward to the prompt,
    no-grad forward), each returning the probe batch's loss."""
    from mptune.losses import plm_loss

    prompts, batch = probe_batch(backbone)

    def train() -> float:
        p = prompts.clone().requires_grad_(True)
        out = backbone.forward(p, batch)
        loss = plm_loss(out.logits, out.targets)
        loss.backward()
        return loss.item()

    def infer() -> float:
        with torch.no_grad():
            out = backbone.forward(prompts, batch)
            return plm_loss(out.logits, out.targets).item()

    return train, infer


def measure(backbone, candidates: list[str]) -> dict:
    """Time every candidate for training and inference; -> {mode: {impl: seconds or None}, 'loss': ...}.

    Candidates are timed in interleaved rounds (one warm-up each), best of PROBE_REPEATS; None marks a
    candidate that failed or whose loss differs from the first candidate's by over LOSS_TOLERANCE.
    """
    train, infer = probe_steps(backbone)
    saved = dict(backbone.attention)
    times = {mode: {impl: [] for impl in candidates} for mode in MODES}
    losses = {mode: {} for mode in MODES}
    try:
        for rnd in range(PROBE_REPEATS + 1):
            for impl in candidates:
                backbone.attention = {mode: impl for mode in MODES}
                for mode, fn in (("train", train), ("infer", infer)):
                    if times[mode][impl] is None:
                        continue
                    try:
                        sec, loss = _timed(fn, backbone.device)
                    except Exception:  # noqa: BLE001 - a kernel this build cannot run is no candidate
                        times[mode][impl] = None
                        continue
                    if rnd == 0:
                        losses[mode][impl] = loss
                    else:
                        times[mode][impl].append(sec)
    finally:
        backbone.attention = saved
    result = {}
    for mode in MODES:
        ref = next((losses[mode][i] for i in candidates if i in losses[mode]), None)
        result[mode] = {}
        for impl in candidates:
            ok = times[mode][impl] is not None and impl in losses[mode] and ref is not None and \
                abs(losses[mode][impl] - ref) <= LOSS_TOLERANCE * max(abs(ref), 1e-6)
            result[mode][impl] = round(min(times[mode][impl]), 5) if ok else None
    result["loss"] = losses
    return result


def fastest(seconds: dict[str, float | None], default: str) -> str:
    """The fastest valid candidate, if it beats the default by MARGIN (else the default, when valid)."""
    valid = {impl: sec for impl, sec in seconds.items() if sec is not None}
    if not valid:
        return default
    best = min(valid, key=valid.get)
    if default in valid and valid[best] > (1 - MARGIN) * valid[default]:
        return default
    return best


def choose_attention(backbone, setting: str = "auto") -> dict[str, str]:
    """The attention implementation per mode: `setting` itself, or for 'auto' the cached (or newly
    measured) fastest candidate of each mode."""
    if setting != "auto":
        return {mode: setting for mode in MODES}
    candidates = supported(backbone.model)
    if len(candidates) == 1:
        return {mode: candidates[0] for mode in MODES}
    key = probe_key(backbone)
    cached = read_cache().get(key)
    entry = cached if isinstance(cached, dict) else {}
    valid = isinstance(entry.get("choice"), dict) and all(entry["choice"].get(m) in candidates for m in MODES)
    if not valid or entry.get("margin") != MARGIN:  # measured under another rule: measure again
        timings = measure(backbone, candidates)
        choice = {mode: fastest(timings[mode], candidates[0]) for mode in MODES}
        entry = {"choice": choice, "margin": MARGIN, "seconds": {m: timings[m] for m in MODES},
                 "probe": PROBE_SHAPE,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_cache(key, entry)
    return dict(entry["choice"])


# --- precision ---------------------------------------------------------------------------------

def measure_precisions(model: nn.Module, tokenizer, candidates: list[str]) -> dict:
    """Time the probe's training step and no-grad forward of an fp32-loaded model in each candidate
    precision (bf16: its linear weights stored in bf16 for the probe only, `linear_weights_in`), with
    the default attention kernel; -> {precision: {mode: seconds} or None, 'loss': {precision: {mode: loss}}}.

    Interleaved rounds, one warm-up each, best of PROBE_REPEATS; None marks a precision that failed or
    whose loss is off the first candidate's by over LOSS_TOLERANCE (bf16 rounding)."""
    from mptune.backbone import Backbone

    attention, device = supported(model)[0], next(model.parameters()).device
    times = {prec: {mode: [] for mode in MODES} for prec in candidates}
    losses: dict[str, dict[str, float]] = {prec: {} for prec in candidates}
    failed: set[str] = set()
    for rnd in range(PROBE_REPEATS + 1):
        for prec in candidates:
            if prec in failed:
                continue
            stored = linear_weights_in(model, torch.bfloat16) if prec == "bf16" else contextlib.nullcontext()
            try:
                with stored:
                    steps = probe_steps(Backbone(model, tokenizer, prec, attention=attention))
                    for mode, fn in zip(MODES, steps):
                        sec, loss = _timed(fn, device)
                        if rnd == 0:
                            losses[prec][mode] = loss
                        else:
                            times[prec][mode].append(sec)
            except Exception:  # noqa: BLE001 - a precision this device cannot run is no candidate
                failed.add(prec)
    ref = None if candidates[0] in failed else losses[candidates[0]]
    result: dict = {"loss": losses}
    for prec in candidates:
        ok = prec not in failed and ref is not None and all(
            abs(losses[prec][m] - ref[m]) <= LOSS_TOLERANCE * max(abs(ref[m]), 1e-6) for m in MODES)
        result[prec] = {m: round(min(times[prec][m]), 5) for m in MODES} if ok else None
    return result


def choose_precision(model: nn.Module, tokenizer, candidates: list[str]) -> str:
    """What `--model.precision auto` computes in: the only candidate, or the cached (else newly measured)
    choice between fp32 and bf16. fp32 (exact) is the default; bf16 replaces it only when its probe
    training step plus no-grad forward is at least MARGIN faster (`fastest`), at a loss within bf16
    rounding of fp32's."""
    if len(candidates) == 1:
        return candidates[0]
    key = precision_key(model)
    cached = read_cache().get(key)
    entry = cached if isinstance(cached, dict) else {}
    if entry.get("precision") not in candidates or entry.get("margin") != MARGIN:
        timings = measure_precisions(model, tokenizer, candidates)
        totals = {prec: None if timings[prec] is None else round(sum(timings[prec].values()), 5)
                  for prec in candidates}
        entry = {"precision": fastest(totals, candidates[0]), "margin": MARGIN,
                 "seconds": {prec: timings[prec] for prec in candidates}, "loss": timings["loss"],
                 "probe": PROBE_SHAPE,
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_cache(key, entry)
    return entry["precision"]


# --- compilation -------------------------------------------------------------------------------

def inductor_cache() -> None:
    """Keep torch.compile's kernels beside the dequantized models ($MPTUNE_CACHE/inductor), so a
    later process reuses them (a warm compile takes seconds, a cold one minutes), unless
    TORCHINDUCTOR_CACHE_DIR already says where."""
    from mptune.models import cache_root

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))


def compile_model(backbone) -> dict:
    """Compile the modules `Backbone.forward` calls (the base model; T5's encoder and decoder) in place,
    with dynamic shapes (batches are padded to their longest example, so lengths vary).

    Measured on the probe batch, for the training step (forward + backward) and for the no-grad
    forward of scoring: the compile cost (the first compiled call minus a steady one) and the steady
    time, eager and compiled. They are cached as this machine's compile record, which `compile_pays`
    reads. -> that record.
    """
    inductor_cache()
    prompts, batch = probe_batch(backbone)

    def step() -> None:
        p = prompts.clone().requires_grad_(True)
        backbone.forward(p, batch).logits.sum().backward()

    def score() -> None:
        with torch.no_grad():
            backbone.forward(prompts, batch)

    eager = {"train": _best_of(step, backbone.device), "infer": _best_of(score, backbone.device)}
    model = backbone.model
    parts = [model.get_encoder(), model.get_decoder()] if backbone.is_seq2seq else [model.base_model]
    for part in parts:
        part.compile(dynamic=True)
    backbone.compiled = True
    record = {}
    for mode, fn in (("train", step), ("infer", score)):
        first = _timed(fn, backbone.device)[0]
        compiled = _best_of(fn, backbone.device)
        prefix = "" if mode == "train" else "infer_"
        record.update({f"{prefix}compile_seconds": round(max(first - compiled, 0.0), 2),
                       f"{prefix}eager_step": round(eager[mode], 5), f"{prefix}compiled_step": round(compiled, 5)})
    record["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if distributed.is_main():  # every process compiles its own model; one writes the record
        write_cache(probe_key(backbone), {"compile": record})
    return record


def _best_of(fn, device: torch.device) -> float:
    fn()
    return min(_timed(fn, device)[0] for _ in range(PROBE_REPEATS))


RECORD_FIELDS = ("compile_seconds", "eager_step", "compiled_step",
                 "infer_compile_seconds", "infer_eager_step", "infer_compiled_step")
"""The compile record's numbers: per graph (training; 'infer_': no-grad scoring) its compile seconds and
the probe batch's eager and compiled seconds."""


def compile_pays(backbone, examples: int, scored: int = 0) -> bool:
    """True when this machine's compile record says compiling repays itself over `examples` training
    examples and `scored` examples scored without gradients (each at least one row of a forward, so
    counting examples under-counts that saving): what the probe steps save, examples / PROBE_ROWS x
    (eager - compiled training step) plus scored / PROBE_ROWS x (eager - compiled forward), exceeds
    both graphs' compile seconds.
    No complete record (compile never measured here, or before the scoring graph was): False."""
    entry = read_cache().get(probe_key(backbone))
    record = entry.get("compile") if isinstance(entry, dict) else None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), (int, float)) for k in RECORD_FIELDS):
        return False
    saving = (examples * (record["eager_step"] - record["compiled_step"])
              + scored * (record["infer_eager_step"] - record["infer_compiled_step"])) / PROBE_ROWS
    return saving > record["compile_seconds"] + record["infer_compile_seconds"]
