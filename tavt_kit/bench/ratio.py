"""The ratio of two latencies timed round-robin, with a confidence interval from the rounds they share.

Two callables timed in turn (:func:`~tavt_kit.bench.timing.measure_round_robin`) are slowed alike by a machine
whose speed drifts, so their ratio is the figure to trust -- but the ratio itself moves: a small model's share
of a large one's latency moved by 3-8 % from one round to the next on one machine
(``docs/benchmarks/ratio_stability.md``). Each rotation times both within a fraction of a second, so each gives
one *paired* estimate of the ratio (the medians of the two callables' samples in that rotation). The median of
those is the estimate, and its distribution-free interval (order statistics) says how far the ratio moved
while they were timed: what a budget judged by the ratio should judge against. It cannot say how far it will
move in a later round; a hard limit needs a margin of its own.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Optional, Tuple

from .timing import TimingStats, median_ci


@dataclass(frozen=True)
class LatencyRatio:
    """``num / den`` latency: ``ratio`` (median of the per-round ratios), its 95 % interval ``low``..``high``
    and the number of ``rounds`` both were timed in. With no rounds recorded (or none shared) the ratio is that
    of the two medians and the interval has no width: nothing measured says how much it moved."""

    ratio: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of_point(cls, ratio: float) -> "LatencyRatio":
        """A ratio measured without rotations to pair (two medians, or two timings taken one by one)."""
        return cls(ratio, ratio, ratio, 0)

    @property
    def interval(self) -> Tuple[float, float]:
        return self.low, self.high

    def within(self, share: float) -> bool:
        """True when the whole interval is at or under ``share``: the ratio stayed within it while timed."""
        return self.high <= share

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "interval": [self.low, self.high], "rounds": self.rounds}


def paired_ratio(num: TimingStats, den: TimingStats, z: float = 1.96) -> LatencyRatio:
    """The latency of ``num`` as a share of ``den``'s, paired round by round (see the module's docstring)."""
    a, b = num.by_round(), den.by_round()
    shared = sorted(set(a) & set(b))
    if not shared:
        return LatencyRatio.of_point(num.p50 / den.p50)
    ratios = sorted(a[r] / b[r] for r in shared)
    low, high = median_ci(ratios, z=z)
    return LatencyRatio(statistics.median(ratios), low, high, len(shared))


def ratio_of_bench_rows(num: Optional[dict], den: Optional[dict]) -> Optional[LatencyRatio]:
    """:func:`paired_ratio` of two results of one bench.json (``results[i]``, timed round-robin in one run);
    None where they are not at one batch size or their rotations were not recorded (files of older versions)."""
    if not num or not den or num.get("batch_size") != den.get("batch_size"):
        return None
    a, b = num.get("latency_ms") or {}, den.get("latency_ms") or {}
    if not (a.get("samples") and a.get("rounds_of") and b.get("samples") and b.get("rounds_of")):
        return None
    try:
        ratio = paired_ratio(TimingStats(a["samples"], rounds_of=a["rounds_of"]),
                             TimingStats(b["samples"], rounds_of=b["rounds_of"]))
    except ValueError:  # samples and rotations that do not pair (a file edited by hand)
        return None
    return ratio if ratio.rounds else None
