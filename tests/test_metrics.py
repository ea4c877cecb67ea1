"""Metrics: hand-computed cases, degenerate inputs, and agreement with scikit-learn/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from mptune.errors import MptuneError
from mptune.metrics import METRICS, accuracy, f1, macro_f1, matthews, pearson, score, spearman
from mptune.tasks import get_task
from mptune.tasks.base import Task


def test_hand_computed():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0
    # tp=1 fp=1 fn=1 -> P=R=0.5
    assert f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(50.0)
    # per-class F1: 1, 2/3, 2/3
    assert macro_f1([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(700 / 9)
    # tp=2 tn=1 fp=1 fn=0 -> (2*1 - 1*0) / sqrt(3*2*2*1)
    assert matthews([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(100 * 2 / math.sqrt(12))
    assert matthews([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(100.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-100.0)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(100.0)
    assert pearson([1, 2, 3, 4], [1, 4, 9, 16]) < 99.0


def test_degenerate_inputs_give_zero_not_nan():
    assert pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert pearson([1.0, 2.0], [3.0, 3.0]) == 0.0
    assert pearson([1.0], [1.0]) == 0.0
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0
    assert f1([0, 0, 0], [1, 1, 0]) == 0.0
    assert matthews([1, 1, 1], [1, 0, 1]) == 0.0
    for fn in METRICS.values():
        assert not math.isnan(fn([1, 1, 1], [1, 1, 1]))


def test_bad_inputs():
    with pytest.raises(MptuneError, match="3 predictions for 2 labels"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(MptuneError, match="empty"):
        f1([], [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agree_with_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    y2, p2 = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    a, b = rng.normal(size=300), rng.normal(size=300)
    b = 0.5 * a + b
    assert accuracy(p3, y3) == pytest.approx(100 * skm.accuracy_score(y3, p3))
    assert f1(p2, y2) == pytest.approx(100 * skm.f1_score(y2, p2))
    assert macro_f1(p3, y3) == pytest.approx(100 * skm.f1_score(y3, p3, average="macro"))
    assert matthews(p2, y2) == pytest.approx(100 * skm.matthews_corrcoef(y2, p2))
    assert pearson(list(a), list(b)) == pytest.approx(100 * stats.pearsonr(a, b)[0])
    assert spearman(a, b) == pytest.approx(100 * stats.spearmanr(a, b)[0])


def test_score_uses_task_metrics():
    assert list(score(get_task("mrpc"), [1, 0, 1], [1, 1, 1])) == ["accuracy", "f1"]
    assert score(get_task("mrpc"), [1, 0, 1], [1, 1, 1]) == pytest.approx({"accuracy": 200 / 3, "f1": 80.0})
    assert list(score(get_task("cb"), [0, 1, 2], [0, 1, 1])) == ["accuracy", "macro_f1"]
    assert list(score(get_task("stsb"), [0.0, 2.0, 5.0], [0.5, 2.5, 4.0])) == ["pearson", "spearman"]
    assert list(score(get_task("cola"), [0, 1], [0, 1])) == ["matthews"]
    assert list(score(get_task("multirc"), [0, 1], [0, 1])) == ["f1"]
    assert list(score(get_task("rte"), [0, 1], [0, 1])) == ["accuracy"]
    bad = Task("x", "custom", ("a", "b"), "meteor", lambda d, s, n: [])
    with pytest.raises(MptuneError, match="unknown metric 'meteor'"):
        score(bad, [0], [0])
