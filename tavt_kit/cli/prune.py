"""``fgvc-kit prune``: remove attention heads and MLP channels with torch-pruning; the result still takes schedules."""
from __future__ import annotations

import argparse
import os

from .common import add_deprecated, parse_macs, warn

PRUNED_FILE = "pruned.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .data_args import add_data_arguments

    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint to prune (a timm-ViT model)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--channel-keep-ratio", type=float, metavar="FRACTION",
                        help="fraction of the MLP channels (and heads) to keep, e.g. 0.7")
    target.add_argument("--macs-budget", metavar="MACS",
                        help="prune until the full-schedule MACs are at most this, e.g. 10G")
    # the old spellings: --ratio was the fraction removed (0.3 keeps 0.7), --macs-target the MAC budget
    add_deprecated(target, "--ratio", "--channel-keep-ratio", "channel_keep_ratio", type=float, convert=_kept)
    add_deprecated(target, "--macs-target", "--macs-budget", "macs_budget")
    p.add_argument("--head-keep-ratio", type=float, metavar="FRACTION",
                   help="fraction of the attention heads to keep (default: --channel-keep-ratio)")
    add_deprecated(p, "--head-ratio", "--head-keep-ratio", "head_keep_ratio", type=float, convert=_kept)
    p.add_argument("--importance", choices=("magnitude", "taylor"), default="magnitude",
                   help="channel importance: magnitude (L2) or taylor (first order, needs labelled images of "
                        "the model's classes; default: magnitude)")
    p.add_argument("--local", dest="global_pruning", action="store_false",
                   help="prune every block by the same ratio (default: rank channels across blocks)")
    p.add_argument("--prune-steps", type=int, default=16, metavar="N",
                   help="pruning increments towards --macs-budget (default: 16)")
    add_deprecated(p, "--steps", "--prune-steps", "prune_steps", type=int)
    p.add_argument("--calibration-images", type=int, default=64, metavar="N",
                   help="training images for taylor importance (default: 64)")
    p.add_argument("--calibration-batch-size", type=int, default=16, metavar="N",
                   help="their batch size (default: 16)")
    add_deprecated(p, "--calibration-batch", "--calibration-batch-size", "calibration_batch_size", type=int)
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the calibration subset (default: 0)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help=f"output folder: the pruned checkpoint is DIR/{PRUNED_FILE}")
    add_data_arguments(p)


def _kept(removed: float) -> float:
    """A fraction removed (the old --ratio, --head-ratio) as the fraction kept."""
    return round(1.0 - removed, 12)


def _removed(flag: str, kept, may_keep_all: bool = False):
    """A fraction kept (``flag``) as the fraction the library removes; None stays None."""
    from ..errors import ConfigError

    if kept is None:
        return None
    if not 0.0 < kept <= 1.0 or (kept == 1.0 and not may_keep_all):
        raise ConfigError(f"--{flag} {kept:g}: expected a fraction in (0, 1{']' if may_keep_all else ')'} to keep")
    return round(1.0 - kept, 12)


def output_folder(args):
    """The folder the pruned checkpoint goes to (held as its one writer while it runs; see tavt_kit.lock);
    None for an --out that run refuses."""
    out = args.out
    if out.lower().endswith(".safetensors"):
        return os.path.dirname(os.path.abspath(out))
    ext = os.path.splitext(out)[1]
    if (ext and len(ext) <= 5 and not os.path.isdir(out)) or os.path.isfile(out):
        return None
    return out


