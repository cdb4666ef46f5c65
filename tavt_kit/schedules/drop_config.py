"""Reading a schedule that names its model (drop configs, search results) and checking it fits the model at hand."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..errors import ScheduleError
from ..validate import check_same_weights
from .schedule import TokenSchedule

#: spec fields a drop config or search result records and that must match the model
MODEL_KEYS = ("img_size", "depth", "num_patches", "num_classes")


def check_model_info(model, info: Mapping[str, Any], where: str) -> None:
    """A drop config / search result records the model it belongs to: it must be ``model``."""
    if not info:
        return
    spec = getattr(model, "spec", None) or {}
    name = (info.get("backbone") or {}).get("name") if isinstance(info.get("backbone"), dict) else None
    mine = (spec.get("backbone") or {}).get("name")
    if name and mine and str(name).lower() != str(mine).lower():
        raise ScheduleError(f"{where} is a schedule for {name}, the checkpoint is {mine}; search or write a "
                            "schedule for this model")
    for key in MODEL_KEYS:
        a, b = info.get(key), spec.get(key)
        if a is not None and b is not None and list(np.atleast_1d(a)) != list(np.atleast_1d(b)):
            raise ScheduleError(f"{where} is a schedule for a model with {key} {a}, the checkpoint has {b}; "
                                "search or write a schedule for this model")
    # the same weights dropping by another scorer keep other tokens: the recorded accuracies are not this model's
    td = info.get("token_drop")
    for key in ("scorer", "fuse") if isinstance(td, Mapping) else ():
        a, b = td.get(key), getattr(model, key, None)
        if a is not None and b is not None and a != b:
            raise ScheduleError(f"{where} was measured with {key} {a!r}, the model has {key} {b!r}; its accuracies "
                                f"are not this model's: set the model's {key} to {a!r} first, or search this model")


def schedule_from_drop_file(model, path, name: str = "path"):
    """A drop-config file, checked against the model it records and against ``model``: its backbone and shape,
    and the weights it was made for (``weights_sha256``, which a search records in the drop configs it writes:
    its accuracies are those weights'); errors name the file as the caller's parameter ``name``
    (``drop=run/drop.json: ...``)."""
    where = f"{name}={os.fspath(path)}"
    if not os.path.isfile(path):
        raise ScheduleError(f"{where}: drop config not found")
    sched = TokenSchedule.load(path)
    info = dict(sched.meta or {})
    check_model_info(model, info, where)
    check_same_weights(info.get("weights_sha256"), model, where, "made for", ScheduleError,
                       "its accuracies are not this model's: search this checkpoint, or give counts instead "
                       "(--drop 64,48,...)")
    try:
        return model.make_schedule(sched)
    except ScheduleError as e:
        raise ScheduleError(f"{where}: {e} (a schedule for another model?)") from None
