"""A deployable's latency as a share of your model's, timed beside it.

A latency budget given as a share of your model's latency (``--latency-budget 50%``) is judged in the final round
by each option's ratio to your fp32 model, timed round-robin with it (:func:`~.precision.remeasure_round`). The
training-free deployables are *fitted* to such a budget before that round: ToMe's r on your model, and whether
your model at a lower precision meets the share. Timed one by one, a probe is compared with your model timed
earlier, and a machine whose speed drifts between the two timings decides; with other work on the machine the
probes of one fit came out slower at a larger r. Here each probe is timed round-robin with your fp32 model and
judged by the top of the ratio's 95 % interval over the rotations, as the final round judges it, so a fit stops
where that round will find it within the share. Each probe costs a timing of your model beside it.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from typing import Callable, Dict, Mapping, Optional

from ..schedules.schedule import TokenSchedule
from .evolution import gene_of

#: rotations a ratio to your model is timed over at least, in the final judging round and in a fit's probes (each
#: rotation gives one paired ratio; 20 put the 95 % interval of their median between the 6th and 15th of them)
JUDGING_ROUNDS = 20


class ShareTimer:
    """Times (schedule, precision) on the search's target round-robin with your model's full schedule in fp32,
    once each; :meth:`share` is the :class:`~tavt_kit.bench.ratio.LatencyRatio` of the two.

    ``model``: the model whose exports are timed (latency does not depend on the weights); ``objectives``:
    ``{precision: LatencyObjective}`` (their targets: backend, device, threads, batch size)."""

    def __init__(self, model, objectives: Mapping, log: Callable[[str], None], rounds: int = JUDGING_ROUNDS):
        self.model, self.objectives, self.log, self.rounds = model, objectives, log, rounds
        self.full = TokenSchedule.full(model.depth, model.num_patches)
        self.ratios: Dict[tuple, object] = {}  # (gene, precision) -> LatencyRatio
        self.ms: Dict[tuple, float] = {}  # (gene, precision) -> its median ms in that round
        self._full: list = []  # your model's median ms in each of those rounds
        self._exports = None  # the folder the timed exports are kept in while the timer lives (your model's once)

    @property
    def full_ms(self) -> Optional[float]:
        """Your model's ms over the rounds so far (the median of its medians; None before any)."""
        return statistics.median(self._full) if self._full else None

    @staticmethod
    def available(objectives: Optional[Mapping]) -> bool:
        """Whether each precision's objective can time on this machine on a runtime that deploys exported files
        (OpenVINO, ONNX Runtime): what timing round-robin with your model needs."""
        from ..bench.backends import EXPORTED_BACKENDS

        objs = list((objectives or {}).values())
        return "fp32" in (objectives or {}) and all(
            o.can_remeasure and o.target.backend in EXPORTED_BACKENDS for o in objs)

    def share(self, schedule: TokenSchedule, precision: str):
        """``schedule`` at ``precision`` over your model in fp32, timed round-robin (at least ``rounds``
        rotations)."""
        from ..bench.measure import measure_schedules
        from ..bench.ratio import LatencyRatio, paired_ratio
        from ..bench.runners import FULL_NAME
        from ..bench.timing import TimingPolicy

        key = self._key(schedule, precision)
        if key in self.ratios:
            return self.ratios[key]
        if precision == "fp32" and key[0] == gene_of(self.full):
            self.ratios[key] = LatencyRatio.of_point(1.0)
            return self.ratios[key]
        items = {"probe": (schedule, precision), "full": (self.full, "fp32")}
        if self._exports is None:
            self._exports = tempfile.TemporaryDirectory(prefix="fgvc-kit-shares-")
        measured = measure_schedules(self.model, items, target=self.objectives["fp32"].target,
                                     policy=TimingPolicy(min_rounds=self.rounds), workdir=self._exports.name)
        for name in os.listdir(self._exports.name):  # the probes' files go; your model's stay for the next probe
            if not name.startswith(FULL_NAME):
                os.remove(os.path.join(self._exports.name, name))
        ratio = paired_ratio(measured["probe"][0], measured["full"][0])
        self.ratios[key], self.ms[key] = ratio, 1e3 * measured["probe"][0].p50
        self._full.append(1e3 * measured["full"][0].p50)
        self.log(f"{list(schedule.counts)} at {precision}: {ratio.ratio:.3f} [{ratio.low:.3f}, {ratio.high:.3f}] "
                 f"of your model in fp32, timed beside it ({self.ms[key]:.4g} ms)")
        return ratio

    def _key(self, schedule: TokenSchedule, precision: str) -> tuple:
        """What a timing is kept under: the schedule's gene, its reducers dropped where it reduces nothing (your
        model and ToMe at r = 0 are one graph, timed once)."""
        full = tuple(schedule.counts) == tuple(self.full.counts)
        return (gene_of(self.full) if full else gene_of(schedule), precision)

    def fields(self, schedule: TokenSchedule, precision: str, fraction: float) -> dict:
        """What an entry fitted here records: its share, the share's interval, within ``fraction`` or not."""
        ratio, key = self.share(schedule, precision), self._key(schedule, precision)
        out = {"measured_fraction_of_full": ratio.ratio, "measured_fraction_interval": list(ratio.interval),
               "measured_within_budget": ratio.within(fraction)}
        if key in self.ms:
            out["latency_measured_ms"] = self.ms[key]
        return out

    def record(self) -> Dict[str, list]:
        """``{precision: {"counts": ..., **LatencyRatio.to_dict()}}`` lists of every timing, for ``search.json``."""
        out: Dict[str, list] = {}
        for (gene, precision), ratio in self.ratios.items():
            if ratio.rounds:
                out.setdefault(precision, []).append({"counts": list(gene[0]), **ratio.to_dict()})
        return out
