"""Where a reduced schedule's time goes on OpenVINO: each node type's time per call, from OpenVINO's own
per-node profiling (``PERF_COUNT``), for the full model and for dropping and merging schedules.

    python benchmarks/node_profile.py [--checkpoint CKPT] [--scorer tavt|cls] [--batch 1] [--precision fp32]

The model: fgvc_tiny at 64 px with patch 4 (256 patch tokens, width 96; the latency half of the reference
benchmark; ``--config`` picks another of ``reduction_latency.py``), random weights unless ``--checkpoint``.
Schedules: full, and dropping and merging at about 2x and 4x fewer MACs (the same keep ratio at every block, as
``row_gather.py`` picks them), timed round-robin. Printed per schedule: the median wall time per call, its
realised speed-up, the median summed per-node time (which leaves out the call's own overhead), and the node types
that cost most, with their count in the graph and their median time per call. A node type a reduced schedule
adds (TopK, Gather, ScatterElementsUpdate) is time no MAC count sees.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reduction_latency import CONFIGS, SCORERS  # noqa: E402


def compiled_request(xml: str, x, threads: int):
    """An infer request of ``xml`` at ``x``'s static shape, compiled as fgvc-kit compiles files for timing
    (:func:`tavt_kit.export.openvino.compile_openvino`: the f32 hint, so an int8 file's quantised nodes run int8 and
    the rest f32), with OpenVINO's per-node profiling on."""
    import openvino as ov

    from tavt_kit.export.openvino import compile_openvino

    compiled, _ = compile_openvino(xml, "cpu", threads=threads, shape=list(x.shape), extra={"PERF_COUNT": "YES"})
    req = compiled.create_infer_request()
    req.set_input_tensor(ov.Tensor(x))
    for _ in range(10):
        req.infer()
    return req


def one_call(req):
    """(wall ms, {node type: ms}, {node type: executed nodes}) of one call."""
    t = time.perf_counter()
    req.infer()
    wall = (time.perf_counter() - t) * 1e3
    ms, count = collections.defaultdict(float), collections.Counter()
    for info in req.get_profiling_info():
        if info.status == info.Status.EXECUTED:
            ms[info.node_type] += info.real_time.total_seconds() * 1e3
            count[info.node_type] += 1
    return wall, ms, count


def medians(calls):
    """Median wall, median summed node time, and each node type's median time, over ``calls``."""
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    types = {t for _, ms, _ in calls for t in ms}
    by_type = {t: (calls[-1][2][t], med([ms.get(t, 0.0) for _, ms, _ in calls])) for t in types}
    return med([w for w, _, _ in calls]), med([sum(ms.values()) for _, ms, _ in calls]), by_type


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="default: a randomly initialised p4w96 fgvc_tiny (latency only)")
    ap.add_argument("--config", default="p4w96", choices=tuple(CONFIGS), help="a model of reduction_latency.py")
    ap.add_argument("--scorer", choices=SCORERS, default="tavt")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reductions", default="2,4")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args(argv)
    import torch

    import tavt_kit
    from row_gather import schedules
    from tavt_kit.bench.backends import quantized_for_latency
    from tavt_kit.export.onnx import export_onnx
    from tavt_kit.export.openvino import convert_openvino

    torch.manual_seed(0)
    model = (tavt_kit.load_checkpoint(args.checkpoint) if args.checkpoint else
             tavt_kit.create_model("fgvc_tiny", num_classes=10, scorer=args.scorer, **CONFIGS[args.config][0])).eval()
    H, W = model.patch_embed.img_size
    x = torch.randn(args.batch, 3, H, W).numpy()
    work = tempfile.mkdtemp(prefix="node-profile-")
    print(f"fgvc_tiny {args.checkpoint or args.config} ({model.num_patches} patches), scorer {args.scorer}, "
          f"OpenVINO CPU {args.precision}, batch {args.batch}, {args.threads} thread(s), {args.calls} profiled calls")
    requests, reds = {}, {}
    for name, (s, red) in schedules(model, [float(v) for v in args.reductions.split(",")]).items():
        stem = os.path.join(work, name.replace(" ", "_"))
        xml = convert_openvino(export_onnx(model, stem + ".onnx", s, batch_size=args.batch).path, stem + ".xml",
                               verify=False).xml_path
        if args.precision == "int8":
            xml = quantized_for_latency(xml, stem + ".int8.xml", list(x.shape))
        requests[name], reds[name] = compiled_request(xml, x, args.threads), red
    calls = {name: [] for name in requests}
    for _ in range(10):  # round-robin: the machine's drift spreads over every schedule alike
        for name, req in requests.items():
            calls[name] += [one_call(req) for _ in range(max(1, args.calls // 10))]
    full_wall = None
    for name, got in calls.items():
        wall, nodes, by_type = medians(got)
        full_wall = wall if full_wall is None else full_wall
        print(f"\n{name}: {reds[name]:.2f}x fewer MACs; wall {wall:.3f} ms ({full_wall / wall:.2f}x faster than "
              f"the full model, realised {full_wall / wall / reds[name]:.2f}); nodes {nodes:.3f} ms")
        for t, (n, ms) in sorted(by_type.items(), key=lambda kv: -kv[1][1])[:args.top]:
            print(f"  {t:<28} {n:4d} nodes  {ms:7.3f} ms  {100 * ms / nodes:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
