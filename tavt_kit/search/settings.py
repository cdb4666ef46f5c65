"""``search_schedules``' option objects beside :class:`~.evolution.EvolutionSettings` and :class:`~.ship.ShipPolicy`:
where and how latency is measured (:class:`LatencyOptions`) and how candidates are scored
(:class:`EvaluationOptions`). Each checks its fields when made (one :class:`ConfigError` naming the field), and
``.of(value, options)`` also takes the fields as ``search_schedules``' keywords of earlier releases (``target=``,
``table=``, ``fitness=``, ...), each checked under its keyword's name; both at once is refused."""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from ..target import DeploymentTarget, Precision
from .evaluate import evaluation_device
from .pairs import FRONT_TIME_LIMIT_S
from .fitness import DEFAULT_FITNESS, FITNESSES
from .objective import LATENCY_SOURCES


def from_keywords(cls, value, options: dict, keywords: Mapping[str, str], param: str, make=None):
    """``value`` (an instance of ``cls`` or None) merged with its fields given as keywords (popped out of
    ``options``, each checked under the keyword's name: by ``make(fields)`` where given, else by ``cls``'s own
    checks, said with the keyword); both at once is refused."""
    given = {field: options.pop(key) for key, field in keywords.items() if key in options}
    if value is None and make is not None:
        return make(given)
    if value is None:
        try:
            return cls(**given)
        except ConfigError as e:  # said with the keyword the caller used
            msg = str(e)
            for key, field in keywords.items():
                msg = msg.replace(f"{param}.{field}=", f"{key}=", 1) if msg.startswith(f"{param}.{field}=") else msg
            raise ConfigError(msg) from None
    if not isinstance(value, cls):
        raise ConfigError(f"{param}={value!r}: expected a {cls.__name__} or None")
    if given:
        key = next(k for k, f in keywords.items() if f in given)
        raise ConfigError(f"{key}= and {param}= both given: give {param}={cls.__name__}(...) or its fields, not both")
    return value


@dataclass(frozen=True)
class LatencyOptions:
    """Where and how a search's latency is obtained (under latency budgets, or to map the front with a table)."""

    #: where latency is measured when no ``table`` is given (None: :meth:`DeploymentTarget.default`)
    target: Optional[DeploymentTarget] = None
    #: a :class:`~tavt_kit.bench.LatencyTable` (or path), a list of them, or {precision: table}
    table: Any = None
    #: paired with schedules under latency budgets (fp32 always); ``"auto"``: those measured faster here
    precisions: Union[str, Sequence[str]] = (Precision.FP32,)
    #: no ``table``: ``"table"`` profiles one for ``target`` once and times only the picks; ``"measure"`` times
    #: every candidate
    source: str = "table"
    #: the profiled table's folder (None: the search folder's ``cache``; unwritable: a warning)
    table_cache: Optional[str] = None
    #: the profile's settings (:data:`~tavt_kit.search.objective.AUTO_PROFILE`)
    table_profile: Optional[Mapping[str, Any]] = None
    #: time the picks on this machine after the search
    remeasure: bool = False
    #: {precision: :class:`~.objective.LatencyObjective`}, instead of ``target``/``table``
    objectives: Optional[Mapping[str, Any]] = None
    #: with ``table``: the target fields it must have been profiled for ({"threads": 2, "batch_size": 32}; only
    #: those named are checked, one ConfigError naming the field); None: every field of ``target`` where given
    require: Optional[Mapping[str, Any]] = None

    def __post_init__(self):
        if self.target is not None and not isinstance(self.target, DeploymentTarget):
            raise ConfigError(f"latency.target={self.target!r}: expected a DeploymentTarget or None")
        if self.source not in LATENCY_SOURCES:
            raise ConfigError(f"latency.source={self.source!r}: expected one of {', '.join(LATENCY_SOURCES)}")
        if self.source == "measure" and (self.table is not None or self.objectives):
            raise ConfigError("table= and latency_source='measure' contradict each other: a table predicts every "
                              "candidate's latency, 'measure' times each one; give one of them")
        if self.table_cache is not None and not isinstance(self.table_cache, (str, os.PathLike)):
            raise ConfigError(f"latency.table_cache={self.table_cache!r}: expected a folder (a path) or None")
        if not isinstance(self.remeasure, bool):
            raise ConfigError(f"latency.remeasure={self.remeasure!r}: expected True or False")
        fields = ("backend", "device", "threads", "batch_size")
        if self.require is not None and (not isinstance(self.require, Mapping) or set(self.require) - set(fields)):
            raise ConfigError(f"latency.require={self.require!r}: expected a mapping of some of {', '.join(fields)}")

    @classmethod
    def of(cls, value, options: dict) -> "LatencyOptions":
        return from_keywords(cls, value, options, LATENCY_KEYWORDS, "latency")


