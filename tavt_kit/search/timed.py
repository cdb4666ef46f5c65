"""A pick's latency checked on the target before it is chosen, where a table only predicted it.

A latency table prices each block alone; whole models on the deployed runtime differ from the sum, most at few
tokens and in int8 (on a 2-core EPYC, OpenVINO int8 at batch 32 ran small schedules up to 1.8x slower than
their table predicted). A search that can time on the target (its own profiled table, or ``remeasure``)
therefore times its best candidate under each latency budget and passes over one timed over the budget for the
next best, at most :data:`TIMED_PER_BUDGET` timings a budget; past that the prediction stands.

The timings also correct the predictions of the candidates not yet timed: the target's time over the table's, per
precision (the median over the picks timed so far), scales every prediction before a candidate is timed, and one
predicted over the budget once scaled is passed over untimed. Without it a table that under-predicts the target
by a tenth (a machine that drifted since it was profiled) sends every timing to candidates just under the budget,
which are all over it, and the budget gets nothing; with it the next timing goes to the fittest candidate the
target can run within.

A budget given as a share of your model (``50%``) is checked as the final round judges it: each candidate timed
round-robin beside your model in fp32 and within when the top of its ratio's interval is (:mod:`~.shares`), on
runtimes that deploy exported files. Timed on its own against the share's placement in ms, a candidate would be
judged by how fast the machine ran when the table was made, not by how it runs your model now.
"""
from __future__ import annotations

import statistics
from typing import Callable, Dict, List, Mapping, Optional

from .shares import ShareTimer

#: timings on the target per latency budget that a pick may take before its table prediction stands
TIMED_PER_BUDGET = 6


