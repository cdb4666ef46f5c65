"""The winner's curse of a search's pick, corrected by empirical-Bayes shrinkage toward the compute trend.

An evolution scores a few hundred schedules on the same held-out images and keeps the fittest within each budget.
Each score carries noise (a few hundred images decide it), and the maximum of many noisy scores is biased upward:
the pick is often a schedule that was lucky on these images, typically one far cheaper than the budget allows,
which then loses to your model on the test images (measured: a 4.2x schedule picked for a 2x budget, 1.0 point
below your model on the test images while ToMe at 2.3x lost nothing; ``docs/benchmarks/latency_reference.md``).

What is known besides the scores: accuracy follows compute. Every candidate's fitness is modelled as a trend in
log-MACs (a least-squares polynomial over all evaluated candidates) plus a schedule effect, observed with the
candidate's own paired noise ``se`` (its standard error as a difference to the full model on the same images,
:class:`~.evaluate.ScheduleScores`). The schedule effects' variance is what the residuals show beyond the noise:
``tau² = max(0, mean(residual²) - mean(se²))``. Each candidate's estimate is the posterior mean

    trend(MACs) + tau² / (tau² + se²) * (fitness - trend(MACs))

so a candidate above the trend by no more than noise explains is pulled back toward it, and where the schedules
differ by far more than noise (large ``tau``) the scores stand. The pick of a budget is the candidate with the best
estimate; a cheap outlier no longer beats a schedule that uses the budget unless its lead is larger than noise.
The estimate is also what the searched pick brings to the choice against the training-free deployables (which
are fitted to the budget, not selected on these images, so their scores carry no such bias).
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


@dataclass(frozen=True)
class Shrinkage:
    """The fitted correction: ``estimate(fitness, se, macs)`` is a candidate's shrunk fitness."""

    coefficients: Tuple[float, ...]  # the trend: polynomial in log(MACs), highest power first
    tau2: float  # variance of the schedule effects (beyond the trend)
    noise2: float  # mean squared standard error of the candidates
    candidates: int

    def trend(self, macs: float) -> float:
        return float(np.polyval(self.coefficients, math.log(max(macs, 1.0))))

    def factor(self, se: float) -> float:
        """How much of a candidate's departure from the trend is kept (1: all, 0: none)."""
        return 1.0 if self.tau2 + se * se <= 0 else self.tau2 / (self.tau2 + se * se)

    def estimate(self, fitness: float, se: Optional[float], macs: float) -> float:
        if se is None:  # a score without its noise (a deployed runtime's): kept as measured
            return fitness
        t = self.trend(macs)
        return t + self.factor(se) * (fitness - t)

    def to_dict(self) -> dict:
        return {"method": "empirical Bayes toward a polynomial trend in log-MACs",
                "trend_coefficients": list(self.coefficients), "schedule_effect_sd": self.tau2 ** 0.5,
                "mean_noise_sd": self.noise2 ** 0.5, "candidates": self.candidates,
                "kept_at_mean_noise": self.factor(self.noise2 ** 0.5)}


def fit_shrinkage(scores: Sequence[Tuple[float, Optional[float], float]]) -> Optional[Shrinkage]:
    """The shrinkage fitted on ``(fitness, se, macs)`` of every evaluated candidate; None where it cannot be (too
    few candidates, or none with a standard error)."""
    rows = [(f, se, m) for f, se, m in scores if se is not None and math.isfinite(f) and m > 0]
    if len(rows) < MIN_CANDIDATES:
        return None
    f = np.array([r[0] for r in rows], dtype=np.float64)
    se = np.array([r[1] for r in rows], dtype=np.float64)
    x = np.log(np.array([r[2] for r in rows], dtype=np.float64))
    degree = min(TREND_DEGREE, len(np.unique(x)) - 1)
    if degree < 0:
        return None
    coef = np.polyfit(x, f, degree) if degree > 0 else np.array([f.mean()])
    resid = f - np.polyval(coef, x)
    # the residuals' spread beyond noise; the trend's own parameters took degree + 1 of it
    dof = max(len(rows) - degree - 1, 1)
    noise2 = float(np.mean(se ** 2))
    tau2 = max(float(np.sum(resid ** 2)) / dof - noise2, 0.0)
    return Shrinkage(tuple(float(c) for c in coef), tau2, noise2, len(rows))
