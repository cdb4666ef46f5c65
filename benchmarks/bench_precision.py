"""What each precision buys on this CPU: ViT-B/16 at 448, OpenVINO f32 / bf16 / int8 at three schedules, one run.

    python benchmarks/bench_precision.py [--img-size 448] [--batch 1] [--threads N] [--repeats 5] [--budget 6]
                                         [--out docs/benchmarks/precision_benchmark.md] [--quick]

``vit_base_patch16_224`` at ``--img-size`` (448: 784 patch tokens, 12 blocks;
random weights — latency does not depend on them) at the full schedule,
EViT's 0.7 keep rate at blocks 3, 6 and 9 and TAVT's 0.8 per block. Each
schedule is exported once with the project's ONNX exporter and converted to
OpenVINO IR (f32 weights); the same IR is compiled with the f32 and the bf16
inference hints (bf16 only where OpenVINO reports BF16), and an int8 copy is
made with NNCF (transformer model type, calibrated on seeded random inputs:
only the time is measured here — ``"calibration": "random inputs (latency
only)"`` in the JSON; accuracy with real calibration is
``benchmarks/precision_search_benchmark.py``'s) and compiled with the f32 hint
(int8 kernels where quantised), as ``fgvc-kit bench --precision int8`` does.
All of them are timed round-robin in one process
(``tavt_kit.bench.timing.measure_round_robin``, the bench layer's timing), so
a machine whose speed drifts slows them alike. Printed per row: median and
fastest ms, the speed-up over f32 at the full schedule and over the same
precision's full model, the schedule's MAC reduction and ``realised`` =
speed-up over the same precision's full model / MAC reduction (the fraction of
the MAC reduction realised as speed). The table is written as markdown to
``--out`` and as JSON beside it (same name, ``.json``).

``--quick`` checks the script: one warm-up, 3 timed runs, a 1 s budget per
model, and nothing written unless ``--out`` is given (``--img-size 224
--quick`` took 2 minutes on 2 shared cores, most of it exporting and
quantising). The full run at 448 (three ViT-B/16 exports and NNCF
quantisations, nine models timed for at least ``--repeats`` runs and at most
``--budget`` seconds each) took about 3 minutes on 2 shared cores (105 s
exporting and quantising, 60 s timing).
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
from tavt_kit.target import DeploymentTarget  # noqa: E402
from tavt_kit.bench.timing import TimingPolicy, measure_round_robin  # noqa: E402
from tavt_kit.machine import machine_info  # noqa: E402
from tavt_kit.models import count_macs  # noqa: E402
from tavt_kit.schedules import evit_schedule, uniform_schedule  # noqa: E402


def _all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=448)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=_all_cores(), help="OpenVINO threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each model at least")
    p.add_argument("--budget", type=float, default=6.0, help="seconds of timed runs per model at most")
    p.add_argument("--out", default=None, help="markdown table (JSON beside it); default "
                                               "docs/benchmarks/precision_benchmark.md, none with --quick")
    p.add_argument("--quick", action="store_true",
                   help="a check of the script: 1 warm-up, 3 runs, 1 s per model, no file unless --out")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = "" if args.quick else os.path.join("docs", "benchmarks", "precision_benchmark.md")
    if args.quick:
        args.repeats, args.budget = min(args.repeats, 3), min(args.budget, 1.0)
    from tavt_kit.errors import BackendError
    from tavt_kit.export.openvino import device_capabilities
    from tavt_kit.export.quantize import require_nncf

    start = time.perf_counter()
    torch.manual_seed(0)
    model = tavt_kit.create_model("vit_base_patch16_224", num_classes=200, img_size=args.img_size).eval()
    depth, n = model.depth, model.num_patches
    scheds = {"full": model.full_schedule(), "EViT 0.7 @3,6,9": evit_schedule(0.7, depth, n),
              "TAVT 0.8/block": uniform_schedule(0.8, depth, n)}
    macs = {k: count_macs(model, s).total() for k, s in scheds.items()}
    precisions = ["fp32"] + (["bf16"] if "BF16" in device_capabilities() else [])
    try:
        require_nncf()
        precisions.append("int8")
    except BackendError as e:
        print(f"no int8 rows: {e}")
    x = make_input(args.batch, (args.img_size, args.img_size), 0)
    print(f"ViT-B/16 at {args.img_size}: {n} patch tokens, {depth} blocks; batch {args.batch}, {args.threads} "
          f"threads; precisions {', '.join(precisions)}; CPU reports {', '.join(device_capabilities())}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="bench-precision-")
    builder = ModelRunners(model, DeploymentTarget(backend="openvino", threads=args.threads, batch_size=args.batch),
                           workdir=tmp.name, verify_exports=False,
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
    policy = TimingPolicy(warmup=1 if args.quick else 2, warmup_s=0.0, min_repeats=args.repeats,
                          max_repeats=max(args.repeats, 100), budget_s=args.budget, rel_ci=0.01, chunk_s=0.0)
    t0 = time.perf_counter()
    stats = measure_round_robin({k: r.fn for k, r in runners.items()}, policy)
    timed = time.perf_counter() - t0
    base = stats[("fp32", "full")].p50
    rows = []
    for prec in precisions:  # precision by precision, the schedules in their order
        own = stats[(prec, "full")].p50
        for label in scheds:
            st = stats[(prec, label)]
            red = macs["full"] / macs[label]
            rows.append({"precision": prec, "schedule": label, "counts": list(scheds[label].counts),
                         "used": runners[(prec, label)].info.get("precision_used"), "ms": 1e3 * st.p50,
                         "min_ms": 1e3 * min(st.samples), "repeats": st.n, "ci95_rel": st.ci95_rel,
                         "speedup_vs_f32_full": base / st.p50, "speedup_vs_own_full": own / st.p50,
                         "gmacs": macs[label] / 1e9, "mac_reduction": red,
                         "realised": (own / st.p50) / red if label != "full" else None})
    total = time.perf_counter() - start
    lines = [f"# Precision × schedule on this CPU: ViT-B/16 at {args.img_size}, OpenVINO, batch {args.batch}", "",
             f"{args.threads} threads; CPU reports {', '.join(device_capabilities())}; all {len(rows)} models timed "
             f"round-robin in one run ({prep:.0f} s to export/quantise, {timed:.0f} s timing, {total:.0f} s in all"
             f"{'; --quick' if args.quick else ''}). int8: NNCF PTQ calibrated on random inputs (latency only), "
             "f32 hint. `realised` = speed-up over the same precision's full model / MAC reduction.", "",
             "| precision (used) | schedule | GMACs | MAC red. | ms (median) | ms (min) | vs fp32 full | vs own full "
             "| realised | n |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['precision']} ({r['used']}) | {r['schedule']} | {r['gmacs']:.1f} | "
                     f"{r['mac_reduction']:.2f}x | {r['ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['speedup_vs_f32_full']:.2f}x | {r['speedup_vs_own_full']:.2f}x | "
                     f"{'' if r['realised'] is None else format(r['realised'], '.2f')} | {r['repeats']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        info = {"model": "vit_base_patch16_224 (random weights)", "img_size": args.img_size, "batch": args.batch,
                "backend": "openvino", "threads": args.threads, "capabilities": list(device_capabilities()),
                "int8": {"quantized_with": "NNCF PTQ (transformer)", "calibration": "random inputs (latency only)",
                         "compiled_with": "the f32 inference hint"},
                "policy": policy.to_dict(), "quick": args.quick, "seconds": {"prepare": prep, "timing": timed,
                                                                             "total": total},
                "machine": machine_info("cpu", args.threads), "rows": rows}
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(info, f, indent=1)
    builder.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
