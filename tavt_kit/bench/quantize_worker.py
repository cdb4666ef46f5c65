"""A worker process of :mod:`.quantize_ahead`: ``python -m tavt_kit.bench.quantize_worker``.

It reads one job a line on its standard input (JSON: ``source``, ``out``, ``shape``, ``calibration``: an ``.npy``
file or null) and answers each on its standard output with one JSON line (``{"ok": true, "seconds": s}`` or
``{"ok": false, "error": "..."}``); whatever NNCF or OpenVINO print goes to its standard error. A process started
afresh, not forked nor spawned by multiprocessing: the caller's script is not imported again (a script without a
``__main__`` guard that calls a search still works).
"""
from __future__ import annotations

import json
import os
import sys
import time


def quantise(source: str, out: str, shape, calibration) -> float:
    """One int8 copy: for timing (random inputs of ``shape``) when ``calibration`` is None, else NNCF with bias
    correction on the calibration images (the same file as quantised in place)."""
    start = time.perf_counter()
    if calibration is None:
        from .backends import quantized_for_latency

        quantized_for_latency(source, out, shape)
    else:
        from ..export.quantize import quantize_openvino

        quantize_openvino(source, out, calibration)
    return time.perf_counter() - start


def main() -> int:
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the libraries print goes to standard error, the replies alone to standard output
    sys.stdout = sys.stderr
    import numpy as np

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            cal = job.get("calibration")
            seconds = quantise(job["source"], job["out"], [int(d) for d in job.get("shape") or []],
                               None if cal is None else np.load(cal, allow_pickle=False))
            answer = {"ok": True, "seconds": seconds}
        except Exception as e:  # every failure is answered, in one line; the worker goes on with the next job
            from ..errors import ExportError
            from ..export.graph import first_line

            answer = {"ok": False, "error": str(e).splitlines()[0] if isinstance(e, ExportError) and str(e)
                      else first_line(e)}
        reply.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