#: search_schedules keywords of a LatencyOptions -> its fields
LATENCY_KEYWORDS = {"target": "target", "table": "table", "precisions": "precisions", "latency_source": "source",
                    "table_cache": "table_cache", "table_profile": "table_profile", "remeasure": "remeasure",
                    "objectives": "objectives"}


@dataclass(frozen=True)
class EvaluationOptions:
    """How a search scores candidates on the held-out images (and int8 pairs on the deployed model)."""

    #: ``accuracy``, ``nll`` or ``kl`` (to the full model) on the held-out images
    fitness: str = DEFAULT_FITNESS
    #: held-out images scored (None: all of them)
    subset: Optional[int] = None
    #: images per batch
    batch_size: int = 64
    #: int8 pairs per budget quantised and scored deployed
    verify_top: int = 3
    #: images int8 quantisation calibrates on
    calibration_images: int = 300
    #: seconds spent measuring the int8 Pareto front on the deployed model (each point an NNCF quantisation and a
    #: run: minutes for a 12-block ViT on a CPU); the front reports the points measured in that time, spread over
    #: its latencies, and says how many it left out; None: every point. Each budget's own pick is measured anyway
    #: (``verify_top``).
    front_time_limit: Optional[float] = FRONT_TIME_LIMIT_S
    #: where candidates are scored: ``auto`` (CUDA where there is one), ``cpu``, ``cuda``
    device: Optional[str] = "auto"

    def __post_init__(self):
        if self.fitness not in FITNESSES:
            raise ConfigError(f"evaluation.fitness={self.fitness!r}: expected one of {', '.join(FITNESSES)}")
        for name, low, what in (("subset", 1, "a positive number of images, or None for all of them"),
                                ("batch_size", 1, "a positive number of images per batch"),
                                ("verify_top", 0, "a non-negative number of int8 pairs per budget"),
                                ("calibration_images", 1, "a positive number of images")):
            v = getattr(self, name)
            if (v is not None or name != "subset") and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                                          or v < low):
                raise ConfigError(f"evaluation.{name}={v!r}: expected {what}")
        evaluation_device(self.device)
        t = self.front_time_limit
        if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t < float("inf")):
            raise ConfigError(f"evaluation.front_time_limit={t!r}: expected seconds (0 or more), or None for no limit")

    @classmethod
    def of(cls, value, options: dict) -> "EvaluationOptions":
        return from_keywords(cls, value, options, EVALUATION_KEYWORDS, "evaluation")

    def keywords(self) -> dict:
        """The options as the pipeline's keywords."""
        return {key: getattr(self, f) for key, f in EVALUATION_KEYWORDS.items() if key != "fitness"}


#: search_schedules keywords of an EvaluationOptions -> its fields
EVALUATION_KEYWORDS = {"fitness": "fitness", "subset": "subset", "batch_size": "batch_size",
                       "verify_top": "verify_top", "calibration_images": "calibration_images",
                       "front_time_limit": "front_time_limit", "eval_device": "device"}

__all__ = ["EvaluationOptions", "LatencyOptions"]
