"""``fgvc-kit distill``: in-place distillation with patch drop, from a fine-tuned checkpoint to a supernet.

Same engine as ``fgvc-kit train`` (data, AMP, torchrun, atomic checkpoints,
exact resume, progress, metrics.jsonl); the step is TAVT's
(:class:`~tavt_kit.distill.inplace.InplaceDistillStep`), the held-out split is
evaluated at the full, smallest, middle and EViT schedules, and the search
space goes into the supernet's spec for ``fgvc-kit search``.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict

from ..distill.run import DEFAULT_OUT, apply_parent_mix, plot_distill_curves
from ..distill.settings import DEMO_DISTILL, DISTILL_DEFAULTS, MIX_AUTO, RUN_FORMAT, DistillSettings
from .common import pct

__all__ = ["DEFAULT_OUT", "DEMO_DISTILL", "DISTILL_DEFAULTS", "MIX_AUTO", "RUN_FORMAT", "apply_parent_mix",
           "plot_distill_curves"]


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.recipes import DEMO_RECIPE
    from .train import add_train_arguments

    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="fine-tuned model (fgvc-kit train's best.safetensors or any file load_checkpoint reads)")
    p.add_argument("--drop", metavar="FILE|COUNTS",
                   help="fine-tune one schedule instead: a drop-config JSON file (a search's pick, e.g. the "
                        "budget's file beside search.json) or comma-separated patch-token counts, of --checkpoint "
                        "(a supernet), toward the model it was distilled from; the result runs at that schedule only")
    g = p.add_argument_group("in-place distillation (TAVT's defaults)")
    g.add_argument("--bound", type=float, metavar="FRACTION",
                   help="largest drop ratio per block of the search space (default: 0.2; demo "
                        f"{DEMO_DISTILL['bound']}); above 0.5 a merging block runs several bipartite rounds, past "
                        "ToMe's halving per block")
    g.add_argument("--drop-blocks", metavar="LIST", help="blocks that may drop, e.g. 3,6,9 (default: every block)")
    g.add_argument("--min-tokens", type=int, metavar="N", help="fewest patch tokens at any block (default: 1)")
    g.add_argument("--reducers", metavar="LIST",
                   help="how sub-networks remove tokens: drop (patch drop, TAVT), merge (ToMe token merging) or "
                        "drop,merge (each sub-network's blocks draw one; the search then picks per block) "
                        "(default: the model's reducer, drop)")
    g.add_argument("--sandwich", type=int, metavar="N",
                   help="random sub-networks per step besides the smallest (TAVT's num_sandwich; default: 2)")
    g.add_argument("--kd-temperature", type=float, metavar="T",
                   help="temperature of the distillation loss (default: 1)")
    g.add_argument("--sub-label-weight", type=float, metavar="W",
                   help="weight of a label loss on each sub-network (default: 0, TAVT)")
    g.add_argument("--sub-aux", action="store_true", default=None,
                   help="add the heads' auxiliary losses of the sub-networks too")
    g.add_argument("--teacher", choices=("parent", "full"),
                   help="whose soft predictions the sub-networks learn: parent (a frozen copy of --checkpoint) or "
                        f"full (the full model as it trains, TAVT's) (default: {DISTILL_DEFAULTS['teacher']})")
    g.add_argument("--full-label-weight", type=float, metavar="W",
                   help="weight of the full model's label loss (default: "
                        f"{DISTILL_DEFAULTS['full_label_weight']:g}; TAVT's 1)")
    g.add_argument("--full-kd-weight", type=float, metavar="W",
                   help="weight of a distillation loss of the full model toward the parent (--checkpoint) "
                        f"(default: {DISTILL_DEFAULTS['full_kd_weight']:g}; TAVT's 0)")
    g.add_argument("--parent-mix", type=parse_parent_mix, metavar="A",
                   help="the supernet's weights at the end: A x distilled + (1 - A) x the parent's (weight-space "
                        "interpolation, WiSE-FT), which gives back the full schedule's accuracy and keeps most of "
                        "what the small schedules learnt; 1 keeps the distilled weights; auto chooses A on the held-out "
                        "images (1 down to 0.5): the best over the tracked schedules among the mixes whose full "
                        "schedule keeps your model's accuracy "
                        f"(default: {DISTILL_DEFAULTS['parent_mix']:g})")
    add_train_arguments(p, demo_recipe={**DEMO_RECIPE, **DEMO_DISTILL}, model_options=False, default_out=DEFAULT_OUT)


def refuse_model_options(args: argparse.Namespace) -> None:
    """The model's options, which distill takes from --checkpoint, refused with a line that says why."""
    from ..errors import ConfigError
    from ..train.recipes import NOT_WITH_A_MODEL

    for flag in NOT_WITH_A_MODEL:
        if getattr(args, flag, None) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')}: not used by distill; the model, its size, classes and "
                              "head come from --checkpoint")


def _resolve(args: argparse.Namespace) -> Dict[str, Any]:
    """Every setting of a run (:func:`tavt_kit.distill.settings.resolve_distill`) from the options."""
    from ..distill.settings import resolve_distill
    from .train import settings_from

    refuse_model_options(args)
    return resolve_distill(settings_from(args, DistillSettings).given(), args.checkpoint)


def parse_parent_mix(value):
    """``--parent-mix``: a weight (float) or ``auto``."""
    if str(value).strip().lower() == MIX_AUTO:
        return MIX_AUTO
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a weight in (0, 1] or {MIX_AUTO}, got {value!r}") from None


def run_distill(args: argparse.Namespace) -> int:
    from ..distill import distill
    from ..distill.settings import check_drop_blocks
    from .train import command_log, settings_from

    check_drop_blocks(getattr(args, "drop_blocks", None))
    log = command_log(add_distill_arguments)
    if getattr(args, "drop", None) is not None:  # one schedule, not a search space
        from .distill_schedule import run_schedule_distill

        return run_schedule_distill(args, _resolve, DEFAULT_OUT, log)
    refuse_model_options(args)
    res = distill(args.checkpoint, settings_from(args, DistillSettings), out=args.out or DEFAULT_OUT,
                  resume=bool(args.resume), overwrite=bool(args.overwrite), device=args.device, log=log)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return 0
    s = res.results
    print(f"distilled {s['steps']} steps in {s['time_s']:.1f} s -> {res.out}")
    if res.parent_mix is not None:
        print(f"weights: {res.parent_mix:g} x distilled + {1 - res.parent_mix:g} x your model's "
              + (f"(--parent-mix auto: {res.mix_reason})" if res.mix_reason is not None else "(--parent-mix)"))
    if s["holdout"]:
        print("holdout: " + "  ".join(f"{k[5:]} {pct(v)}" for k, v in s["holdout"].items()
                                      if k.startswith("top1_") and k != "top1_mean"))
    if res.test:
        print("test:    " + "  ".join(f"{k} {pct(v['top1'])}" for k, v in res.test.items()))
    print(f"supernet: {res.best_checkpoint}" + (f"; curves: {res.curves}" if res.curves else ""))
    return 0


def output_folder(args) -> str:
    """The folder this command writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out or DEFAULT_OUT


add_arguments = add_distill_arguments
run = run_distill
