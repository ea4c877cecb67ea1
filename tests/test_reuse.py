"""`reuse`: teachers, the distilled prompt and target units copied from another run when trained under the same
settings, scored again by the run they join; anything else trained; bad directories refused before anything is
written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mptune import stages
from mptune.config import CompareArgs, DataArgs, PromptArgs, RunConfig, TrainArgs, unit_diff, with_overrides
from mptune.errors import MptuneError
from mptune.files import read_yaml
from mptune.rundir import open_run

from test_cli import assert_user_error, cli, flags

SMALL = TrainArgs(steps=2, batch_size=2, warmup_steps=0)


def base(tmp_path: Path, data_dir: Path, name: str, **changes) -> RunConfig:
    cfg = RunConfig(sources=["rte", "mrpc"], targets=["cola"], out_dir=str(tmp_path / name), eval_split="dev",
                    data=DataArgs(data_dir=str(data_dir), eval_examples=6), prompt=PromptArgs(length=3),
                    teach=SMALL, distill=SMALL, adapt=SMALL)
    return replace(cfg, **changes)


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def same_prompt(old: Path, new: Path) -> bool:
    saved, copied = load_file(old / "prompt.safetensors"), load_file(new / "prompt.safetensors")
    return saved.keys() == copied.keys() and all((saved[k] == copied[k]).all() for k in saved)


def train_then(cfg: RunConfig, backbone) -> None:
    run = open_run(cfg)
    stages.teach(cfg, backbone, run)
    stages.distill(cfg, backbone, run)
    run.close()


def test_units_trained_the_same_way_are_copied_and_scored_on_the_new_split(llama_backbone, data_dir, tmp_path):
    first = base(tmp_path, data_dir, "first")
    train_then(first, llama_backbone)
    # the same training settings, scored on fewer examples: nothing is trained, everything is scored again
    second = base(tmp_path, data_dir, "second", reuse=[first.out_dir],
                  data=replace(first.data, eval_examples=4))
    train_then(second, llama_backbone)
    for unit in ("teach/rte", "teach/mrpc", "distill"):
        old, new = Path(first.out_dir) / unit, Path(second.out_dir) / unit
        assert metrics(new)["reused_from"] == str(old)
        assert metrics(new)["train_seconds"] == metrics(old)["train_seconds"]  # not trained again
        assert (new / "log.jsonl").read_bytes() == (old / "log.jsonl").read_bytes()
        assert same_prompt(old, new)
        preds = json.loads((new / "predictions.json").read_text())
        assert {len(p["predictions"]) for p in preds.values()} == {4}  # scored here, on this run's examples
    assert (Path(second.out_dir) / "config.yaml").is_file()
    assert read_yaml(Path(second.out_dir) / "config.yaml", "config")["reuse"] == [first.out_dir]


def test_units_scored_on_the_same_examples_keep_their_scores(llama_backbone, data_dir, tmp_path, capsys):
    first = base(tmp_path, data_dir, "first")
    train_then(first, llama_backbone)
    capsys.readouterr()
    # another adapt.lr only: the teachers and P* are trained and scored as the first run did
    second = base(tmp_path, data_dir, "second", reuse=[first.out_dir], adapt=replace(SMALL, lr=0.1))
    train_then(second, llama_backbone)
    assert capsys.readouterr().out.count("with its scores (the same examples)") == 3
    for unit in ("teach/rte", "teach/mrpc", "distill"):
        old, new = Path(first.out_dir) / unit, Path(second.out_dir) / unit
        assert {**metrics(old), "reused_from": str(old)} == metrics(new)
        assert (new / "predictions.json").read_bytes() == (old / "predictions.json").read_bytes()
    # scored on the test split instead: scored again, on that split's examples
    third = base(tmp_path, data_dir, "third", reuse=[first.out_dir], eval_split="test")
    train_then(third, llama_backbone)
    assert "scored again here" in capsys.readouterr().out
    labels = json.loads((Path(third.out_dir) / "teach/rte/predictions.json").read_text())["rte"]["labels"]
    assert labels != json.loads((Path(first.out_dir) / "teach/rte/predictions.json").read_text())["rte"]["labels"]


def test_a_unit_whose_settings_differ_is_trained(llama_backbone, data_dir, tmp_path):
    first = base(tmp_path, data_dir, "first")
    train_then(first, llama_backbone)
    # teachers trained the same way, a distillation that is not: teachers copied, P* trained
    other = base(tmp_path, data_dir, "other", reuse=[first.out_dir], distill=replace(SMALL, lr=0.1))
    train_then(other, llama_backbone)
    assert "reused_from" in metrics(Path(other.out_dir) / "teach" / "rte")
    assert "reused_from" not in metrics(Path(other.out_dir) / "distill")
    # another prompt length changes every unit
    longer = base(tmp_path, data_dir, "longer", reuse=[first.out_dir], prompt=PromptArgs(length=4))
    train_then(longer, llama_backbone)
    for unit in ("teach/rte", "teach/mrpc", "distill"):
        assert "reused_from" not in metrics(Path(longer.out_dir) / unit)


METHODS = ["pt", "spot", "spot-fixed", "mpt"]


def run_all(cfg: RunConfig, backbone) -> None:
    run = open_run(cfg)
    stages.run(cfg, backbone, run)
    run.close()


def test_a_test_run_scores_the_target_prompts_its_dev_run_trained_and_trains_the_other_seeds(
        llama_backbone, data_dir, tmp_path):
    compare = CompareArgs(methods=METHODS, spot_fixed="rte", seeds=[0])
    dev = base(tmp_path, data_dir, "dev", compare=compare)
    run_all(dev, llama_backbone)
    test = base(tmp_path, data_dir, "test", compare=replace(compare, seeds=[0, 1]), eval_split="test",
                reuse=[dev.out_dir])
    run_all(test, llama_backbone)
    for method in METHODS:
        old, new = (Path(cfg.out_dir) / "adapt" / method / "seed0" / "cola" for cfg in (dev, test))
        assert metrics(new)["reused_from"] == str(old), method
        assert metrics(new)["train_seconds"] == metrics(old)["train_seconds"]  # not trained again
        assert same_prompt(old, new)
        dev_labels, test_labels = (json.loads((f / "predictions.json").read_text())["cola"]["labels"]
                                   for f in (old, new))
        assert dev_labels != test_labels  # scored here, on the test split
        assert "reused_from" not in metrics(Path(test.out_dir) / "adapt" / method / "seed1" / "cola"), method
    assert metrics(Path(test.out_dir) / "adapt/spot/seed0/cola")["spot_source"] in ("rte", "mrpc")
    assert metrics(Path(test.out_dir) / "adapt/spot-fixed/seed0/cola")["spot_source"] == "rte"
    results = json.loads((Path(test.out_dir) / "results.json").read_text())  # the comparison over both seeds
    assert {"mpt - pt", "mpt - spot", "mpt - spot-fixed"} <= set(results["intervals"])


def test_a_source_side_variant_copies_pt_and_trains_what_depends_on_the_sources(llama_backbone, data_dir, tmp_path):
    compare = CompareArgs(methods=METHODS, spot_fixed="rte", seeds=[0])
    first = base(tmp_path, data_dir, "first", compare=compare)
    run_all(first, llama_backbone)
    # another distillation: PT and both SPoTs start from what the first run had, MPT from a new P*
    variant = base(tmp_path, data_dir, "variant", compare=compare, distill=replace(SMALL, lr=0.1),
                   reuse=[first.out_dir])
    run_all(variant, llama_backbone)
    unit = Path("adapt") / "{}" / "seed0" / "cola"
    for method, copied in (("pt", True), ("spot", True), ("spot-fixed", True), ("mpt", False)):
        assert ("reused_from" in metrics(Path(variant.out_dir) / str(unit).format(method))) == copied, method
    # another teacher budget: only PT is the same
    teachers = base(tmp_path, data_dir, "teachers", compare=compare, teach=replace(SMALL, lr=0.1),
                    reuse=[first.out_dir])
    run_all(teachers, llama_backbone)
    for method in METHODS:
        assert ("reused_from" in metrics(Path(teachers.out_dir) / str(unit).format(method))) == (method == "pt")


def test_unit_settings_cover_what_trains_a_unit_and_not_what_scores_it(tmp_path):
    cfg = RunConfig(out_dir=str(tmp_path / "run"))
    saved = read_yaml_of(cfg, tmp_path)
    kinds = ("teach", "distill", *METHODS)
    assert all(unit_diff(saved, cfg, kind) == [] for kind in kinds)
    everything, sourced = set(kinds), {"distill", "spot", "spot-fixed", "mpt"}
    changes = {"teach.lr": {"teach", *sourced}, "seed": everything, "prompt.length": everything,
               "data.dev_examples": everything, "data.split_seed": everything,
               "distill.steps": {"distill", "mpt"}, "loss.temperature": {"distill", "mpt"}, "sources": sourced,
               "prompt.rank": {"distill", "mpt"}, "adapt.lr": set(METHODS), "compare.spot_source": {"spot"},
               "compare.spot_fixed": {"spot-fixed"}, "prompt.target_factors": {"mpt"},
               "data.eval_examples": set(), "eval_split": set(), "compare.methods": set(), "targets": set(),
               "compare.seeds": set()}
    values = {"sources": "rte,mrpc", "targets": "rte", "eval_split": "dev", "compare.methods": "pt",
              "prompt.rank": "2", "seed": "3", "compare.spot_source": "qqp", "compare.spot_fixed": "qqp",
              "prompt.target_factors": "fresh", "compare.seeds": "0,1"}
    for key, changed_kinds in changes.items():
        changed = with_overrides(cfg, {key: values.get(key, "7")})
        assert {kind for kind in kinds if unit_diff(saved, changed, kind)} == changed_kinds, key


def read_yaml_of(cfg: RunConfig, tmp_path: Path) -> dict:
    from mptune.config import save_yaml

    save_yaml(cfg, tmp_path / "saved.yaml")
    return read_yaml(tmp_path / "saved.yaml", "config")


@pytest.mark.parametrize("make", ["missing", "no config", "damaged config"])
def test_a_reuse_directory_that_holds_no_run_is_refused_before_anything_is_written(tmp_path, data_dir, make):
    other = tmp_path / "other"
    if make != "missing":
        other.mkdir()
    if make == "damaged config":
        (other / "config.yaml").write_text("model: [unclosed\n")
    cfg = base(tmp_path, data_dir, "run", reuse=[str(other)])
    with pytest.raises(MptuneError, match="other"):
        open_run(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_the_cli_reuses_a_finished_run_and_refuses_a_bad_one(tmp_path, capsys, llama_dir, data_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = cli(capsys, "teach", *flags(first, llama_dir, data_dir))
    assert code == 0, err
    code, out, err = cli(capsys, "teach", *flags(second, llama_dir, data_dir, "--reuse", str(first)))
    assert code == 0, err
    assert "copied from" in out
    assert metrics(second / "teach" / "rte")["reused_from"] == str(first / "teach" / "rte")
    code, _, err = cli(capsys, "teach", *flags(tmp_path / "third", llama_dir, data_dir, "--reuse",
                                                str(tmp_path / "nowhere")))
    assert_user_error(code, err, "nowhere", "reuse")
    assert not (tmp_path / "third" / "config.yaml").exists()



def test_the_documented_test_run_copies_the_dev_runs_target_prompts(tmp_path, capsys, llama_dir, data_dir):
    """docs/run-directory.md: `mptune run --config DEV/config.yaml --eval_split test --compare.seeds ...
    --out_dir TEST --reuse DEV` scores the dev run's prompts on test and trains only the seeds it lacks."""
    dev, test = tmp_path / "dev", tmp_path / "test"
    code, _, err = cli(capsys, "run", *flags(dev, llama_dir, data_dir, "--eval_split", "dev",
                                             "--compare.seeds", "0", "--compare.methods", "pt,mpt"))
    assert code == 0, err
    code, out, err = cli(capsys, "run", "--config", str(dev / "config.yaml"), "--eval_split", "test",
                         "--compare.seeds", "0,1", "--out_dir", str(test), "--reuse", str(dev))
    assert code == 0, err
    units = {p.parent.relative_to(test): metrics(p.parent) for p in test.glob("adapt/*/*/*/metrics.json")}
    copied = {u for u, m in units.items() if "reused_from" in m}
    assert len(units) == 2 * 2 * 2  # methods x seeds x targets
    assert {u.parts[2] for u in copied} == {"seed0"} and {u.parts[2] for u in set(units) - copied} == {"seed1"}
    assert len(copied) == 4 and "scored again here" in out
