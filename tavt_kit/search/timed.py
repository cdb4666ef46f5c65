"""A pick's latency checked on the target before it is chosen, where a table only predicted it.

A latency table prices each block alone; whole models on the deployed runtime differ from the sum, most at few
tokens and in int8 (on a 2-core EPYC, OpenVINO int8 at batch 32 ran small schedules up to 1.8x slower than
their table predicted). A search that can time on the target (its own profiled table, or ``remeasure``)
therefore times its best candidate under each latency budget and passes over one timed over the budget for the
next best, at most :data:`TIMED_PER_BUDGET` timings a budget; past that the prediction stands.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional

#: timings on the target per latency budget that a pick may take before its table prediction stands
TIMED_PER_BUDGET = 6


class TargetCheck:
    """Times (schedule, precision) candidates on the target, once each (shared by every budget).

    ``objectives``: {precision: LatencyObjective}; ``schedule``: gene -> TokenSchedule; ``log``: progress."""

    def __init__(self, objectives: Mapping, schedule: Callable, log: Callable[[str], None],
                 per_budget: int = TIMED_PER_BUDGET):
        self.objectives, self.schedule, self.log, self.per_budget = objectives, schedule, log, per_budget
        self.timed: Dict[tuple, float] = {}  # (gene, precision) -> seconds per batch on the target

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

    def within(self, limit: float, over: List[dict]) -> Optional[Callable[[tuple, str, float], bool]]:
        """``(gene, precision, predicted seconds) -> whether it meets limit timed on the target`` for one budget
        (None where nothing can be checked). Candidates timed over are appended to ``over``."""
        if not self.active:
            return None
        left = [self.per_budget]

        def check(gene: tuple, precision: str, predicted: float) -> bool:
            key = (gene, precision)
            if key not in self.timed:
                if left[0] <= 0:
                    return True
                left[0] -= 1
                self.time(gene, precision)
                self.log(f"timing the pick {list(gene[0])} at {precision} on the target: "
                         f"{self.timed[key] * 1e3:.4g} ms (predicted {predicted * 1e3:.4g}, budget {limit * 1e3:.4g})")
            if self.timed[key] <= limit:
                return True
            over.append({"counts": list(gene[0]), **({"reducers": list(gene[1])} if gene[1] else {}),
                         "precision": precision, "latency_ms": predicted * 1e3,
                         "latency_measured_ms": self.timed[key] * 1e3})
            return False
        return check
