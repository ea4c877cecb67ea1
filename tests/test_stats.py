"""Paired bootstrap intervals (mptune.stats) against hand computations, and a run's table of them."""

from __future__ import annotations

import json
import random

import pytest

from mptune import stages
from mptune.config import CompareArgs, DataArgs, PromptArgs, RunConfig, TrainArgs
from mptune.errors import MptuneError
from mptune.results import above_majority, paired_intervals, pooled, table_so_far
from mptune.rundir import RunDir
from mptune.stats import Paired, draw_seeds, paired_bootstrap


def accuracy(preds, labels):
    return 100.0 * sum(p == y for p, y in zip(preds, labels)) / len(labels)


def test_identical_methods_differ_by_zero_with_a_zero_interval():
    labels = [0, 1] * 20
    preds = {0: [0] * 40, 1: [1] * 40}
    r = paired_bootstrap([Paired(preds, preds, labels, accuracy)], replicates=200)
    assert r["diff"] == r["low"] == r["high"] == 0.0


def test_examples_resampled_around_a_known_difference():
    """a is right on all 100 examples, b on the first 50: 50 points, and resampling the examples gives
    about 50 +- 1.96 * sqrt(0.25 / 100) * 100 = 50 +- 9.8."""
    labels = [1] * 100
    a, b = {0: [1] * 100}, {0: [1] * 50 + [0] * 50}
    r = paired_bootstrap([Paired(a, b, labels, accuracy)], replicates=2000, seed=3)
    assert r["diff"] == 50.0
    assert 38 < r["low"] < 45 and 55 < r["high"] < 62
    assert paired_bootstrap([Paired(a, b, labels, accuracy)], replicates=2000, seed=3) == r  # reproducible


def test_seeds_are_resampled_too():
    """Seed 0: a wins by 10 on every example draw, seed 1: b wins by 10. The observed mean is 0 and each
    replicate's is -10, 0 or +10 (both draws seed 1, mixed, both seed 0), so the 95% interval is [-10, +10]."""
    labels = [1] * 10
    metric = lambda preds, _labels: float(preds[0])  # noqa: E731 - a metric that only sees which seed it is
    a = {0: [10] * 10, 1: [0] * 10}
    b = {0: [0] * 10, 1: [10] * 10}
    r = paired_bootstrap([Paired(a, b, labels, metric)], replicates=1000)
    assert (r["diff"], r["low"], r["high"], r["seeds"]) == (0.0, -10.0, 10.0, 2)


def test_source_runs_are_drawn_before_their_adaptation_seeds():
    """Two source runs with 8 adaptation seeds each: a wins by 10 on every seed of run 0, b on every seed
    of run 1. Drawn by level, both drawn runs are the same one half the time, so the interval is
    [-10, +10]; drawn flat, 16 seeds average out and the interval would be about +-5."""
    labels = [1] * 4
    metric = lambda preds, _labels: float(preds[0])  # noqa: E731 - the score is the prediction itself
    a = {(r, k): [10 if r == 0 else 0] * 4 for r in (0, 1) for k in range(8)}
    b = {(r, k): [0 if r == 0 else 10] * 4 for r in (0, 1) for k in range(8)}
    r = paired_bootstrap([Paired(a, b, labels, metric)], replicates=1000)
    assert (r["diff"], r["low"], r["high"], r["seeds"], r["source_runs"]) == (0.0, -10.0, 10.0, 16, 2)
    flat = paired_bootstrap([Paired(dict(enumerate(a.values())), dict(enumerate(b.values())), labels, metric)],
                            replicates=1000)
    assert -7.5 < flat["low"] < -2.5 and 2.5 < flat["high"] < 7.5 and "source_runs" not in flat


