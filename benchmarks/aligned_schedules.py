"""Do schedules that leave aligned sequence lengths run faster per MAC, and what do they cost in accuracy?

``fgvc-kit search --token-multiple 8`` searches only schedules whose every reducing block leaves a sequence (tokens
kept and the class token) that is a multiple of 8. This draws ``--pairs`` members of the model's space (TAVT's,
``--bound``) within a MAC range, and pairs each with its aligned neighbour (every reducing block's count moved
*down* to the nearest aligned length: fewer MACs, never more). All are deployed with OpenVINO and timed
round-robin in one process beside the full model in fp32, at each precision; per pair it prints the aligned
one's MACs and time over the unaligned one's, and their quotient (below 1: the aligned one saved more time than
its MACs explain). With ``--checkpoint`` (a supernet), it also scores both on cluttered-digits' 3000 test images
(paired difference, 95 %).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/aligned_schedules.py --model c96p4w96 --pairs 12 \\
        --checkpoint runs/latency-reference-c96p4w96-tavt-sampled/seed1/supernet-bound0.7/best.safetensors \\
        --out docs/benchmarks/token_alignment/aligned-c96-b1.json

Without ``--checkpoint`` the weights are random (a timing does not depend on them) and no accuracy is printed.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from token_alignment import MODELS, add_run_arguments, measure_or_report, time_beside_full  # noqa: E402


def draw_pairs(model, args):
    from tavt_kit.models.macs import count_macs
    from tavt_kit.schedules.space import SearchSpace

    space = SearchSpace.for_model(model, bound=args.bound)
    full = count_macs(model, space.full()).total()
    lo, hi = (float(v) for v in args.macs.split(":"))
    rng, pairs = random.Random(args.seed), []
    for _ in range(100000):
        if len(pairs) == args.pairs:
            break
        s = space.sample(rng)
        if lo <= count_macs(model, s).total() / full <= hi:
            a = s.aligned_down(args.multiple, space.num_prefix)
            if a.counts != s.counts:
                pairs.append((s, a))
    if len(pairs) < args.pairs:
        raise SystemExit(f"--macs {args.macs}: {len(pairs)} of {args.pairs} members of the bound-{args.bound} space "
                         "found in that range of the full model's MACs; widen it or raise --bound")
    return pairs


def measure(args) -> dict:
    import tavt_kit
    from tavt_kit.bench import paired_ratio
    from tavt_kit.models.macs import count_macs

    if args.checkpoint:
        model = tavt_kit.load_checkpoint(args.checkpoint).eval()
    else:
        model = tavt_kit.create_model("fgvc_tiny", num_classes=10, scorer=args.scorer, **MODELS[args.model]).eval()
    pairs = draw_pairs(model, args)
    items = {(i, kind, p): (s, p) for i, pair in enumerate(pairs) for p in args.precisions
             for kind, s in zip(("unaligned", "aligned"), pair)}
    measured, den = time_beside_full(model, items, args)
    hits = _test_hits(model, pairs) if args.checkpoint else None
    rows = []
    for i, (s, a) in enumerate(pairs):
        row = {"unaligned": list(s.counts), "aligned": list(a.counts),
               "macs": count_macs(model, a).total() / count_macs(model, s).total(), "time": {}}
        for p in args.precisions:
            ru, ra = (paired_ratio(measured[(i, k, p)][0], den).ratio for k in ("unaligned", "aligned"))
            row["time"][p] = ra / ru
        if hits is not None:
            # per-image hits as "0101...": 3000 images in 3 kB, not 3000 JSON lines
            row["hits"] = {"unaligned": _bits(hits[2 * i]), "aligned": _bits(hits[2 * i + 1])}
        rows.append(row)
    return {"model": args.model, "checkpoint": args.checkpoint, "batch": args.batch, "threads": args.threads,
            "multiple": args.multiple, "bound": args.bound, "macs_range": args.macs, "full_ms": 1e3 * den.p50,
            "rows": rows}


def _test_hits(model, pairs) -> list:
    """Per-image test hits of every schedule of ``pairs`` (unaligned, aligned, ...) on cluttered-digits."""
    import torch

    from tavt_kit.data import Normalize
    from tavt_kit.search.data import search_data
    from tavt_kit.search.evaluate import CandidateEvaluator

    test = search_data(model, None, log=lambda s: None).test
    ev = CandidateEvaluator(model, test.images, test.labels, 100, transform=Normalize.from_model(model))
    with torch.inference_mode():
        scores = ev.scores([s for pair in pairs for s in pair], per_image=True)
    return [h.tolist() for h in scores.hits]


def _bits(hits) -> str:
    return "".join("1" if h else "0" for h in hits)


def _hits(bits: str) -> list:
    return [c == "1" for c in bits]


def _mean_interval(values) -> str:
    m = statistics.mean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{m:.3f} [{m - half:.3f}, {m + half:.3f}]"


def report(doc: dict) -> str:
    from tavt_kit.stats import paired_difference

    rows, precisions = doc["rows"], sorted({p for r in doc["rows"] for p in r["time"]})
    lines = [f"{doc['model']}, batch {doc['batch']}, {doc['threads']} thread(s), your model {doc['full_ms']:.3f} ms "
             f"(fp32); {len(rows)} members of the bound-{doc['bound']} space at {doc['macs_range']} of its MACs, "
             f"each against its neighbour aligned down to sequence lengths that are multiples of {doc['multiple']}",
             "aligned over unaligned: MACs, then per precision time and time/MACs (below 1: faster than its MACs)"]
    for r in rows:
        acc = ""
        if "hits" in r:
            d = paired_difference(_hits(r["hits"]["aligned"]), _hits(r["hits"]["unaligned"]))
            acc = f"  test {100 * d['difference']:+.2f} [{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}]"
        lines.append(f"  {tuple(r['unaligned'])} -> {tuple(r['aligned'])}: MACs {r['macs']:.3f}" + "".join(
            f"  {p} {r['time'][p]:.3f} ({r['time'][p] / r['macs']:.3f})" for p in precisions) + acc)
    for p in precisions:
        ex = [r["time"][p] / r["macs"] for r in rows]
        lines.append(f"{p}: time/MACs mean {_mean_interval(ex)} (95 % over the pairs), below 1 in "
                     f"{sum(v < 1 for v in ex)} of {len(ex)}; time {_mean_interval([r['time'][p] for r in rows])}")
    lines.append(f"MACs: aligned over unaligned, mean {_mean_interval([r['macs'] for r in rows])}")
    if all("hits" in r for r in rows):
        a = [h for r in rows for h in _hits(r["hits"]["aligned"])]
        u = [h for r in rows for h in _hits(r["hits"]["unaligned"])]
        d = paired_difference(a, u)
        lines.append(f"test top-1, aligned minus unaligned, pooled over the pairs ({len(rows)} x "
                     f"{len(rows[0]['hits']['aligned'])} images): {100 * d['difference']:+.2f} points "
                     f"[{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=tuple(MODELS), default="c96p4w96")
    ap.add_argument("--scorer", default="tavt-sampled")
    ap.add_argument("--checkpoint", help="a supernet of --model's shape: its test accuracy at each schedule too")
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--macs", default="0.2:0.55", help="the members' MACs as a share of the full model, LOW:HIGH")
    ap.add_argument("--bound", type=float, default=0.7)
    ap.add_argument("--multiple", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    add_run_arguments(ap)
    return measure_or_report(ap.parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
