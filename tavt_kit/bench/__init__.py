"""Latency / throughput measurement, latency tables and reports.

Every function that measures, profiles or predicts is for one :class:`~tavt_kit.target.DeploymentTarget`
(``target=``: backend, device, precision, threads, batch size), and the reports and tables it makes say
theirs (``.target``).

* :func:`measure_latency` — p50/p90/p99 latency, throughput and peak memory of a model at
  token schedules, on torch (eager or compiled), ONNX Runtime or OpenVINO, CPU or CUDA;
  results carry the machine's description (:class:`BenchReport`, ``bench.json``).
* :func:`profile_latency` — a :class:`LatencyTable`: per-block latency as a function of token
  count on the target, from which ``LatencyTable.load(path).predict(schedule)`` predicts the
  latency of any schedule on another machine; :func:`predict_latency` — such predictions for
  several schedules (:class:`Predictions`, ``predictions.json``); :func:`time_at_table_speed` — whole models
  timed against a table's reference block, at the machine speed the table was profiled at;
  :func:`fit_calibration` — how a table's whole-model calibration is fitted to its anchors.
* :func:`measure_files` — exported files timed round-robin in one process (ratios a drifting machine
  does not skew).
* :func:`measure_schedules` — a model at several (schedule, precision) pairs, deployed with OpenVINO
  (or ONNX Runtime), timed round-robin in one process.
* :func:`export_fastest` — ``fgvc-kit export --precision auto``: export at every precision this
  machine runs natively, verify and time each, keep the fastest that passes.
"""
from ..machine import machine_info
from .backends import BACKENDS
from .fastest_export import export_fastest
from .measure import measure_files, measure_latency, measure_schedules
from .result import BenchReport, BenchResult
from ..schedules import random_schedules
from .predict import Predictions, predict_latency
from .calibration import fit_calibration
from .profile import default_grid, profile_latency, time_at_table_speed
from .ratio import LatencyRatio, paired_ratio
from .table import LatencyTable
from .timing import MemoryProbe, TimingPolicy, TimingStats, measure_round_robin

__all__ = [
    "BACKENDS", "BenchReport", "BenchResult", "LatencyRatio", "LatencyTable", "MemoryProbe", "Predictions",
    "TimingPolicy", "TimingStats", "default_grid", "export_fastest", "fit_calibration", "machine_info",
    "measure_files", "measure_latency", "measure_round_robin", "measure_schedules", "paired_ratio",
    "predict_latency", "profile_latency", "random_schedules", "time_at_table_speed",
]