def run(args) -> int:
    import warnings

    import re
    from typing import List

    from .data_args import data_spec_from_args
    from ..errors import CheckpointError, ConfigError, TavtKitError
    from ..models import count_macs, load_checkpoint, save_checkpoint
    from ..models.compress import prune_model

    out = _pruned_path(args.out)
    if not os.path.exists(args.checkpoint):
        raise CheckpointError(f"--checkpoint {args.checkpoint}: checkpoint not found")
    if os.path.abspath(out) == os.path.abspath(args.checkpoint):
        raise ConfigError(f"--out {args.out}: would overwrite --checkpoint; write the pruned model elsewhere")
    for flag in ("prune_steps", "calibration_images", "calibration_batch_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: expected a positive number, got {getattr(args, flag)}")
    ratio = _removed("channel-keep-ratio", args.channel_keep_ratio)
    head_ratio = _removed("head-keep-ratio", args.head_keep_ratio, may_keep_all=True)
    model = load_checkpoint(args.checkpoint)
    macs_target = parse_macs(args.macs_budget) if args.macs_budget is not None else None
    calibration = None
    data_info = None
    if args.importance == "taylor":
        from ..data import Normalize
        from ..export.verify import load_verify_data

        dspec = data_spec_from_args(args, fallback=(model.spec.get("data")
                                                    if isinstance(model.spec.get("data"), dict) else None))
        vd = load_verify_data(model, dspec, split="train", max_images=args.calibration_images, seed=args.seed,
                              where="--dataset")
        norm = Normalize.from_model(model)
        b = args.calibration_batch_size
        calibration = [(norm(vd.images[i:i + b]), vd.labels[i:i + b]) for i in range(0, len(vd), b)]
        data_info = {"dataset": dspec.name, "split": "train", "images": len(vd)}
    params0 = sum(p.numel() for p in model.parameters())
    sched = model.schedule
    macs0 = count_macs(model, model.full_schedule()).total()
    at0 = count_macs(model, sched).total() if sched is not None else None
    print(f"pruning {args.checkpoint}: {params0 / 1e6:.3f} M params, {macs0 / 1e9:.4g} GMACs (full schedule)",
          flush=True)
    if macs_target is not None and macs_target >= macs0:
        raise ConfigError(f"--macs-budget {args.macs_budget}: the model has {macs0 / 1e9:.4g} G MACs (full "
                          "schedule); expected a target below that")
    reached: List[float] = []

    def log(text: str) -> None:
        m = re.search(r": ([0-9.eE+-]+) G MACs$", text)
        if m:
            reached.append(float(m.group(1)))
        print("  " + text, flush=True)

    with warnings.catch_warnings():  # torch-pruning warns about cls_token / pos_embed, which it leaves alone
        warnings.simplefilter("ignore", UserWarning)
        try:
            prune_model(model, ratio=ratio, macs_target=macs_target, head_ratio=head_ratio,
                        importance=args.importance, calibration=calibration, global_pruning=args.global_pruning,
                        steps=args.prune_steps, log=log)
        except TavtKitError:
            raise
        except (ZeroDivisionError, ArithmeticError, IndexError, RuntimeError, ValueError, UnboundLocalError) as e:
            # torch-pruning fails once a block would lose its last attention head or MLP channel
            if macs_target is not None:
                low = f"between {min(reached):.4g} G (the least it reached) and" if reached else "nearer to"
                raise ConfigError(f"--macs-budget {args.macs_budget}: pruning cannot reach it (torch-pruning stopped "
                                  f"with {type(e).__name__} once a block had nothing left to remove); expected a "
                                  f"target {low} the model's {macs0 / 1e9:.4g} G MACs") from None
            raise ConfigError(f"--channel-keep-ratio {args.channel_keep_ratio:g}: pruning failed (torch-pruning: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}); expected "
                              "a larger fraction that leaves every block some heads and channels") from None
    params1 = sum(p.numel() for p in model.parameters())
    macs1 = count_macs(model, model.full_schedule()).total()
    provenance = {"checkpoint": os.path.basename(args.checkpoint), "ratio": ratio,
                  "macs_target": macs_target, "head_ratio": head_ratio, "importance": args.importance,
                  "global": args.global_pruning, "params_before": params0, "params_after": params1,
                  "macs_before": macs0, "macs_after": macs1, "calibration": data_info}
    save_checkpoint(model, out, extra={"pruned_from": provenance})
    heads = [b.attn.num_heads for b in model.blocks]
    hidden = [b.mlp.fc1.out_features for b in model.blocks]
    print(f"params       {params0 / 1e6:.3f} M -> {params1 / 1e6:.3f} M ({params1 / params0:.1%})")
    print(f"MACs (full)  {macs0 / 1e9:.4g} G -> {macs1 / 1e9:.4g} G ({macs0 / macs1:.2f}x fewer)")
    if sched is not None:
        at1 = count_macs(model, sched).total()
        print(f"MACs (at the checkpoint's schedule {list(sched.counts)})  {at0 / 1e9:.4g} G -> {at1 / 1e9:.4g} G")
    print(f"heads        {heads}")
    print(f"MLP hidden   {hidden}")
    print(f"wrote {out} (still takes token schedules); recover accuracy with "
          f"fgvc-kit train --checkpoint {out} ... or fgvc-kit distill --checkpoint {out} ...")
    return 0


def _pruned_path(out: str) -> str:
    """``--out`` is a folder; a ``.safetensors`` file name is the old spelling (still written, with a line)."""
    from ..errors import ConfigError

    if out.lower().endswith(".safetensors"):
        warn(f"--out {out}: a checkpoint file name is deprecated; give a folder (the file is {PRUNED_FILE})")
        return out
    ext = os.path.splitext(out)[1]
    if ext and len(ext) <= 5 and not os.path.isdir(out):
        raise ConfigError(f"--out {out}: expected an output folder (it gets {PRUNED_FILE}), got a file name")
    if os.path.isfile(out):
        raise ConfigError(f"--out {out}: is a file; expected an output folder")
    return os.path.join(out, PRUNED_FILE)
