"""Patch drop on ViT-B/16 at 448: MAC reduction vs latency speed-up, and the cost of scoring.

    python benchmarks/bench_patch_drop.py [--batch 1 8] [--repeats 7] [--threads N]

Random weights, torch eager, CPU. Schedules: full; EViT/DynamicViT-style keep
0.7 at blocks 3, 6, 9; TAVT-style drop ratio 0.2 after every block (TAVT's
length rule, class token counted). Each schedule's latency is the median of
repeated runs, measured round-robin so that drift of a noisy machine hits all
schedules alike. "realised" = latency speed-up / MAC reduction (goal >= 0.9).

Then one block at the full 785 tokens: timm's own block vs the same block
with a scorer that computes scores and selects (keeping every token), i.e. the
overhead of scoring + top-k + gather.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

import tavt_kit
from tavt_kit import TokenSchedule
from tavt_kit.models.token_drop import TokenState, drop_block_forward


def tavt_lengths(num_tokens: int, depth: int, bound: float = 0.2):
    """TAVT's smallest length configuration: l_i = ceil(l_{i-1} * (1 - bound)), class token counted."""
    out, n = [], num_tokens
    for _ in range(depth):
        n = math.ceil(round(n * (1 - bound), 9))
        out.append(n)
    return out


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, default=448)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = tavt_kit.create_model(args.model, img_size=args.img_size, num_classes=200).eval()
    L, Np = model.depth, model.num_patches
    schedules = {
        "full": model.full_schedule(),
        "evit 0.7@3,6,9": TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, L, Np),
        "tavt 0.2/block": TokenSchedule.from_tavt_lengths(tavt_lengths(Np + 1, L), Np),
    }
    print(f"# {args.model} at {args.img_size}, {Np} patches, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    macs = {k: tavt_kit.count_macs(model, s).total() for k, s in schedules.items()}
    for k, s in schedules.items():
        print(f"{k:<16} {macs[k] / 1e9:7.2f} GMACs  counts {list(s.counts)}")

    for batch in args.batch:
        x = torch.randn(batch, 3, args.img_size, args.img_size)
        fns = {}
        for scorer in ("tavt", "cls"):
            for k, s in schedules.items():
                if k == "full" and scorer == "cls":
                    continue
                fns[(k, scorer)] = (lambda s=s, sc=scorer: (setattr(model, "scorer", sc), model(x, drop=s)))
        res = time_round_robin(fns, args.repeats)
        base = res[("full", "tavt")][0]
        print(f"\nbatch {batch}: schedule, scorer, latency p50, spread, MAC reduction, latency speed-up, realised")
        for (k, scorer), (med, spread) in res.items():
            mac_red = macs["full"] / macs[k]
            speed = base / med
            print(f"  {k:<16} {scorer:<5} {med * 1e3:9.1f} ms  ±{100 * spread:4.1f}%  {mac_red:5.2f}x  "
                  f"{speed:5.2f}x  {speed / mac_red:5.2f}")

    # cost of scoring one block at the full token count
    model.scorer = "tavt"
    blk = model.blocks[0]
    for batch in args.batch:
        x = torch.randn(batch, 1 + Np, model.embed_dim)

        def scored(sc):
            return drop_block_forward(blk, x, Np, TokenState(1, Np, False), sc, False)

        res = time_round_robin({"plain": lambda: blk(x), "cls": lambda: scored("cls"),
                                "tavt": lambda: scored("tavt")}, args.repeats * 3)
        plain = res["plain"][0]
        print(f"\nblock at {1 + Np} tokens, batch {batch}: timm block {plain * 1e3:.2f} ms; "
              f"cls scoring +{100 * (res['cls'][0] / plain - 1):.1f}%; "
              f"tavt scoring (explicit attention) +{100 * (res['tavt'][0] / plain - 1):.1f}%")


if __name__ == "__main__":
    main()
