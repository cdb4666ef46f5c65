"""TorchScript vs dynamo ONNX export: time to export, agreement of the graphs, and their OpenVINO latency.

Why: ``export_onnx(exporter="auto")`` tries TorchScript first. A search exports a model for every int8
candidate it verifies and every part of a latency table, so export time is search time; this prints what
the order costs and that it changes nothing a user measures.

For each schedule (the full model, a ToMe-like merge schedule, a drop schedule) and each exporter:
seconds to export (median of ``--repeats``), ONNX Runtime's max logit difference to PyTorch and to the other
exporter's graph, and OpenVINO latency at fp32 and int8 (NNCF), all files timed round-robin in one process
(ratios measured in one run are the figures to trust).

    python benchmarks/exporter_benchmark.py                     # the latency reference's 256-token model
    python benchmarks/exporter_benchmark.py --checkpoint M.safetensors --batch 32 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


#: the latency reference's model (benchmarks/latency_reference.py): 256 tokens, width 96, 6 blocks
MODEL = dict(img_size=64, patch_size=4, embed_dim=96, depth=6, num_heads=3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a model file (default: the latency reference's model, random weights)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="exports per exporter and schedule (median)")
    ap.add_argument("--budget-s", type=float, default=10.0, help="timing budget per file")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import tavt_kit
    from tavt_kit.bench.measure import measure_files
    from tavt_kit.bench.timing import TimingPolicy
    from tavt_kit.export.onnx import export_onnx, ort_session
    from tavt_kit.export.openvino import convert_openvino
    from tavt_kit.export.quantize import quantize_openvino
    from tavt_kit.target import DeploymentTarget

    torch.manual_seed(0)
    model = (tavt_kit.load_checkpoint(args.checkpoint) if args.checkpoint
             else tavt_kit.create_model("fgvc_tiny", num_classes=10, **MODEL)).eval()
    from tavt_kit.models.factory import geometry

    geo = geometry(model)
    n, depth, size = int(geo["num_patches"]), int(geo["depth"]), tuple(geo["img_size"])
    from tavt_kit import TokenSchedule

    tome = [max(1, round(n * f)) for f in (0.78, 0.62, 0.5, 0.39, 0.31, 0.25, 0.2, 0.16, 0.13, 0.1, 0.08, 0.06)]
    scheds = {"full": None,  # ToMe-like: bipartite merging in every block (sort, gather, scatter_add in the graph)
              "merge": TokenSchedule(tome[:depth], n, reducers=("merge",) * depth),
              "drop 0.7": TokenSchedule([max(1, round(n * 0.7 ** (i + 1))) for i in range(depth)], n,
                                        reducers=("drop",) * depth)}
    x = torch.rand(4, 3, *size)
    calib = torch.rand(64, 3, *size)
    work = tempfile.mkdtemp(prefix="exporters-")
    files, rows = {}, []
    for name, sched in scheds.items():
        logits = {}
        for ex in ("torchscript", "dynamo"):
            secs = []
            for r in range(args.repeats):
                t = time.perf_counter()
                res = export_onnx(model, os.path.join(work, f"{name}-{ex}-{r}.onnx"), sched, exporter=ex, verify=False)
                secs.append(time.perf_counter() - t)
            sess = ort_session(res.path)
            logits[ex] = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            before = model.schedule
            with torch.no_grad():
                model.schedule = sched
                ref = model(x).numpy()
            model.schedule = before
            files[(name, ex, "fp32")] = convert_openvino(res.path, os.path.join(work, f"{name}-{ex}.xml"),
                                                         verify=False).xml_path
            files[(name, ex, "int8")] = quantize_openvino(res.path, os.path.join(work, f"{name}-{ex}.int8.xml"),
                                                          calib).path
            rows.append((name, ex, statistics.median(secs), float(np.abs(logits[ex] - ref).max())))
            print(f"exported {name} with {ex}: {statistics.median(secs):.2f} s", flush=True)
        rows.append((name, "ts vs dynamo", None, float(np.abs(logits["torchscript"] - logits["dynamo"]).max())))
    targets = {p: DeploymentTarget(backend="openvino", threads=args.threads, batch_size=args.batch, precision=p)
               for p in ("fp32", "int8")}
    timed = measure_files({k: (v, targets[k[2]]) for k, v in files.items()}, size,
                          policy=TimingPolicy(budget_s=args.budget_s), progress=lambda s: print(s, flush=True))
    med = {k: st.p50 * 1e3 for k, (st, _) in timed.items()}

    print(f"\nexport time and agreement ({type(model).__name__}, {n} tokens, torch {torch.__version__})")
    print(f"{'schedule':<12} {'exporter':<14} {'export s':>9} {'max |logit diff|':>17}")
    for name, ex, s, d in rows:
        print(f"{name:<12} {ex:<14} {'' if s is None else f'{s:.2f}':>9} {d:>17.2e}")
    print(f"\nOpenVINO latency, batch {args.batch}, {args.threads} thread(s), round-robin in one process (ms per batch)")
    print(f"{'schedule':<12} {'precision':<9} {'torchscript':>12} {'dynamo':>9} {'ratio ts/dyn':>13}")
    for name in scheds:
        for p in ("fp32", "int8"):
            a, b = med[(name, "torchscript", p)], med[(name, "dynamo", p)]
            print(f"{name:<12} {p:<9} {a:>12.2f} {b:>9.2f} {a / b:>13.3f}")
    speed = [b / a for (n1, e1, a, _), (n2, e2, b, _) in zip(rows[0::3], rows[1::3])]
    print(f"\nexport speed-up of TorchScript over dynamo: {min(speed):.1f}x to {max(speed):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
