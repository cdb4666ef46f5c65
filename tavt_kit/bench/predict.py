"""Latencies predicted from a latency table (no measuring) and their file, ``predictions.json``."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError
from ..files import write_json
from ..schedules import TokenSchedule
from ..target import DeploymentTarget
from .table import TARGET_FIELDS, LatencyTable

PREDICTIONS_FORMAT = "fgvc-kit/latency-predictions"
#: the file name predictions are saved under in an output folder
PREDICTIONS_FILE = "predictions.json"


@dataclass
class Predictions:
    """The latency of schedules predicted by one table: a row per schedule (``label``, ``schedule``,
    ``reducers`` when it names them, ``predicted_ms`` per batch, ``speedup`` over the full model when it is
    predicted too)."""

    table: LatencyTable
    rows: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def target(self) -> DeploymentTarget:
        return self.table.target

    def to_dict(self) -> Dict[str, Any]:
        """``predictions.json``: the table's path, its target (the runtime details it records beside the
        target's fields) and the rows."""
        return {"format": PREDICTIONS_FORMAT, "version": 1, "table": self.table.source,
                "target": {**(self.table.data.get("target") or {}), **self.target.to_dict()},
                "predictions": [dict(r) for r in self.rows]}

    def save(self, out_dir) -> str:
        """Write ``predictions.json`` into ``out_dir``; returns its path."""
        return write_json(self.to_dict(), os.path.join(os.fspath(out_dir), PREDICTIONS_FILE))


def predict_latency(table, schedules: Sequence[Any], *, labels: Optional[Sequence[str]] = None,
                    include_full: bool = True, model=None, target: Optional[DeploymentTarget] = None,
                    fields: Sequence[str] = TARGET_FIELDS) -> Predictions:
    """The latency of ``schedules`` (counts, :class:`~tavt_kit.schedules.TokenSchedule`) predicted by ``table``
    (a :class:`LatencyTable` or its path), first the full model's unless ``include_full`` is off.

    ``model`` (a model or identity) and ``target`` (the :class:`~tavt_kit.target.DeploymentTarget` the
    latencies are wanted for; ``fields``: which of its fields must match) are checked against the table first
    (:meth:`LatencyTable.check`); ``labels`` name the schedules (default ``schedule 1``, ...).
    """
    table = table if isinstance(table, LatencyTable) else LatencyTable.load(table)
    if model is not None:
        table.check(model)
    if target is not None:
        table.check(target=target, fields=fields)
    schedules = [table.schedule(s) for s in schedules]
    if labels is None:
        labels = ["full" if s.is_full else f"schedule {i + 1}" for i, s in enumerate(schedules)]
    elif len(labels) != len(schedules):
        raise ConfigError(f"labels: got {len(labels)} labels for {len(schedules)} schedules")
    labels = list(labels)
    if include_full:
        m = table.model
        schedules.insert(0, TokenSchedule.full(int(m["depth"]), int(m["num_patches"])))
        labels.insert(0, "full")
    rows, full = [], None
    for label, s in zip(labels, schedules):
        ms = table.predict(s)
        full = ms if label == "full" and full is None else full
        rows.append({"label": label, "schedule": list(s.counts),
                     **({"reducers": list(s.reducers)} if s.reducers else {}), "predicted_ms": ms,
                     "speedup": (full / ms) if full else None})
    return Predictions(table, rows)


class TableArch:
    """Just enough of a model (depth, grid) for parsing schedules against a table made for it."""

    def __init__(self, table: LatencyTable):
        self.depth = int(table.model["depth"])
        self.num_patches = int(table.model["num_patches"])
        self.schedule = None

    def make_schedule(self, value) -> TokenSchedule:
        return TokenSchedule.coerce(value, self.depth, self.num_patches)

    def full_schedule(self) -> TokenSchedule:
        return TokenSchedule.full(self.depth, self.num_patches)
