"""Paired bootstrap confidence intervals for the difference of two methods (MPT - PT, MPT - SPoT).

    paired_bootstrap([Paired(a, b, labels, metric), ...], replicates, seed) -> {"diff", "low", "high"}

Every method of a run scores the same seeded test sample of a target, and with compare.seeds every
seed trains every method on the same k-shot sample and data order, so the two methods' results
pair up by seed and by test example. One replicate draws the seeds with replacement (the same
draw for every target: a seed is one run of the whole comparison) and, for each target, the test
examples with replacement (the same examples for both methods), recomputes the target's metric of
each method on the drawn examples for each drawn seed, and takes the difference of the means; over
several targets the replicate's value is the mean difference over targets. The 2.5th and 97.5th
percentiles of the replicates are the 95% interval (percentile bootstrap, Efron & Tibshirani
1993); `diff` is the observed difference on all seeds and examples. With one seed only the test
examples vary, and the interval says nothing about seed-to-seed variation.

Decisions
- Metrics are recomputed on each resample (`metrics.score`), not averaged per example, so F1,
  Matthews and correlations get a correct interval too.
- Replicates are drawn from `random.Random(seed)`: the same predictions give the same interval.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

Metric = Callable[[Sequence, Sequence], float]
"""metric(predictions, labels) -> a score (higher is better)."""


@dataclass
class Paired:
    """Two methods on one target: predictions per seed (seed -> list, in test-example order)."""

    a: dict[int, list]
    b: dict[int, list]
    labels: list
    metric: Metric

    def __post_init__(self):
        if set(self.a) != set(self.b) or not self.a:
            raise ValueError(f"the two methods must have results for the same seeds, got {sorted(self.a)} "
                             f"and {sorted(self.b)}")
        if any(len(p) != len(self.labels) for p in (*self.a.values(), *self.b.values())):
            raise ValueError("every prediction list must cover the same test examples as the labels")

    def difference(self, seeds: Sequence[int], examples: Sequence[int]) -> float:
        """Mean over `seeds` of metric(a) - metric(b) on the test examples `examples` (indices)."""
        labels = [self.labels[i] for i in examples]

        def mean(preds: dict[int, list]) -> float:
            return statistics.mean(self.metric([preds[s][i] for i in examples], labels) for s in seeds)

        return mean(self.a) - mean(self.b)


def paired_bootstrap(targets: Sequence[Paired], replicates: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """The difference a - b averaged over targets, with its percentile-bootstrap interval at `level`."""
    seeds = sorted(targets[0].a)
    if any(sorted(t.a) != seeds for t in targets):
        raise ValueError("every target must have results for the same seeds")
    rng = random.Random(seed)
    observed = statistics.mean(t.difference(seeds, range(len(t.labels))) for t in targets)
    values = []
    for _ in range(replicates):
        drawn = [rng.choice(seeds) for _ in seeds]
        values.append(statistics.mean(
            t.difference(drawn, [rng.randrange(len(t.labels)) for _ in t.labels]) for t in targets))
    values.sort()
    tail = (1 - level) / 2
    low = values[int(tail * (replicates - 1))]
    high = values[int(round((1 - tail) * (replicates - 1)))]
    return {"diff": observed, "low": low, "high": high, "replicates": replicates, "seeds": len(seeds)}
