"""Token rows gathered whole (one ``Gather``) against an index broadcast to every channel and ``GatherElements``:
OpenVINO latency of the same schedules exported both ways, timed round-robin in one process.

    python benchmarks/row_gather.py [--checkpoint CKPT] [--batches 1,32] [--precisions fp32,int8] [--threads 1]

The model: fgvc_tiny at 64 px with patch 4 (256 patch tokens, width 96; the latency half of the reference
benchmark), random weights unless ``--checkpoint``. Schedules: the full model, and dropping and merging at about
2x and 4x fewer MACs (the same keep ratio at every block). Each reduced schedule is exported twice: as fgvc-kit
exports it now (:func:`tavt_kit.models.rows.take_rows`) and as before (``x.gather(1, idx[..., None].expand(-1,
-1, C))``); int8 is NNCF PTQ of each file (random calibration: timing only). Printed per (batch, precision):
each file's median latency, its speed-up over the full model and its realised speed-up (speed-up / MAC
reduction), and the count of ``Broadcast``/``GatherElements`` nodes in its graph.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def broadcast_gather():
    """Exports made inside pick tokens as fgvc-kit did before :func:`take_rows`."""
    import tavt_kit.models.token_drop as td
    import tavt_kit.models.token_merge as tm

    def old(x, idx):
        return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))

    saved = td.take_rows, tm.take_rows
    td.take_rows = tm.take_rows = old
    try:
        yield
    finally:
        td.take_rows, tm.take_rows = saved


def schedules(model, reductions):
    """{name: (TokenSchedule, MAC reduction)}: full, and drop/merge at each reduction (constant keep ratio)."""
    import tavt_kit
    from tavt_kit import TokenSchedule

    N, depth = model.num_patches, len(model.blocks)
    full = TokenSchedule.full(depth, N)
    full_macs = tavt_kit.count_macs(model, full).total()
    out = {"full": (full, 1.0)}
    for red in reductions:
        for reducer in ("drop", "merge"):
            best = None
            for i in range(1, 1000):
                keep = i / 1000
                counts, n = [], N
                for _ in range(depth):
                    n = max(1, min(n, round(n * keep)))
                    counts.append(n)
                s = TokenSchedule(tuple(counts), N, reducers=(reducer,) * depth)
                r = full_macs / tavt_kit.count_macs(model, s).total()
                if best is None or abs(r - red) < abs(best[1] - red):
                    best = (s, r)
            out[f"{reducer} {red:g}x"] = best
    return out


def op_counts(xml: str) -> str:
    import openvino as ov

    ops = [op.get_type_name() for op in ov.Core().read_model(xml).get_ordered_ops()]
    return f"Broadcast {ops.count('Broadcast')}, GatherElements {ops.count('GatherElements')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="default: a randomly initialised p4w96 fgvc_tiny (latency only)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--reductions", default="2,4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=2.0, help="seconds of timing per file")
    args = ap.parse_args(argv)
    import torch

    import tavt_kit
    from tavt_kit.bench import TimingPolicy
    from tavt_kit.bench.backends import openvino_runner, quantized_for_latency
    from tavt_kit.bench.timing import measure_round_robin
    from tavt_kit.export.onnx import export_onnx
    from tavt_kit.export.openvino import convert_openvino

    torch.manual_seed(0)
    model = (tavt_kit.load_checkpoint(args.checkpoint) if args.checkpoint else
             tavt_kit.create_model("fgvc_tiny", num_classes=10, patch_size=4)).eval()
    sched = schedules(model, [float(v) for v in args.reductions.split(",")])
    work = tempfile.mkdtemp(prefix="row-gather-")
    files = {}
    for name, (s, _) in sched.items():
        for how in (("rows",) if name == "full" else ("rows", "broadcast")):
            stem = os.path.join(work, f"{name.replace(' ', '_')}-{how}")
            with broadcast_gather() if how == "broadcast" else contextlib.nullcontext():
                onnx = export_onnx(model, stem + ".onnx", s, batch_size=1).path
            files[name, how] = convert_openvino(onnx, stem + ".xml", verify=False).xml_path
            print(f"exported {name} ({how}): {op_counts(files[name, how])}", flush=True)
    H, W = model.patch_embed.img_size
    for prec in args.precisions.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            x = torch.randn(b, 3, H, W).numpy()
            runners = {}
            for key, xml in files.items():
                path = xml
                if prec == "int8":
                    path = quantized_for_latency(xml, xml.replace(".xml", f".int8-b{b}.xml"), list(x.shape))
                runners[key] = openvino_runner(path, x, threads=args.threads, precision=prec)
            stats = measure_round_robin({k: r.fn for k, r in runners.items()}, TimingPolicy(budget_s=args.budget_s))
            ms = {k: v.p50 * 1e3 for k, v in stats.items()}
            ref = ms["full", "rows"]
            print(f"\nOpenVINO {prec}, batch {b}, {args.threads} thread(s): full model {ref:.3f} ms")
            for name, (s, red) in sched.items():
                if name == "full":
                    continue
                cells = []
                for how in ("broadcast", "rows"):
                    sp = ref / ms[name, how]
                    cells.append(f"{how:9s} {ms[name, how]:8.3f} ms {sp:5.2f}x (realised {sp / red:4.2f})")
                gain = ms[name, "broadcast"] / ms[name, "rows"]
                print(f"  {name:10s} {red:4.2f}x fewer MACs  " + "   ".join(cells) + f"   rows {gain:4.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