def test_a_level_draw_keeps_each_source_runs_own_seeds():
    rng = random.Random(0)
    seeds = [(0, 0), (0, 1), (3, 5), (3, 6)]
    for _ in range(50):
        drawn = draw_seeds(rng, seeds)
        assert len(drawn) == 4 and all(d in seeds for d in drawn)
        assert {d[0] for d in drawn[:2]} in ({0}, {3}) and {d[0] for d in drawn[2:]} in ({0}, {3})


def test_the_average_over_targets_pairs_targets_by_seed():
    one = Paired({0: [1, 1]}, {0: [0, 0]}, [1, 1], accuracy)  # +100 points
    other = Paired({0: [0, 0]}, {0: [0, 0]}, [1, 1], accuracy)  # 0
    assert paired_bootstrap([one, other], replicates=100) == {"diff": 50.0, "low": 50.0, "high": 50.0,
                                                              "replicates": 100, "seeds": 1}


@pytest.mark.parametrize("a,b,labels", [({0: [1]}, {1: [1]}, [1]), ({0: [1, 1]}, {0: [1]}, [1, 1]), ({}, {}, []),
                                          ({0: [1], (1, 0): [1]}, {0: [1], (1, 0): [1]}, [1])])
def test_unpaired_results_are_refused(a, b, labels):
    with pytest.raises(ValueError):
        Paired(a, b, labels, accuracy)


def test_a_run_writes_predictions_and_reports_intervals(llama_backbone, data_dir, tmp_path):
    small = TrainArgs(steps=2, batch_size=2, warmup_steps=0)
    cfg = RunConfig(sources=["rte", "mrpc"], targets=["rte", "cola"], out_dir=str(tmp_path / "run"),
                    data=DataArgs(data_dir=str(data_dir), eval_examples=6), prompt=PromptArgs(length=3),
                    teach=small, distill=small, adapt=small, compare=CompareArgs(spot_source="rte", seeds=[0, 1]))
    table, markdown = stages.run(cfg, llama_backbone)
    saved = json.loads((tmp_path / "run" / "adapt" / "pt" / "seed1" / "cola" / "predictions.json").read_text())
    assert len(saved["cola"]["predictions"]) == len(saved["cola"]["labels"]) == 6
    assert "predictions" not in json.loads((tmp_path / "run" / "adapt" / "pt" / "seed1" / "cola" /
                                            "metrics.json").read_text())
    assert set(table["intervals"]) == {"mpt - pt", "mpt - spot"}
    for pair in table["intervals"].values():
        for r in [*pair["targets"].values(), pair["average"]]:
            assert r["low"] <= r["diff"] <= r["high"] and r["seeds"] == 2
    mpt, pt = (table["targets"]["rte"][m] for m in ("mpt", "pt"))
    assert table["intervals"]["mpt - pt"]["targets"]["rte"]["diff"] == pytest.approx(mpt - pt)
    assert "| MPT - PT |" in markdown and "| MPT - SPoT |" in markdown
    assert "2 seed(s) and the test examples" in markdown  # the note names the split the intervals rest on
    assert json.loads((tmp_path / "run" / "results.json").read_text())["intervals"] == table["intervals"]


