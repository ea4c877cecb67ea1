"""Settings: defaults, validation, YAML round trips, flag overrides and field docstrings."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from mptune.config import (
    CompareArgs,
    DataArgs,
    LossArgs,
    ModelArgs,
    PromptArgs,
    RunConfig,
    TrainArgs,
    field_docs,
    flat_fields,
    from_dict,
    load_yaml,
    parse_value,
    same_run,
    save_yaml,
    to_dict,
    with_overrides,
)
from mptune.errors import MptuneError

SECTIONS = (ModelArgs, DataArgs, PromptArgs, TrainArgs, LossArgs, CompareArgs, RunConfig)


def test_defaults_validate():
    cfg = RunConfig()
    for cls in SECTIONS:
        cls()
    assert cfg.teach.steps == 100 and cfg.adapt.steps == 40
    assert cfg.compare.methods == ["pt", "spot", "mpt"]
    assert cfg.prompt.rank == 1 and cfg.data.kappa >= 2


@pytest.mark.parametrize("build,match", [
    (lambda: TrainArgs(steps=0), "steps"),
    (lambda: TrainArgs(batch_size=0), "batch_size"),
    (lambda: TrainArgs(lr=0), "lr must be > 0"),
    (lambda: TrainArgs(factor_lr=-1), "factor_lr must be > 0"),
    (lambda: TrainArgs(weight_decay=-0.1), "weight_decay"),
    (lambda: TrainArgs(steps=5, warmup_steps=-1), "warmup_steps"),
    (lambda: TrainArgs(clip_norm=0), "clip_norm"),
    (lambda: LossArgs(lam=-0.5), "lam"),
    (lambda: LossArgs(temperature=0), "temperature"),
    (lambda: LossArgs(teacher_ahead=-1), "teacher_ahead"),
    (lambda: DataArgs(kappa=1), "kappa"),
    (lambda: CompareArgs(methods=["pt", "lora"]), "methods"),
    (lambda: CompareArgs(methods=[]), "methods"),
    (lambda: ModelArgs(precision="fp16"), "precision"),
    (lambda: ModelArgs(max_input_tokens=8), "max_input_tokens"),
    (lambda: PromptArgs(length=0), "length"),
    (lambda: PromptArgs(rank=0), "rank"),
    (lambda: PromptArgs(init="zeros"), "init"),
    (lambda: PromptArgs(target_factors="median"), "target_factors"),
    (lambda: DataArgs(eval_examples=-1), "eval_examples"),
    (lambda: RunConfig(sources=[]), "sources"),
    (lambda: RunConfig(targets=[]), "targets"),
    (lambda: RunConfig(eval_split="train"), "eval_split"),
])
def test_bad_values_raise(build, match):
    with pytest.raises(MptuneError, match=match):
        build()


def test_prompt_init_accepts_a_file():
    assert PromptArgs(init="runs/x/teach/rte/prompt.safetensors").init.endswith(".safetensors")


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig(sources=["rte", "mrpc"], targets=["cola@8"], seed=3, out_dir=str(tmp_path / "run"),
                    model=ModelArgs(precision="fp32", max_input_tokens=64),
                    data=DataArgs(data_dir="/some/where", eval_examples=0, kappa=4),
                    prompt=PromptArgs(length=7, rank=2, init="text"),
                    teach=TrainArgs(steps=5, batch_size=4, lr=0.5, warmup_steps=1),
                    loss=LossArgs(lam=0.25, temperature=3.0, hidden=False),
                    compare=CompareArgs(methods=["mpt"], joint=True, spot_source="rte"))
    path = tmp_path / "config.yaml"
    save_yaml(cfg, path)
    assert load_yaml(path) == cfg
    assert yaml.safe_load(path.read_text())["prompt"]["length"] == 7


def test_yaml_partial_file_uses_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teach:\n  steps: 20\nsources: [rte]\nloss:\n  temperature: 1\ndistill:\n  batch_size: 4\n")
    cfg = load_yaml(path)
    # a partial section keeps the run's own defaults for its other fields, not TrainArgs' defaults
    assert cfg.teach.steps == 20 and cfg.teach.batch_size == RunConfig().teach.batch_size != TrainArgs().batch_size
    assert cfg.distill.batch_size == 4 and cfg.distill.steps == RunConfig().distill.steps != TrainArgs().steps
    assert cfg.sources == ["rte"]
    assert cfg.loss.temperature == 1.0 and isinstance(cfg.loss.temperature, float)
    assert cfg.adapt == RunConfig().adapt
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_yaml(empty) == RunConfig()


@pytest.mark.parametrize("text,key", [
    ("bogus: 1\n", "bogus"),
    ("teach:\n  stepz: 3\n", "teach.stepz"),
    ("model:\n  name: x\n  colour: red\n", "model.colour"),
])
def test_unknown_yaml_key_is_named(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(MptuneError, match=rf"unknown config key {key}\b"):
        load_yaml(path)


@pytest.mark.parametrize("text,match", [
    ("teach:\n  steps: many\n", "teach.steps"),
    ("teach:\n  steps: 2.5\n", "teach.steps"),
    ("loss:\n  logits: 1\n", "loss.logits"),
    ("sources: rte\n", "sources"),
    ("teach: 3\n", "teach"),
    ("teach:\n  steps: 0\n", "steps"),
    ("a: [1, 2\n", "not valid YAML"),
])
def test_bad_yaml_values(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(MptuneError, match=match):
        load_yaml(path)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(MptuneError, match="does not exist"):
        load_yaml(tmp_path / "none.yaml")


def test_overrides():
    cfg = with_overrides(RunConfig(), {
        "sources": "rte, mrpc,cola", "targets": "wnli", "teach.steps": "3", "teach.warmup_steps": "0",
        "adapt.lr": "0.5",
        "loss.hidden": "false", "compare.joint": "True", "data.data_dir": "/tmp/d", "prompt.length": "4",
        "compare.methods": "pt,mpt"})
    assert cfg.sources == ["rte", "mrpc", "cola"] and cfg.targets == ["wnli"]
    assert cfg.teach.steps == 3 and cfg.adapt.lr == 0.5 and cfg.loss.hidden is False and cfg.compare.joint is True
    assert cfg.data.data_dir == "/tmp/d" and cfg.prompt.length == 4 and cfg.compare.methods == ["pt", "mpt"]
    assert with_overrides(cfg, {"data.data_dir": "none"}).data.data_dir is None
    assert with_overrides(RunConfig(), {}) == RunConfig()


@pytest.mark.parametrize("overrides,match", [
    ({"teach.stepz": "3"}, "unknown setting teach.stepz"),
    ({"teach.steps": "three"}, "teach.steps"),
    ({"compare.joint": "maybe"}, "compare.joint"),
    ({"teach.steps": "0"}, "steps"),
    ({"data.kappa": "1"}, "kappa"),
    ({"model.precision": "fp8"}, "precision"),
    ({"compare.methods": "pt,bogus"}, "methods"),
])
def test_bad_overrides(overrides, match):
    with pytest.raises(MptuneError, match=match):
        with_overrides(RunConfig(), overrides)


@pytest.mark.parametrize("text,value", [("true", True), ("1", True), ("YES", True), ("false", False),
                                        ("0", False), ("no", False)])
def test_parse_bool(text, value):
    assert parse_value(text, bool, "k") is value


def test_every_field_has_a_docstring():
    fields = flat_fields()
    keys = [k for k, _, _ in fields]
    assert len(keys) == len(set(keys))
    assert {"teach.steps", "data.kappa", "prompt.length", "compare.joint", "model.name"} <= set(keys)
    for key, _, doc in fields:
        assert doc.strip(), f"{key} has no docstring"
    assert field_docs(TrainArgs)["steps"] == "Optimizer steps."
    for cls in SECTIONS:
        names = {f.name for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(f.type)}
        docs = field_docs(cls)
        leaves = {n for n in names if n in docs}
        assert leaves or cls is RunConfig


def test_from_dict_and_to_dict_agree():
    cfg = RunConfig(sources=["rte"], targets=["mrpc"])
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


def test_same_run_ignores_where_the_run_directory_is_named_but_not_its_settings(tmp_path):
    saved = to_dict(RunConfig(out_dir="runs/a"))
    assert same_run(saved, RunConfig(out_dir=str(tmp_path / "runs" / "a")))  # absolute name, or a moved dir
    assert same_run(saved, RunConfig(out_dir="runs/a", loggers=["tensorboard"]))
    assert not same_run(saved, RunConfig(out_dir="runs/a", seed=1))
    assert not same_run(saved, RunConfig(out_dir="runs/a", targets=["rte"]))


OLD_YAML = """\
sources: [rte, mrpc]
mpt: {lam: 0.25, temperature: 3.0, kappa: 4, logits: true, hidden: false}
target: {methods: [pt, mpt], joint: true, spot_source: rte, seeds: [1, 2]}
"""


def test_earlier_setting_names_are_read_under_todays(tmp_path):
    """The sections `mpt` and `target` of earlier versions: in YAML, in flags, in a saved run config."""
    path = tmp_path / "old.yaml"
    path.write_text(OLD_YAML)
    cfg = load_yaml(path)
    assert cfg.loss == LossArgs(lam=0.25, temperature=3.0, hidden=False) and cfg.data.kappa == 4
    assert cfg.compare == CompareArgs(methods=["pt", "mpt"], joint=True, spot_source="rte", seeds=[1, 2])
    assert with_overrides(RunConfig(), {"mpt.kappa": "5", "target.joint": "true"}) == \
        with_overrides(RunConfig(), {"data.kappa": "5", "compare.joint": "true"})
    assert same_run(yaml.safe_load(OLD_YAML), cfg)  # an existing run's config.yaml still matches
    assert not same_run(yaml.safe_load(OLD_YAML), with_overrides(cfg, {"loss.lam": "0.5"}))
    path.write_text("mpt: {lam: 0.5}\nloss: {lam: 0.25}\n")
    with pytest.raises(MptuneError, match="mpt.lam and loss.lam are one setting"):
        load_yaml(path)
