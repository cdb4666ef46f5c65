"""Deterministic, stratified splits (the held-out split carved from a training set).

The split depends only on the labels (in the order the dataset lists its
samples), the fraction and the seed: the same dataset gives the same held-out
images on every machine and in every command (train, distill, search).

:func:`small_split_warning` is the one line every command says when a split it chooses or checks a model on
is too small to tell accuracies apart (fewer than :data:`SMALL_SPLIT_IMAGES` images).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

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


def stratified_subset(labels: Sequence[int], n: int, seed: int = 0) -> np.ndarray:
    """``n`` of the sample indices (all when ``n`` >= their number), sorted: each class gives its share of ``n``
    (``n * n_c / N`` rounded down, the remaining places to the largest remainders, ties broken by the seed),
    chosen within the class by a seeded permutation. Unlike :func:`stratified_split` a class may give every
    sample (a subset of a held-out split with one image per class)."""
    labels = np.asarray(labels, dtype=np.int64)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([int(seed), 0x5AB5])
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / len(labels)
    take = np.floor(exact).astype(np.int64)
    order = np.lexsort((rng.random(len(classes)), -(exact - take)))
    take[order[:n - int(take.sum())]] += 1
    picks = [np.flatnonzero(labels == c) for c in classes]
    return np.sort(np.concatenate([p[rng.permutation(len(p))[:t]] for p, t in zip(picks, take)]))


# ------------------------------------------------------------------ how many images a split can tell apart
#: below this many images an accuracy measured on a split is too coarse to choose or check a model by: a warning
SMALL_SPLIT_IMAGES = 200
#: the size the warning advises (about ±2.6 points at 90 % accuracy)
ADVISED_SPLIT_IMAGES = 500


def accuracy_half_width(images: int, accuracy: float = 0.9) -> float:
    """The half-width, in points, of the 95 % binomial interval of an accuracy near ``accuracy`` measured on
    ``images`` images (normal approximation): differences of accuracy below it cannot be told apart there."""
    import math

    from ..stats import Z95

    if images <= 0:
        return 100.0
    return 100.0 * Z95 * math.sqrt(accuracy * (1.0 - accuracy) / images)


def small_split_warning(images: int, what: str = "held-out split", advice: str = "--holdout",
                        minimum: int = SMALL_SPLIT_IMAGES) -> Optional[str]:
    """One line saying that ``what`` is too small to tell accuracies apart (None from ``minimum`` images up).

    ``advice`` names how to get more images (an option: ``--holdout``); the line reads e.g. ``held-out split
    has 3 images: accuracy differences below ±34 points cannot be told apart (95 % interval at 90 % accuracy);
    use at least 500 images (--holdout)``.
    """
    images = int(images)
    if images >= minimum:
        return None
    hw = accuracy_half_width(images)
    width = f"{hw:.0f}" if hw >= 10 else f"{hw:.1f}"
    return (f"{what} has {images} image{'' if images == 1 else 's'}: accuracy differences below ±{width} points "
            f"cannot be told apart (95 % interval at 90 % accuracy); use at least {ADVISED_SPLIT_IMAGES} images "
            f"({advice})")


def holdout_advice(spec=None) -> str:
    """How a user gets a larger held-out split of ``spec`` (a :class:`~tavt_kit.data.DataSpec`; None: unknown):
    ``--holdout FRACTION``, or for a dataset that brings its own held-out split ``--dataset-option holdout=N``."""
    try:
        own = spec is not None and bool(getattr(spec.info, "own_holdout", False))
    except Exception:  # no DataSpec, or a dataset fgvc-kit does not know: the common case
        own = False
    return "--dataset-option holdout=N" if own else "--holdout FRACTION"
