"""The winner's curse of a search's pick, corrected by empirical-Bayes shrinkage toward the compute trend.

An evolution scores a few hundred schedules on the same held-out images and keeps the fittest within each budget.
Each score carries noise (a few hundred images decide it), and the maximum of many noisy scores is biased upward:
the pick is often a schedule that was lucky on these images, typically one far cheaper than the budget allows,
which then loses to your model on the test images (measured: a 4.2x schedule picked for a 2x budget, 1.0 point
below your model on the test images while ToMe at 2.3x lost nothing; ``docs/benchmarks/latency_reference.md``).

What is known besides the scores: accuracy follows compute. Every candidate's fitness is modelled as a trend in
log-MACs (a least-squares polynomial over the bulk of the evaluated candidates) plus a schedule effect, observed with the
candidate's own paired noise ``se`` (its standard error as a difference to the full model on the same images,
:class:`~.evaluate.ScheduleScores`). The schedule effects' spread ``tau`` is what the residuals show beyond the
noise, measured on the bulk of the space: a tail of schedules far worse than the rest (one block cut too hard)
would otherwise set it (with every residual, it kept 98-99 % of every lead on cluttered-digits, i.e. corrected
nothing), so residuals more than 3 robust standard deviations below the median are left out of it:
``tau² = max(0, var(bulk residuals) - mean(bulk se²))``. A candidate above the trend is then estimated at

    trend(MACs) + tau² / (tau² + se²) * (fitness - trend(MACs))

(the posterior mean under a normal prior): a lead no larger than noise explains is pulled back toward the trend,
and where schedules differ by far more than noise (large ``tau``) the scores stand. A candidate at or below the
trend keeps its measured fitness: the correction only removes the optimism of high scores (what selection
inflates); raising a low score toward the trend could make a schedule the images call poor the pick.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

#: the trend's polynomial degree in log-MACs (lower with fewer distinct costs)
TREND_DEGREE = 3
#: fewer candidates than this: too few to separate the trend from the schedule effects; nothing is shrunk
MIN_CANDIDATES = 12


#: residuals this many robust standard deviations below the median are the space's bad tail, not its bulk
TAIL_SDS = 3.0
#: fits of the trend, each to the bulk the previous one found
TREND_PASSES = 3


@dataclass(frozen=True)
class Shrinkage:
    """The fitted correction: ``estimate(fitness, se, macs)`` is a candidate's shrunk fitness."""

    coefficients: Tuple[float, ...]  # the trend: polynomial in log(MACs), highest power first
    tau2: float  # variance of the schedule effects in the bulk of the space (beyond the trend)
    noise2: float  # mean squared standard error of the candidates
    candidates: int
    bulk: int  # the candidates tau was measured on (the rest: the bad tail)

    def trend(self, macs: float) -> float:
        return float(np.polyval(self.coefficients, math.log(max(macs, 1.0))))

    def factor(self, se: float) -> float:
        """How much of its lead over the trend a candidate keeps (1: all, 0: none)."""
        return 1.0 if self.tau2 + se * se <= 0 else self.tau2 / (self.tau2 + se * se)

    def estimate(self, fitness: float, se: Optional[float], macs: float) -> float:
        if se is None:  # a score without its noise (a deployed runtime's): kept as measured
            return fitness
        t = self.trend(macs)
        return fitness if fitness <= t else t + self.factor(se) * (fitness - t)

    def to_dict(self) -> dict:
        return {"method": "empirical Bayes: leads over a trend in log-MACs shrunk by tau^2 / (tau^2 + se^2), tau "
                          "measured on the bulk of the candidates",
                "trend_coefficients": list(self.coefficients), "schedule_effect_sd": self.tau2 ** 0.5,
                "mean_noise_sd": self.noise2 ** 0.5, "candidates": self.candidates, "bulk": self.bulk,
                "kept_at_mean_noise": self.factor(self.noise2 ** 0.5)}


def fit_shrinkage(scores: Sequence[Tuple[float, Optional[float], float]], spread: str = "bulk"
                  ) -> Optional[Shrinkage]:
    """The shrinkage fitted on ``(fitness, se, macs)`` of every evaluated candidate; None where it cannot be (too
    few candidates, or none with a standard error). ``spread``: how the schedule effects' spread is measured:
    ``bulk``, the variance of the residuals without the bad tail; ``mad``, the median absolute deviation of all
    residuals (robust to tails on both sides, so it shrinks more)."""
    rows = [(f, se, m) for f, se, m in scores if se is not None and math.isfinite(f) and m > 0]
    if len(rows) < MIN_CANDIDATES:
        return None
    f = np.array([r[0] for r in rows], dtype=np.float64)
    se = np.array([r[1] for r in rows], dtype=np.float64)
    x = np.log(np.array([r[2] for r in rows], dtype=np.float64))
    degree = min(TREND_DEGREE, len(np.unique(x)) - 1)
    bulk = np.ones(len(f), dtype=bool)
    for _ in range(TREND_PASSES):  # the trend of the bulk: the bad tail would pull it down
        coef = np.polyfit(x[bulk], f[bulk], degree) if degree > 0 else np.array([f[bulk].mean()])
        resid = f - np.polyval(coef, x)
        med = float(np.median(resid[bulk]))
        robust_sd = 1.4826 * float(np.median(np.abs(resid[bulk] - med)))
        bulk = resid >= med - TAIL_SDS * robust_sd
    total = robust_sd ** 2 if spread == "mad" else float(np.var(resid[bulk]))
    tau2 = max(total - float(np.mean(se[bulk] ** 2)), 0.0)
    return Shrinkage(tuple(float(c) for c in coef), tau2, float(np.mean(se ** 2)), len(rows), int(bulk.sum()))
