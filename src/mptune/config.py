"""Every setting of mptune, as dataclasses: one definition for the Python API, the CLI and YAML.

Each field carries a docstring right below it (as in litgpt); `field_docs` reads them so the CLI
help for `--teach.steps` is the docstring of `TrainArgs.steps`. Validation lives in
`__post_init__`, so a bad value fails the same way whether it came from Python, a flag or a file.

`RunConfig` groups the sections; a YAML file mirrors it (`teach: {steps: 100}`), a flag names
`--section.field`, and unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import os
import re
import textwrap
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from mptune.errors import MptuneError
from mptune.files import read_yaml, write_yaml
from mptune.kernels import ATTENTION
from mptune.models import EMBEDDED

METHODS = ("pt", "spot", "spot-fixed", "mpt")
DEFAULT_METHODS = ("pt", "spot", "mpt")
HIDDEN_POSITIONS = ("labels", "sequence")
LOGGERS = ("tensorboard",)
"""Step loggers that can be added to log.jsonl (see mptune.logs)."""
NOT_RUN_IDENTITY = ("loggers", "out_dir", "reuse", "model.attention", "model.compile", "loss.teacher_ahead",
                    *(f"{stage}.max_padding" for stage in ("teach", "distill", "adapt")), "predict", "serve")
"""Settings that do not change what a run computes: a run directory may be resumed with other values
(out_dir too: the same directory named relatively or absolutely, or moved, is the same run; the
attention kernel, compilation, the batches teachers run in and the micro-batches a step's examples
run in only change rounding, as another machine would; `mptune predict` and `mptune serve` only read
a run; `reuse` only says where finished units may be copied from)."""

_EVERY_UNIT = ("seed", "model", "prompt.length", "prompt.init", "prompt.init_text", "data.data_dir",
               "data.custom_tasks", "data.split_seed", "data.dev_examples")
UNIT_SETTINGS = {"teach": (*_EVERY_UNIT, "teach")}
UNIT_SETTINGS["distill"] = (*UNIT_SETTINGS["teach"], "sources", "prompt.rank", "distill", "loss", "data.kappa")
UNIT_SETTINGS["pt"] = (*_EVERY_UNIT, "adapt")
UNIT_SETTINGS["spot"] = (*UNIT_SETTINGS["pt"], "teach", "sources", "compare.spot_source")
UNIT_SETTINGS["spot-fixed"] = (*UNIT_SETTINGS["pt"], "teach", "sources", "compare.spot_fixed")
UNIT_SETTINGS["mpt"] = (*UNIT_SETTINGS["pt"], *UNIT_SETTINGS["distill"], "prompt.target_factors")
"""What a unit is computed from, as settings or whole sections: two runs equal in these train the same teacher (of
one task), the same distilled prompt or the same target prompt of a method (keys 'teach', 'distill' and the
methods), so `reuse` may copy it. A target unit's task and adaptation seed are in its path; PT depends on no
source, SPoT on the teachers, MPT on P*. What scores a unit (SCORE_SETTINGS) is not among them: a copied unit is
scored again by the run it joins, unless that run scores the same examples. A superset errs on the safe side: it
only trains again what could have been copied."""
SCORE_SETTINGS = ("eval_split", "data.eval_examples")
"""With a unit's own settings, what decides the examples it is scored on (`reuse` keeps a copied unit's scores and
predictions when these agree too)."""


RENAMED = {**{f"mpt.{k}": f"loss.{k}" for k in ("lam", "temperature", "logits", "hidden", "teacher_ahead")},
           "mpt.kappa": "data.kappa",
           **{f"target.{k}": f"compare.{k}" for k in ("methods", "joint", "spot_source", "spot_fixed", "seeds")}}
"""Settings of earlier versions under their names of today (the sections `mpt` and `target` held a
DistillArgs and an AdaptArgs beside the TrainArgs `distill` and `adapt`). YAML files, the
config.yaml of an existing run and flags may use either name; `upgrade` renames."""


def upgrade(data):
    """A config dict (as read from YAML) with the settings of earlier versions under today's names;
    anything else is returned as it is (a setting given under both names is an error)."""
    if not isinstance(data, dict):
        return data
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in RENAMED.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        if not isinstance(out.get(old_section), dict) or old_key not in out[old_section]:
            continue
        section = out.setdefault(new_section, {})
        if not isinstance(section, dict):
            continue  # from_dict names the bad section
        if new_key in section:
            raise MptuneError(f"{old} and {new} are one setting ({old} is its earlier name): give it once, as {new}")
        section[new_key] = out[old_section].pop(old_key)
    for section in ("mpt", "target"):
        if out.get(section) == {}:
            del out[section]
    return out


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MptuneError(message)


SEED_MAX = 2**63 - 1
"""Seeds are 0 .. 2^63 - 1 (what torch's generators take)."""
DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
"""The torch devices a setting may name (availability is checked before anything is written: `models.check_device`)."""


def _check_fields(section) -> None:
    """Every float setting of a section is a finite number (inf and nan are refused before any training), and
    every list setting a list (a bare string, from Python, is refused, never read character by character)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.type == "float" and isinstance(value, float):
            _check(math.isfinite(value), f"{f.name} must be a finite number, got {value}")
        if f.type.startswith("list[") and not isinstance(value, list):
            _check(isinstance(value, tuple), f"{f.name} must be a list, got {value!r}")
            setattr(section, f.name, list(value))


def _check_seed(value: int, key: str) -> None:
    _check(0 <= value <= SEED_MAX, f"{key} must be between 0 and 2^63 - 1 ({SEED_MAX}), got {value}")


@dataclass
class ModelArgs:
    """The frozen backbone."""

    name: str = EMBEDDED
    """'smollm2-135m-instruct' (embedded, offline), a local model directory, or a hub id such as google-t5/t5-base."""
    precision: str = "auto"
    """'auto' (under accelerate launch its --mixed_precision bf16 or no; else bf16 autocast where the hardware has
    bf16 instructions and a timed probe finds it at least 5% faster than fp32, measured once per machine and model and
    cached; else fp32), 'bf16' or 'fp32'."""
    device: str = "cpu"
    """Torch device: 'cpu' or 'cuda'."""
    max_input_tokens: int = 128
    """Longest input kept, in tokens; longer inputs keep their head and their last 24 tokens (a warning names splits
    with over a tenth of inputs cut; QA contexts need 512)."""
    attention: str = "auto"
    """Attention kernel: 'auto' (the fastest for training and for inference on this machine, timed once and cached in
    $MPTUNE_CACHE/kernels.json), 'sdpa', 'sdpa-math' or 'eager'."""
    compile: str = "off"
    """'off' (default: on the 2-core development CPU compiling did not repay itself within a default run, see
    benchmarks/README.md); 'on' compiles the frozen model with torch.compile and records what that cost and saved on
    this machine, for training and for scoring; 'auto' compiles only when that record says the command's planned
    training and scored examples repay both compiles."""

    def __post_init__(self):
        _check_fields(self)
        _check(isinstance(self.name, str) and self.name.strip() != "", f"name must name a model, got {self.name!r}")
        _check(isinstance(self.device, str) and DEVICE.fullmatch(self.device) is not None,
               f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        _check(self.precision in ("auto", "bf16", "fp32"),
               f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        _check(self.attention in ("auto", *ATTENTION),
               f"attention must be 'auto' or one of {', '.join(ATTENTION)}, got {self.attention!r}")
        _check(self.compile in ("auto", "on", "off"), f"compile must be 'auto', 'on' or 'off', got {self.compile!r}")
        _check(self.max_input_tokens >= 32, f"max_input_tokens must be >= 32, got {self.max_input_tokens}")


@dataclass
class DataArgs:
    """Where task data comes from, how much of it is used and how multitask batches draw from it."""

    data_dir: str | None = None
    """Folder holding the task files in their official layouts (glue/, superglue/, ...); default: $MPTUNE_DATA_DIR."""
    custom_tasks: list[str] = field(default_factory=list)
    """YAML files declaring your own CSV/JSONL tasks (see tasks/custom.py); their names can then be sources or
    targets."""
    split_seed: int = 42
    """Seed of the train/dev/test split (fixed apart from the run seed, as in the literature); k-shot samples are drawn
    with split_seed + the run (or target) seed."""
    eval_examples: int = 200
    """Most dev/test examples scored per task (a seeded sample; 0 = all)."""
    dev_examples: int = 100
    """Dev examples per task (a seeded sample; 0 = all) scored by model selection (STAGE.eval_every); selection
    never reads the test split."""
    kappa: int = 3
    """Each multitask batch (distillation, and MPT* adaptation with compare.joint) draws K tasks with K uniform in [2,
    kappa]."""

    def __post_init__(self):
        _check_fields(self)
        _check_seed(self.split_seed, "split_seed")
        _check(all(str(p).strip() for p in self.custom_tasks), f"custom_tasks lists an empty path: {self.custom_tasks}")
        _check(self.eval_examples >= 0, f"eval_examples must be >= 0, got {self.eval_examples}")
        _check(self.kappa >= 2, f"kappa must be >= 2, got {self.kappa}")
        _check(self.dev_examples >= 0, f"dev_examples must be >= 0, got {self.dev_examples}")


@dataclass
class PromptArgs:
    """Shape and initialisation of every prompt."""

    length: int = 20
    """Prompt length l (rows prepended to the input); the paper uses 100."""
    rank: int = 1
    """Rank r of the task factor u_k v_k^T (the paper's rank-one decomposition is r = 1)."""
    init: str = "vocab"
    """Start of teachers and PT: 'vocab' (sampled vocabulary embeddings), 'text' (see init_text) or a .safetensors
    prompt file."""
    init_text: str = "Classify the input and answer with the label word."
    """Text whose token embeddings start the prompt when init is 'text'."""
    target_factors: str = "mean"
    """u, v of an MPT target: 'mean' (average of the source tasks' factors) or 'fresh' (u = 1, v = 1/r)."""

    def __post_init__(self):
        _check_fields(self)
        _check(self.length >= 1, f"length must be >= 1, got {self.length}")
        _check(1 <= self.rank <= self.length,
               f"rank must be between 1 and length ({self.length}): u v^T of an l x d prompt has rank <= l, "
               f"got {self.rank}")
        _check(self.init in ("vocab", "text") or self.init.endswith(".safetensors"),
               f"init must be 'vocab', 'text' or a .safetensors file, got {self.init!r}")
        _check(self.target_factors in ("mean", "fresh"),
               f"target_factors must be 'mean' or 'fresh', got {self.target_factors!r}")


@dataclass
class TrainArgs:
    """The optimisation budget of one stage."""

    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 16
    """Examples per step (a multitask step splits them between its K tasks)."""
    lr: float = 0.3
    """AdamW learning rate of the prompt matrices (P, P*); prompt tuning needs a large one."""
    factor_lr: float = 0.03
    """AdamW learning rate of the MPT task factors u, v."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    warmup_steps: int = 10
    """Steps of linear warm-up before linear decay to zero (capped at half the steps)."""
    checkpoint_every: int = 25
    """Save the training state every this many steps, so a killed run resumes mid-stage (0 = never)."""
    grad_accum: int = 1
    """Micro-batches per step and process (gradient accumulation): same update as one batch, less memory."""
    clip_norm: float = 1.0
    """Clip the gradient of the trainable tensors to this global L2 norm before each update."""
    eval_every: int = 0
    """Score the prompt on a dev sample (data.dev_examples per task) every this many steps and at the last, and
    keep the best-scoring prompt; several tasks (distillation, MPT*) score their mean. 0 = keep the last step's."""
    max_padding: float = 0.2
    """Split a step's (micro-)batch, longest first, where more than this share of its positions (prompt and tokens)
    would be padding: the same examples and loss in fewer padded positions (only rounding changes). 1 = never. At 0.2
    a default-run step on 2 CPU cores was 1.22x faster, a distillation step 1.28x (benchmarks/README.md)."""

    def __post_init__(self):
        _check_fields(self)
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.factor_lr > 0, f"factor_lr must be > 0, got {self.factor_lr}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _check(self.clip_norm > 0 and math.isfinite(self.clip_norm), f"clip_norm must be > 0, got {self.clip_norm}")
        _check(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        _check(0 <= self.max_padding <= 1, f"max_padding must be between 0 and 1, got {self.max_padding}")
        _check(1 <= self.grad_accum <= self.batch_size,
               f"grad_accum must be between 1 and batch_size ({self.batch_size}), got {self.grad_accum}")


@dataclass
class LossArgs:
    """MPT's source-training loss L = L_PLM + lambda (L_logits + L_hidden), and how its teacher side is computed."""

    lam: float = 1.0
    """lambda, the weight of the distillation terms."""
    temperature: float = 2.0
    """T that softens teacher and student distributions in L_logits."""
    logits: bool = True
    """Use L_logits (KL(teacher || student))."""
    hidden: bool = True
    """Use L_hidden (MSE between teacher and student final hidden states, at hidden_positions)."""
    hidden_positions: str = "labels"
    """Where L_hidden compares the final hidden states: 'labels' (the label positions, which feed the LM head) or
    'sequence' (every real token: decoder-only, each input and target token; encoder-decoder, the encoder's states
    at each input token and the decoder's at each target position; prompt positions and padding excluded)."""
    teacher_ahead: int = 128
    """Examples whose teacher outputs are computed ahead of the steps that use them, longest first, saving the padding
    of mixed-task batches (0 = in each drawn batch); see mptune/teachers.py."""

    def __post_init__(self):
        _check_fields(self)
        _check(self.teacher_ahead >= 0, f"teacher_ahead must be >= 0, got {self.teacher_ahead}")
        _check(self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(self.hidden_positions in HIDDEN_POSITIONS,
               f"hidden_positions must be one of {', '.join(HIDDEN_POSITIONS)}, got {self.hidden_positions!r}")


@dataclass
class CompareArgs:
    """What the adapt stage compares on each target: the methods, MPT* (joint), SPoT's source, seeds."""

    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    """Methods to train on each target: 'pt' (from scratch), 'spot' (from the teacher of spot_source), 'spot-fixed'
    (from the teacher of spot_fixed, chosen a priori), 'mpt' (from P*)."""
    joint: bool = False
    """MPT*: adapt all targets at once with one shared P* and a u, v per target (mixed-task batches)."""
    spot_source: str = "best"
    """Teacher that starts SPoT: a source task name, or 'best' (highest dev score on the target before training)."""
    spot_fixed: str = "mnli"
    """Source whose teacher starts 'spot-fixed', chosen before seeing any target (the paper's MNLI); must be a
    source when 'spot-fixed' is among the methods."""
    seeds: list[int] = field(default_factory=list)
    """Adapt every target once per seed listed (each draws its own k-shot sample, init and data order) and report mean
    ± std; empty = once, with the run seed."""

    def __post_init__(self):
        _check_fields(self)
        unknown = [m for m in self.methods if m not in METHODS]
        _check(not unknown and self.methods, f"methods must be among {', '.join(METHODS)}, got {self.methods}")
        _check(len(set(self.seeds)) == len(self.seeds), f"seeds lists a seed more than once: {self.seeds}")
        for seed in self.seeds:
            _check_seed(seed, "seeds")


@dataclass
class PredictArgs:
    """`mptune predict`: how trained prompts are applied to a file of new inputs."""

    batch_size: int = 32
    """Examples per batch (rows of different tasks share batches)."""
    chunk: int = 256
    """Input rows read, predicted and saved at a time: what memory holds of the input, and what an interrupted
    command redoes at most."""
    max_padding: float = 0.3
    """Most share of a batch's input positions that may be padding: rows (sorted longest first, tasks mixed) start
    a new batch beyond it, so short rows are not padded to long ones (1 = fixed batches, as evaluation)."""

    def __post_init__(self):
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.chunk >= 1, f"chunk must be >= 1, got {self.chunk}")
        _check(0 <= self.max_padding <= 1, f"max_padding must be between 0 and 1, got {self.max_padding}")


@dataclass
class ServeArgs:
    """`mptune serve`: the HTTP server and its dynamic batching."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 for every interface)."""
    port: int = 8000
    """TCP port to listen on (0 = any free port, printed when the server starts)."""
    max_batch: int = 32
    """Most examples in one batch of the model; requests that arrive together (any tasks) share it."""
    max_wait_ms: float = 10.0
    """Longest an example waits for others to fill its batch, in milliseconds (0 = never wait)."""
    max_padding: float = 0.3
    """Most share of a batch's input positions that may be padding: rows (sorted longest first, tasks mixed) start
    a new batch beyond it, so short rows are not padded to long ones (1 = fixed batches, as evaluation)."""
    max_rows: int = 64
    """Most rows in one request (a larger request is refused with 413)."""
    max_body_bytes: int = 1_000_000
    """Largest request body in bytes (a larger one is refused with 413)."""

    def __post_init__(self):
        _check(0 <= self.port <= 65535, f"port must be between 0 and 65535, got {self.port}")
        _check(self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}")
        _check(self.max_wait_ms >= 0, f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        _check(self.max_rows >= 1, f"max_rows must be >= 1, got {self.max_rows}")
        _check(0 <= self.max_padding <= 1, f"max_padding must be between 0 and 1, got {self.max_padding}")
        _check(self.max_body_bytes >= 1, f"max_body_bytes must be >= 1, got {self.max_body_bytes}")


@dataclass
class RunConfig:
    """The whole pipeline: sources -> teachers -> distilled prompt -> targets -> table."""

    sources: list[str] = field(default_factory=lambda: ["sst2", "qnli", "qqp"])
    """Source tasks (teachers are trained on these, then distilled into one shared prompt)."""
    targets: list[str] = field(default_factory=lambda: ["sst2@16", "cb", "rte"])
    """Target tasks; NAME@K trains on K examples per class."""
    out_dir: str = "runs/default"
    """Run directory: every stage writes its prompts, config and metrics under it."""
    reuse: list[str] = field(default_factory=list)
    """Finished run directories to copy teachers, the distilled prompt and target prompts (single-target units)
    from instead of training them: a unit is copied when the run that trained it agrees with this one in every
    setting it depends on (UNIT_SETTINGS), then scored on this run's eval split (its scores kept when that run
    scored the same examples, SCORE_SETTINGS); the first directory listed that has it wins."""
    seed: int = 0
    """Seed of prompt initialisation and data order."""
    eval_split: str = "test"
    """Split scored at the end of each stage: 'dev' or 'test'."""
    loggers: list[str] = field(default_factory=list)
    """Step loggers besides log.jsonl (always written): 'tensorboard' writes event files to RUN_DIR/tensorboard/."""
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    prompt: PromptArgs = field(default_factory=PromptArgs)
    teach: TrainArgs = field(default_factory=lambda: TrainArgs(steps=100, batch_size=8))
    distill: TrainArgs = field(default_factory=lambda: TrainArgs(steps=150, batch_size=8))
    adapt: TrainArgs = field(default_factory=lambda: TrainArgs(steps=40, batch_size=8, lr=0.03))
    """Target training; lr 0.03, chosen on dev for the embedded model (docs/results.md), where 0.3 moved every
    prompt entry by about 2 embedding standard deviations in a few steps (the `paper` preset keeps 0.3)."""
    loss: LossArgs = field(default_factory=LossArgs)
    compare: CompareArgs = field(default_factory=CompareArgs)
    predict: PredictArgs = field(default_factory=PredictArgs)
    serve: ServeArgs = field(default_factory=ServeArgs)

    def __post_init__(self):
        _check_fields(self)
        _check(bool(self.sources), "sources must name at least one task")
        _check(bool(self.targets), "targets must name at least one task")
        for key, names in (("sources", self.sources), ("targets", self.targets)):
            canonical = [n.strip().lower() for n in names]  # task names are case-insensitive: RTE is rte
            twice = sorted({n for n, c in zip(names, canonical) if canonical.count(c) > 1})
            _check(not twice, f"{key} lists {', '.join(twice)} more than once (task names ignore case)")
        _check(self.out_dir.strip() != "", "out_dir must name a folder, got ''")
        _check(all(str(r).strip() for r in self.reuse), f"reuse lists an empty path: {self.reuse}")
        _check_seed(self.seed, "seed")
        _check(self.eval_split in ("dev", "test"), f"eval_split must be 'dev' or 'test', got {self.eval_split!r}")
        if "spot-fixed" in self.compare.methods:
            _check(self.compare.spot_fixed in self.sources,
                   f"compare.spot_fixed {self.compare.spot_fixed!r} must be one of the sources "
                   f"({', '.join(self.sources)}) when compare.methods has spot-fixed")
        unknown = [n for n in self.loggers if n not in LOGGERS]
        _check(not unknown, f"loggers must be among {', '.join(LOGGERS)}, got {self.loggers}")


# --- docstrings, YAML and flags ----------------------------------------------------------------

@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _hints(cls: type) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def is_section(tp) -> bool:
    return dataclasses.is_dataclass(tp)


def parse_value(text: str, tp, key: str):
    """A flag's string as the field's type: int, float, bool, str, str | None, list[str] or list[int]."""
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if tp in (int, float):
            return tp(text)
        if origin is list:
            item = typing.get_args(tp)[0]
            return [item(t.strip()) for t in text.split(",") if t.strip()]
        if text.lower() == "none" and type(None) in typing.get_args(tp):
            return None
        return text
    except ValueError:
        raise MptuneError(f"{key} expects {_type_text(tp)}, got {text!r}") from None


def _type_text(tp) -> str:
    """'int', 'list[int]', 'str | None' ... for messages."""
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _check_type(value, tp, key: str):
    """Values read from YAML must already have the field's type (ints are accepted for floats)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        ok = isinstance(value, list) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif args:
        ok = value is None or isinstance(value, tuple(a for a in args if a is not type(None)))
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise MptuneError(f"{key} expects {_type_text(tp)}, got {value!r}")
    return float(value) if tp is float else value


def from_dict(cls: type, data: dict, prefix: str = ""):
    """Build a (nested) config dataclass from a dict; unknown keys are errors."""
    if not isinstance(data, dict):
        raise MptuneError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise MptuneError(f"unknown config key {prefix}{unknown[0]}; known keys: {', '.join(hints)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        kwargs[key] = (from_dict(tp, value, f"{prefix}{key}.") if is_section(tp)
                       else _check_type(value, tp, prefix + key))
    try:
        return cls(**kwargs)
    except MptuneError as err:
        raise MptuneError(f"{prefix}{err}" if prefix and not str(err).startswith(prefix) else str(err)) from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def load_yaml(path: str | Path) -> RunConfig:
    """A RunConfig from a YAML file."""
    data = read_yaml(path, "a config file: a mapping of settings (sections such as teach: {steps: 100})",
                     empty={})
    # a partial section keeps RunConfig's own defaults (distill.steps is 150, not TrainArgs' 100)
    try:
        data = upgrade(data)
        return from_dict(RunConfig, _merge(to_dict(RunConfig()), data))
    except MptuneError as err:
        raise MptuneError(f"{path}: {err}") from None


def _merge(base: dict, data: dict) -> dict:
    """`data` laid over `base`, section by section."""
    out = dict(base)
    for key, value in data.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def same_run(saved: dict, config: RunConfig) -> bool:
    """True when a run directory's saved config (a dict read from config.yaml) describes the same run."""
    try:
        return not config_diff(saved, config)
    except MptuneError:
        return False


RUN_SECTIONS = ("model", "data", "prompt", "teach", "distill", "adapt", "loss", "compare")
"""Sections every run's config.yaml holds (those of earlier versions under today's names, `upgrade`):
one missing means the file was cut short or edited."""


def missing_sections(saved: dict) -> list[str]:
    """The RUN_SECTIONS a saved config (a dict read from config.yaml) lacks."""
    try:
        data = upgrade(saved)
    except MptuneError:
        data = saved
    return [k for k in RUN_SECTIONS if k not in data]


PATH_SETTINGS = ("model.name", "data.data_dir", "data.custom_tasks", "prompt.init")
"""Settings that name files or folders: compared as paths (trailing slash, relative or absolute, ~)."""


def _as_path(key: str, value):
    """A path setting's value in a canonical form: the resolved path (a hub id or a keyword stays)."""
    if isinstance(value, list):
        return [_as_path(key, v) for v in value]
    if not isinstance(value, str) or value.strip() == "" or value in ("vocab", "text"):
        return value
    path = Path(os.path.expanduser(value))
    if key == "model.name" and not path.exists():
        return value  # the embedded model or a hub id
    return str(path.resolve())


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def config_diff(saved: dict, config: RunConfig) -> list[str]:
    """'key: saved X, now Y' for each setting where a run directory's saved config (a dict read from
    config.yaml) and `config` describe different runs; [] for the same run.

    The saved dict is read like a user's YAML, so a setting added to mptune after the run started
    takes its default; settings in NOT_RUN_IDENTITY (where logs and the run go) are ignored, and
    PATH_SETTINGS are compared as paths. MptuneError when the saved dict is not a valid config.
    """
    if not isinstance(saved, dict):
        raise MptuneError(f"a saved config must be a mapping, got {saved!r}")
    old = from_dict(RunConfig, _merge(to_dict(RunConfig()), upgrade(saved)))
    a, b = _flat(run_identity(old)), _flat(run_identity(config))
    norm = {k: (lambda v, k=k: _as_path(k, v)) if k in PATH_SETTINGS else (lambda v: v) for k in a}
    return [f"{k}: saved {a[k]!r}, now {b[k]!r}" for k in a if norm[k](a[k]) != norm[k](b.get(k))]


def settings_diff(saved: dict, config: RunConfig, names: tuple[str, ...]) -> list[str]:
    """`config_diff` restricted to `names` (settings, or whole sections such as 'teach')."""
    return [d for d in config_diff(saved, config)
            if any(d.split(":")[0] == n or d.startswith(n + ".") for n in names)]


def unit_diff(saved: dict, config: RunConfig, kind: str) -> list[str]:
    """`settings_diff` over what a unit of `kind` ('teach', 'distill' or a target method) is computed from
    (UNIT_SETTINGS)."""
    return settings_diff(saved, config, UNIT_SETTINGS[kind])


def run_identity(config: RunConfig) -> dict:
    """The settings that decide what a run computes: its config as a dict without NOT_RUN_IDENTITY."""
    return _identity(to_dict(config))


def _identity(data: dict, prefix: str = "") -> dict:
    """A config dict without its NOT_RUN_IDENTITY settings (dotted names reach into sections)."""
    return {k: _identity(v, f"{prefix}{k}.") if isinstance(v, dict) else v
            for k, v in data.items() if prefix + k not in NOT_RUN_IDENTITY}


def save_yaml(config: RunConfig, path: str | Path) -> None:
    write_yaml(path, to_dict(config))


def flat_fields(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, typing.Any, str]]:
    """(dotted key, type, docstring) of every leaf setting."""
    out = []
    docs = field_docs(cls)
    for name, tp in _hints(cls).items():
        if is_section(tp):
            out.extend(flat_fields(tp, f"{prefix}{name}."))
        else:
            out.append((prefix + name, tp, docs.get(name, "")))
    return out


def with_overrides(config: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Apply 'section.field' -> string overrides; every section is re-validated."""
    data = to_dict(config)
    types = {key: tp for key, tp, _ in flat_fields()}
    for key, text in overrides.items():
        key = RENAMED.get(key, key)
        if key not in types:
            raise MptuneError(f"unknown setting {key}")
        *path, leaf = key.split(".")
        node = data
        for part in path:
            node = node[part]
        node[leaf] = parse_value(text, types[key], key)
    return from_dict(RunConfig, data)
