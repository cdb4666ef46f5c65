"""Hand-made schedules the search result is compared with, at the same budgets.

* ``uniform``: the same keep ratio at every block (the largest that meets the budget);
* ``evit``: EViT / DynamicViT's shape — keep ratio r at blocks L/4, L/2 and 3L/4
  (3, 6, 9 for a 12-block ViT), the largest r that meets the budget; and the
  published fixed point r = 0.7;
* ``tome``: ToMe off the shelf — merge the same number r of tokens in every block,
  the smallest r that meets the budget (models that can merge only).

The families themselves live in :mod:`tavt_kit.schedules.families`; this module fits them to budgets.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from ..schedules import TokenSchedule, evit_schedule, tome_schedule, uniform_schedule


def fit_ratio(make: Callable[[float], TokenSchedule], cost: Callable[[TokenSchedule], float], limit: float,
              lo: float = 0.02, iters: int = 30) -> Optional[TokenSchedule]:
    """The schedule ``make(r)`` with the largest r in [lo, 1] whose cost is within ``limit`` (cost rises with r)."""
    if cost(make(1.0)) <= limit:
        return make(1.0)
    if cost(make(lo)) > limit:
        return None
    a, b = lo, 1.0
    for _ in range(iters):
        mid = (a + b) / 2
        if cost(make(mid)) <= limit:
            a = mid
        else:
            b = mid
    return make(a)


def fit_tome(depth: int, num_patches: int, cost: Callable[[TokenSchedule], float], limit: float,
             min_tokens: int = 1) -> Optional[TokenSchedule]:
    """ToMe's schedule with the smallest r (tokens merged per block) whose cost is within ``limit``."""
    lo, hi = 0, max(1, num_patches // 2)
    if cost(tome_schedule(hi, depth, num_patches, min_tokens)) > limit:
        return None
    while lo < hi:  # cost falls as r grows
        mid = (lo + hi) // 2
        if cost(tome_schedule(mid, depth, num_patches, min_tokens)) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return tome_schedule(lo, depth, num_patches, min_tokens)


def baseline_schedules(depth: int, num_patches: int, cost: Callable[[TokenSchedule], float],
                       limits: Dict[str, float], min_tokens: int = 1,
                       merge: bool = False) -> Dict[str, Dict[str, TokenSchedule]]:
    """``{budget label: {baseline name: schedule}}`` plus ``{"fixed": {"evit 0.7": ...}}``; ``merge``: add ToMe."""
    out: Dict[str, Dict[str, TokenSchedule]] = {
        "fixed": {"evit 0.7": evit_schedule(0.7, depth, num_patches, min_tokens)}}
    for label, limit in limits.items():
        row = {}
        for name, make in (("uniform", uniform_schedule), ("evit", evit_schedule)):
            s = fit_ratio(lambda r, make=make: make(r, depth, num_patches, min_tokens), cost, limit)
            if s is not None:
                row[name] = s
        if merge:
            s = fit_tome(depth, num_patches, cost, limit, min_tokens)
            if s is not None:
                row["tome"] = s
        out[label] = row
    return out
