"""Latency / throughput measurement, latency tables and reports.

* :func:`measure_latency` — p50/p90/p99 latency, throughput and peak memory of a model at
  token schedules, on torch (eager or compiled), ONNX Runtime or OpenVINO, CPU or CUDA;
  results carry the machine's description (:class:`BenchReport`, ``bench.json``).
* :func:`profile_latency` — a :class:`LatencyTable`: per-block latency as a function of token
  count on the target, from which ``LatencyTable.load(path).predict(schedule)`` predicts the
  latency of any schedule on another machine.
* :func:`measure_files` — exported files timed round-robin in one process (ratios a drifting machine
  does not skew).
* :func:`measure_schedules` — a model at several (schedule, precision) pairs, deployed with OpenVINO,
  timed round-robin in one process.
* :func:`export_fastest` — ``fgvc-kit export --precision auto``: export at every precision this
  machine runs natively, verify and time each, keep the fastest that passes.
"""
from ..machine import machine_info
from .backends import BACKENDS
from .fastest_export import export_fastest
from .measure import BenchReport, BenchResult, measure_files, measure_latency, measure_schedules
from ..schedules import random_schedules
from .profile import default_grid, profile_latency
from .table import LatencyTable
from .timing import MemoryProbe, TimingPolicy, TimingStats, measure_round_robin

__all__ = [
    "BACKENDS", "BenchReport", "BenchResult", "LatencyTable", "MemoryProbe", "TimingPolicy", "TimingStats",
    "default_grid", "export_fastest", "machine_info", "measure_files", "measure_latency", "measure_round_robin",
    "measure_schedules", "profile_latency", "random_schedules",
]
