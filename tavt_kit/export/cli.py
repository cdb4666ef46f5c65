"""``fgvc-kit export`` and ``fgvc-kit prune``. Thin: parse, call :func:`export_model` / :func:`prune_model`."""
from __future__ import annotations

import argparse
import os

DEFAULT_OUT = os.path.join("runs", "export")


# ------------------------------------------------------------------- export
def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="model to export (.safetensors from train/distill/prune, or any file load_checkpoint reads)")
    s = p.add_argument_group("schedule (default: the checkpoint's own, else the full model)")
    s.add_argument("--drop", help="drop-config JSON file or comma-separated patch-token counts")
    s.add_argument("--keep-ratio", help="schedule from keep ratios: RATIO for every block or BLOCK:RATIO,...")
    s.add_argument("--search", metavar="SEARCH_JSON", help="search.json written by fgvc-kit search (with --budget)")
    s.add_argument("--budget", help="the budget of --search whose chosen schedule to export: its label (15ms, "
                                    "'20G MACs') or its number")
    o = p.add_argument_group("output")
    o.add_argument("--format", default="onnx", help="onnx, openvino or both, comma-separated (default: onnx)")
    o.add_argument("--precision", default="fp32", metavar="P",
                   help="fp32 (default), fp16, bf16 (OpenVINO: f32 IR run with the bf16 hint) or int8 (NNCF "
                        "post-training quantisation; pip install 'fgvc-kit[int8]')")
    o.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder: model.onnx / model.xml + .bin and export.json (default: {DEFAULT_OUT})")
    o.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"),
                   help="ONNX exporter: auto = PyTorch's current (dynamo) exporter, TorchScript as recorded "
                        "fallback (default: auto)")
    o.add_argument("--opset", type=int, help="ONNX opset (default: 18)")
    v = p.add_argument_group("verification (on by default)")
    v.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the accuracy check (export.json then says verified: false)")
    v.add_argument("--verify-data", metavar="NAME",
                   help="dataset to verify on (default: the one recorded in the checkpoint, else demo)")
    v.add_argument("--data", metavar="DIR", help="root folder of --verify-data (not needed for demo)")
    v.add_argument("--verify-split", default="test", choices=("test", "holdout", "train", "trainval"),
                   help="split to verify on (default: test)")
    v.add_argument("--verify-images", type=int, metavar="N", help="verify on at most N images (seeded subset)")
    v.add_argument("--max-accuracy-drop", type=float, default=0.5, metavar="POINTS",
                   help="fail when top-1 of an exported file is more than POINTS below PyTorch's (default: 0.5)")
    v.add_argument("--max-logit-diff", type=float, metavar="X",
                   help="also fail when max |logit difference| exceeds X (default: no bound)")
    v.add_argument("--min-agreement", type=float, metavar="FRACTION",
                   help="also fail when fewer than FRACTION of the predictions agree with PyTorch's (default: no bound)")
    v.add_argument("--batch-size", type=int, default=32, help="verification batch size (default: 32)")
    v.add_argument("--threads", type=int, help="ONNX Runtime / OpenVINO threads (default: theirs)")
    q = p.add_argument_group("int8 calibration")
    q.add_argument("--calibration-images", type=int, default=300, metavar="N",
                   help="calibration images, a seeded subset of --calibration-split (default: 300)")
    q.add_argument("--calibration-split", default="train", choices=("train", "holdout", "trainval"),
                   help="split the calibration images come from (default: train; never the test split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subsets (default: 0)")


