"""What ``measure_latency`` returns: :class:`BenchResult` (one schedule at one batch size: latency statistics,
throughput, peak memory) and :class:`BenchReport` (every result of one target, its machine and settings), saved as
``bench.json``, ``bench.md`` and ``bench.png``."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..files import write_json, write_text
from ..target import DeploymentTarget
from .timing import TimingStats

BENCH_FORMAT = "fgvc-kit/bench"
#: the file name a report is saved under in an output folder (beside bench.md and bench.png)
BENCH_FILE = "bench.json"


@dataclass
class BenchResult:
    """One (schedule, batch size) measurement."""

    label: str
    schedule: Optional[List[int]]
    macs: Optional[int]
    batch_size: int
    stats: TimingStats
    memory: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    speedup: Optional[float] = None
    predicted_ms: Optional[float] = None
    predicted_statistic: str = "median"  # what the latency table predicts: "median" or "min"
    reducers: Optional[List[str]] = None  # each block's reducer ("drop"/"merge", None: keeps its tokens)

    @property
    def p50_ms(self) -> float:
        return self.stats.p50 * 1e3

    @property
    def p90_ms(self) -> float:
        return self.stats.p90 * 1e3

    @property
    def p99_ms(self) -> float:
        return self.stats.p99 * 1e3

    @property
    def throughput(self) -> float:
        """Images per second (batch / mean latency: the sustained rate of back-to-back calls)."""
        return self.batch_size / self.stats.mean

    def warnings(self) -> List[str]:
        return [f"{self.label} (batch {self.batch_size}): {w}" for w in self.stats.warnings()]

    def to_dict(self, keep_samples: bool = True) -> Dict[str, Any]:
        d = {
            "label": self.label,
            "schedule": self.schedule,
            "reducers": self.reducers,
            "macs": self.macs,
            "gmacs": self.macs / 1e9 if self.macs is not None else None,
            "batch_size": self.batch_size,
            "latency_ms": self.stats.to_dict(keep_samples=keep_samples),
            "throughput_ips": self.throughput,
            "speedup": self.speedup,
            "memory": self.memory,
            "noisy": self.stats.noisy,
            "warnings": self.stats.warnings(),
        }
        if self.predicted_ms is not None:
            ref = self.p50_ms if self.predicted_statistic == "median" else min(self.stats.samples) * 1e3
            d["predicted_ms"] = self.predicted_ms
            d["predicted_statistic"] = self.predicted_statistic
            d["prediction_error_rel"] = (self.predicted_ms - ref) / ref
        if self.info:
            d["runtime"] = self.info
        return d


@dataclass
class BenchReport:
    """Everything one :func:`measure_latency` call measured, with the machine's description.

    ``target`` is where it was measured (its ``batch_size`` the first of ``batch_sizes``, its ``threads``
    resolved); ``precision_used`` is what the runtime reports running (``int8+fp32``: a quantised graph, fp32
    elsewhere; a list when results differ); ``source`` the checkpoint, model name or exported file measured.
    ``bench.json`` holds ``target.to_dict()`` and these beside it under ``"target"`` (read the target back
    with :meth:`DeploymentTarget.from_dict <tavt_kit.target.DeploymentTarget.from_dict>`).
    """

    model: Optional[Dict[str, Any]]
    target: DeploymentTarget
    machine: Dict[str, Any]
    policy: Dict[str, Any]
    results: List[BenchResult]
    batch_sizes: List[int] = field(default_factory=list)
    precision_used: Any = None
    exporter: Any = None
    compile_backend: Optional[str] = None
    source: Optional[str] = None
    timing: Optional[str] = None  # CUDA: "cuda-events" (torch) or "host-synchronous" (an exported file's runtime)
    #: the content key of the measured weights (tavt_kit.models.weights_digest; an exported file: the one its
    #: export.json records), written as bench.json's ``model.weights_sha256``; None when unknown
    weights_sha256: Optional[str] = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    notes: List[str] = field(default_factory=list)

    def __post_init__(self):
        self.batch_sizes = list(self.batch_sizes) or [self.target.batch_size]

    def warnings(self) -> List[str]:
        out = list(self.notes)
        for r in self.results:
            out.extend(r.warnings())
        return out

    def result(self, label: str, batch_size: Optional[int] = None) -> BenchResult:
        for r in self.results:
            if r.label == label and (batch_size is None or r.batch_size == batch_size):
                return r
        raise KeyError(label)

    def target_dict(self) -> Dict[str, Any]:
        """``bench.json``'s ``"target"``: the target's fields and what else decides the runtime
        (``precision_requested`` repeats ``precision`` for readers of older files)."""
        d = {**self.target.to_dict(), "batch_sizes": list(self.batch_sizes),
             "precision_requested": self.target.precision, "precision_used": self.precision_used,
             "exporter": self.exporter, "compile_backend": self.compile_backend, "source": self.source}
        if self.timing:
            d["timing"] = self.timing
        return d

    def to_dict(self, keep_samples: bool = True) -> Dict[str, Any]:
        return {
            "format": BENCH_FORMAT,
            "version": 1,
            "created": self.created,
            "model": ({**(self.model or {}), "weights_sha256": self.weights_sha256} if self.weights_sha256
                      else self.model),
            "target": self.target_dict(),
            "machine": self.machine,
            "policy": self.policy,
            "results": [r.to_dict(keep_samples) for r in self.results],
            "warnings": self.warnings(),
        }

    def markdown(self) -> str:
        from .render import bench_markdown

        return bench_markdown(self.to_dict(keep_samples=False))

    def save(self, out_dir, plot: bool = True) -> Dict[str, str]:
        """Write ``bench.json``, ``bench.md`` and (``plot``) ``bench.png`` into ``out_dir``; returns their paths."""
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        d = self.to_dict()
        paths = {"json": os.path.join(out_dir, BENCH_FILE), "markdown": os.path.join(out_dir, "bench.md")}
        write_json(d, paths["json"])
        write_text(paths["markdown"], self.markdown() + "\n")
        if plot:
            from .render import plot_bench

            paths["plot"] = plot_bench(d, os.path.join(out_dir, "bench.png"))
        return paths
