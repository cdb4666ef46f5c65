"""Does token merging realise its MAC reduction as speed? Merge vs drop at the same counts, torch eager and OpenVINO.

    python benchmarks/bench_merge_speed.py [--batches 1,8] [--batch8-schedules 2.0] [--backends torch,openvino]
                                           [--reductions 1.5,2.0,2.4] [--repeats 3] [--threads N] [--out FILE]

ViT-B/16 at 448x448 (``vit_base_patch16_224`` with ``img_size=448``: 784 patch
tokens, 12 blocks; random weights, latency does not depend on them). For each
MAC reduction asked for (default about 1.5x, 2x and 2.4x fewer MACs) a
ToMe-style constant ``r`` is fitted: ``counts[i] = 784 - r * (i + 1)`` (ToMe's
clamp where a block would merge more than half of its tokens: r > 60 at 784
tokens and 12 blocks, needed for ~2.4x), and the
same counts are timed with every reducing block merging (ToMe, proportional
attention on) and with every reducing block dropping (TAVT scorer), beside the
full model, round-robin per batch size and backend (the project's runners:
``tavt_kit.bench.runners.ModelRunners``; OpenVINO runs the project's own
ONNX export converted to IR, f32). Printed per row: MACs reduction, speed-up
over the full model, and ``realised`` = speed-up / MAC reduction (the fraction
of the MAC reduction realised as speed; the issue's goal for merge is >= 0.85),
plus the merge/drop latency ratio at the same counts. The cost of matching is
also timed alone: bipartite matching + size-weighted merge of block 0 (785 ->
785 - r tokens) in torch, against the whole merge model.

Batch 8 at 448 is heavy on a small CPU: by default only the ~2x schedule is
timed at batch 8 (``--batch8-schedules``). The repeat policy is small
(``--repeats`` timed runs after one warm-up, time-boxed), so figures carry a
few percent of noise on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tavt_kit  # noqa: E402
from tavt_kit import TokenSchedule  # noqa: E402
from tavt_kit.bench.runners import ModelRunners, make_input, torch_threads  # noqa: E402
from tavt_kit.target import DeploymentTarget  # noqa: E402
from tavt_kit.bench.timing import TimingPolicy, measure_round_robin  # noqa: E402
from tavt_kit.models import count_macs  # noqa: E402


def tome_counts(r: int, depth: int, n: int):
    """``counts[i] = n - r * (i + 1)``, with ToMe's clamp: a block merges at most half of its tokens."""
    out, prev = [], n
    for _ in range(depth):
        prev -= min(r, prev // 2)
        out.append(prev)
    return tuple(out)


def fit_r(model, reduction: float) -> int:
    """The constant r whose drop-MAC reduction is closest to ``reduction``."""
    depth, n = model.depth, model.num_patches
    full = count_macs(model, model.full_schedule()).total()
    best = None
    for r in range(1, n // 2 + 1):
        s = TokenSchedule(tome_counts(r, depth, n), n, reducers=("merge",) * depth)
        red = full / count_macs(model, s).total()
        if best is None or abs(red - reduction) < abs(best[1] - reduction):
            best = (r, red)
    return best[0]


def matching_ms(model, r: int, batch: int, repeats: int) -> float:
    """Milliseconds of block 0's bipartite matching + size-weighted merge (keys given), torch eager."""
    from tavt_kit.models.token_merge import match, merge_wavg

    L, C = model.num_patches + model.num_prefix_tokens, model.embed_dim
    x = torch.randn(batch, L, C)
    metric = torch.randn(batch, L, C // model.blocks[0].attn.num_heads)
    with torch.inference_mode():
        for _ in range(2):
            merge_wavg(match(metric, r, model.num_prefix_tokens), x, None)
        t = []
        for _ in range(max(5, repeats * 3)):
            t0 = time.perf_counter()
            merge_wavg(match(metric, r, model.num_prefix_tokens), x, None)
            t.append(time.perf_counter() - t0)
    return 1e3 * sorted(t)[len(t) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--batch8-schedules", default="2.0", help="reductions timed at batch > 1 ('all' for every one)")
    p.add_argument("--backends", default="torch,openvino")
    p.add_argument("--reductions", default="1.5,2.0,2.4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=4.0, help="seconds of timed runs per row at most (after min)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (default 1: on a shared 2-core machine, 2 torch threads spin against "
                        "other jobs and run several times slower)")
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=200, img_size=args.img_size).eval()
    depth, n = model.depth, model.num_patches
    full = model.full_schedule()
    macs_full = count_macs(model, full).total()
    reductions = [float(v) for v in args.reductions.split(",")]
    rs = {red: fit_r(model, red) for red in reductions}
    big = [float(v) for v in args.batch8_schedules.split(",")] if args.batch8_schedules != "all" else reductions
    policy = TimingPolicy(warmup=1, warmup_s=0.0, min_repeats=args.repeats, max_repeats=max(args.repeats, 50),
                          budget_s=args.budget, rel_ci=0.02, chunk_s=0.0)
    rows = []
    print(f"ViT-B/16 at {args.img_size}: {n} patch tokens, {depth} blocks, {macs_full / 1e9:.1f} GMACs; "
          f"{args.threads} threads; r per target reduction: {rs}", flush=True)
    for backend in args.backends.split(","):
        builder = ModelRunners(model, DeploymentTarget(backend=backend, threads=args.threads), verify_exports=False,
                               progress=lambda s: print(f"  [{backend}] {s}", file=sys.stderr, flush=True))
        try:
            for b in (int(v) for v in args.batches.split(",")):
                x = make_input(b, (args.img_size, args.img_size), 0)
                scheds = {"full": full}
                for red, r in rs.items():
                    if b > 1 and not any(abs(red - v) < 1e-9 for v in big):
                        continue
                    counts = tome_counts(r, depth, n)
                    scheds[f"merge r={r}"] = TokenSchedule(counts, n, reducers=("merge",) * depth)
                    scheds[f"drop r={r}"] = TokenSchedule(counts, n, reducers=("drop",) * depth)
                t0 = time.perf_counter()
                with torch_threads(args.threads):
                    runners = {k: builder.runner(s, x) for k, s in scheds.items()}
                    ctx = torch.inference_mode() if backend == "torch" else torch.no_grad()
                    with ctx:
                        stats = measure_round_robin({k: rr.fn for k, rr in runners.items()}, policy)
                base = stats["full"].p50
                for k, s in scheds.items():
                    macs = count_macs(model, s).total()
                    speed, mred = base / stats[k].p50, macs_full / macs
                    row = {"backend": backend, "batch": b, "label": k, "ms": 1e3 * stats[k].p50,
                           "repeats": stats[k].n, "gmacs": macs / 1e9, "mac_reduction": mred, "speedup": speed,
                           "realised": speed / mred if k != "full" else None,
                           "saved_fraction": (1 - stats[k].p50 / base) / (1 - macs / macs_full) if k != "full"
                           else None}
                    if k.startswith("merge"):
                        row["merge_over_drop"] = stats[k].p50 / stats[k.replace("merge", "drop")].p50
                    rows.append(row)
                print(f"  [{backend}] batch {b}: {len(scheds)} rows in {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr, flush=True)
                runners.clear()
        finally:
            builder.close()
    print()
    print(f"{'backend':<9} {'batch':>5} {'schedule':<11} {'GMACs':>6} {'MACs red.':>9} {'ms':>9} {'speed-up':>8} "
          f"{'realised':>8} {'saved':>6} {'merge/drop':>10} {'n':>3}")
    for r in rows:
        opt = lambda v, f: format(v, f) if v is not None else format("-", f[:-2].replace(".", "") or ">1")  # noqa
        print(f"{r['backend']:<9} {r['batch']:>5} {r['label']:<11} {r['gmacs']:>6.1f} {r['mac_reduction']:>8.2f}x "
              f"{r['ms']:>9.1f} {r['speedup']:>7.2f}x {opt(r['realised'], '>8.2f')} "
              f"{opt(r['saved_fraction'], '>6.2f')} {opt(r.get('merge_over_drop'), '>10.3f')} {r['repeats']:>3}")
    print()
    with torch_threads(args.threads):
        for red, r in rs.items():
            ms = matching_ms(model, r, 1, args.repeats)
            merge_ms = next((x["ms"] for x in rows if x["backend"] == "torch" and x["batch"] == 1
                             and x["label"] == f"merge r={r}"), None)
            share = f", x{depth} blocks ~ {100 * ms * depth / merge_ms:.1f}% of the merge model" if merge_ms else ""
            print(f"matching + merge of block 0 (r={r}, batch 1, torch): {ms:.2f} ms{share}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "r": rs, "threads": args.threads}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
