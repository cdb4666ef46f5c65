"""``search_schedules``' arguments checked before the slow set-up (tables, images), so a wrong one fails at once."""
from __future__ import annotations

import os

from ..errors import ConfigError
from .evaluate import evaluation_device
from .evolution import Budget
from .recommend import DEFAULT_SHIP_CONFIDENCE, check_ship_confidence
from .result import parse_budget
from .reuse import journal_file
from .selection import check_selection
from .space import check_bound


def as_budget(b) -> Budget:
    """``b`` as a :class:`Budget` (a text such as ``'15ms'`` or ``'20G MACs'`` parsed)."""
    if isinstance(b, Budget):
        return b
    parsed = parse_budget(b)
    if parsed is None:
        raise ConfigError(f"budgets={b!r}: expected a budget with its unit, e.g. '15ms' or '20G MACs'")
    return Budget(*parsed)


def check_options(options: dict) -> list:
    """``search_schedules``' ``reuse`` paths, each checked before the slow set-up (tables, images), so a wrong
    path fails at once; an unknown option is a TypeError, as for any Python function."""
    known = {"remeasure", "subset", "batch_size", "verify_top", "calibration_images", "source", "objectives", "log",
             "parent", "latency_source", "table_cache", "table_profile", "reuse", "selection", "shrinkage",
             "parent_search", "ship_confidence", "bound", "eval_device"}
    if bad := sorted(set(options) - known):
        raise TypeError(f"search_schedules() got an unexpected keyword argument {bad[0]!r}")
    reuse = options.get("reuse") or ()
    reuse = [reuse] if isinstance(reuse, (str, os.PathLike)) else list(reuse)
    for path in reuse:
        journal_file(str(path))
    check_selection(options.get("selection", 0))
    check_ship_confidence(options.get("ship_confidence", DEFAULT_SHIP_CONFIDENCE))
    if options.get("bound") is not None:
        check_bound(options["bound"])
    evaluation_device(options.get("eval_device", "auto"))
    return reuse
