"""``search_schedules``' option objects beside :class:`~.evolution.EvolutionSettings` and :class:`~.ship.ShipPolicy`:
where and how latency is measured (:class:`LatencyOptions`), how candidates are scored (:class:`EvaluationOptions`)
and which schedules are searched (:class:`SpaceOptions`). Each checks its fields when made (one
:class:`ConfigError` naming the field, as ``latency.table=...``)."""
from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from ..schedules.space import check_multiple
from ..target import DeploymentTarget, Precision
from .evaluate import evaluation_device
from .pairs import FRONT_TIME_LIMIT_S
from .fitness import DEFAULT_FITNESS, FITNESSES
from .objective import LATENCY_SOURCES
from .reuse import journal_file


def given_or_default(cls, value, param: str):
    """``value`` when it is a ``cls``, ``cls()`` (its defaults) when None; anything else is a ConfigError naming
    ``param``."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise ConfigError(f"{param}={value!r}: expected a {cls.__name__} or None")
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
            raise ConfigError("latency.table= and latency.source='measure' contradict each other: a table predicts "
                              "every candidate's latency, 'measure' times each one; give one of them")
        if self.table_cache is not None and not isinstance(self.table_cache, (str, os.PathLike)):
            raise ConfigError(f"latency.table_cache={self.table_cache!r}: expected a folder (a path) or None")
        if not isinstance(self.remeasure, bool):
            raise ConfigError(f"latency.remeasure={self.remeasure!r}: expected True or False")
        fields = ("backend", "device", "threads", "batch_size")
        if self.require is not None and (not isinstance(self.require, Mapping) or set(self.require) - set(fields)):
            raise ConfigError(f"latency.require={self.require!r}: expected a mapping of some of {', '.join(fields)}")


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
    #: earlier searches of the same weights on the same held-out images (folders or journals): what they evaluated
    #: is taken, not scored again
    reuse: Union[str, Sequence[str]] = ()

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

        reuse = [self.reuse] if isinstance(self.reuse, (str, os.PathLike)) else self.reuse
        if not isinstance(reuse, (list, tuple)):
            raise ConfigError(f"evaluation.reuse={self.reuse!r}: expected search folders or journals (paths)")
        object.__setattr__(self, "reuse", tuple(journal_file(os.fspath(p)) for p in reuse))


def check_bound(bound) -> float:
    """``bound`` as a per-block reduction ratio in (0, 1); a ConfigError naming ``bound`` otherwise."""
    ok = not isinstance(bound, bool) and isinstance(bound, (int, float)) and 0 < bound < 1
    if not ok:
        raise ConfigError(f"bound={bound!r}: expected the most of a block's tokens it may reduce, a ratio in (0, 1)")
    return float(bound)


def reducer_names(reducers, name: str = "reducers") -> tuple:
    """``reducers`` (a name or several) as a tuple of drop/merge, each once; a ConfigError naming ``name``
    otherwise."""
    names = tuple(dict.fromkeys(str(r).strip() for r in ([reducers] if isinstance(reducers, str) else
                                                         reducers if isinstance(reducers, (list, tuple)) else ())))
    if not names or any(r not in ("drop", "merge") for r in names):
        raise ConfigError(f"{name}={reducers!r}: expected drop, merge or both")
    return names


@dataclass(frozen=True)
class SpaceOptions:
    """Which schedules a search explores, beyond what the checkpoint records."""

    #: the blocks' reducers: ``drop``, ``merge`` or both (None: the supernet's, and merging where it pays; your
    #: model: merging)
    reducers: Optional[Union[str, Sequence[str]]] = None
    #: the most of a block's tokens it may reduce, for a model that records no search space (None: the default)
    bound: Optional[float] = None
    #: the sequence lengths a reducing block leaves are multiples of it (1: any; 8: what some kernels prefer)
    token_multiple: int = 1

    def __post_init__(self):  # checked once, kept as the search reads them: a tuple of names, a float
        if self.reducers is not None:
            object.__setattr__(self, "reducers", reducer_names(self.reducers, "space.reducers"))
        if self.bound is not None:
            object.__setattr__(self, "bound", check_bound(self.bound))
        check_multiple(self.token_multiple)


__all__ = ["EvaluationOptions", "LatencyOptions", "SpaceOptions"]
