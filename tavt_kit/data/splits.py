"""Deterministic, stratified splits (the held-out split carved from a training set).

The split depends only on the labels (in the order the dataset lists its
samples), the fraction and the seed: the same dataset gives the same held-out
images on every machine and in every command (train, distill, search).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..errors import ConfigError


def check_fraction(value: float, name: str = "holdout", allow_zero: bool = True) -> float:
    """Validate a split fraction: in [0, 1) (or (0, 1) without ``allow_zero``); errors name the parameter ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: expected a fraction in {'[0' if allow_zero else '(0'}, 1)") from None
    if not (0.0 <= v < 1.0) or (v == 0.0 and not allow_zero) or v != v:
        raise ConfigError(f"{name}={value!r}: expected a fraction in {'[0' if allow_zero else '(0'}, 1)")
    return v


def stratified_split(labels: Sequence[int], fraction: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (kept, held_out), stratified by label.

    ``round(fraction * N)`` samples are held out. Each class gives
    ``floor(fraction * n_c)`` of its samples; the remaining places go to the
    classes with the largest remainders (ties broken by the seed), so even
    classes with very few images (ultra-FGVC: 3 per class) are spread fairly.
    A class never gives away all of its samples. Within a class, which
    samples are held out is a seeded permutation. Both index arrays are sorted.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    fraction = float(fraction)
    if fraction <= 0.0 or n == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 0x5EED])
    classes, counts = np.unique(labels, return_counts=True)
    target = int(round(fraction * n))
    exact = fraction * counts
    take = np.floor(exact).astype(np.int64)
    cap = np.maximum(counts - 1, 0)  # keep at least one sample of each class
    take = np.minimum(take, cap)
    remaining = target - int(take.sum())
    if remaining > 0:
        remainder = exact - np.floor(exact)
        tiebreak = rng.random(len(classes))
        order = np.lexsort((tiebreak, -remainder))  # largest remainder first, seeded ties
        for ci in order:
            if remaining == 0:
                break
            if take[ci] < cap[ci]:
                take[ci] += 1
                remaining -= 1
    held = []
    for ci, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        perm = rng.permutation(len(idx))
        held.append(idx[perm[:take[ci]]])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out
