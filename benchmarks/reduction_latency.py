"""Where does token reduction turn into latency on the deployed runtime?  Realised speed-up per model size.

    python benchmarks/reduction_latency.py [--configs tiny64,p4w96,p4w192,c128w192] [--reductions 2,4]
                                           [--batches 1,32] [--precisions fp32,int8] [--budget-s 1.5]

For each model configuration (random weights: latency does not depend on them), the full model and
schedules at 2x and 4x fewer MACs (TAVT's patch drop, the same keep ratio at every block, fitted to the MAC
count; and ToMe's merge at the same MACs) are exported, deployed with OpenVINO on this CPU (int8: quantised
with NNCF) and timed **round-robin in one process** per (batch, precision), so every ratio compares figures
taken side by side. Realised speed-up = (latency of the full model / latency of the schedule) / (MAC
reduction): 1.0 means every MAC saved is time saved.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runs from a checkout too
from tavt_kit.models.token_drop import SCORERS  # noqa: E402

CONFIGS = {  # name -> (create_model overrides of fgvc_tiny, what it is)
    "tiny64": (dict(), "the demo's model: 64 px, patch 8 (64 tokens), width 96, 6 blocks"),
    "p4w96": (dict(patch_size=4), "64 px, patch 4 (256 tokens), width 96, 6 blocks"),
    "p4w192": (dict(patch_size=4, embed_dim=192, num_heads=3), "64 px, patch 4 (256 tokens), width 192, 6 blocks"),
    "c128w192": (dict(img_size=128, embed_dim=192, num_heads=3), "128 px, patch 8 (256 tokens), width 192, 6 blocks"),
    "p4w384": (dict(patch_size=4, embed_dim=384, num_heads=6), "64 px, patch 4 (256 tokens), width 384, 6 blocks"),
    "p2w96": (dict(patch_size=2), "64 px, patch 2 (1024 tokens), width 96, 6 blocks"),
    "c96p4w96": (dict(img_size=96, patch_size=4), "96 px, patch 4 (576 tokens), width 96, 6 blocks"),
}


def schedules_for(model, reductions):
    """{name: (schedule, MACs)}: the full model, uniform drop and ToMe at each MAC reduction."""
    import tavt_kit
    from tavt_kit.schedules import uniform_schedule
    from tavt_kit.search.baselines import fit_ratio, fit_tome

    def macs(s):
        return tavt_kit.count_macs(model, s).total()

    full = model.full_schedule()
    out = {"full": (full, macs(full))}
    for r in reductions:
        limit = macs(full) / r
        drop = fit_ratio(lambda k: uniform_schedule(k, model.depth, model.num_patches), macs, limit)
        if drop is not None:
            out[f"drop {r:g}x"] = (drop, macs(drop))
        tome = fit_tome(model.depth, model.num_patches, macs, limit)
        if tome is not None:
            out[f"tome {r:g}x"] = (tome, macs(tome))
    return out


def measure_config(name, reductions, batches, precisions, budget_s, threads, scorer="tavt"):
    import tavt_kit
    from tavt_kit.bench import TimingPolicy, measure_schedules

    overrides, _ = CONFIGS[name]
    model = tavt_kit.create_model("fgvc_tiny", num_classes=10, scorer=scorer, **overrides).eval()
    scheds = schedules_for(model, reductions)
    rows = {}
    for batch in batches:
        target = tavt_kit.DeploymentTarget("openvino", "cpu", "fp32", threads, batch)
        items = {(k, p): (s, p) for k, (s, _) in scheds.items() for p in precisions}
        got = measure_schedules(model, items, target=target,
                                policy=TimingPolicy(warmup=3, min_repeats=7, budget_s=budget_s))
        for (k, p), (stats, _) in got.items():
            rows[(batch, p, k)] = 1e3 * stats.p50
    return model, scheds, rows


def report(name, model, scheds, rows, batches, precisions) -> list:
    full_macs = scheds["full"][1]
    lines = [f"\n{name}: {CONFIGS[name][1]}; full model {full_macs / 1e6:.1f}M MACs per image"]
    lines.append(f"  {'schedule':<10}{'MACs':>8}" + "".join(f"{f'b{b} {p} ms (realised)':>28}" for b in batches
                                                       for p in precisions))
    for k, (s, m) in scheds.items():
        cells = []
        for b in batches:
            for p in precisions:
                ms, ref = rows[(b, p, k)], rows[(b, p, "full")]
                realised = (ref / ms) / (full_macs / m)
                cells.append(f"{ms:>14.3f} ({realised:>5.2f})     " if k != "full" else f"{ms:>14.3f}              ")
        lines.append(f"  {k:<10}{full_macs / m:>7.2f}x" + "".join(cells))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--reductions", default="2,4")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--budget-s", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--scorer", choices=SCORERS, default="tavt",
                    help="the drop scorer (tavt needs the explicit attention matrix; cls keeps the fused attention)")
    args = ap.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        ap.error(f"--configs {','.join(unknown)}: expected names among {', '.join(CONFIGS)}")
    reductions = [float(x) for x in args.reductions.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    precisions = args.precisions.split(",")
    lines = [f"scorer {args.scorer}; OpenVINO on this CPU, median latency per batch; (realised) = speed-up over the "
             "full model at the same batch and precision / MAC reduction"]
    for name in args.configs.split(","):
        model, scheds, rows = measure_config(name, reductions, batches, precisions, args.budget_s, args.threads,
                                             args.scorer)
        lines += report(name, model, scheds, rows, batches, precisions)
        print("\n".join(lines[-len(scheds) - 2:]), flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
