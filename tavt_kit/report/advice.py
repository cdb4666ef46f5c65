"""What the report tells a user to run or do about a budget's pick: the export command with real paths, and the
advice for a pick measured over its latency budget (which depends on where its latency came from)."""
from __future__ import annotations

import os
from typing import Optional


def export_command(search: dict, search_path: str, label: str) -> str:
    """The ``fgvc-kit export`` command of a budget's pick, with the real paths (copy-pastable from anywhere)."""
    import shlex

    ckpt = (search.get("source") or {}).get("checkpoint") or "SUPERNET.safetensors"
    return (f"fgvc-kit export --checkpoint {shlex.quote(ckpt)} --search {shlex.quote(os.path.abspath(search_path))} "
            f"--budget {shlex.quote(label.replace(' ', ''))} --format openvino")


def over_budget_advice(search: dict, measured: float, predicted: Optional[float],
                       limit_ms: Optional[float] = None) -> str:
    """What to do about a pick measured over its budget: depends on where its latency came from."""
    lat = search.get("latency") or {}
    lower = (f"search again under a lower budget (about {limit_ms * predicted / measured:.3g} ms, this one less "
             "the table's error) so that the pick measures within it"
             if limit_ms and predicted else "search again under a lower budget")
    if lat.get("source") == "table" and predicted is not None:
        off = 100 * (measured - predicted) / predicted
        table_cpu = ((lat.get("machine") or {}).get("cpu") or {}).get("model")
        here = lat.get("profiled_for_search") or table_cpu == (search.get("machine") or {}).get("cpu")
        why = ("the table under-predicts it by {:+.0f} %".format(off) + (
            " (the table was profiled on this machine: it was busier, or the schedule lies between the table's "
            "grid points); profile the table again on an idle machine, or search with --latency-source measure"
            if here else "; the table was made on another machine: search with a table profiled on this one"))
        return f"the pick measures {measured:.3g} ms, over the budget: {why}, or {lower}"
    return (f"the pick measures {measured:.3g} ms now, over the budget it met when the search timed it (the "
            "machine is busier now, or was then): measure it again on an idle machine, or search again under a "
            "lower budget")
