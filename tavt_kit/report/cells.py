"""How the report writes one figure: an accuracy with its interval, a paired difference, a schedule, a latency."""
from __future__ import annotations

from typing import Optional

from ..search.pick import PairedDifference, Pick
from ..stats import wilson_interval


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def pct_ci(p: Pick, split: str, n: int) -> str:
    """An accuracy with its 95 % interval: ``93.10 [92.18, 93.93]``."""
    acc = getattr(p, f"{split}_accuracy")
    if acc is None:
        return "–"
    ci = getattr(p, f"{split}_interval") or (wilson_interval(int(round(acc * n)), n) if n else None)
    return pct(acc) + ("" if not ci else " [{:.2f}, {:.2f}]".format(100 * ci[0], 100 * ci[1]))


def vs_searched_text(p: Optional[Pick]) -> str:
    """The searched pick minus this baseline on the same test images, with the paired 95 % interval."""
    vs = p.vs_searched if p is not None else None
    if not vs:
        return "–"
    lo, hi = vs.interval
    return f"{100 * vs.difference:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + ("" if vs.resolved else " (within noise)")


def schedule_text(p: Pick) -> str:
    """Counts per block, ``m`` after a block that merges its tokens (ToMe) instead of dropping them."""
    reducers = p.reducers or [None] * len(p.counts)
    text = ",".join(f"{c}{'m' if r == 'merge' else ''}" for c, r in zip(p.counts, reducers))
    return text + (f" @ {p.recorded_precision}" if p.recorded_precision else "")


def ms_text(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def top1_text(x) -> str:
    """A top-1 recorded in % (export.json), as the report prints it."""
    return "–" if x is None else f"{x:.2f}"


def paired_text(v: PairedDifference) -> str:
    """``-0.93 [-1.75, -0.12] points`` (``, within noise`` when the interval holds 0)."""
    return "{:+.2f} [{:+.2f}, {:+.2f}] points{}".format(100 * v.difference, *(100 * x for x in v.interval),
                                                       "" if v.resolved else ", within noise")
