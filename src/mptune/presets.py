"""Named sets of settings: `--preset NAME` (and `preset(NAME)` in Python) applies one on top of the
defaults (and of `--config FILE`); flags still override it.

`paper` is the paper's setting for GPU users: T5-Base from the hub, l = 100, a rank-one u v^T, the
six source tasks, the GLUE and SuperGLUE targets, the methods compared with three seeds, and
model selection on dev in every stage. `PAPER_NOTES` says which values are the paper's and which
are assumed; `mptune run --preset paper --dry-run` prints the plan it would run without loading the
model or writing anything.
"""

from __future__ import annotations

from mptune.errors import MptuneError

PAPER_SOURCE_ROWS = {"mnli": 392_702, "qnli": 104_743, "qqp": 363_846, "sst2": 67_349, "squad": 87_599,
                     "record": 100_730}
"""Official training-set sizes of the paper's six source tasks."""
PAPER_SOURCES = list(PAPER_SOURCE_ROWS)
PAPER_TARGETS = ["mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola",  # GLUE
                 "multirc", "boolq", "wic", "wsc", "cb"]  # SuperGLUE
PAPER_BATCH = 32
PAPER_DISTILL_STEPS = 5 * sum(PAPER_SOURCE_ROWS.values()) // PAPER_BATCH
"""Five epochs of the source mixture in batches of 32."""

PAPER = {
    "model.name": "google-t5/t5-base", "model.device": "cuda", "model.precision": "auto",
    "model.max_input_tokens": "256",
    "prompt.length": "100", "prompt.rank": "1",
    "sources": ",".join(PAPER_SOURCES), "targets": ",".join(PAPER_TARGETS),
    "compare.methods": "pt,spot,spot-fixed,mpt", "compare.spot_fixed": "mnli", "compare.seeds": "0,1,2",
    "data.eval_examples": "0", "data.dev_examples": "0", "data.kappa": "3",
    "teach.steps": "30000", "teach.batch_size": str(PAPER_BATCH), "teach.lr": "0.3",
    "distill.steps": str(PAPER_DISTILL_STEPS), "distill.batch_size": str(PAPER_BATCH), "distill.lr": "0.3",
    "adapt.steps": "5000", "adapt.batch_size": str(PAPER_BATCH), "adapt.lr": "0.3",
    "teach.warmup_steps": "500", "distill.warmup_steps": "500", "adapt.warmup_steps": "500",
    "teach.checkpoint_every": "1000", "distill.checkpoint_every": "1000", "adapt.checkpoint_every": "500",
    "teach.eval_every": "1000", "distill.eval_every": "5000", "adapt.eval_every": "500",
}
"""The paper's setting as overrides of RunConfig's defaults (see PAPER_NOTES for what is assumed)."""

PAPER_NOTES = [
    "paper: T5-Base backbone (google-t5/t5-base), prompt length l = 100, rank-one u v^T (r = 1)",
    "paper: six source tasks MNLI, QNLI, QQP, SST-2, SQuAD, ReCoRD; GLUE and SuperGLUE targets; "
    "three runs (seeds) per setting; PT, SPoT and MPT compared",
    "paper: K of kappa tasks per multitask batch; a target starts from P* and the average of the source "
    "tasks' u, v (mptune's default)",
    "recalled from the paper (section 4.1), not re-checked here: source training for 5 epochs of the source "
    f"mixture -> {PAPER_DISTILL_STEPS} steps of {PAPER_BATCH} over the {sum(PAPER_SOURCE_ROWS.values()):,} "
    "official training rows",
    "ASSUMED (not checked against the paper's appendix): learning rate 0.3 for P and P*, batch size 32, "
    "inputs cut at 256 tokens, 30,000 steps per teacher, 5,000 target steps for every target, 500 warm-up steps",
    "ASSUMED (mptune defaults): lambda = 1, T = 2, kappa = 3, u/v learning rate 0.03; the prompt-transfer "
    "protocol's model selection on the full dev split every 1,000 (teachers), 5,000 (distillation) and 500 "
    "(targets) steps; SPoT also from the fixed source MNLI",
]

PRESETS = {"paper": PAPER}
"""Preset name -> its settings ('section.field' -> value as on the command line)."""


def preset(name: str) -> dict[str, str]:
    """The settings of a preset; an unknown name is a user error listing the known ones."""
    if name not in PRESETS:
        raise MptuneError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
