"""Reading a ``bench.json`` back: its format and version, and every value a report would show, checked.

:func:`read_bench` is the one reader of the file :meth:`~tavt_kit.bench.BenchReport.save` writes (the
report reads it here): a binary or pickled file is refused unread, another kind of fgvc-kit file is named
for what it is, a newer version is refused, and a value no bench writes (a negative or NaN latency, a
batch size that is not a positive integer, a schedule whose counts increase, an unknown precision) is one
:class:`~tavt_kit.errors.ConfigError` line naming the file and the field.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ..target import BACKENDS
from ..validate import Fields, check_format, read_json
from .result import BENCH_FORMAT
from .table import TABLE_PRECISIONS

#: the newest bench.json this fgvc-kit reads
BENCH_VERSION = 1
#: what a reader says a bench.json should be
BENCH_EXPECTED = "the bench.json of fgvc-kit bench"
#: the latency statistics of a result (milliseconds per batch)
_LATENCY_KEYS = ("p50", "p90", "p99", "mean", "min", "max")


def read_bench(path, where: Optional[str] = None) -> Dict[str, Any]:
    """The content of a ``bench.json``, checked (:func:`validate_bench`); errors name ``where`` (default the
    path)."""
    path = os.fspath(path)
    doc = read_json(path, BENCH_EXPECTED, kind="bench result")
    validate_bench(doc, where or path)
    return doc


def validate_bench(doc: Any, where: str = "bench.json") -> int:
    """Check a bench.json's content; returns its version. Refused with one :class:`ConfigError` line naming
    ``where`` and the field: another format or a newer version; a target whose backend or precision
    fgvc-kit does not know, or whose batch size or threads are not positive integers; a result without
    latencies, or whose latencies, throughput, MACs or speed-up are not positive finite numbers (p50 <= p90
    <= p99); a schedule that does not fit the model measured (see :meth:`Fields.schedule`)."""
    version = check_format(doc, where, BENCH_FORMAT, BENCH_VERSION, "a bench result of fgvc-kit bench")
    f = Fields(where)
    model = f.mapping(doc.get("model"), "model") or {}
    depth = f.positive(model.get("depth"), "model.depth", integer=True)
    n = f.positive(model.get("num_patches"), "model.num_patches", integer=True)
    f.text(model.get("weights_sha256"), "model.weights_sha256")
    target = f.mapping(f.get(doc, "target", "target", "the target measured on (an object)", True), "target",
                       optional=False)
    f.choice(target.get("backend"), "target.backend", BACKENDS, what="a backend")
    f.text(target.get("device"), "target.device")
    for key in ("precision", "precision_requested"):
        f.choice(target.get(key), f"target.{key}", TABLE_PRECISIONS, what="a precision")
    f.positive(target.get("batch_size"), "target.batch_size", integer=True)
    f.positive(target.get("threads"), "target.threads", integer=True)
    for field, b in f.each(target.get("batch_sizes"), "target.batch_sizes"):
        f.positive(b, field, optional=False, integer=True)
    results = f.sequence(f.get(doc, "results", "results", "the measured results (a list)", True), "results",
                         optional=False)
    for i, r in enumerate(results):
        field = f"results[{i}]"
        f.mapping(r, field, optional=False)
        f.text(r.get("label"), f"{field}.label")
        if r.get("schedule") is not None:
            f.schedule(r["schedule"], r.get("reducers"), field, depth, n, counts_key="schedule")
        f.positive(f.get(r, "batch_size", f"{field}.batch_size", "a positive batch size"), f"{field}.batch_size",
                   integer=True)
        lat = f.mapping(f.get(r, "latency_ms", f"{field}.latency_ms", "the measured latencies (an object)", True),
                        f"{field}.latency_ms", optional=False)
        f.get(lat, "p50", f"{field}.latency_ms.p50", "the median latency", True)
        for key in _LATENCY_KEYS:
            f.positive(lat.get(key), f"{field}.latency_ms.{key}")
        order = [(k, lat[k]) for k in ("p50", "p90", "p99") if lat.get(k) is not None]
        for (ka, a), (kb, b) in zip(order, order[1:]):
            if a > b:
                f.fail(f"{field}.latency_ms.{kb}", b, f"at least {ka} ({a:g} ms)")
        for j, v in enumerate(f.sequence(lat.get("samples"), f"{field}.latency_ms.samples") or ()):
            f.positive(v, f"{field}.latency_ms.samples[{j}]", optional=False)
        for key in ("throughput_ips", "speedup", "macs", "gmacs", "predicted_ms"):
            f.positive(r.get(key), f"{field}.{key}")
    for field, w in f.each(doc.get("warnings"), "warnings"):
        if not isinstance(w, str):
            f.fail(field, w, "a text")
    return version

