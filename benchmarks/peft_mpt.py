"""PEFT's MultitaskPromptTuning on mptune's loop: the outside baseline of quality.py and transfer.py.

- Source model: `get_peft_model(base, MultitaskPromptTuningConfig(num_tasks=S, ...))` trained on
  the sources with PEFT's own loss `model(input_ids, attention_mask, labels, task_ids).loss` (no
  distillation: PEFT has none), on the multitask batch stream, steps, batch size and optimizer of
  mptune's distill stage, with its model selection when distill.eval_every is set (the mean dev
  score over the sources, as for P*); saved with `save_pretrained`.
- Targets: a new PEFT model per target and seed with `prompt_tuning_init=AVERAGE_SOURCE_TASKS` from
  that checkpoint, trained with the adapt budget (and its selection setting).
- Initialisation: P* starts from the same sampled vocabulary rows as mptune's (PEFT's own RANDOM
  init draws N(0, 1) rows, ~7x the embedding scale); u, v keep PEFT's N(0, 0.02) init.
- Optimizer: mptune's (AdamW, lr for P*, factor_lr for u, v, warm-up + linear decay, gradient
  clipping 1.0), applied to PEFT's parameters (`PeftParams`).
- Scoring: mptune's `evaluate_items` (rank classification) on the same examples as every other
  method; PEFT's prompt enters as the output of its prompt encoder for the task
  (`model.get_prompt(B, task_ids)`), a function ids -> [B, l, d]. Each unit records `loss_check`,
  PEFT's own loss and mptune's L_PLM with that prompt on one batch (equal in fp32, within bf16
  rounding otherwise).
- T5: PEFT prompts the encoder only (`num_transformer_submodules=1`), as the paper and mptune do
  (PEFT's seq2seq default also prepends prompt rows to the decoder input).
- Copies: a unit another run directory trained under the same settings (SOURCE_SETTINGS,
  TARGET_SETTINGS) is copied, as the library's `reuse` copies its own units, and scored again
  unless that run scored the same examples.
"""

from __future__ import annotations

import copy
import gc
from pathlib import Path

import torch
from torch import nn

import mptune.train as train_loop
from mptune import stages
from mptune.config import UNIT_SETTINGS, RunConfig
from mptune.data import collate, label_tokens
from mptune.losses import plm_loss
from mptune.resume import clear_state
from mptune.rundir import METRICS_FILE, PREDICTIONS, PREDICTIONS_FILE, RunDir, reusable, write_json
from mptune.task_data import TaskData, load_tasks, single

import common

SOURCE_SETTINGS = tuple(s for s in UNIT_SETTINGS["distill"] if s not in ("teach", "loss"))
"""What PEFT's source model is computed from: those of mptune's P* less the teachers and the distillation loss."""
TARGET_SETTINGS = (*SOURCE_SETTINGS, "adapt")
"""What a PEFT target unit is computed from: its source model's settings and the target budget."""
WEIGHTS = "adapter_model.safetensors"


class PeftParams(nn.Module):
    """PEFT's prompt-encoder parameters under mptune's names (P* = shared, u, v).

    The same Parameter objects, so mptune's optimizer (lr for P*, factor_lr for u, v), schedule,
    model selection and step checkpoints (`resume.save_state`) apply to PEFT's model unchanged.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.shared = encoder.embedding.weight
        self.u = encoder.prefix_task_cols
        self.v = encoder.prefix_task_rows


def peft_model(backbone, cfg: RunConfig, num_tasks: int, source: Path | None = None, seed: int | None = None):
    """A PEFT MPT model on a copy of the frozen model: fresh (P* = mptune's initial prompt) or from a source."""
    from peft import (
        MultitaskPromptTuningConfig,
        MultitaskPromptTuningInit,
        TaskType,
        get_peft_model,
    )

    torch.manual_seed(cfg.seed if seed is None else seed)  # PEFT draws u, v (and its own P*) from torch's generator
    init = {} if source is None else {"prompt_tuning_init": MultitaskPromptTuningInit.AVERAGE_SOURCE_TASKS,
                                      "prompt_tuning_init_state_dict_path": str(source)}
    config = MultitaskPromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if backbone.is_seq2seq else TaskType.CAUSAL_LM,
        num_virtual_tokens=cfg.prompt.length, num_tasks=num_tasks, num_ranks=cfg.prompt.rank,
        num_transformer_submodules=1, **init)  # T5: prompt on the encoder input only, as in the paper and mptune
    model = get_peft_model(copy.deepcopy(backbone.model), config).eval()
    if source is None:
        with torch.no_grad():
            model.prompt_encoder["default"].embedding.weight.copy_(stages.initial_prompt(cfg, backbone))
    return model


def load_peft(backbone, cfg: RunConfig, folder: Path, num_tasks: int):
    """A finished unit's PEFT model, from its saved weights (not its adapter_config.json, whose source path
    may name another machine's file)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    model = peft_model(backbone, cfg, num_tasks)
    set_peft_model_state_dict(model, load_file(Path(folder) / WEIGHTS))
    return model


def peft_prompt(model):
    """PEFT's prompts as mptune's scoring expects them: task ids [B] -> [B, l, d]."""
    return lambda ids: model.get_prompt(batch_size=len(ids), task_ids=ids)


@torch.no_grad()
def loss_check(backbone, model, items: list) -> dict:
    """PEFT's own loss and mptune's L_PLM with PEFT's extracted prompt on one batch: equal up to precision."""
    batch = collate(items, backbone.tokenizer.pad_token_id, backbone.is_seq2seq).to(backbone.device)
    with backbone.compute():
        peft_loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                          task_ids=batch.task_ids).loss
    out = backbone.forward(peft_prompt(model)(batch.task_ids), batch)
    return {"peft": round(peft_loss.item(), 4), "mptune": round(plm_loss(out.logits, out.targets).item(), 4)}


