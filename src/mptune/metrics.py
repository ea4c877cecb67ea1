"""Evaluation metrics on a 0-100 scale, wrapping scikit-learn and scipy.

Design decisions
- Every metric takes (predictions, labels) and returns a float in percent (correlations in
  [-100, 100]), the scale GLUE/SuperGLUE results are reported on.
- `f1` is binary F1 of the positive class 1 (MRPC, QQP; MultiRC's F1a over all answers);
  `macro_f1` averages F1 over the classes present in labels or predictions (CB).
- Degenerate inputs give 0.0, never NaN: constant predictions or labels for pearson/spearman,
  no predicted or gold positives for f1, a single class for matthews.
- Mismatched lengths or empty inputs raise `MptuneError`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from mptune.errors import MptuneError
from mptune.tasks.base import Task


def _arrays(preds: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as equal-length, non-empty arrays."""
    p, y = np.asarray(list(preds)), np.asarray(list(labels))
    if len(p) != len(y):
        raise MptuneError(f"Got {len(p)} predictions for {len(y)} labels; expected one per label.")
    if len(y) == 0:
        raise MptuneError("Cannot score an empty set of predictions.")
    return p, y


def _percent(value: float) -> float:
    """100 * value, with NaN mapped to 0.0."""
    value = float(value)
    return 0.0 if math.isnan(value) else 100.0 * value


def accuracy(preds: Sequence, labels: Sequence) -> float:
    """Percent of predictions equal to the label."""
    p, y = _arrays(preds, labels)
    return _percent(skm.accuracy_score(y, p))


def f1(preds: Sequence, labels: Sequence) -> float:
    """Binary F1 of the positive class 1."""
    p, y = _arrays(preds, labels)
    return _percent(skm.f1_score(y, p, pos_label=1, average="binary", zero_division=0))


def macro_f1(preds: Sequence, labels: Sequence) -> float:
    """Unweighted mean of per-class F1 over the classes seen in labels or predictions."""
    p, y = _arrays(preds, labels)
    return _percent(skm.f1_score(y, p, average="macro", zero_division=0))


def matthews(preds: Sequence, labels: Sequence) -> float:
    """Matthews correlation coefficient (CoLA)."""
    p, y = _arrays(preds, labels)
    with warnings.catch_warnings():  # a single class warns, then scores 0
        warnings.simplefilter("ignore")
        return _percent(skm.matthews_corrcoef(y, p))


def _correlation(fn: Callable, preds: Sequence, labels: Sequence) -> float:
    p, y = _arrays(preds, labels)
    p, y = p.astype(float), y.astype(float)
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(y) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _percent(fn(p, y)[0])


def pearson(preds: Sequence, labels: Sequence) -> float:
    """Pearson correlation (STS-B)."""
    return _correlation(stats.pearsonr, preds, labels)


def spearman(preds: Sequence, labels: Sequence) -> float:
    """Spearman rank correlation (STS-B)."""
    return _correlation(stats.spearmanr, preds, labels)


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def score(task: Task, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """The task's headline metric followed by its extra metrics, name -> value (0-100)."""
    out = {}
    for name in (task.metric, *task.extra_metrics):
        if name not in METRICS:
            raise MptuneError(f"Task {task.name!r} asks for unknown metric {name!r}; known: {', '.join(METRICS)}.")
        out[name] = METRICS[name](preds, labels)
    return out
