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

import math
from typing import Callable, Dict, Optional, Tuple

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


def fit_tome_measured(depth: int, num_patches: int, predict: Callable[[TokenSchedule], float],
                      measure: Callable[[TokenSchedule], float], limit: float, min_tokens: int = 1,
                      max_measurements: int = 8, measured: Optional[Dict[int, float]] = None
                      ) -> Tuple[Optional[TokenSchedule], Dict[int, float]]:
    """ToMe's smallest r whose *measured* cost is within ``limit``, and every r measured on the way.

    A latency table mispredicts whole models (per-block timings miss what the runtime fuses or adds, most at
    few tokens), so a ToMe fitted on it alone can be milder, or slower, than the budget allows. This fit
    probes where ``predict`` puts r; until one probe is within the limit and one over, it steers by the table
    scaled to the nearest probe (the table's error changes slowly with r), overshooting by half the move so
    that it brackets soon; then it interpolates between the two sides, bisecting after two probes on one side
    (so it always narrows). It stops when r is measured within and r - 1 over (or r = 0), or after
    ``max_measurements`` probes, returning the smallest r measured within (None: none was). ``measured``
    (r -> cost) is reused and filled, so the fits of several budgets share their probes."""
    seen = {} if measured is None else measured
    hi = max(1, num_patches // 2)
    make = lambda r: tome_schedule(r, depth, num_patches, min_tokens)  # noqa: E731
    first = fit_tome(depth, num_patches, predict, limit, min_tokens)
    r = hi if first is None else num_patches - first.counts[0]
    sides = []  # whether each probe was over the limit
    for i in range(max_measurements + 1):
        lo = max((q + 1 for q, v in seen.items() if v > limit), default=0)
        up = min((q for q, v in seen.items() if v <= limit), default=None)
        top = hi if up is None else up - 1
        if lo > top or i == max_measurements:
            break
        if i > 0 and (lo == 0 or up is None):  # one side only: steer by the scaled table, overshooting a half
            near = min(seen, key=lambda q: abs(q - r))
            scale = seen[near] / max(predict(make(near)), 1e-12)
            s = fit_tome(depth, num_patches, lambda x: predict(x) * scale, limit, min_tokens)
            to = top if s is None else num_patches - s.counts[0]
            r = r + math.ceil(1.5 * (to - r)) if to >= r else r - math.ceil(1.5 * (r - to))
        elif i > 0:  # both sides: interpolate between them; bisect after two probes on one side
            a, b = lo - 1, top + 1
            r = (lo + top) // 2 if len(sides) > 1 and sides[-1] == sides[-2] else \
                a + math.ceil((seen[a] - limit) / max(seen[a] - seen[b], 1e-12) * (b - a))
        r = min(max(r, lo), top)  # every r probed so far lies outside [lo, top]: a new probe
        seen[r] = float(measure(make(r)))
        sides.append(seen[r] > limit)
    ok = [q for q, v in seen.items() if v <= limit]
    return (make(min(ok)) if ok else None), seen


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
