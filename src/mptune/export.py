"""Export a trained prompt as a Hugging Face PEFT prompt-tuning adapter, with a model card.

A PEFT prompt-tuning adapter is two files: `adapter_config.json` (peft_type PROMPT_TUNING, the
task type, the number of virtual tokens l and their width d) and `adapter_model.safetensors`
holding one tensor `prompt_embeddings` [l, d]. An MPT prompt P* o (u v^T) is merged into that
plain l x d matrix first, so `PeftModel.from_pretrained(base, folder)` needs nothing of mptune.

Decisions
- The files are written directly (no PEFT import, no base model load), so exporting works with
  mptune's own dependencies; the tests load the result with PEFT and compare outputs.
- Encoder-decoder models get `num_transformer_submodules = 1`: the prompt goes on the encoder
  input only, as mptune (and the paper) train it. PEFT's seq2seq default of 2 would also feed a
  prompt to the decoder.
- Nothing in an existing folder is overwritten: exporting into a non-empty folder is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mptune.backbone import Backbone
from mptune.errors import MptuneError
from mptune.stages import prompt_row

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


def model_card(backbone: Backbone, task: str, prompt_path: Path, length: int, metrics: dict | None) -> str:
    """A short README for the exported adapter: base model, task, size, scores, how to load it."""
    scores = ", ".join(f"{k} {v:.1f}" for k, v in (metrics or {}).items()) or "not recorded"
    return f"""# mptune prompt for {task}

- Base model: `{backbone.name}` (frozen)
- Task: `{task}`; scores on the run's evaluation split: {scores}
- Prompt: {length} x {backbone.dim} soft prompt ({length * backbone.dim:,} values), exported from
  `{prompt_path}` (MPT prompts are merged, P* o u v^T -> one matrix)
- Trained with mptune (Multitask Prompt Tuning, Wang et al., ICLR 2023); the run's config.yaml
  sits in the run directory next to the prompt.

```python
from peft import PeftModel
model = PeftModel.from_pretrained(base_model, "<this folder>")
```
"""


def unit_metrics(prompt_path: Path, task: str) -> dict | None:
    """The scores recorded next to a prompt by the stage that trained it, if any."""
    path = prompt_path.parent / "metrics.json"
    if not path.exists():
        return None
    scores = json.loads(path.read_text()).get("scores", {})
    return scores.get(task)


def export_peft(backbone: Backbone, prompt_path: str | Path, task: str, out_dir: str | Path) -> Path:
    """Write a PEFT prompt-tuning adapter (and README.md) for one task row of a saved prompt."""
    prompt_path, out = Path(prompt_path), Path(out_dir)
    module, row = prompt_row(str(prompt_path), task, backbone.dim)
    if out.exists() and any(out.iterdir()):
        raise MptuneError(f"{out} is not empty; export into a new folder")
    with torch.no_grad():
        weights = module.task_prompts()[row].detach().contiguous().cpu()
    out.mkdir(parents=True, exist_ok=True)
    save_file({"prompt_embeddings": weights}, str(out / ADAPTER_WEIGHTS))
    (out / ADAPTER_CONFIG).write_text(json.dumps(peft_config(backbone, weights.shape[0]), indent=2))
    (out / "README.md").write_text(model_card(backbone, task, prompt_path, weights.shape[0],
                                              unit_metrics(prompt_path, task)))
    return out
