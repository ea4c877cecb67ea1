"""PEFT interchange: mptune prompts to Hugging Face PEFT adapters and back.

Export. A PEFT prompt-tuning adapter is two files: `adapter_config.json` (peft_type PROMPT_TUNING,
the task type, the number of virtual tokens l and their width d) and `adapter_model.safetensors`
holding one tensor `prompt_embeddings` [l, d]. An MPT prompt P* o (u v^T) is merged into that
plain l x d matrix first, so `PeftModel.from_pretrained(base, folder)` needs nothing of mptune.
A model card README.md (`mptune.card`) says what the prompt is, how it was trained and how to load it.

Import. Two kinds of PEFT adapter become mptune prompt files:
- PROMPT_TUNING (`prompt_embeddings` [l, d]) -> a soft prompt (kind 'soft'), e.g. a teacher;
- MULTITASK_PROMPT_TUNING (PEFT's MPT: `prompt_embeddings` [l, d] = P*, `prefix_task_cols`
  [T, l, r] = u, `prefix_task_rows` [T, r, d] = v; PEFT's MultitaskPromptEmbedding computes
  P* o (cols_k rows_k), which is mptune's P* o (u_k v_k^T)) -> a multitask prompt (kind
  'multitask'), e.g. a distilled source prompt that MPT targets start from.
Written as a unit's `prompt.safetensors` inside a run directory (RUN_DIR/teach/TASK/,
RUN_DIR/distill/), an imported prompt is that unit: import also writes the unit's metrics.json
(naming the adapter it came from), so the stages treat it as finished and use it, and never train
over it. Then `mptune distill` (from imported teachers) or `mptune adapt` (from an imported P*)
continue the pipeline.

Decisions
- The files are read and written directly (no PEFT import, no base model load), so interchange
  works with mptune's own dependencies; the tests check both directions against PEFT's own
  modules and outputs.
- Encoder-decoder models get `num_transformer_submodules = 1`: the prompt goes on the encoder
  input only, as mptune (and the paper) train it. PEFT's seq2seq default of 2 would also feed a
  prompt to the decoder, so an adapter trained that way is refused on import: mptune has no
  decoder prompt to put it in.
- Nothing is overwritten: exporting into a non-empty folder and importing onto an existing file
  are refused. Every file is written atomically (`files`), and the prompts written are checked
  finite (`checkpoint.check_finite`).
- Importing into a run unit is writing into the run: it holds the run directory's lock (refused
  while another mptune process trains there), and the unit must be one of the run's units for
  the prompt's tasks (teach/TASK takes one prompt for TASK, distill/ the run's sources in order,
  adapt/METHOD/TARGET one prompt for TARGET).
- adapter_config.json is read through `files.read_json` and checked: a JSON object whose
  peft_type is text and num_virtual_tokens, token_dim whole numbers.
- Only safetensors adapters are read (PEFT's default); an old `adapter_model.bin` is refused with
  the way to convert it, since unpickling a downloaded file can run code.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mptune.backbone import Backbone
from mptune.card import model_card
from mptune.checkpoint import PROMPT_FILE, check_finite, prompt_row, save_prompt
from mptune.errors import MptuneError
from mptune.files import atomic_write, read_json, write_json, write_text
from mptune.prompts import MultitaskPrompt, SoftPrompt, num_parameters
from mptune.rundir import METRICS_FILE, find_run

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def peft_config(backbone: Backbone, length: int) -> dict:
    """The adapter_config.json of a prompt-tuning adapter for this backbone."""
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "SEQ_2_SEQ_LM" if backbone.is_seq2seq else "CAUSAL_LM",
        "base_model_name_or_path": backbone.name,
        "num_virtual_tokens": length,
        "token_dim": backbone.dim,
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "inference_mode": True,
    }


def export_peft(backbone: Backbone, prompt_path: str | Path, task: str, out_dir: str | Path) -> Path:
    """Write a PEFT prompt-tuning adapter for one task row of a saved prompt, with its model card README.md (`card`)."""
    prompt_path, out = Path(prompt_path), Path(out_dir)
    module, row = prompt_row(str(prompt_path), task, backbone.dim)
    if out.exists() and any(out.iterdir()):
        raise MptuneError(f"{out} is not empty; export into a new folder")
    with torch.no_grad():
        weights = module.task_prompts()[row].detach().contiguous().cpu()
    check_finite({"prompt_embeddings": weights}, f"the merged prompt of {task} in {prompt_path} (not exported)")
    card = model_card(backbone, task, prompt_path, weights.shape[0])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / ADAPTER_WEIGHTS, lambda tmp: save_file({"prompt_embeddings": weights}, str(tmp)))
    write_json(out / ADAPTER_CONFIG, peft_config(backbone, weights.shape[0]))
    write_text(out / "README.md", card)
    return out


# --- PEFT -> mptune ----------------------------------------------------------------------------

PEFT_KEYS = {"PROMPT_TUNING": {"prompt_embeddings"},
             "MULTITASK_PROMPT_TUNING": {"prompt_embeddings", "prefix_task_cols", "prefix_task_rows"}}
"""The tensors of each importable PEFT adapter type."""


def read_adapter(adapter_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors of adapter_model.safetensors) of a PEFT adapter folder."""
    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    if not config_path.is_file():
        raise MptuneError(f"{adapter_dir} is not a PEFT adapter folder: it has no {ADAPTER_CONFIG}")
    if not weights_path.is_file():
        hint = (" (only adapter_model.bin: load it with PEFT and save_pretrained it again, which writes safetensors)"
                if (adapter_dir / "adapter_model.bin").exists() else "")
        raise MptuneError(f"{adapter_dir} has no {ADAPTER_WEIGHTS}{hint}")
    what = "a PEFT adapter config (a JSON object with peft_type, num_virtual_tokens, token_dim)"
    config = read_json(config_path, what)
    for key, tp in (("peft_type", str), ("num_virtual_tokens", int), ("token_dim", int)):
        if key in config and (not isinstance(config[key], tp) or isinstance(config[key], bool)):
            raise MptuneError(f"{config_path}: {key} is {config[key]!r}; expected {what}")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MptuneError(f"{weights_path}: not a readable safetensors file ({err}); expected the adapter's "
                          f"tensors") from None
    check_finite(weights, f"the PEFT adapter {weights_path}")
    return config, weights


