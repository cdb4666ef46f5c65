"""``fgvc-kit evaluate``: accuracy of a checkpoint at a schedule, with a confusion matrix."""
from __future__ import annotations

import argparse
import os

from typing import Optional

from ..errors import CheckpointError, ConfigError
from .common import add_deprecated, add_device, parse_drop, pct, warn


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .data_args import add_data_arguments

    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="model to evaluate (.safetensors from train/distill, or any file load_checkpoint reads)")
    p.add_argument("--split", choices=("test", "holdout", "train", "trainval"), default="test",
                   help="split to evaluate (default: test)")
    p.add_argument("--drop", metavar="FILE|COUNTS",
                   help="schedule: drop-config JSON file or comma-separated patch-token counts")
    p.add_argument("--keep-ratio", metavar="RATIOS",
                   help="schedule from keep ratios: RATIO for every block or BLOCK:RATIO,...")
    p.add_argument("--eval-batch-size", type=int, default=64, metavar="N",
                   help="images per evaluation batch (default: 64)")
    add_deprecated(p, "--batch-size", "--eval-batch-size", "eval_batch_size", type=int)
    p.add_argument("--amp", nargs="?", const="auto", choices=("auto", "bf16", "fp16"), help="mixed precision")
    add_device(p, "cuda when there is one, else cpu")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: the checkpoint's) for <name>.<split>.eval.json, or "
                        "<name>.<split>.drop-<counts>.eval.json at a --drop/--keep-ratio schedule, and the "
                        "confusion-matrix PNG beside it")
    p.add_argument("--max-confusion-classes", type=int, default=300, metavar="N",
                   help="draw the whole confusion matrix up to N classes, else the 50 most-confused (default: 300)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the confusion matrix")
    add_data_arguments(p)


def eval_path(checkpoint: str, split: str, schedule=None, out: Optional[str] = None) -> str:
    """``<out or the checkpoint's folder>/<name>.<split>[.drop-<counts>].eval.json``: a name a script can write
    down (the counts of a given schedule, joined by ``-``). An ``--out`` ending in ``.json`` is the old
    spelling: that file."""
    if out and out.lower().endswith(".json"):
        warn(f"--out {out}: a file name is deprecated; give a folder (the file is named <name>.<split>.eval.json)")
        return out
    if out and os.path.isfile(out):
        raise ConfigError(f"--out {out}: is a file; expected an output folder")
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    tag = "" if schedule is None else ".drop-" + "-".join(map(str, schedule.counts))
    return os.path.join(out if out else os.path.dirname(os.path.abspath(checkpoint)), f"{stem}.{split}{tag}.eval.json")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..data import build_dataset
    from .data_args import data_spec_from_args
    from ..models import count_macs, load_checkpoint
    from ..train.build import check_model_fits
    from ..train.distributed import amp_dtype_for, init_distributed
    from ..files import write_json
    from ..train.evaluate import evaluate, plot_confusion

    if args.eval_batch_size < 1:
        raise ConfigError(f"--eval-batch-size: expected a positive batch size, got {args.eval_batch_size}")
    if args.max_confusion_classes < 1:
        raise ConfigError(f"--max-confusion-classes: expected a positive number, got {args.max_confusion_classes}")
    model = load_checkpoint(args.checkpoint)
    bad = next((n for n, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()), None)
    if bad is not None:  # NaN/inf weights give chance-level "accuracy" without a word otherwise
        raise CheckpointError(f"--checkpoint {args.checkpoint}: tensor {bad} holds NaN or infinite values; the "
                              "model's outputs would not be finite (a diverged run?)")
    # the schedule before the dataset: a drop config for another model or other weights is refused at once
    schedule = parse_drop(args.drop, args.keep_ratio, model)
    spec = data_spec_from_args(args, fallback=(model.spec.get("data") if isinstance(model.spec.get("data"), dict)
                                               else None))
    dataset = build_dataset(spec, split=args.split, model=model, augment=False)
    check_model_fits(model, dataset, args.checkpoint)
    rank, world, device = init_distributed(args.device)
    try:
        model.to(device)
        res = evaluate(model, dataset, drop=schedule, batch_size=args.eval_batch_size, num_workers=args.workers,
                       device=device, amp_dtype=amp_dtype_for(args.amp, device))
        if rank != 0:
            return 0
        used = schedule if schedule is not None else model.schedule
        macs = count_macs(model, used if used is not None else model.full_schedule()).total()
        path = eval_path(args.checkpoint, args.split, schedule, args.out)
        png = os.path.splitext(path)[0] + ".confusion.png"
        if path.endswith(".eval.json"):
            png = path[:-len(".eval.json")] + ".confusion.png"
        drawn = None
        if not args.no_plot:
            drawn = plot_confusion(res, png, max_classes=args.max_confusion_classes,
                                   title=f"{os.path.basename(args.checkpoint)} on {dataset.name} {dataset.split}")
        doc = {"format": "fgvc-kit/evaluation", "version": 1, "checkpoint": args.checkpoint, **res.to_dict(), "macs": macs, "data": dataset.describe(),
               "confusion_png": drawn}
        write_json(doc, path)
        sched = "full" if used is None else ",".join(map(str, used.counts))
        print(f"{dataset.name} {dataset.split}: top-1 {pct(res.top1)}  top-5 {pct(res.top5)}  "
              f"mean per-class {pct(res.mean_class_acc)}  ({res.n} images, schedule {sched}, "
              f"{macs / 1e9:.3f} GMACs)")
        print(f"wrote {path}" + (f" and {drawn}" if drawn else ""))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0
