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

Seeds may be tuples, (source run, adaptation seed): MPT's targets start from a P* that one run of
the teachers and distillation made, so a target's score varies with that run as well as with its
own seed. Such seeds are drawn by level (a two-stage bootstrap, Davison & Hinkley 1997, sec. 3.8):
the source runs with replacement, then, within each drawn run, its adaptation seeds with
replacement. Drawing them flat would count the adaptation seeds of one source run as independent
runs of the whole pipeline and understate the source-to-source spread. The levels are meant to be
crossed (every source run with the same adaptation seeds); a method that does not use the sources
(PT) repeats its result for every source run.

Decisions
- Metrics are recomputed on each resample (`metrics.score`), not averaged per example, so F1,
  Matthews and correlations get a correct interval too.
- Replicates are drawn from `random.Random(seed)`: the same predictions give the same interval.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence, Union

Metric = Callable[[Sequence, Sequence], float]
"""metric(predictions, labels) -> a score (higher is better)."""
Seed = Union[int, tuple[int, ...]]
"""A seed, or a tuple of seeds by level: (source run, adaptation seed)."""


@dataclass
class Paired:
    """Two methods on one target: predictions per seed (seed -> list, in test-example order)."""

    a: dict[Seed, list]
    b: dict[Seed, list]
    labels: list
    metric: Metric

    def __post_init__(self):
        if set(self.a) != set(self.b) or not self.a:
            raise ValueError(f"the two methods must have results for the same seeds, got {sorted(self.a)} "
                             f"and {sorted(self.b)}")
        shapes = {len(k) if isinstance(k, tuple) else None for k in self.a}
        if len(shapes) > 1:
            raise ValueError(f"seeds must all be integers or all tuples of one length, got {sorted(map(str, self.a))}")
        if any(len(p) != len(self.labels) for p in (*self.a.values(), *self.b.values())):
            raise ValueError("every prediction list must cover the same test examples as the labels")

    def difference(self, seeds: Sequence[Seed], examples: Sequence[int]) -> float:
        """Mean over `seeds` of metric(a) - metric(b) on the test examples `examples` (indices)."""
        labels = [self.labels[i] for i in examples]

        def mean(preds: dict[Seed, list]) -> float:
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
        drawn = draw_seeds(rng, seeds)
        values.append(statistics.mean(
            t.difference(drawn, [rng.randrange(len(t.labels)) for _ in t.labels]) for t in targets))
    values.sort()
    tail = (1 - level) / 2
    low = values[int(tail * (replicates - 1))]
    high = values[int(round((1 - tail) * (replicates - 1)))]
    found = {"diff": observed, "low": low, "high": high, "replicates": replicates, "seeds": len(seeds)}
    if isinstance(seeds[0], tuple):
        found["source_runs"] = len({s[0] for s in seeds})
    return found


def draw_seeds(rng: random.Random, seeds: Sequence[Seed]) -> list[Seed]:
    """One bootstrap draw of the seeds, with replacement: as many as there are; tuple seeds by level,
    the first element's values first, then within each drawn value its remaining elements."""
    if not isinstance(seeds[0], tuple) or len(seeds[0]) == 1:
        return [rng.choice(seeds) for _ in seeds]
    inner: dict[int, list] = {}
    for s in seeds:
        inner.setdefault(s[0], []).append(s[1:])
    tops = sorted(inner)
    drawn = []
    for _ in tops:
        top = rng.choice(tops)
        drawn += [(top, *rest) for rest in draw_seeds(rng, inner[top])]
    return drawn
