"""Weighted ordering: spread traffic over providers in proportion to configured weights,
and still hand the runner a full fallback order.

Each positive-weight name draws an exponential "finish time" with rate equal to its weight
and the names are sorted by it. The first is then chosen with probability
``weight / total``, and, because exponential clocks are memoryless, each next one with
probability proportional to its weight among those left: weighted sampling without
replacement in one pass (Efraimidis and Spirakis, 2006). The RNG is an argument, so a seed
pins the order in tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence


def weighted_order(names: Sequence[str], weights: Mapping[str, float], rng: random.Random) -> list[str]:
    """``names`` reordered: drawn by weight first, then zero or absent weights in the given order."""
    for name in names:
        weight = weights.get(name, 0.0)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of {name} must be a finite number >= 0, not {weight}")
    drawn = [(rng.expovariate(weights[n]), i) for i, n in enumerate(names) if weights.get(n, 0.0) > 0]
    drawn.sort()
    first = [names[i] for _, i in drawn]
    rest = [n for n in names if weights.get(n, 0.0) <= 0]
    return first + rest
