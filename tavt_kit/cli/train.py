"""``fgvc-kit train``: fine-tune a model on a dataset; also the options ``distill`` shares.

Thin: options -> :class:`~tavt_kit.train.FineTuneSettings` -> :func:`~tavt_kit.train.fine_tune` -> printed
lines. Several processes: launch with ``torchrun --nproc_per_node N -m tavt_kit.cli train ...``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Dict

from ..train.recipes import (CLUTTERED_RECIPE, DEMO_RECIPE, NOT_WITH_A_MODEL, PRETRAINED_RECIPE, RESULT_KEYS,
                             RUN_FORMAT, SEEDS_RECIPE, FineTuneSettings, builtin_recipe, data_spec,
                             resolve_settings)
from ..train.run import DEFAULT_OUT
from .common import add_deprecated, add_device, pct

__all__ = ["CLUTTERED_RECIPE", "DEMO_RECIPE", "PRETRAINED_RECIPE", "RESULT_KEYS", "RUN_FORMAT", "SEEDS_RECIPE",
           "builtin_recipe", "data_spec"]


# ------------------------------------------------------------------ options
def add_train_arguments(p: argparse.ArgumentParser, demo_recipe: Dict[str, Any] = DEMO_RECIPE,
                        model_options: bool = True, default_out: str = DEFAULT_OUT) -> None:
    """Data, model, optimisation and run options; the help shows ``demo_recipe``'s defaults for the demo.

    ``model_options=False`` (distill): the model and its size, classes and head come from ``--checkpoint``.
    ``default_out``: the command's output folder when ``--out`` is not given.
    """
    from .data_args import add_data_arguments

    add_data_arguments(p)
    g = p.add_argument_group("model")
    if model_options:
        g.add_argument("--checkpoint", dest="pretrained", metavar="FILE",
                       help="start from these weights: Google .npz, timm .pth, the seeds' ViT-pytorch .bin or an "
                            "fgvc-kit .safetensors (the classifier is re-initialised for the dataset's classes)")
        add_deprecated(p, "--pretrained", "--checkpoint", "pretrained")
        g.add_argument("--model", metavar="NAME",
                       help="model to build (timm ViT name or fgvc_tiny; default: inferred from --checkpoint, else "
                            "fgvc_tiny for the demo)")
        g.add_argument("--img-size", type=int, metavar="N",
                       help="input size (default: an fgvc-kit checkpoint's; else the model's own when it was made "
                            "for under 224 px (fgvc_tiny: 64); else 448 for CUB/NABirds/Dogs/Cars/iNat and 384 for "
                            "ultra-FGVC sets (the seeds' recipe), the model's own for demo and folders)")
        g.add_argument("--num-classes", type=int, metavar="N",
                       help="number of classes (default: the dataset's; if given it must match)")
        g.add_argument("--head", metavar="NAME", help="classification head (default: linear, or the checkpoint's)")
        g.add_argument("--drop-path", type=float, metavar="RATE", help="stochastic depth rate (default: 0)")
    else:  # refused with a line that says why (hidden from the help)
        for flag in NOT_WITH_A_MODEL:
            p.add_argument("--" + flag.replace("_", "-"), dest=flag, help=argparse.SUPPRESS)
    g.add_argument("--scorer", choices=("tavt", "cls", "tavt-sampled"), help="patch-drop scorer stored with the model")
    g = p.add_argument_group("optimisation (defaults: the seeds' recipe; demo: a short CPU recipe)")
    def d(key):
        s, m = SEEDS_RECIPE[key], demo_recipe.get(key, DEMO_RECIPE[key])
        return f"(default: {s}" + (f"; demo {m})" if m != s else ")")

    g.add_argument("--optimizer", choices=("sgd", "adamw"), help=f"sgd (momentum) or adamw {d('optimizer')}")
    g.add_argument("--lr", type=float, metavar="LR", help=f"peak learning rate {d('lr')}")
    g.add_argument("--weight-decay", type=float, metavar="WD", help=f"weight decay on weight matrices {d('weight_decay')}")
    g.add_argument("--momentum", type=float, metavar="M", help=f"SGD momentum {d('momentum')}")
    g.add_argument("--steps", type=int, metavar="N", help=f"optimiser steps {d('steps')}")
    g.add_argument("--epochs", type=float, metavar="E",
                   help="passes over the training split instead of --steps: the steps are sized to the dataset "
                        "(E x training images / images per step), the warm-up kept at the recipe's share")
    g.add_argument("--warmup-steps", type=int, metavar="N",
                   help=f"linear warm-up steps {d('warmup_steps')}; when not given and more than half of --steps, "
                        "the same fraction of --steps")
    g.add_argument("--lr-schedule", choices=("cosine", "linear", "constant"),
                   help=f"decay after warm-up {d('lr_schedule')}")
    g.add_argument("--min-lr", type=float, metavar="LR", help=f"learning rate at the end of the decay {d('min_lr')}")
    g.add_argument("--batch-size", type=int, metavar="N", help=f"images per process per micro-batch {d('batch_size')}")
    g.add_argument("--accum-steps", type=int, metavar="N",
                   help=f"micro-batches accumulated per optimiser step {d('accum_steps')}")
    g.add_argument("--label-smoothing", type=float, metavar="E", help=f"label smoothing {d('label_smoothing')}")
    g.add_argument("--clip-grad", type=float, metavar="NORM", help=f"max gradient norm, 0 = off {d('clip_grad')}")
    g.add_argument("--amp", nargs="?", const="auto", choices=("auto", "bf16", "fp16"),
                   help="mixed precision: bf16 on CPU, fp16 with loss scaling on CUDA (or name one)")
    g.add_argument("--seed", type=int, metavar="N",
                   help=f"training seed: initialisation, data order, augmentation {d('seed')}")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", default=default_out, help=f"output folder (default: {default_out})")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in --out exactly where it stopped (its stored settings are used)")
    g.add_argument("--overwrite", action="store_true", default=None, help="start again in an --out that holds a run")
    g.add_argument("--eval-every", type=int, metavar="STEPS",
                   help=f"evaluate on the held-out split every STEPS, 0 = at the end {d('eval_every')}")
    g.add_argument("--save-every", type=int, metavar="STEPS",
                   help=f"write last.safetensors and the training state every STEPS {d('save_every')}")
    g.add_argument("--log-every", type=int, metavar="STEPS", help=f"metrics.jsonl interval {d('log_every')}")
    g.add_argument("--eval-batch-size", type=int, metavar="N", help=f"evaluation batch size {d('eval_batch_size')}")
    add_device(g, "cuda when there is one, else cpu; under torchrun each process's own GPU")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g.add_argument("--no-test", dest="test", action="store_false", default=None,
                   help="do not report test accuracy at the end")


# ------------------------------------------------------------------ resolve
def settings_from(args: argparse.Namespace, kind=FineTuneSettings):
    """The library's settings object of the options given (each field is the option's dest)."""
    return kind(**{f.name: getattr(args, f.name, None) for f in dataclasses.fields(kind)})


def explicit_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The options given that a run stores."""
    from ..train.recipes import stored_settings

    return stored_settings(settings_from(args).given())


