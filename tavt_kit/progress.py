"""Progress of long jobs (training, search, profiling): durations and estimated time left, as text."""
from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``12s`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def eta(done: float, total: float, elapsed: float) -> str:
    """Time left if the rest goes as fast as what is done (``?`` before anything is done)."""
    if done <= 0 or elapsed <= 0:
        return "?"
    return format_duration((total - done) * elapsed / done)
