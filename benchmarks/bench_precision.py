"""What each precision buys on this CPU: ViT-B/16 at 448, OpenVINO f32 / bf16 / int8 at three schedules, one run.

    python benchmarks/bench_precision.py [--img-size 448] [--batch 1] [--threads N] [--repeats 5]
                                         [--out docs/benchmarks/precision_benchmark.md]

``vit_base_patch16_224`` at ``--img-size`` (448: 784 patch tokens, 12 blocks;
random weights — latency does not depend on them) at the full schedule,
EViT's 0.7 keep rate at blocks 3, 6 and 9 and TAVT's 0.8 per block. Each
schedule is exported once with the project's ONNX exporter and converted to
OpenVINO IR (f32 weights); the same IR is compiled with the f32 and the bf16
inference hints (bf16 only where OpenVINO reports BF16), and an int8 copy is
made with NNCF (transformer model type, calibrated on random inputs: only the
time is measured here; accuracy with real calibration is
``benchmarks/precision_search_benchmark.py``'s). All of them are timed
round-robin in one process (``tavt_kit.bench.timing.measure_round_robin``), so
a machine whose speed drifts slows them alike. Printed per row: median and
fastest ms, the speed-up over f32 at the full schedule, the schedule's MAC
reduction and ``realised`` = speed-up over the same precision's full model /
MAC reduction (the fraction of the MAC reduction realised as speed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tavt_kit  # noqa: E402
from tavt_kit.bench.backends import openvino_runner, quantized_for_latency  # noqa: E402
from tavt_kit.bench.runners import ModelRunners, make_input  # noqa: E402
from tavt_kit.bench.timing import TimingPolicy, measure_round_robin  # noqa: E402
from tavt_kit.models import count_macs  # noqa: E402
from tavt_kit.schedules import evit_schedule, uniform_schedule  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="OpenVINO threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each model at least")
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed runs per model at most")
    p.add_argument("--out", default=os.path.join("docs", "benchmarks", "precision_benchmark.md"))
    args = p.parse_args(argv)
    from tavt_kit.export.openvino import device_capabilities

    torch.manual_seed(0)
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=200, img_size=args.img_size).eval()
    depth, n = model.depth, model.num_patches
    scheds = {"full": model.full_schedule(), "EViT 0.7 @3,6,9": evit_schedule(0.7, depth, n),
              "TAVT 0.8/block": uniform_schedule(0.8, depth, n)}
    macs = {k: count_macs(model, s).total() for k, s in scheds.items()}
    precisions = ["f32"] + (["bf16"] if "BF16" in device_capabilities() else [])
    try:
        import nncf  # noqa: F401

        precisions.append("int8")
    except ImportError:
        print("nncf is not installed: no int8 rows (pip install nncf)")
    x = make_input(args.batch, (args.img_size, args.img_size), 0)
    print(f"ViT-B/16 at {args.img_size}: {n} patch tokens, {depth} blocks; batch {args.batch}, {args.threads} "
          f"threads; precisions {', '.join(precisions)}; CPU reports {', '.join(device_capabilities())}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench-precision-")
    builder = ModelRunners(model, "openvino", "cpu", args.threads, workdir=tmp.name, verify_exports=False,
                           progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    runners = {}
    t0 = time.perf_counter()
    for label, s in scheds.items():
        xml = builder.exported_file(s)
        for prec in precisions:
            path = xml
            if prec == "int8":
                print(f"  quantising {label} (NNCF)", file=sys.stderr, flush=True)
                path = quantized_for_latency(xml, xml[:-4] + ".int8.xml", list(x.shape))
            runners[(prec, label)] = openvino_runner(path, x.numpy(), args.threads, prec)
    prep = time.perf_counter() - t0
    policy = TimingPolicy(warmup=2, warmup_s=0.0, min_repeats=args.repeats, max_repeats=max(args.repeats, 100),
                          budget_s=args.budget, rel_ci=0.01, chunk_s=0.0)
    t0 = time.perf_counter()
    stats = measure_round_robin({k: r.fn for k, r in runners.items()}, policy)
    timed = time.perf_counter() - t0
    base = stats[("f32", "full")].p50
    rows = []
    for (prec, label), st in stats.items():
        own = stats[(prec, "full")].p50
        red = macs["full"] / macs[label]
        rows.append({"precision": prec, "schedule": label, "counts": list(scheds[label].counts),
                     "used": runners[(prec, label)].info.get("precision_used"), "ms": 1e3 * st.p50,
                     "min_ms": 1e3 * min(st.samples), "repeats": st.n, "speedup_vs_f32_full": base / st.p50,
                     "gmacs": macs[label] / 1e9, "mac_reduction": red,
                     "realised": (own / st.p50) / red if label != "full" else None})
    lines = [f"# Precision × schedule on this CPU: ViT-B/16 at {args.img_size}, OpenVINO, batch {args.batch}", "",
             f"{args.threads} threads; all {len(rows)} models timed round-robin in one run "
             f"({prep:.0f} s to export/quantise, {timed:.0f} s timing). `realised` = speed-up over the same "
             "precision's full model / MAC reduction.", "",
             "| precision (used) | schedule | GMACs | MAC red. | ms (median) | ms (min) | vs f32 full | realised | n |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['precision']} ({r['used']}) | {r['schedule']} | {r['gmacs']:.1f} | "
                     f"{r['mac_reduction']:.2f}x | {r['ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['speedup_vs_f32_full']:.2f}x | "
                     f"{'' if r['realised'] is None else format(r['realised'], '.2f')} | {r['repeats']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"rows": rows, "threads": args.threads, "batch": args.batch, "img_size": args.img_size}, f,
                      indent=1)
    builder.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
