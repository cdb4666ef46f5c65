"""The int8 copies a latency table times, quantised ahead of the timing in parallel processes.

An int8 table times every part and whole model as OpenVINO runs it after an NNCF quantisation (on random inputs:
:func:`~tavt_kit.bench.backends.quantized_for_latency`); a 12-block ViT's int8 table is some 60 of them. NNCF's
work is mostly single-threaded Python (graph building, pattern matching, statistics), seconds per model, so one
at a time they leave the other cores idle: on 2 cores the int8 table of the newcomer walk's DINOv2 ViT-S/14 spent
215 of its search's 843 s in them. :func:`quantize_ahead` makes them all before the first is timed, in as many
processes as the cores the table will be timed on (none is timed meanwhile); each is then taken as if made in
place.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import ExportError


@dataclass(frozen=True)
class QuantizeJob:
    """One int8 copy to make: ``source`` (an exported ``.onnx`` or ``.xml``) quantised into ``out`` (``.xml``),
    calibrated on random inputs of ``shape`` (a copy for timing), or on ``calibration`` images where given (NNCF
    with bias correction: a copy whose accuracy is measured, the same file as made in place); ``done`` is called
    once it is written (it records the file where the caller will look for it)."""

    source: str
    out: str
    shape: Sequence[int]
    done: Callable[[], None]
    calibration: Optional[np.ndarray] = None


def _quantise(source: str, out: str, shape: Sequence[int], calibration: Optional[np.ndarray]) -> float:
    start = time.perf_counter()
    if calibration is None:
        from .backends import quantized_for_latency

        quantized_for_latency(source, out, shape)
    else:
        from ..export.quantize import quantize_openvino

        quantize_openvino(source, out, calibration)
    return time.perf_counter() - start


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes for :func:`quantize_ahead` (spawned: NNCF and OpenVINO start afresh)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def default_workers() -> int:
    """One process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def quantize_ahead(jobs: List[QuantizeJob], workers: Optional[int] = None,
                   progress: Optional[Callable[[str], None]] = None, what: str = "parts and models",
                   pool: Optional[ProcessPoolExecutor] = None) -> int:
    """Make every job's int8 copy, ``workers`` processes at once (default: :func:`default_workers`; 1, or a single
    job: in this process), in ``pool`` where given (:func:`worker_pool`: one for many calls). Returns how many
    were made. A quantisation that fails raises its :class:`~tavt_kit.errors.ExportError` (the others finish
    first and are recorded)."""
    if not jobs:
        return 0
    workers = min(len(jobs), workers or default_workers())
    start = time.perf_counter()
    say = progress or (lambda s: None)
    say(f"quantising {len(jobs)} {what} to int8 ahead" + (f", {workers} at once" if workers > 1 else ""))
    if workers <= 1:
        for job in jobs:
            _quantise(job.source, job.out, list(job.shape), job.calibration)
            job.done()
        return len(jobs)
    own = pool is None
    pool = worker_pool(workers) if own else pool
    try:
        futures = [(job, pool.submit(_quantise, job.source, job.out, [int(d) for d in job.shape], job.calibration))
                   for job in jobs]
        failed = None
        for job, fut in futures:
            try:
                fut.result()
            except ExportError as e:
                failed = failed or e
                continue
            except Exception as e:  # a worker that died (memory) or an error NNCF raised there
                line = str(e).splitlines()[0] if str(e) else ""
                failed = failed or ExportError(f"{job.source}: int8 quantisation failed in a worker process "
                                               f"({type(e).__name__}: {line})")
                continue
            job.done()
    finally:
        if own:
            pool.shutdown()
    if failed is not None:
        raise failed
    say(f"quantised {len(jobs)} {what} to int8 in {time.perf_counter() - start:.0f}s")
    return len(jobs)
