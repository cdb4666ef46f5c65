"""Measuring a report's picks on this machine, when the search's checkpoint is here: latency the report can trust."""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from ..errors import TavtKitError
from ..search import SearchResult


def remeasure_picks(result: SearchResult, extra_budgets: Sequence[str], out_dir: str,
                    time_budget: float = 1.0, log: Callable[[str], None] = print) -> Optional[str]:
    """Measure the full model and every budget's pick of a search (``result``) on its latency target (backend,
    device, batch, threads) with :func:`tavt_kit.bench.measure_latency`; returns the ``bench.json`` written into
    ``out_dir``, or ``None`` when it cannot (no latency target, the checkpoint is not here, the backend is
    missing)."""
    from ..bench import TimingPolicy, measure_latency
    from ..models import load_checkpoint

    search = result.doc
    target = (search.get("latency") or {}).get("target") or {}
    checkpoint = (search.get("source") or {}).get("checkpoint")
    if not target or not checkpoint or not os.path.isfile(checkpoint):
        return None
    if len(result.precisions) > 1:
        # one bench run times one precision; the picks of a search of pairs have several
        log("not measured again here: the picks of a search of (schedule, precision) pairs are timed together, "
            "each at its precision, by the search itself (remeasure=True)")
        return None
    picks = [b.best for b in result.budgets.values()] + [result.budget(b).best for b in extra_budgets]
    counts = []
    for p in picks:
        if p is not None and p.counts and p.counts not in counts:
            counts.append(p.counts)
    if not counts:
        return None
    from ..target import DeploymentTarget

    try:
        model = load_checkpoint(checkpoint).eval()
        log(f"measuring {len(counts)} chosen schedules and the full model on {target.get('backend')} "
            f"{target.get('device')}, batch {target.get('batch_size') or 1} (the search's latency target)")
        report = measure_latency(model, [list(c) for c in counts], target=DeploymentTarget.from_dict(target),
                                 policy=TimingPolicy(budget_s=time_budget))
    except TavtKitError as e:  # a backend this machine lacks: the report says "predicted" instead
        log(f"not measured here ({e})")
        return None
    return report.save(out_dir, plot=False)["json"]