def resolve_train_args(args: argparse.Namespace) -> Dict[str, Any]:
    """Every setting of a run: the options given, the recipe's defaults for the rest."""
    return resolve_settings(settings_from(args).given())


def command_log(add_args):
    """A ``log`` for the library that prints each line with the options of the command (``add_args``) where the
    library names its settings (``steps=`` -> ``--steps``)."""
    from .common import Parser, flag_message

    parser = Parser(prog="fgvc-kit")
    add_args(parser)

    def log(line: str) -> None:
        print(flag_message(line, parser), flush=True)

    return log


def print_results(res, log) -> None:
    """The end of a fine-tuning run in a few lines."""
    s, out = res.results, res.out
    print(f"trained {s['steps']} steps"
          + (f" (resumed at {s['resumed_from']})" if s.get("resumed_from") is not None else "")
          + f" in {s['time_s']:.1f} s ({s['images_per_s']:.0f} images/s) -> {out}")
    if s.get("holdout"):
        print(f"holdout: top-1 {pct(s['holdout'].get('top1'))}"
              + (f" (best {pct(s['best_score'])} at step {s['best_step']})" if s["best_step"] is not None else ""))
    for which, ev in res.test.items():
        print(f"test ({which}, step {ev['step']}): top-1 {pct(ev['top1'])}  top-5 {pct(ev['top5'])}  "
              f"mean per-class {pct(ev['mean_class_acc'])}  ({ev['n']} images)")
    print(f"checkpoints: {res.last_checkpoint}" + (f", {res.best_checkpoint}" if res.best_checkpoint else ""))


# -------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    from ..train import fine_tune

    log = command_log(add_train_arguments)
    res = fine_tune(settings_from(args), out=args.out or DEFAULT_OUT, resume=bool(args.resume),
                    overwrite=bool(args.overwrite), device=args.device, log=log)
    if int(os.environ.get("RANK", "0") or 0) == 0:
        print_results(res, log)
    return 0


def output_folder(args) -> str:
    """The folder this command writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out or DEFAULT_OUT


add_arguments = add_train_arguments
run = run_train