def test_a_run_still_training_reports_its_finished_seeds(llama_backbone, data_dir, tmp_path):
    """table_so_far: with every unit done it is the run's own table; with one of seed 1's units unfinished
    it covers seed 0 alone, marked partial, from seed 0's units; with seed 0 unfinished too, there is none."""
    small = TrainArgs(steps=2, batch_size=2, warmup_steps=0)
    cfg = RunConfig(sources=["rte", "mrpc"], targets=["rte", "cola"], out_dir=str(tmp_path / "run"),
                    data=DataArgs(data_dir=str(data_dir), eval_examples=6), prompt=PromptArgs(length=3),
                    teach=small, distill=small, adapt=small, compare=CompareArgs(methods=["pt", "mpt"], seeds=[0, 1]))
    table, _ = stages.run(cfg, llama_backbone)
    run = RunDir(tmp_path / "run", cfg.compare.seeds)
    whole, markdown = table_so_far(cfg, run)
    assert "| MPT - PT |" in markdown and "2 seed(s)" in markdown
    assert (whole["seeds"], whole["partial"]) == ([0, 1], False)
    for key in ("targets", "average", "average_std", "parameters", "intervals"):
        assert whole[key] == table[key]
    (run.adapted("mpt", "cola", 1) / "metrics.json").unlink()  # seed 1 is still training
    part, markdown = table_so_far(cfg, run)
    assert "1 seed(s)" in markdown
    assert (part["seeds"], part["partial"]) == ([0], True)
    seed0 = json.loads((run.adapted("pt", "cola", 0) / "metrics.json").read_text())
    assert part["targets"]["cola"]["pt"] == seed0["scores"]["cola"]["matthews"]
    assert part["intervals"]["mpt - pt"]["average"]["seeds"] == 1
    (run.adapted("pt", "rte", 0) / "metrics.json").unlink()
    assert table_so_far(cfg, run) is None


def test_source_runs_pool_into_one_table_with_two_level_intervals(llama_backbone, data_dir, tmp_path):
    """Two source runs (seed 0 with PT and MPT, seed 1 with MPT alone), two adaptation seeds each: PT's
    units pair with both runs, each method's score is its mean over the four (run, seed) units, and the
    intervals draw the runs first (source_runs 2)."""
    small = TrainArgs(steps=2, batch_size=2, warmup_steps=0)

    def config(seed: int, methods: list[str]) -> RunConfig:
        return RunConfig(sources=["rte", "mrpc"], targets=["rte", "cola"], out_dir=str(tmp_path / f"s{seed}"),
                         seed=seed, data=DataArgs(data_dir=str(data_dir), eval_examples=6), prompt=PromptArgs(length=3),
                         teach=small, distill=small, adapt=small, compare=CompareArgs(methods=methods, seeds=[0, 1]))

    cfgs = {0: config(0, ["pt", "mpt"]), 1: config(1, ["mpt"])}
    tables = {s: stages.run(c, llama_backbone)[0] for s, c in cfgs.items()}
    runs = {s: (c, RunDir(tmp_path / f"s{s}", c.compare.seeds)) for s, c in cfgs.items()}
    found = pooled(runs)
    assert (found["source_seeds"], found["seeds"]) == ([0, 1], [0, 1])
    for t in ("rte", "cola"):
        assert found["targets"][t]["pt"] == pytest.approx(tables[0]["targets"][t]["pt"])
        assert found["targets"][t]["mpt"] == pytest.approx((tables[0]["targets"][t]["mpt"] +
                                                            tables[1]["targets"][t]["mpt"]) / 2)
        diff = found["intervals"]["mpt - pt"]["targets"][t]
        assert diff["diff"] == pytest.approx(found["targets"][t]["mpt"] - found["targets"][t]["pt"])
        assert (diff["seeds"], diff["source_runs"]) == (4, 2) and diff["low"] <= diff["diff"] <= diff["high"]
    (runs[1][1].adapted("mpt", "rte", 1) / "metrics.json").unlink()  # run 1's seed 1 still training
    assert pooled(runs)["seeds"] == [0]
    with pytest.raises(MptuneError, match=r"missing: mpt \(source run 1\)"):
        pooled({0: runs[0], 1: (config(1, ["pt"]), runs[1][1])})


def test_units_scored_on_different_examples_are_not_paired():
    """paired_intervals pairs units by example: a source run that scored other examples is refused."""
    def fetch(method, target, seed):
        return {"predictions": [1, 0], "labels": [1, 0] if seed == (0, 0) else [0, 1]}

    with pytest.raises(MptuneError, match="scored on different examples"):
        paired_intervals(["pt", "mpt"], ["rte"], [(0, 0), (1, 0)], fetch, replicates=10)
    same = paired_intervals(["pt", "mpt"], ["rte"], [(0, 0)], fetch, replicates=10)
    assert same["mpt - pt"]["average"]["diff"] == 0.0


