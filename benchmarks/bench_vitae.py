"""Patch drop on ViTAE: MACs against measured latency (CPU, torch eager).

ViTAE_basic_Small at 448x448 (784 tokens in its 14 normal cells), random
weights. For the full schedule and two dropped ones it prints MACs (analytic,
fvcore's conventions), the median latency over repeated runs at batch 1 and 8,
and the ratios to the full model. It also prints the share of the full model's
MACs that patch drop can reach at all -- attention, MLP and norms of the normal
cells, the work that scales with the token count -- as opposed to the reduction
cells and every normal cell's convolution branch, which always run on the whole
grid; and how much of each schedule's MAC saving the latency realises.

    python benchmarks/bench_vitae.py [--model ViTAE_basic_Small] [--img-size 448]
                                     [--batches 1 8] [--repeats 7] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tavt_kit  # noqa: E402
from tavt_kit import TokenSchedule  # noqa: E402


def schedules(model) -> dict:
    d, n = model.depth, model.num_patches
    return {
        "full": model.full_schedule(),
        # EViT's recipe: keep 70 % of the tokens at three evenly spaced cells
        "keep 0.7 @ cells 3,6,9": TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, d, n),
        # TAVT's smallest sub-network shape: drop 20 % of the tokens after every cell but the first
        "keep 0.8 per cell": TokenSchedule.from_ratios([1.0] + [0.8] * (d - 1), d, n),
    }


def droppable_share(macs, model) -> float:
    """MACs of the drop stage's normal cells that scale with tokens (all but their conv branch) / total."""
    prefix = f"layers.{model.drop_stage}.NC."
    reach = sum(m for mod, part, m in macs.rows if mod.startswith(prefix) and part != "conv")
    return reach / macs.total()


@torch.inference_mode()
def latencies(model, scheds: dict, batch: int, repeats: int, warmup: int = 2) -> dict:
    """Median seconds per forward; schedules interleaved within each round so drift hits all alike."""
    size = model.img_size
    x = torch.randn(batch, 3, size[0], size[1])
    for sched in scheds.values():
        for _ in range(warmup):
            model(x, drop=sched)
    times = {name: [] for name in scheds}
    for _ in range(repeats):
        for name, sched in scheds.items():
            t0 = time.perf_counter()
            model(x, drop=sched)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViTAE_basic_Small")
    ap.add_argument("--img-size", type=int, default=448)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = tavt_kit.create_model(args.model, img_size=args.img_size).eval()
    scheds = schedules(model)

    print(f"{args.model} @ {args.img_size}: {model.depth} normal cells on a {model.grid_size[0]}x"
          f"{model.grid_size[1]} grid ({model.num_patches} tokens), random weights")
    print(f"torch {torch.__version__.split('+')[0]} eager, CPU {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} runs after 2 warm-up runs")
    print(f"load average at start (1/5/15 min): {_load()}  (other processes on the CPU inflate latency)")
    macs = {name: tavt_kit.count_macs(model, s) for name, s in scheds.items()}
    full = macs["full"]
    share = droppable_share(full, model)
    print()
    print("full model, GMACs by part:", ", ".join(f"{p} {m / 1e9:.2f}" for p, m in full.by_part().items()))
    print(f"share patch drop can reach (normal cells' attention + MLP + norms): {100 * share:.1f} % of "
          f"{full.gmacs:.2f} GMACs; the rest (reduction cells {100 * _rc_share(full):.1f} %, normal cells' conv "
          f"branch {100 * _nc_conv_share(full):.1f} %, head) runs at full size whatever the schedule")
    for name, s in scheds.items():
        if name != "full":
            print(f"  {name}: {list(s.counts)}")

    for batch in args.batches:
        lat = latencies(model, scheds, batch, args.repeats)
        print()
        print(f"batch {batch}")
        print(f"  {'schedule':<24}{'GMACs/img':>10}{'MAC ratio':>11}{'ms/batch':>10}{'lat ratio':>11}"
              f"{'MAC saving':>12}{'lat saving':>12}{'realised':>10}")
        for name in scheds:
            mr = macs[name].total() / full.total()
            lr = lat[name] / lat["full"]
            realised = (1 - lr) / (1 - mr) if mr < 1 else float("nan")
            print(f"  {name:<24}{macs[name].gmacs:>10.2f}{mr:>11.3f}{1000 * lat[name]:>10.1f}{lr:>11.3f}"
                  f"{100 * (1 - mr):>11.1f}%{100 * (1 - lr):>11.1f}%"
                  + (f"{100 * realised:>9.0f}%" if mr < 1 else f"{'-':>10}"))
    print()
    print(f"load average at end: {_load()}")
    print("realised = latency saving / MAC saving. The MAC saving is bounded by the reachable share above.")


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _rc_share(macs) -> float:
    return sum(m for mod, _, m in macs.rows if ".RC" in mod) / macs.total()


def _nc_conv_share(macs) -> float:
    return sum(m for mod, part, m in macs.rows if ".NC." in mod and part == "conv") / macs.total()


if __name__ == "__main__":
    main()
