"""ToMe on your model at fixed r, at every precision: the training-free frontier measured, not fitted.

The latency-reference benchmark fits ToMe to each budget from the search's latency table. Where the table
under-predicts (the int8 table does: 2-40 % on the last-measured runs, most at the smallest schedules) the fitted
r is milder than the budget allows, and the training-free side of the headline is sampled only where the table
put it. This sweep scores ToMe at every r of ``TOME_R`` on the test images (fp32 in PyTorch, lower precisions on
the deployed runtime: int8 quantised with NNCF as the search's own pairs are) and times each point round-robin
with your model in one process, so the best training-free speed-up at a given loss is read off measurements.

Test hits do not depend on the batch size: they are kept per seed (``seed<S>/tome-sweep-hits.json``, written
after every point, so a killed sweep resumes); the timing is per batch (``seed<S>-<tag>-tome.json``, which
the benchmark reads instead of sweeping again).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Sequence

#: the constant r of the sweep (256 patch tokens, 6 blocks: r >= 128 halves every block, ToMe's own clamp)
TOME_R = (16, 32, 48, 64, 72, 80, 88, 96, 112, 128)


def sweep_r(num_patches: int) -> tuple:
    """``TOME_R`` for a model of ``num_patches`` tokens: scaled with them above 256, so that the sweep reaches the
    same reductions (at 576 tokens r=128 merges only about half of the MACs away; ToMe's own clamp, half a block,
    is at r=288)."""
    if num_patches <= 256:
        return TOME_R
    return tuple(int(round(r * num_patches / 256)) for r in TOME_R)


def sweep_hits(seed: int, parent, data, precisions: Sequence[str], scheds: Dict[int, object], path: str,
               log: Callable[[str], None]) -> Dict[str, List[int]]:
    """Per-image test hits of ToMe at each r of ``scheds`` and precision (``"<r>@<precision>"``), resumed from
    ``path``."""
    import torch

    from tavt_kit.data import Normalize
    from tavt_kit.files import write_json
    from tavt_kit.search.precision import DeployedScorer
    from reference_benchmark import read_json, test_hits

    hits = read_json(path) if os.path.isfile(path) else {}
    scorer = None
    try:
        for p in precisions:
            for r, sched in scheds.items():
                key = f"{r}@{p}"
                if key in hits:
                    continue
                log(f"ToMe sweep: r={r} at {p} on the test images")
                if p == "fp32":
                    with torch.inference_mode():
                        hits[key] = test_hits(parent, sched, data.test)
                else:
                    if scorer is None:
                        scorer = DeployedScorer(parent, Normalize.from_model(parent),
                                                lambda: data.calibration(300, seed), 100)
                    sc, _ = scorer.scores(sched, p, data.test.images, data.test.labels)
                    hits[key] = sc.hits[0].tolist()
                write_json(hits, path)
    finally:
        if scorer is not None:
            scorer.close()
    return hits


def tome_frontier(seed: int, parent, data, ref_hits: List[int], precisions: Sequence[str], target, policy,
                  hits_path: str, out_path: str, log: Callable[[str], None], rs: Sequence[int] = TOME_R) -> list:
    """Every (r, precision) point of the sweep with its test accuracy, paired difference to your model, latency
    and speed-up over your model's fp32 latency (all timed round-robin in one process, with your model at every
    precision); written to ``out_path``."""
    import tavt_kit
    from tavt_kit.bench.measure import measure_schedules
    from tavt_kit.files import write_json
    from tavt_kit.schedules import tome_schedule
    from tavt_kit.stats import paired_difference

    full = parent.full_schedule()
    scheds = {r: parent.make_schedule(tome_schedule(r, parent.depth, parent.num_patches)) for r in rs}
    hits = sweep_hits(seed, parent, data, precisions, scheds, hits_path, log)
    items = {("full", p): (full, p) for p in dict.fromkeys(["fp32", *precisions])}
    items.update({(r, p): (scheds[r], p) for p in precisions for r in rs})
    log(f"ToMe sweep: timing {len(items)} deployables round-robin")
    timed = measure_schedules(parent, items, target=target, policy=policy, progress=log)
    ms = {k: v[0].p50 * 1e3 for k, v in timed.items()}
    ref_ms, full_macs = ms[("full", "fp32")], tavt_kit.count_macs(parent, full).total()
    macs_of = {r: tavt_kit.count_macs(parent, sched).total() for r, sched in scheds.items()}
    points = []
    for (r, p), t in ms.items():
        if r == "full":
            continue
        h, macs = hits[f"{r}@{p}"], macs_of[r]
        points.append({"r": r, "precision": p, "counts": list(scheds[r].counts), "reducers": ["merge"] * parent.depth,
                       "macs": macs, "test_accuracy": sum(h) / len(h), "vs_parent": paired_difference(h, ref_hits),
                       "ms": t, "speedup": ref_ms / t,
                       "realised": (ms[("full", p)] / t) / (full_macs / macs) if macs < full_macs else None})
    write_json({"seed": seed, "batch": target.batch_size, "parent_ms": ref_ms, "points": points}, out_path)
    return points