def test_paired_intervals_of_named_pairs():
    """`pairs` names the differences (a baseline outside mptune, an ablation variant minus its baseline):
    "a - b" is a's score minus b's on the same examples, and methods outside the pairs are not compared."""
    labels = [1, 0, 1, 0]
    preds = {"variant": [1, 0, 1, 1], "baseline": [1, 1, 0, 1], "pt": [1, 0, 1, 0]}

    def fetch(method, target, seed):
        return {"predictions": preds[method], "labels": labels}

    found = paired_intervals(["variant", "baseline", "pt"], ["rte"], [0], fetch, replicates=20,
                             pairs=[("variant", "baseline")])
    assert list(found) == ["variant - baseline"]
    assert found["variant - baseline"]["targets"]["rte"]["diff"] == pytest.approx(75.0 - 25.0)
    assert found["variant - baseline"]["average"]["diff"] == pytest.approx(50.0)
    assert paired_intervals(["variant"], ["rte"], [0], fetch, pairs=[("variant", "baseline")]) == {}


def test_spot_fixed_starts_from_the_named_source_beside_oracle_spot(llama_backbone, data_dir, tmp_path):
    """'spot-fixed' starts every target from the teacher named a priori; 'spot' (best on dev) stays, both
    reported, each with its interval against MPT."""
    small = TrainArgs(steps=2, batch_size=2, warmup_steps=0)
    cfg = RunConfig(sources=["rte", "mrpc"], targets=["cola", "wnli"], out_dir=str(tmp_path / "run"), eval_split="dev",
                    data=DataArgs(data_dir=str(data_dir), eval_examples=6), prompt=PromptArgs(length=3),
                    teach=small, distill=small, adapt=small,
                    compare=CompareArgs(methods=["spot", "spot-fixed", "mpt"], spot_fixed="mrpc"))
    table, markdown = stages.run(cfg, llama_backbone)
    for target in cfg.targets:
        fixed = json.loads((tmp_path / "run" / "adapt" / "spot-fixed" / target / "metrics.json").read_text())
        assert fixed["spot_source"] == "mrpc"
        assert (tmp_path / "run" / "adapt" / "spot" / target / "metrics.json").exists()
    assert set(table["intervals"]) == {"mpt - spot", "mpt - spot-fixed"}
    assert table["parameters"]["spot-fixed"] == table["parameters"]["spot"]
    assert "| MPT - SPoT-fixed |" in markdown and "SPOT-FIXED" in markdown
    assert "1 seed(s) and the dev examples" in markdown


def test_spot_fixed_needs_its_source_among_the_sources():
    from mptune.errors import MptuneError

    with pytest.raises(MptuneError, match="compare.spot_fixed 'mnli' must be one of the sources"):
        RunConfig(compare=CompareArgs(methods=["pt", "spot-fixed"]))
    RunConfig(compare=CompareArgs(spot_fixed="nope"))  # not among the methods: not checked


def test_above_majority_against_a_hand_computation():
    """SST-2 dev labels 60 x 1, 40 x 0: the majority label (1) scores 60. A unit right on every
    example is 40 points above it, and its interval (resampling the examples) lies around 40 and
    above 0; a unit that predicts the majority label itself is 0 with a zero-width interval."""
    labels = [1] * 60 + [0] * 40
    perfect = above_majority("sst2", {"sst2": {"predictions": list(labels), "labels": labels}}, replicates=500)
    assert perfect["diff"] == pytest.approx(40.0)
    assert 0 < perfect["low"] < 40 < perfect["high"]
    constant = above_majority("sst2", {"sst2": {"predictions": [1] * 100, "labels": labels}}, replicates=500)
    assert (constant["diff"], constant["low"], constant["high"]) == (0.0, 0.0, 0.0)
    # generation tasks and units without predictions have no majority label
    assert above_majority("sst2", None) is None