def _schedule(args, model):
    from ..cli import parse_drop
    from ..errors import ConfigError
    from .pipeline import schedule_from_drop_file, schedule_from_search

    if (args.search is None) != (args.budget is None):
        raise ConfigError("--search and --budget go together: --search search.json --budget 15ms")
    if args.search and (args.drop or args.keep_ratio):
        raise ConfigError("give one schedule: --drop, --keep-ratio or --search with --budget")
    if args.search:
        return schedule_from_search(model, args.search, args.budget)
    if args.drop and (os.path.isfile(args.drop) or args.drop.endswith(".json")):
        if args.keep_ratio:
            raise ConfigError("give either --drop or --keep-ratio, not both")
        return schedule_from_drop_file(model, args.drop), {"kind": "drop-config",
                                                            "file": os.path.basename(args.drop)}
    sched = parse_drop(args.drop, args.keep_ratio, model)
    if sched is None:
        return None, None
    return sched, {"kind": "drop" if args.drop else "keep-ratio", "value": args.drop or args.keep_ratio}


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def run_export(args) -> int:
    import sys

    from ..errors import ConfigError
    from ..models import load_checkpoint
    from .pipeline import check_format_precision, export_model, parse_formats

    formats = parse_formats(args.format)
    check_format_precision(formats, args.precision)
    for flag in ("verify_images", "batch_size", "calibration_images", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: expected a positive number, got {value}")
    if args.max_accuracy_drop < 0:
        raise ConfigError(f"--max-accuracy-drop: expected a non-negative number of points, got {args.max_accuracy_drop}")
    if not os.path.exists(args.checkpoint):
        from ..errors import CheckpointError

        raise CheckpointError(f"--checkpoint {args.checkpoint}: checkpoint not found")
    model = load_checkpoint(args.checkpoint).eval()
    schedule, source = _schedule(args, model)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        res = export_model(
            model, args.out, schedule=schedule, schedule_source=source, formats=formats, precision=args.precision,
            verify=args.verify, verify_data=args.verify_data, verify_root=args.data, verify_split=args.verify_split,
            verify_images=args.verify_images, max_accuracy_drop=args.max_accuracy_drop,
            max_logit_diff=args.max_logit_diff, min_agreement=args.min_agreement, calibration_split=args.calibration_split,
            calibration_images=args.calibration_images, exporter=args.exporter, opset=args.opset,
            batch_size=args.batch_size, threads=args.threads, seed=args.seed, checkpoint=args.checkpoint, log=log)
    finally:
        sys.stdout.flush()
    doc = res.doc
    print(f"schedule {doc['schedule']['counts']}: {doc['macs']['schedule'] / 1e9:.4g} GMACs "
          f"({doc['macs']['reduction']:.2f}x fewer than the full model)")
    for fmt, f in doc["files"].items():
        extra = f" + {f['weights']}" if f.get("weights") else ""
        print(f"  {fmt:<9} {f['path']}{extra}  {_size(f['total_bytes'])}  "
              f"({doc['exports'][fmt].get('exporter', 'onnx -> openvino') if fmt == 'onnx' else 'from ONNX'})")
    if not res.verified:
        print(f"NOT verified: {doc['reason']}")
    else:
        print(f"verified (max accuracy drop {args.max_accuracy_drop:g} points)")
    print(f"wrote {res.json_path}")
    return 0


# -------------------------------------------------------------------- prune
def add_prune_arguments(p: argparse.ArgumentParser) -> None:
    from ..data import add_data_arguments

    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint to prune (a timm-ViT model)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=float, help="fraction of MLP channels (and heads) to remove, e.g. 0.3")
    target.add_argument("--macs-target", metavar="MACS",
                        help="prune until the full-schedule MACs are at most this, e.g. 10G")
    p.add_argument("--head-ratio", type=float, help="fraction of attention heads to remove (default: --ratio)")
    p.add_argument("--importance", choices=("magnitude", "taylor"), default="magnitude",
                   help="channel importance: magnitude (L2) or taylor (first order, needs labelled images of "
                        "the model's classes; default: magnitude)")
    p.add_argument("--local", dest="global_pruning", action="store_false",
                   help="prune every block by the same ratio (default: rank channels across blocks)")
    p.add_argument("--steps", type=int, default=16, help="pruning steps towards --macs-target (default: 16)")
    p.add_argument("--calibration-images", type=int, default=64, metavar="N",
                   help="training images for taylor importance (default: 64)")
    p.add_argument("--calibration-batch", type=int, default=16, metavar="N", help="their batch size (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset (default: 0)")
    p.add_argument("--out", required=True, metavar="FILE.safetensors", help="the pruned checkpoint")
    add_data_arguments(p)


