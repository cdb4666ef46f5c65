"""Binomial intervals for accuracies, and for the difference of two accuracies on the same images.

Every accuracy fgvc-kit reports comes with a 95 % interval, so a difference
that the data cannot resolve is said to be one.

* :func:`wilson_interval`: the Wilson score interval of ``k`` hits in ``n``
  images (well-behaved near 0 and 100 %, unlike the normal approximation);
* :func:`paired_difference`: the difference of two classifiers' accuracies on
  the *same* images with the interval of a paired comparison (only images
  where they disagree carry information; this is much tighter than comparing
  two separate intervals, and is what decides whether a pick beats a baseline).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

Z95 = 1.959963984540054


def wilson_interval(hits: int, n: int, z: float = Z95) -> Tuple[float, float]:
    """The 95 % Wilson score interval of a proportion ``hits / n`` (``(0, 1)`` for no images)."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(accuracy: Optional[float], n: int) -> Optional[List[float]]:
    """The 95 % Wilson interval of an accuracy measured on ``n`` images, as a list (None: none measured)."""
    return None if accuracy is None or not n else list(wilson_interval(int(round(accuracy * n)), n))


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> Dict[str, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same images, with its 95 % interval.

    ``a`` and ``b`` are per-image hits. The interval is the normal interval of
    the mean of the paired differences (d_i in {-1, 0, 1}), with the
    continuity-free variance of McNemar's setting: ``resolved`` is True when it
    excludes 0.
    """
    n = len(a)
    if n != len(b):
        raise ValueError(f"paired_difference: {n} and {len(b)} images; the hits must be on the same images")
    if n == 0:
        return {"difference": 0.0, "interval": [-1.0, 1.0], "resolved": False, "images": 0, "disagree": 0}
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    d = (only_a - only_b) / n
    var = ((only_a + only_b) / n - d * d) / n
    half = z * math.sqrt(max(var, 0.0))
    lo, hi = d - half, d + half
    return {"difference": d, "interval": [lo, hi], "resolved": bool(lo > 0 or hi < 0), "images": n,
            "disagree": only_a + only_b}