class TargetCheck:
    """Times (schedule, precision) candidates on the target, once each (shared by every budget).

    ``objectives``: {precision: LatencyObjective}; ``schedule``: gene -> TokenSchedule; ``log``: progress;
    ``model``: the model whose exports are timed beside its full schedule for a share budget (None: shares are
    checked in ms, against their placement)."""

    def __init__(self, objectives: Mapping, schedule: Callable, log: Callable[[str], None],
                 per_budget: int = TIMED_PER_BUDGET, model=None):
        self.objectives, self.schedule, self.log, self.per_budget = objectives, schedule, log, per_budget
        self.timed: Dict[tuple, float] = {}  # (gene, precision) -> seconds per batch on the target
        self.predicted: Dict[tuple, float] = {}  # the table's seconds of those timed as picks
        #: timings beside your model, for share budgets (shared with ToMe's fits on your model, parent.py)
        self.shares: Optional[ShareTimer] = ShareTimer(model, objectives, log) \
            if model is not None and self.active and ShareTimer.available(objectives) else None

    @property
    def active(self) -> bool:
        """Whether every objective is a table's prediction that can be checked by timing on the target."""
        objs = list(self.objectives.values())
        return bool(objs) and all(o.source == "table" and o.can_remeasure for o in objs)

    def time(self, gene: tuple, precision: str) -> float:
        """Seconds per batch of ``gene`` at ``precision`` timed on the target (the full timing policy), once:
        the picks, the baselines standing in for them, your model and ToMe's probes share these timings."""
        key = (gene, precision)
        if key not in self.timed:
            self.timed[key] = float(self.objectives[precision].remeasure(self.schedule(gene)))
        return self.timed[key]

    def correction(self, precision: str) -> float:
        """The target's time over the table's prediction at ``precision``: the median over the picks timed so far
        (1 before any)."""
        ratios = [self.timed[k] / p for k, p in self.predicted.items() if k[1] == precision and p > 0]
        return statistics.median(ratios) if ratios else 1.0

    def summary(self) -> Dict[str, dict]:
        """Per precision, the target's time over the table's prediction on the picks timed: ``{"median", "picks"}``
        (what corrected the predictions of the candidates not timed)."""
        out = {}
        for p in sorted({k[1] for k in self.predicted}):
            out[p] = {"median": self.correction(p), "picks": sum(1 for k in self.predicted if k[1] == p)}
        return out

    def plausible(self, gene: tuple, precision: str, predicted: float, limit: float,
                  fraction: Optional[float] = None) -> bool:
        """Whether a candidate predicted at ``predicted`` seconds may meet ``limit`` on the target: its timing if it
        has one, else its prediction scaled by the timings so far (:meth:`correction`); an untimed candidate that
        may not is not worth timing. A share ``fraction`` of your model checked beside it: its ratio if timed so,
        else against the share of your model as timed beside the others (``limit`` before any)."""
        key = (gene, precision)
        shares = self.shares if fraction is not None else None
        if shares is not None:
            if key in shares.ratios:
                return shares.ratios[key].within(fraction)
            if shares.full_ms:
                limit = fraction * shares.full_ms / 1e3
        elif key in self.timed:
            return self.timed[key] <= limit
        return predicted * self.correction(precision) <= limit

    def timed_within(self, gene: tuple, precision: str, limit: float, fraction: Optional[float] = None
                     ) -> Optional[bool]:
        """Whether a candidate timed on the target met the budget: under a share ``fraction`` of your model, by
        its ratio timed beside your model where it was; else its time against ``limit``. None: not timed."""
        key = (gene, precision)
        ratio = self.shares.ratios.get(key) if self.shares is not None and fraction is not None else None
        if ratio is not None:
            return ratio.within(fraction)
        return self.timed[key] <= limit if key in self.timed else None

    def _time_of_share(self, gene: tuple, precision: str) -> None:
        """Records in :attr:`timed` the ms of a candidate timed beside your model (your model itself, whose ratio
        to itself needs no timing, is timed on its own)."""
        key = (gene, precision)
        if key not in self.timed:
            if key in self.shares.ms:
                self.timed[key] = self.shares.ms[key] / 1e3
            else:
                self.time(gene, precision)

    def within(self, limit: float, over: List[dict], fraction: Optional[float] = None
               ) -> Optional[Callable[[tuple, str, float], bool]]:
        """``(gene, precision, predicted seconds) -> whether it meets limit timed on the target`` for one budget
        (None where nothing can be checked). Candidates timed over are appended to ``over``; untimed candidates
        the timings so far put over ``limit`` are passed over without a timing (:meth:`plausible`). A budget given
        as a share ``fraction`` of your model is checked beside your model where it can be (:attr:`shares`)."""
        if not self.active:
            return None
        left = [self.per_budget]
        shares = self.shares if fraction is not None else None

        def check(gene: tuple, precision: str, predicted: float) -> bool:
            key = (gene, precision)
            if key not in (self.timed if shares is None else shares.ratios):
                if not self.plausible(gene, precision, predicted, limit, fraction):
                    return False
                if left[0] <= 0:
                    return True
                left[0] -= 1
                if shares is None:
                    self.time(gene, precision)
                else:
                    shares.share(self.schedule(gene), precision)
                    self._time_of_share(gene, precision)
                self.predicted[key] = predicted
                self.log(f"timing the pick {list(gene[0])} at {precision} on the target: "
                         f"{self.timed[key] * 1e3:.4g} ms (predicted {predicted * 1e3:.4g}, budget {limit * 1e3:.4g}"
                         + (f", {100 * fraction:g}% of your model timed beside it" if shares else "") + ")")
            elif shares is not None:  # timed beside your model before (a fit's probe): its ms from that timing
                self._time_of_share(gene, precision)
            if self.timed_within(gene, precision, limit, fraction):
                return True
            ratio = shares.ratios[key] if shares is not None else None
            over.append({"counts": list(gene[0]), **({"reducers": [r or None for r in gene[1]]} if gene[1] else {}),
                         "precision": precision, "latency_ms": predicted * 1e3,
                         "latency_measured_ms": self.timed[key] * 1e3,
                         **({"measured_fraction_of_full": ratio.ratio,
                             "measured_fraction_interval": list(ratio.interval)} if ratio is not None else {})})
            return False
        return check
