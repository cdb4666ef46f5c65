"""How the report writes one figure: an accuracy with its interval, a paired difference, a schedule, a latency."""
from __future__ import annotations

from typing import Optional

from ..stats import wilson_interval


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def pct_ci(d: dict, split: str, n: int) -> str:
    """An accuracy with its 95 % interval: ``93.10 [92.18, 93.93]``."""
    acc = d.get(f"{split}_accuracy")
    if acc is None:
        return "–"
    ci = d.get(f"{split}_interval") or (list(wilson_interval(int(round(acc * n)), n)) if n else None)
    return pct(acc) + ("" if not ci else " [{:.2f}, {:.2f}]".format(100 * ci[0], 100 * ci[1]))


def vs_searched_text(d: Optional[dict]) -> str:
    """The searched pick minus this baseline on the same test images, with the paired 95 % interval."""
    vs = (d or {}).get("vs_searched")
    if not vs:
        return "–"
    lo, hi = vs["interval"]
    return f"{100 * vs['difference']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + (
        "" if vs["resolved"] else " (within noise)")


def schedule_text(d: dict) -> str:
    """Counts per block, ``m`` after a block that merges its tokens (ToMe) instead of dropping them."""
    reducers = d.get("reducers") or [None] * len(d["counts"])
    text = ",".join(f"{c}{'m' if r == 'merge' else ''}" for c, r in zip(d["counts"], reducers))
    return text + (f" @ {d['precision']}" if d.get("precision") else "")


def ms_text(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def top1_text(x) -> str:
    """A top-1 recorded in % (export.json), as the report prints it."""
    return "–" if x is None else f"{x:.2f}"


def paired_text(v: dict) -> str:
    """``-0.93 [-1.75, -0.12] points`` (``, within noise`` when the interval holds 0)."""
    return "{:+.2f} [{:+.2f}, {:+.2f}] points{}".format(100 * v["difference"], *(100 * x for x in v["interval"]),
                                                       "" if v.get("resolved") else ", within noise")
