"""FGVC heads under patch drop: MACs and CPU latency per head, full vs a dropped schedule.

    python benchmarks/bench_heads.py [--model vit_small_patch16_224] [--img-size 224] [--batch 8]
                                     [--repeats 7] [--threads N]

Random weights, torch eager, CPU, eval mode (what a deployment runs). Heads:
linear (timm's class-token classifier), FFVT (num_token 12), Mix-ViT (its
branch is training-only, so inference is the backbone), PIM (last four blocks
tapped, 32 tokens selected per block, FPN width 512). Schedules: full and an
EViT-style keep 0.7 after blocks 3, 6, 9. Latency is the median of repeated
runs measured round-robin (drift of a shared machine hits every entry alike);
"spread" is (max - min) / median. MACs are per image (fgvc-kit's analytic
count, which agrees with fvcore); "head GMACs" are the head's own parts
(classifier; FFVT: + MAWS scoring; PIM: FPN + per-token classifiers +
combiner, no classifier of the backbone); FFVT's fusion block is counted with
the blocks (it is the backbone's last block, run on 1 + 11 x 12 tokens), so
"vs linear" (total MACs relative to the linear head at the same schedule)
shows the whole effect of a head.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import tavt_kit
from tavt_kit import TokenSchedule

HEADS = {
    "linear": {},
    "ffvt": {"num_token": 12},
    "mixvit": {"mask_topk": 0.05},
    "pim": {"num_selects": 32, "fpn_size": 512},
}


def time_round_robin(fns: dict, repeats: int, warmup: int = 1) -> dict:
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for f in fns.values():
                f()
        for _ in range(repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), (max(v) - min(v)) / statistics.median(v)) for k, v in times.items()}


def head_macs(count) -> int:
    """MACs of the head's own parts."""
    parts = count.by_part()
    return sum(parts.get(p, 0) for p in ("maws", "fpn", "combiner", "head"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = {h: tavt_kit.create_model(args.model, img_size=args.img_size, num_classes=args.classes, head=h,
                                       **kw).eval() for h, kw in HEADS.items()}
    ref = models["linear"]
    L, Np = ref.depth, ref.num_patches
    schedules = {"full": ref.full_schedule(),
                 "keep 0.7@3,6,9": TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, L, Np)}
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    print(f"{args.model} at {args.img_size} ({Np} patches, {L} blocks), {args.classes} classes, batch {args.batch}, "
          f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    for name, s in schedules.items():
        print(f"  schedule {name}: {list(s.counts)}")

    fns = {}
    for h, m in models.items():
        for sname, s in schedules.items():
            fns[(h, sname)] = (lambda m=m, s=s: m(x, drop=s))
    timing = time_round_robin(fns, args.repeats)

    print()
    print(f"{'head':<8} {'schedule':<15} {'GMACs':>8} {'head GMACs':>11} {'vs linear':>10} "
          f"{'ms/batch':>9} {'spread':>7} {'MAC red.':>9} {'speed-up':>9}")
    for h, m in models.items():
        full_macs = tavt_kit.count_macs(m, schedules["full"]).total()
        full_ms = timing[(h, "full")][0]
        for sname, s in schedules.items():
            count = tavt_kit.count_macs(m, s)
            lin = tavt_kit.count_macs(ref, s).total()
            ms, spread = timing[(h, sname)]
            print(f"{h:<8} {sname:<15} {count.total() / 1e9:>8.3f} {head_macs(count) / 1e9:>11.4f} "
                  f"{count.total() / lin:>9.3f}x {1e3 * ms:>9.1f} {100 * spread:>6.1f}% "
                  f"{full_macs / count.total():>8.2f}x {full_ms / ms:>8.2f}x")


if __name__ == "__main__":
    main()