def import_peft(adapter_dir: str | Path) -> SoftPrompt | MultitaskPrompt:
    """The mptune prompt module of a PEFT prompt-tuning (SoftPrompt) or MPT (MultitaskPrompt) adapter."""
    adapter_dir = Path(adapter_dir)
    config, weights = read_adapter(adapter_dir)
    kind = config.get("peft_type")
    if kind not in PEFT_KEYS:
        raise MptuneError(f"{adapter_dir} holds a {kind} adapter; mptune imports "
                          f"{' and '.join(PEFT_KEYS)} adapters")
    if not PEFT_KEYS[kind] <= set(weights):
        raise MptuneError(f"{adapter_dir}/{ADAPTER_WEIGHTS} has tensors {sorted(weights)}; "
                          f"a {kind} adapter needs {sorted(PEFT_KEYS[kind])}")
    if config.get("num_transformer_submodules", 1) != 1:
        raise MptuneError(f"{adapter_dir} prompts the encoder and the decoder (num_transformer_submodules = "
                          f"{config['num_transformer_submodules']}); mptune prompts the encoder only")
    shared = weights["prompt_embeddings"]
    expected = [config.get("num_virtual_tokens"), config.get("token_dim")]
    if list(shared.shape) != expected:
        raise MptuneError(f"{adapter_dir}: prompt_embeddings has shape {list(shared.shape)}, but the config "
                          f"says {expected} (num_virtual_tokens, token_dim)")
    if kind == "PROMPT_TUNING":
        return SoftPrompt(shared)
    u, v = weights["prefix_task_cols"], weights["prefix_task_rows"]
    return MultitaskPrompt(shared, u.shape[0], u.shape[2], u, v)


def import_peft_file(adapter_dir: str | Path, tasks: list[str], out: str | Path) -> Path:
    """Write a PEFT adapter as an mptune prompt file whose rows are named `tasks`.

    Written as a run unit's prompt.safetensors, it also gets that unit's metrics.json, so the
    stages use it as a finished unit.
    """
    adapter_dir, out = Path(adapter_dir), Path(out)
    module = import_peft(adapter_dir)
    if len(tasks) != module.num_tasks or len(set(tasks)) != len(tasks):
        raise MptuneError(f"{adapter_dir} holds {module.num_tasks} task prompt(s): name each once, in order "
                          f"(got {', '.join(tasks) or 'none'})")
    if out.suffix != ".safetensors":
        raise MptuneError(f"{out}: an mptune prompt file ends in .safetensors")
    if out.exists():
        raise MptuneError(f"{out} exists; import into a new file")
    if out.name != PROMPT_FILE:
        save_prompt(module, tasks, out)
        return out
    run = find_run(out.parent)  # None: a unit of a run not started yet
    with run or contextlib.nullcontext():
        if run is not None:
            run.lock()  # refused while another process trains in the run
            check_unit(run.root, out.parent, tasks, module)
        save_prompt(module, tasks, out)
        metrics = {"imported_from": str(adapter_dir.resolve()), "parameters": num_parameters(module)}
        write_json(out.parent / METRICS_FILE, metrics)
    return out


def check_unit(run_dir: Path, folder: Path, tasks: list[str], module) -> None:
    """MptuneError unless `folder` is a unit of the run in `run_dir` that takes a prompt for `tasks`."""
    from mptune.report import read_config
    from mptune.rundir import RunDir

    config = read_config(run_dir)
    parts = RunDir(run_dir).unit_of(folder)
    canon = lambda names: [n.strip().lower().split("@")[0] for n in names]  # noqa: E731
    if parts[:1] == ("teach",) and len(parts) == 2:
        expected, where = [parts[1]], f"the teacher unit of {parts[1]}"
        if canon([parts[1]])[0] not in canon(config["sources"]):
            raise MptuneError(f"{folder} is not a unit of the run {run_dir}: {parts[1]} is not one of its sources "
                              f"({', '.join(config['sources'])})")
    elif parts == ("distill",):
        expected, where = list(config["sources"]), "the distilled prompt of the sources"
        if not isinstance(module, MultitaskPrompt):
            raise MptuneError(f"{folder} takes a multitask prompt (P*, u, v) distilled from "
                              f"{', '.join(expected)}; this adapter is a plain prompt-tuning adapter")
    elif parts[:1] == ("adapt",) and len(parts) >= 3 and parts[1] != "mpt-joint":
        expected, where = [parts[-1]], f"the {parts[1]} unit of target {parts[-1]}"
    else:
        raise MptuneError(f"{folder} is not a unit of the run {run_dir} that takes an imported prompt "
                          f"(teach/TASK/, distill/ or adapt/METHOD/TARGET/)")
    if canon(tasks) != canon(expected):
        raise MptuneError(f"{folder} is {where}: it takes a prompt for {', '.join(expected)}, "
                          f"not for {', '.join(tasks)}; pass --tasks {','.join(expected)}")