def run_prune(args) -> int:
    import warnings

    from ..data import data_spec_from_args
    from ..errors import CheckpointError, ConfigError
    from ..models import count_macs, load_checkpoint, save_checkpoint
    from .prune import prune_model

    if not args.out.endswith(".safetensors"):
        raise ConfigError(f"--out {args.out}: the pruned checkpoint must be a .safetensors file")
    if not os.path.exists(args.checkpoint):
        raise CheckpointError(f"--checkpoint {args.checkpoint}: checkpoint not found")
    if os.path.abspath(args.out) == os.path.abspath(args.checkpoint):
        raise ConfigError(f"--out {args.out}: would overwrite --checkpoint; write the pruned model elsewhere")
    for flag in ("steps", "calibration_images", "calibration_batch"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: expected a positive number, got {getattr(args, flag)}")
    model = load_checkpoint(args.checkpoint)
    from ..search.cli import parse_macs

    macs_target = parse_macs(args.macs_target, "--macs-target") if args.macs_target is not None else None
    calibration = None
    data_info = None
    if args.importance == "taylor":
        from ..data import Normalize
        from .verify import load_verify_data

        dspec = data_spec_from_args(args, fallback=(model.spec.get("data")
                                                    if isinstance(model.spec.get("data"), dict) else None))
        vd = load_verify_data(model, dspec, split="train", max_images=args.calibration_images, seed=args.seed,
                              where="--dataset")
        norm = Normalize.from_model(model)
        b = args.calibration_batch
        calibration = [(norm(vd.images[i:i + b]), vd.labels[i:i + b]) for i in range(0, len(vd), b)]
        data_info = {"dataset": dspec.name, "split": "train", "images": len(vd)}
    params0 = sum(p.numel() for p in model.parameters())
    sched = model.schedule
    macs0 = count_macs(model, model.full_schedule()).total()
    at0 = count_macs(model, sched).total() if sched is not None else None
    print(f"pruning {args.checkpoint}: {params0 / 1e6:.3f} M params, {macs0 / 1e9:.4g} GMACs (full schedule)",
          flush=True)
    with warnings.catch_warnings():  # torch-pruning warns about cls_token / pos_embed, which it leaves alone
        warnings.simplefilter("ignore", UserWarning)
        prune_model(model, ratio=args.ratio, macs_target=macs_target, head_ratio=args.head_ratio,
                    importance=args.importance, calibration=calibration, global_pruning=args.global_pruning,
                    steps=args.steps, log=lambda s: print("  " + s, flush=True))
    params1 = sum(p.numel() for p in model.parameters())
    macs1 = count_macs(model, model.full_schedule()).total()
    provenance = {"checkpoint": os.path.basename(args.checkpoint), "ratio": args.ratio,
                  "macs_target": macs_target, "head_ratio": args.head_ratio, "importance": args.importance,
                  "global": args.global_pruning, "params_before": params0, "params_after": params1,
                  "macs_before": macs0, "macs_after": macs1, "calibration": data_info}
    save_checkpoint(model, args.out, extra={"pruned_from": provenance})
    heads = [b.attn.num_heads for b in model.blocks]
    hidden = [b.mlp.fc1.out_features for b in model.blocks]
    print(f"params       {params0 / 1e6:.3f} M -> {params1 / 1e6:.3f} M ({params1 / params0:.1%})")
    print(f"MACs (full)  {macs0 / 1e9:.4g} G -> {macs1 / 1e9:.4g} G ({macs0 / macs1:.2f}x fewer)")
    if sched is not None:
        at1 = count_macs(model, sched).total()
        print(f"MACs (at the checkpoint's schedule {list(sched.counts)})  {at0 / 1e9:.4g} G -> {at1 / 1e9:.4g} G")
    print(f"heads        {heads}")
    print(f"MLP hidden   {hidden}")
    print(f"wrote {args.out} (still takes token schedules); recover accuracy with "
          f"fgvc-kit train --pretrained {args.out} ... or fgvc-kit distill --checkpoint {args.out} ...")
    return 0


COMMANDS = {
    "export": (add_export_arguments, run_export),
    "prune": (add_prune_arguments, run_prune),
}
