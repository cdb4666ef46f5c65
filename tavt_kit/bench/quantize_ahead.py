"""The int8 copies a latency table times, quantised ahead of the timing in parallel processes.

An int8 table times every part and whole model as OpenVINO runs it after an NNCF quantisation (on random inputs:
:func:`~tavt_kit.bench.backends.quantized_for_latency`); a 12-block ViT's int8 table is some 60 of them. NNCF's
work is mostly single-threaded Python (graph building, pattern matching, statistics), seconds per model, so one
at a time they leave the other cores idle: on 2 cores the int8 table of the newcomer walk's DINOv2 ViT-S/14 spent
215 of its search's 843 s in them. :func:`quantize_ahead` makes them all before the first is timed, in as many
processes as the cores the table will be timed on (none is timed meanwhile); each is then taken as if made in
place. The processes are :mod:`.quantize_worker` started afresh (not forked nor spawned by ``multiprocessing``,
which imports the caller's script again: a script without a ``__main__`` guard would break).
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

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


def default_workers() -> int:
    """One process per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class WorkerPool:
    """``workers`` :mod:`.quantize_worker` processes, kept for many :meth:`run` calls; :meth:`close` ends them."""

    def __init__(self, workers: int):
        import tavt_kit

        env = dict(os.environ)  # the workers import the tavt_kit this process runs
        here = os.path.dirname(os.path.dirname(os.path.abspath(tavt_kit.__file__)))
        env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self._tmp = tempfile.TemporaryDirectory(prefix="fgvc-kit-quantize-")
        self._procs = [subprocess.Popen([sys.executable, "-m", "tavt_kit.bench.quantize_worker"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, bufsize=1) for _ in range(max(1, int(workers)))]

    def run(self, jobs: Sequence[QuantizeJob]) -> Dict[int, Optional[str]]:
        """Every job made by the first free worker: {index: None (made) or the error's line}."""
        todo: "queue.Queue[int]" = queue.Queue()
        for i in range(len(jobs)):
            todo.put(i)
        errors: Dict[int, Optional[str]] = {}
        calibrations: Dict[int, str] = {}  # job -> its calibration's .npy: one file per array (jobs share one)
        saved: Dict[int, str] = {}
        for i, job in enumerate(jobs):
            if job.calibration is not None:
                if id(job.calibration) not in saved:
                    saved[id(job.calibration)] = os.path.join(self._tmp.name, f"calibration{len(saved)}.npy")
                    np.save(saved[id(job.calibration)], np.asarray(job.calibration, dtype=np.float32))
                calibrations[i] = saved[id(job.calibration)]

        def serve(proc: subprocess.Popen) -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                job = jobs[i]
                line = ""
                if proc.poll() is None:
                    try:
                        proc.stdin.write(json.dumps({"source": job.source, "out": job.out,
                                                     "shape": [int(d) for d in job.shape],
                                                     "calibration": calibrations.get(i)}) + "\n")
                        proc.stdin.flush()
                        line = proc.stdout.readline()
                    except OSError:
                        line = ""
                if not line:  # the worker ended (memory, a crash): this job fails, the others go elsewhere
                    errors[i] = f"{job.source}: int8 quantisation failed: its worker process ended " \
                                f"(exit code {proc.poll()})"
                    return
                answer = json.loads(line)
                errors[i] = None if answer.get("ok") else f"{job.source}: int8 quantisation failed " \
                                                             f"({answer.get('error')})"

        threads = [threading.Thread(target=serve, args=(p,), daemon=True) for p in self._procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(len(jobs)):  # left when every worker ended
            errors.setdefault(i, f"{jobs[i].source}: int8 quantisation failed: no worker process was left")
        for path in saved.values():
            os.remove(path)
        return errors

    def close(self) -> None:
        for p in self._procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs = []
        self._tmp.cleanup()


def quantize_ahead(jobs: List[QuantizeJob], workers: Optional[int] = None,
                   progress: Optional[Callable[[str], None]] = None, what: str = "parts and models",
                   pool: Optional[WorkerPool] = None) -> int:
    """Make every job's int8 copy, ``workers`` processes at once (default: :func:`default_workers`; 1, or a single
    job: in this process), in ``pool`` where given (one :class:`WorkerPool` for many calls). Returns how many were
    made. A quantisation that fails raises :class:`~tavt_kit.errors.ExportError` naming its file (the others
    finish first and are recorded)."""
    if not jobs:
        return 0
    workers = min(len(jobs), workers or default_workers())
    start = time.perf_counter()
    say = progress or (lambda s: None)
    say(f"quantising {len(jobs)} {what} to int8 ahead" + (f", {workers} at once" if workers > 1 else ""))
    if workers <= 1:
        from .quantize_worker import quantise

        for job in jobs:
            quantise(job.source, job.out, list(job.shape), job.calibration)
            job.done()
        return len(jobs)
    own = pool is None
    pool = WorkerPool(workers) if own else pool
    try:
        errors = pool.run(jobs)
    finally:
        if own:
            pool.close()
    for i, job in enumerate(jobs):
        if errors.get(i) is None:
            job.done()
    failed = [e for e in errors.values() if e is not None]
    if failed:
        raise ExportError(failed[0])
    say(f"quantised {len(jobs)} {what} to int8 in {time.perf_counter() - start:.0f}s")
    return len(jobs)
