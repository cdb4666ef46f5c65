"""Hand-made schedule families: uniform keep ratio, EViT's three-stage shape, TAVT-style random schedules.

Every family goes through :meth:`TokenSchedule.from_ratios`, so all share one
rounding (:func:`~tavt_kit.schedules.schedule.ceil_count`). Used as search
baselines, as the schedules distillation tracks and as latency-table anchors.
"""
from __future__ import annotations

import random
from typing import List, Tuple

from ..errors import ConfigError
from .schedule import TokenSchedule


def evit_blocks(depth: int) -> List[int]:
    """The blocks where EViT / DynamicViT reduce tokens: L/4, L/2 and 3L/4 (3, 6, 9 of 12)."""
    return sorted({max(0, min(depth - 1, round(depth * f))) for f in (0.25, 0.5, 0.75)})


def uniform_schedule(ratio: float, depth: int, num_patches: int, min_tokens: int = 1) -> TokenSchedule:
    """The same keep ratio after every block (TAVT's shape)."""
    return TokenSchedule.from_ratios([ratio] * depth, depth, num_patches, min_tokens)


def evit_schedule(ratio: float, depth: int, num_patches: int, min_tokens: int = 1) -> TokenSchedule:
    """Keep ratio ``ratio`` at :func:`evit_blocks`, every token elsewhere."""
    return TokenSchedule.from_ratios({b: ratio for b in evit_blocks(depth)}, depth, num_patches, min_tokens)


def check_keep_range(value, param: str = "keep_range") -> Tuple[float, float]:
    """A range of keep ratios ``(low, high)`` with ``0 < low <= high <= 1``; else a ConfigError naming ``param``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{param}={value!r}: expected (low, high), keep ratios with 0 < low <= high <= 1") from None
    if not 0 < low <= high <= 1:
        raise ConfigError(f"{param}=({low:g}, {high:g}): expected keep ratios with 0 < low <= high <= 1")
    return low, high


def random_schedules(depth: int, num_patches: int, n: int, low: float = 0.8, high: float = 1.0, seed: int = 0,
                     min_tokens: int = 1) -> List[TokenSchedule]:
    """``n`` TAVT-style random schedules: each block keeps a fraction drawn uniformly in [low, high]."""
    check_keep_range((low, high), "(low, high)")
    rng = random.Random(seed)
    return [TokenSchedule.from_ratios([rng.uniform(low, high) for _ in range(depth)], depth, num_patches, min_tokens)
            for _ in range(n)]


def tome_schedule(r: int, depth: int, num_patches: int, min_tokens: int = 1) -> TokenSchedule:
    """ToMe off the shelf: merge ``r`` patch tokens in every block (fewer where half the tokens or the floor
    is reached, as ToMe's own clamp), merge everywhere."""
    if r < 0:
        raise ConfigError(f"ToMe r: expected a non-negative number of tokens per block, got {r}")
    counts, n = [], num_patches
    for _ in range(depth):
        n = max(min(n, min_tokens), n - min(int(r), n // 2))
        counts.append(n)
    return TokenSchedule(tuple(counts), num_patches, min(min_tokens, num_patches), reducers=("merge",) * depth)
