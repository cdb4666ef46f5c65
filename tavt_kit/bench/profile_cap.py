"""A latency table's time limit: shared by its parts and its whole-model runs, and the noise it leaves.

``profile_latency(time_limit_s=)`` bounds the timing of a whole profile (warm-up and timed calls of every part
and whole model). :class:`ProfileCap` splits it: the parts share what each whole model does not take (a whole
model counts :data:`WHOLE_MODEL_WEIGHT` parts: the calibration is fitted on a handful of them), and the whole
models get what the parts left. Each timing stops when its share is spent, every callable keeping what it has
(``min_repeats`` at least), so a profile ends within its limit plus what ``min_repeats`` calls and building the
parts cost, however busy the machine. Instead of waiting for every median to converge, the table states how well
each is known: ``data["noise"]`` holds, per point, the half-width of its median's 95 % confidence interval
relative to the median, and their median and worst; ``data["time"]`` the limit and the time taken.
:func:`noise_summary` says both in one line.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Dict, Hashable, Mapping, Optional

from ..errors import ConfigError
from .timing import TimeCap

#: seconds of timing a profile takes by default (``fgvc-kit bench profile --time-limit``): ``fgvc_tiny`` at fp32 on
#: one core then takes about 70 s in all (docs/decisions/2026-11-28-profile-time-cap.md)
PROFILE_TIME_LIMIT_S = 60.0

#: the smallest time limit accepted: below it every point has min_repeats only, whatever the limit says
MIN_TIME_LIMIT_S = 1.0

#: the parts' worth of time each whole model of the calibration and validation gets
WHOLE_MODEL_WEIGHT = 3

#: what ``data["noise"]`` measures
NOISE_MEASURE = "half-width of the median's 95% confidence interval / median"


def check_time_limit(value, name: str = "time_limit_s") -> None:
    """A profile's time limit: None (no limit) or a finite number of seconds >= :data:`MIN_TIME_LIMIT_S`; else
    one :class:`~tavt_kit.errors.ConfigError` line naming ``name`` (``time_limit_s=0.5: ...``; a flag:
    ``--time-limit 0.5: ...``)."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < MIN_TIME_LIMIT_S:
        said = f"{name} {value}" if name.startswith("--") else f"{name}={value!r}"
        raise ConfigError(f"{said}: expected seconds of timing for the whole profile, at least "
                          f"{MIN_TIME_LIMIT_S:g} (each point then has its minimum repeats only)")


def point_name(key) -> str:
    """``drop65_40``, ``plain65``, ``embed``: a part's key as one word, with its sequence lengths (every token,
    as the table's ``pairs`` and curves count them); ``reference`` for the reference block timed with every
    group; whole-model rows (``anchor:full``) as they are."""
    if isinstance(key, tuple):
        if key == ("anchor",):
            return "reference"
        return str(key[0]) + "_".join(str(v) for v in key[1:3])
    return str(key)


class ProfileCap:
    """A profile's time limit split between its parts (:attr:`parts`, a :class:`~tavt_kit.bench.timing.TimeCap`
    for every part timing) and its whole models (:meth:`whole`, made once the parts are done, with what they
    left). ``limit_s`` None: no limit (the noise is still recorded)."""

    def __init__(self, limit_s: Optional[float], parts: int, whole: int):
        self.limit_s = limit_s
        self.n_parts, self.n_whole = parts, whole
        share = parts / max(1, parts + WHOLE_MODEL_WEIGHT * whole)
        self.parts = TimeCap(None if limit_s is None else limit_s * share, parts, shown_limit_s=limit_s)
        self.whole_cap: Optional[TimeCap] = None

    def whole(self) -> TimeCap:
        """The whole models' cap: what the parts left of the limit."""
        spent = self.parts.spent
        left = None if self.limit_s is None else max(0.0, self.limit_s - spent)
        self.whole_cap = TimeCap(left, self.n_whole, shown_limit_s=self.limit_s, spent_before=spent)
        return self.whole_cap

    @property
    def spent(self) -> float:
        return self.parts.spent + (self.whole_cap.spent if self.whole_cap else 0.0)

    @property
    def reached(self) -> bool:
        return self.parts.reached or bool(self.whole_cap and self.whole_cap.reached)

    def record(self, table, wall_s: float, policy) -> None:
        """``table.data["noise"]`` and ``["time"]`` (module docstring); a warning when the limit left the
        medians noisier than ``policy.noisy_ci``."""
        points = {point_name(k): v for k, v in self.parts.noise.items()}
        whole = {point_name(k): v for k, v in (self.whole_cap.noise if self.whole_cap else {}).items()}
        every = {**{("reference (whole models)" if k == "reference" else k): v for k, v in whole.items()},
                 **points}
        finite = {k: v for k, v in every.items() if math.isfinite(v)}
        worst = max(finite, key=finite.get) if finite else None
        med = statistics.median(finite.values()) if finite else None
        table.data["noise"] = {"measure": NOISE_MEASURE, "points": points, "whole_models": whole,
                               "median": med, "worst": finite.get(worst), "worst_point": worst}
        table.data["time"] = {"time_limit_s": self.limit_s, "timing_s": self.spent, "wall_s": wall_s,
                              "limit_reached": self.reached, "points": self.n_parts,
                              "whole_models": max(0, self.n_whole - 1)}
        if self.reached and med is not None and med > policy.noisy_ci:
            table.data.setdefault("warnings", []).append(
                f"the time limit ({self.limit_s:g} s) ended the timing before the medians were known to "
                f"±{100 * policy.noisy_ci:.0f}%: noise median {100 * med:.1f}%, worst {100 * finite[worst]:.1f}% "
                f"({worst}); a longer time limit or an idle machine narrows it")


def noise_summary(data: Mapping[str, Any]) -> Optional[str]:
    """``profiled 118 points and 5 whole models in 68 s (timing 60 s of the 60 s limit); noise median 2.1 %,
    worst 7.9 % (merge27_18)`` for a table's dict (None for a table made before it recorded them)."""
    t, n = data.get("time"), data.get("noise")
    if not t or not n:
        return None
    whole = f" and {t['whole_models']} whole models" if t.get("whole_models") else ""
    limit = f" of the {t['time_limit_s']:g} s limit" if t.get("time_limit_s") is not None else ", no limit"
    line = f"profiled {t['points']} points{whole} in {t['wall_s']:.0f} s (timing {t['timing_s']:.0f} s{limit})"
    if n.get("median") is None:
        return line
    return (f"{line}; noise median {100 * n['median']:.1f} %, worst {100 * n['worst']:.1f} % "
            f"({n['worst_point']})")
