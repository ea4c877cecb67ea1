"""Metrics: hand-computed cases, degenerate inputs, and agreement with scikit-learn/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from mptune.errors import MptuneError
from mptune.metrics import METRICS, accuracy, f1, macro_f1, matthews, pearson, question_em, score, spearman
from mptune.tasks import get_task, task_names
from mptune.tasks.base import GroupedLabel, Task


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
    grouped = [GroupedLabel(1, "q0"), GroupedLabel(1, "q0"), GroupedLabel(1, "q1")]
    for fn in METRICS.values():
        assert not math.isnan(fn([1, 1, 1], grouped))


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
    multirc = [GroupedLabel(0, "p0/q0"), GroupedLabel(1, "p0/q0")]
    assert score(get_task("multirc"), [0, 0], multirc) == {"f1": 0.0, "question_em": 0.0}
    assert list(score(get_task("rte"), [0, 1], [0, 1])) == ["accuracy"]
    bad = Task("x", "custom", ("a", "b"), "meteor", lambda d, s, n: [])
    with pytest.raises(MptuneError, match="unknown metric 'meteor'"):
        score(bad, [0], [0])


def test_question_em_hand_computed_and_against_per_question_accuracy():
    labels = [GroupedLabel(y, g) for y, g in ((1, "a"), (0, "a"), (1, "b"), (1, "c"), (0, "c"))]
    # question a: both right; b: wrong; c: one of two wrong -> 1 of 3 questions
    assert question_em([1, 0, 0, 1, 1], labels) == pytest.approx(100 / 3)
    assert question_em([1, 0, 1, 1, 0], labels) == 100.0
    with pytest.raises(MptuneError, match="name their question"):
        question_em([1], [1])
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 300)
    y, p = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    per_group = {g: all(p[groups == g] == y[groups == g]) for g in set(groups.tolist())}
    expected = 100 * sum(per_group.values()) / len(per_group)
    assert question_em(p.tolist(), [GroupedLabel(int(v), str(g)) for v, g in zip(y, groups)]) == pytest.approx(expected)


# The metrics issue 3 asks for, per task (headline first); NLG: BLEU plus what maintained packages compute.
PAPER_METRICS = {
    "mnli": ("accuracy",), "qqp": ("accuracy", "f1"), "qnli": ("accuracy",), "sst2": ("accuracy",),
    "stsb": ("pearson", "spearman"), "mrpc": ("accuracy", "f1"), "rte": ("accuracy",), "cola": ("matthews",),
    "wnli": ("accuracy",), "multirc": ("f1", "question_em"), "boolq": ("accuracy",), "wic": ("accuracy",),
    "wsc": ("accuracy",), "cb": ("accuracy", "macro_f1"), "copa": ("accuracy",), "rte_sg": ("accuracy",),
    "record": ("squad_f1", "squad_em"), "squad": ("squad_f1", "squad_em"), "nq": ("squad_f1", "squad_em"),
    "hotpotqa": ("squad_f1", "squad_em"), "searchqa": ("squad_f1", "squad_em"), "newsqa": ("squad_f1", "squad_em"),
    "winogrande": ("accuracy",), "yelp_polarity": ("accuracy",), "scitail": ("accuracy",), "paws": ("accuracy",),
    "e2e": ("bleu", "rouge_l"), "webnlg": ("bleu", "ter", "rouge_l"),
}


@pytest.mark.parametrize("name", task_names())
def test_every_task_scores_its_paper_metrics(name):
    task = get_task(name)
    assert (task.metric, *task.extra_metrics) == PAPER_METRICS[name]
    if task.is_classification:
        labels = [GroupedLabel(i % len(task.choices), f"q{i // 3}") for i in range(6)]
        preds = [task.decode(i % len(task.choices)) for i in range(6)]
        labels = [float(task.choices[y]) for y in labels] if task.regression else labels
    else:
        preds, labels = ["the cat sat", "a dog"], [("the cat sat",), ("a dog ran", "the dog")]
    scores = score(task, preds, labels)
    assert list(scores) == list(PAPER_METRICS[name]) and all(math.isfinite(v) for v in scores.values())