def train_peft(backbone, model, data: list, args, kappa: int, seed: int, folder: Path, desc: str,
               select=None) -> dict:
    """PEFT's documented training step on mptune's batch stream and loop: model(..., labels, task_ids).loss."""
    params = PeftParams(model.prompt_encoder["default"])

    def loss_step(part, whole):
        batch = train_loop.to_batch(part, backbone)
        with backbone.compute():
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                         task_ids=batch.task_ids).loss  # PEFT's mean over the part's label tokens
        return loss * (label_tokens(part) / label_tokens(whole)), {}

    train_sets = [d.train for d in data]
    return train_loop.train(backbone, params, args, folder, desc,
                            lambda start: train_loop.batch_stream(train_sets, args, kappa, seed, start),
                            loss_step, [d.task.name for d in data], seed, select=select)


def peft_unit(backbone, cfg: RunConfig, folder: Path, data: list[TaskData], source: Path | None,
              seed: int | None = None) -> dict:
    """Train, score and save one PEFT unit: the source model (source=None: the distill budget) or one target
    (the adapt budget) with the adaptation seed `seed` (default: the run's)."""
    seed = cfg.seed if seed is None else seed
    folder.mkdir(parents=True, exist_ok=True)
    model = peft_model(backbone, cfg, len(data), source, seed)
    args, kappa = (cfg.distill, cfg.data.kappa) if source is None else (cfg.adapt, 2)
    names = [d.task.name for d in data]
    select = stages.dev_score(cfg, backbone, peft_prompt(model), names, args, None if source is None else seed)
    metrics = train_peft(backbone, model, data, args, kappa, seed, folder,
                         f"peft {'source' if source is None else names[0]}", select)
    metrics.update(stages.eval_tasks(backbone, peft_prompt(model), data),
                   parameters=model.get_nb_trainable_parameters()[0],
                   loss_check=loss_check(backbone, model, data[0].train[:8]))
    model.save_pretrained(folder)
    return _finish(folder, model, metrics)


def _finish(folder: Path, model, metrics: dict) -> dict:
    write_json(folder / PREDICTIONS_FILE, metrics.pop(PREDICTIONS))
    write_json(folder / METRICS_FILE, metrics)  # last: marks the unit done
    clear_state(folder)
    del model
    gc.collect()
    return metrics


# --- a run directory's PEFT units (transfer.py) --------------------------------------------------

def source_folder(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / "peft" / "source"


def target_folder(cfg: RunConfig, target: str, seed: int) -> Path:
    return Path(cfg.out_dir) / "peft" / "adapt" / target / f"seed{seed}"


def copied(backbone, cfg: RunConfig, folder: Path, data: list[TaskData], settings: tuple[str, ...]) -> bool:
    """Copy `folder`'s unit from the first cfg.reuse run that trained it under the same `settings`
    (`rundir.reusable`); score it again on this run's examples unless that run scored the same ones. False:
    nothing to copy."""
    if (found := reusable(cfg, "peft", folder, settings)) is None:
        return False
    source, scored_alike = found
    metrics, model = {**RunDir.done(source), "reused_from": str(source)}, None
    if scored_alike:
        metrics[PREDICTIONS] = RunDir.predictions(source)
    else:
        model = load_peft(backbone, cfg, source, len(data))
        metrics.update(stages.eval_tasks(backbone, peft_prompt(model), data))
    how = "scored again here" if model else "with its scores"
    print(f"peft {folder.relative_to(cfg.out_dir)}: copied from {source}, {how}")
    common.copy_unit(source, folder, leave=(METRICS_FILE, PREDICTIONS_FILE))  # done once metrics are in
    _finish(folder, model, metrics)
    return True


def run_units(cfg: RunConfig, backbone, targets: list[str], seeds: list[int]) -> None:
    """PEFT's source model (run seed cfg.seed), then every target and adaptation seed; finished units are
    skipped, and units trained alike elsewhere (cfg.reuse) copied."""
    source = source_folder(cfg)
    if RunDir.done(source) is None:
        data = load_tasks(cfg, backbone, cfg.sources, cfg.eval_split)
        if not copied(backbone, cfg, source, data, SOURCE_SETTINGS):
            peft_unit(backbone, cfg, source, data, None)
    for target in targets:
        todo = [s for s in seeds if RunDir.done(target_folder(cfg, target, s)) is None]
        if not todo:
            continue
        data = [single(load_tasks(cfg, backbone, [target], cfg.eval_split)[0])]
        for seed in todo:
            folder = target_folder(cfg, target, seed)
            if not copied(backbone, cfg, folder, data, TARGET_SETTINGS):
                peft_unit(backbone, cfg, folder, data, source / WEIGHTS, seed)
