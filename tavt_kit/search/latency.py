"""The latency objective of a search: predicted from a latency table, or measured here.

A table made by ``fgvc-kit bench profile`` on the target device lets a
workstation search for a board it does not have: each candidate's latency is
the table's prediction (milliseconds, no measurement). Without a table every
candidate is measured on this machine's device and backend, with a short
timing policy; the chosen schedules are always re-measured with the full
policy where the target is this machine.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule

#: a candidate measured during the search: quick but steady enough to rank schedules
SEARCH_POLICY = dict(warmup=3, min_repeats=5, max_repeats=200, budget_s=0.5, rel_ci=0.02)


def _measurer(model, backend: str, device: str, batch: int, threads: Optional[int], policy: Optional[dict],
              workdir: Optional[str]) -> Callable[[TokenSchedule], float]:
    from ..bench import TimingPolicy, measure_latency

    pol = TimingPolicy(**policy) if policy else None

    def measure(s: TokenSchedule) -> float:
        rep = measure_latency(model, [s], backend=backend, device=device, batch_sizes=[batch], threads=threads,
                              include_full=False, labels=["candidate"], policy=pol, workdir=workdir,
                              verify_exports=False)
        return rep.result("candidate", batch).stats.p50

    return measure


def latency_objective(model, args) -> Tuple[Callable[[TokenSchedule], float], Optional[Callable], dict]:
    """``(latency_fn, remeasure_fn, info)`` for ``fgvc-kit search``'s options (seconds per batch)."""
    from ..bench import LatencyTable

    backend = args.backend or "torch"
    device = args.device or "cpu"
    asked = getattr(args, "latency_batch_size", None)  # None: not given (the table's, or 1 when measuring)
    if asked is not None and asked < 1:
        raise ConfigError(f"--latency-batch-size: expected a positive batch size, got {asked}")
    batch = asked or 1
    if args.latency_table:
        table = LatencyTable.load(args.latency_table)
        target = table.target
        table.check(model, backend=args.backend, device=args.device, batch_size=asked, threads=args.threads)
        info = {"source": "table", "table": args.latency_table, "target": target, "machine": table.machine,
                "identity": {"table": args.latency_table, **{k: target.get(k) for k in
                                                              ("backend", "device", "batch_size", "threads")}}}

        def predict(s: TokenSchedule) -> float:
            return table.predict(s) / 1e3

        remeasure = None
        if getattr(args, "remeasure", False):
            remeasure = _measurer(model, target.get("backend", backend), target.get("device", device),
                                  int(target.get("batch_size", 1)), target.get("threads"), None, None)
            info["remeasured_here"] = True
        return predict, remeasure, info
    info = {"source": "measured", "target": {"backend": backend, "device": device, "batch_size": batch,
                                             "threads": args.threads},
            "policy": SEARCH_POLICY,
            "identity": {"backend": backend, "device": device, "batch_size": batch,
                         "threads": args.threads}}
    measure = _measurer(model, backend, device, batch, args.threads, SEARCH_POLICY, None)
    measure(TokenSchedule.full(model.depth, model.num_patches))  # first calls of a process are slow: discard
    remeasure = _measurer(model, backend, device, batch, args.threads, None, None)
    return measure, remeasure, info
