"""Evaluation metrics on a 0-100 scale, wrapping scikit-learn and scipy.

Design decisions
- Every metric takes (predictions, labels) and returns a float in percent (correlations in
  [-100, 100]), the scale GLUE/SuperGLUE results are reported on.
- `f1` is binary F1 of the positive class 1 (MRPC, QQP; MultiRC's F1a over all answers);
  `macro_f1` averages F1 over the classes present in labels or predictions (CB); `question_em`
  is MultiRC's EM, the share of questions with every answer right (labels name their question).
- Degenerate inputs give 0.0, never NaN: constant predictions or labels for pearson/spearman,
  no predicted or gold positives for f1, a single class for matthews.
- Mismatched lengths or empty inputs raise `MptuneError`.

Generation metrics (predictions are generated strings; a label is a gold string or a tuple of
gold strings, every one of them acceptable):
- `squad_em` / `squad_f1` follow the official SQuAD v1.1 evaluation script: answers are
  normalised (lower case, punctuation removed, articles a/an/the removed, whitespace collapsed),
  F1 is over the bags of normalised tokens, and each prediction scores its best gold answer.
  One deliberate difference: an empty prediction scores 0 (the script gives EM 1 against a gold
  answer that normalises to nothing, such as "The"), so an empty generation always counts as wrong.
- `bleu` is sacrebleu's corpus BLEU with its defaults (13a tokenisation, exponential smoothing),
  every gold string of a label being one reference of that segment (a variable number of
  references per segment is allowed).
- `ter` is sacrebleu's corpus TER with its defaults, references as for `bleu`: the edits needed
  per reference word, in percent, where LOWER is better (WebNLG reports BLEU, METEOR and TER;
  METEOR needs WordNet data and Java-free ports differ, so it is not computed).
- `rouge_l` is rouge-score's ROUGE-L F-measure (with its Porter stemmer), best reference per
  prediction, averaged. It is not the e2e-metrics implementation (which weights recall, beta 1.2),
  so E2E numbers are close to but not exactly the challenge's ROUGE-L.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from typing import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from mptune.errors import MptuneError
from mptune.tasks.base import Task


def _check_sizes(n_preds: int, n_labels: int) -> None:
    """MptuneError unless there is one prediction per label and at least one label."""
    if n_preds != n_labels:
        raise MptuneError(f"Got {n_preds} predictions for {n_labels} labels; expected one per label.")
    if n_labels == 0:
        raise MptuneError("Cannot score an empty set of predictions.")


def _arrays(preds: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as equal-length, non-empty arrays."""
    p, y = np.asarray(list(preds)), np.asarray(list(labels))
    _check_sizes(len(p), len(y))
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


def question_em(preds: Sequence, labels: Sequence) -> float:
    """Percent of groups (MultiRC questions) whose every example is right; labels are `GroupedLabel`s."""
    preds, labels = list(preds), list(labels)
    _check_sizes(len(preds), len(labels))
    right: dict[str, bool] = {}
    for pred, label in zip(preds, labels):
        group = getattr(label, "group", None)
        if group is None:
            raise MptuneError("question_em needs labels that name their question (tasks.base.GroupedLabel).")
        right[group] = right.get(group, True) and pred == label
    return _percent(sum(right.values()) / len(right))


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


# --- generation ---------------------------------------------------------------------------------

def _texts(preds: Sequence, labels: Sequence) -> tuple[list[str], list[tuple[str, ...]]]:
    """Predictions as strings, labels as tuples of gold strings (a single gold becomes a 1-tuple)."""
    preds, labels = list(preds), list(labels)
    _check_sizes(len(preds), len(labels))
    golds = [tuple(map(str, y)) if isinstance(y, (tuple, list)) else (str(y),) for y in labels]
    if any(not g for g in golds):
        raise MptuneError("A label has no gold answer; generation labels need at least one gold string.")
    return ["" if p is None else str(p) for p in preds], golds


PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _token_f1(pred: str, gold: str) -> float:
    """F1 of the bags of normalised tokens (the official SQuAD v1.1 definition)."""
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _best_over_golds(fn: Callable[[str, str], float], preds: Sequence, labels: Sequence) -> float:
    """Mean over examples of the best fn(prediction, gold); an empty prediction scores 0."""
    texts, golds = _texts(preds, labels)
    scores = [max(fn(p, g) for g in gs) if p.strip() else 0.0 for p, gs in zip(texts, golds)]
    return _percent(sum(scores) / len(scores))


def squad_em(preds: Sequence, labels: Sequence) -> float:
    """Exact match after SQuAD normalisation, against the best gold answer (SQuAD, MRQA, ReCoRD)."""
    return _best_over_golds(lambda p, g: float(normalize_answer(p) == normalize_answer(g)), preds, labels)


def squad_f1(preds: Sequence, labels: Sequence) -> float:
    """Token F1 after SQuAD normalisation, against the best gold answer (SQuAD, MRQA, ReCoRD)."""
    return _best_over_golds(_token_f1, preds, labels)


def _reference_streams(golds: Sequence[tuple[str, ...]]) -> list[list[str | None]]:
    """sacrebleu's reference streams: stream k holds each segment's k-th reference, None where it has none."""
    width = max(map(len, golds))
    return [[g[k] if k < len(g) else None for g in golds] for k in range(width)]


def bleu(preds: Sequence, labels: Sequence) -> float:
    """sacrebleu corpus BLEU; every gold string of a label is a reference of that segment (E2E, WebNLG)."""
    import sacrebleu

    texts, golds = _texts(preds, labels)
    return float(sacrebleu.corpus_bleu(texts, _reference_streams(golds)).score)


def ter(preds: Sequence, labels: Sequence) -> float:
    """sacrebleu corpus TER (edits per reference word, in percent; LOWER is better), multi-reference (WebNLG)."""
    import sacrebleu

    texts, golds = _texts(preds, labels)
    return float(sacrebleu.corpus_ter(texts, _reference_streams(golds)).score)


def rouge_l(preds: Sequence, labels: Sequence) -> float:
    """rouge-score ROUGE-L F-measure (stemmed) against the best reference, averaged."""
    from rouge_score import rouge_scorer

    texts, golds = _texts(preds, labels)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score_multi(list(gs), p)["rougeL"].fmeasure for p, gs in zip(texts, golds)]
    return _percent(sum(scores) / len(scores))


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews": matthews,
    "question_em": question_em,
    "pearson": pearson,
    "spearman": spearman,
    "squad_em": squad_em,
    "squad_f1": squad_f1,
    "bleu": bleu,
    "ter": ter,
    "rouge_l": rouge_l,
}


def score(task: Task, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """The task's headline metric followed by its extra metrics, name -> value (0-100)."""
    out = {}
    for name in (task.metric, *task.extra_metrics):
        if name not in METRICS:
            raise MptuneError(f"Task {task.name!r} asks for unknown metric {name!r}; known: {', '.join(METRICS)}.")
        out[name] = METRICS[name](preds, labels)
    return out
