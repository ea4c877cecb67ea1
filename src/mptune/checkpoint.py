"""Saving and loading prompts: trainable tensors only, in safetensors, one key schema.

Keys: a SoftPrompt saves `prompt` [T, l, d]; a MultitaskPrompt saves `shared` [l, d],
`u` [T, l, r], `v` [T, r, d]. The safetensors header carries `format` (FORMAT), `kind`
('soft' or 'multitask') and `tasks` (JSON list naming the T task rows). No renames, no
backbone weights. Files are written atomically (`files.atomic_write`: temporary name, fsync,
rename), so a crash never leaves a half-written prompt under the real name.

Prompts are checked finite when saved and when loaded (so before training from one, evaluating
or exporting it): a prompt holding NaN or infinity is refused with one error naming the file,
never scored or exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mptune.errors import MptuneError
from mptune.files import atomic_write
from mptune.prompts import MultitaskPrompt, SoftPrompt

FORMAT = "mptune-prompt/1"
PROMPT_FILE = "prompt.safetensors"


def save_prompt(module: SoftPrompt | MultitaskPrompt, tasks: list[str], path: str | Path) -> Path:
    """Write a prompt module and the names of its task rows; returns the path."""
    path = Path(path)
    if len(tasks) != module.num_tasks:
        raise ValueError(f"{module.num_tasks} task rows but {len(tasks)} task names")
    kind = "multitask" if isinstance(module, MultitaskPrompt) else "soft"
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    check_finite(tensors, f"the prompt for {', '.join(tasks)} (not saved to {path})")
    meta = {"format": FORMAT, "kind": kind, "tasks": json.dumps(list(tasks))}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """MptuneError naming `what` when a tensor holds NaN or infinite values."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items() if v.is_floating_point()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        counts = ", ".join(f"{n} in {k}" for k, n in bad.items())
        raise MptuneError(f"{what} holds NaN or infinite values ({counts}); a prompt must be finite")


def load_prompt(path: str | Path, dim: int | None = None) -> tuple[SoftPrompt | MultitaskPrompt, list[str]]:
    """Read a prompt file -> (module, task names); `dim` checks it fits the backbone's width."""
    path = Path(path)
    if not path.is_file():
        raise MptuneError(f"prompt file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MptuneError(f"prompt file {path} is not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise MptuneError(f"prompt file {path} is not an mptune prompt (format {meta.get('format')!r}, "
                          f"expected {FORMAT!r})")
    try:
        tasks = json.loads(meta.get("tasks", ""))
    except json.JSONDecodeError:
        tasks = None
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise MptuneError(f"prompt file {path} has no list of task names in its metadata")
    check_finite(tensors, f"prompt file {path}")
    module = _build(meta.get("kind", ""), tensors, path)
    if dim is not None and module.dim != dim:
        raise MptuneError(f"prompt file {path} has width d={module.dim} but the model's embeddings have "
                          f"d={dim}: it was trained for another model")
    return module, tasks


def _build(kind: str, tensors: dict[str, torch.Tensor], path: Path) -> SoftPrompt | MultitaskPrompt:
    expected = {"soft": {"prompt"}, "multitask": {"shared", "u", "v"}}.get(kind)
    if expected is None or set(tensors) != expected:
        raise MptuneError(f"prompt file {path} has kind {kind!r} and keys {sorted(tensors)}; "
                          f"expected 'soft' with prompt or 'multitask' with shared, u, v")
    if kind == "soft":
        return SoftPrompt(tensors["prompt"])
    u, v = tensors["u"], tensors["v"]
    return MultitaskPrompt(tensors["shared"], u.shape[0], u.shape[2], u, v)


def prompt_row(prompt_path: str | Path, task_name: str, dim: int | None = None):
    """(module, row) of the task's prompt in a saved file; NAME@K matches a file trained on NAME."""
    from mptune.tasks import get_task

    module, tasks = load_prompt(prompt_path, dim)
    get_task(task_name)
    base = task_name.split("@")[0]
    row = next((i for i, t in enumerate(tasks) if t == task_name or t.split("@")[0] == base), None)
    if row is None:
        raise MptuneError(f"prompt file {prompt_path} was trained for {', '.join(tasks)}, not {task_name}")
    return module, row
