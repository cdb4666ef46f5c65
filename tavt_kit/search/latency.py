"""The latency objective of a search: predicted from a latency table, or measured here.

A table made by ``fgvc-kit bench profile`` on the target device lets a
workstation search for a board it does not have: each candidate's latency is
the table's prediction (milliseconds, no measurement). Without a table every
candidate is measured on this machine's device and backend, with a short
timing policy; the chosen schedules are always re-measured with the full
policy where the target is this machine.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import ConfigError
from ..schedules.schedule import TokenSchedule
from .precision import TABLE_PRECISION, table_precision_name

#: a candidate measured during the search: quick but steady enough to rank schedules
SEARCH_POLICY = dict(warmup=3, min_repeats=5, max_repeats=200, budget_s=0.5, rel_ci=0.02)


def _measurer(model, backend: str, device: str, batch: int, threads: Optional[int], policy: Optional[dict],
              workdir: Optional[str], precision: str = "f32") -> Callable[[TokenSchedule], float]:
    from ..bench import TimingPolicy, measure_latency

    pol = TimingPolicy(**policy) if policy else None

    def measure(s: TokenSchedule) -> float:
        rep = measure_latency(model, [s], backend=backend, device=device, batch_sizes=[batch], threads=threads,
                              precision=precision, include_full=False, labels=["candidate"], policy=pol,
                              workdir=workdir, verify_exports=False)
        return rep.result("candidate", batch).stats.p50

    return measure


def _load_tables(args) -> Dict[str, Tuple[str, Any]]:
    """``--latency-table`` files by the precision each was profiled at (one per precision)."""
    from ..bench import LatencyTable

    paths = args.latency_table or []
    if isinstance(paths, str):
        paths = [paths]
    out: Dict[str, Tuple[str, Any]] = {}
    for path in paths:
        table = LatencyTable.load(path)
        p = table_precision_name(table)
        if p in out:
            raise ConfigError(f"--latency-table: {out[p][0]} and {path} are both profiled at {p}; give one table "
                              "per precision")
        out[p] = (path, table)
    batches = {int(t.target.get("batch_size", 1)) for _, t in out.values()}
    if len(batches) > 1:
        raise ConfigError(f"--latency-table: the tables are for different batch sizes ({sorted(batches)}); a "
                          "latency budget is per batch, profile every precision at one --batch-size")
    return out


def latency_objective(model, args, precision: str = "fp32", tables: Optional[Dict[str, Tuple[str, Any]]] = None
                      ) -> Tuple[Callable[[TokenSchedule], float], Optional[Callable], dict]:
    """``(latency_fn, remeasure_fn, info)`` for ``fgvc-kit search``'s options (seconds per batch) at ``precision``."""
    tables = _load_tables(args) if tables is None else tables
    if tables and precision not in tables:
        have = ", ".join(f"{path} ({p})" for p, (path, _) in tables.items())
        raise ConfigError(f"--latency-table: no table profiled at {precision} ({have}); profile one with fgvc-kit "
                          f"bench profile --precision {precision}"
                          + ("" if getattr(args, "precisions", None) else
                             f", or search at {', '.join(tables)} with --precisions fp32,{','.join(tables)}"))
    ov = TABLE_PRECISION[precision]
    backend = args.backend or ("openvino" if precision != "fp32" else "torch")
    device = args.device or "cpu"
    if precision != "fp32" and not tables and backend != "openvino":
        raise ConfigError(f"--precisions {precision}: latency at {precision} is measured with --backend openvino "
                          f"(or give a --latency-table profiled at {precision}); got --backend {backend}")
    asked = getattr(args, "latency_batch_size", None)  # None: not given (the table's, or 1 when measuring)
    if asked is not None and asked < 1:
        raise ConfigError(f"--latency-batch-size: expected a positive batch size, got {asked}")
    batch = asked or 1
    if tables:
        path, table = tables[precision]
        target = table.target
        table.check(model, backend=args.backend, device=args.device, batch_size=asked, threads=args.threads)
        info = {"source": "table", "table": path, "target": target, "machine": table.machine, "precision": precision,
                "identity": {"table": path, "precision": precision, **{k: target.get(k) for k in
                                                                       ("backend", "device", "batch_size", "threads")}}}

        def predict(s: TokenSchedule) -> float:
            return table.predict(s) / 1e3

        remeasure = None
        if getattr(args, "remeasure", False):
            remeasure = _measurer(model, target.get("backend", backend), target.get("device", device),
                                  int(target.get("batch_size", 1)), target.get("threads"), None, None, ov)
            info["remeasured_here"] = True
        return predict, remeasure, info
    if precision in ("bf16", "fp16"):
        from ..export.openvino import check_device_precision

        check_device_precision(ov, device, flag="--precisions")
    info = {"source": "measured", "precision": precision,
            "target": {"backend": backend, "device": device, "batch_size": batch, "threads": args.threads,
                       "precision": ov},
            "policy": SEARCH_POLICY,
            "identity": {"backend": backend, "device": device, "batch_size": batch, "threads": args.threads,
                         **({"precision": precision} if precision != "fp32" else {})}}
    measure = _measurer(model, backend, device, batch, args.threads, SEARCH_POLICY, None, ov)
    measure(TokenSchedule.full(model.depth, model.num_patches))  # first calls of a process are slow: discard
    remeasure = _measurer(model, backend, device, batch, args.threads, None, None, ov)
    return measure, remeasure, info


def precision_objectives(model, args, precisions) -> Dict[str, Tuple[Callable, Optional[Callable], dict]]:
    """The latency objective of each precision of a joint search (tables checked against ``precisions``)."""
    tables = _load_tables(args)
    extra = [p for p in tables if p not in precisions]
    if extra:
        raise ConfigError(f"--latency-table {tables[extra[0]][0]} is profiled at {extra[0]}, which --precisions "
                          f"{','.join(precisions)} does not search; add it to --precisions or leave the table out")
    if not tables and args.backend is None and len(precisions) > 1:
        # every precision's latency on one runtime, or the budgets would compare torch fp32 with OpenVINO bf16
        import argparse

        args = argparse.Namespace(**{**vars(args), "backend": "openvino"})
    return {p: latency_objective(model, args, p, tables) for p in precisions}
