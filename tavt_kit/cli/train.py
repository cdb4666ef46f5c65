"""``fgvc-kit train``: fine-tune a model on a dataset; also the training recipe ``distill`` shares.

Thin: options -> :func:`tavt_kit.data.build_dataset`, :func:`~tavt_kit.train.build_model`,
:class:`~tavt_kit.train.Trainer`, :func:`~tavt_kit.train.evaluate`. Several processes: launch with
``torchrun --nproc_per_node N -m tavt_kit.cli train ...``.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List

from .common import (RESULTS_FORMAT, RESULTS_VERSION, add_deprecated, add_device, check_resume_args, check_run_dir,
                     pct)

#: the seeds' fine-tuning recipe (TAVT / FFVT / TransFG): SGD 0.9, lr 3e-2, no weight decay,
#: 500 warm-up steps then cosine, 10 000 steps, batch 16 per process, gradient clipping 1.0
SEEDS_RECIPE: Dict[str, Any] = dict(optimizer="sgd", lr=3e-2, weight_decay=0.0, momentum=0.9, warmup_steps=500,
                                    steps=10000, batch_size=16, clip_grad=1.0, label_smoothing=0.0,
                                    lr_schedule="cosine", min_lr=0.0, accum_steps=1, eval_every=500,
                                    save_every=500, log_every=20, eval_batch_size=64, seed=0)
#: the built-in demo: fgvc_tiny from scratch on the digits in about 1.5 minutes on 2 idle CPU cores
#: (no augmentation; test top-1 about 95 %, see the README)
DEMO_RECIPE: Dict[str, Any] = dict(SEEDS_RECIPE, optimizer="adamw", lr=1.5e-3, weight_decay=0.05, warmup_steps=50,
                                   steps=500, batch_size=64, label_smoothing=0.0, eval_every=100, save_every=100,
                                   log_every=10, eval_batch_size=256)
#: the built-in cluttered digits: the same model and recipe, longer (the digit must be found among clutter)
CLUTTERED_RECIPE: Dict[str, Any] = dict(DEMO_RECIPE, steps=1400, eval_every=200, save_every=200)

#: a pretrained backbone (a foreign checkpoint: Hugging Face, ONNX, timm, .npz) fine-tuned on a built-in dataset:
#: the from-scratch recipe's AdamW at 1.5e-3 wipes pretrained features (DINOv2-S/14 stayed at chance on
#: cluttered-fashion), 5e-5 fine-tunes them (benchmarks/real_model.py)
PRETRAINED_RECIPE: Dict[str, Any] = dict(DEMO_RECIPE, lr=5e-5, warmup_steps=40, steps=600, batch_size=32,
                                         eval_every=100, save_every=100)

#: options that change what a run computes: a resumed run must keep them
RESULT_KEYS = ("dataset", "dataset_options", "holdout", "split_seed", "resize", "train_crop", "model", "pretrained",
               "img_size",
               "head", "scorer", "drop_path", "optimizer", "lr", "weight_decay", "momentum", "steps",
               "warmup_steps", "lr_schedule", "min_lr", "batch_size", "accum_steps", "label_smoothing",
               "clip_grad", "amp", "seed", "eval_every")
#: options a resumed run may change (where the data lives, logging, the final test)
RESUMABLE_CHANGES = ("data", "test", "save_every", "log_every", "eval_batch_size", "skip_bad_images")
RUN_FILE = "config.json"
RUN_FORMAT = "fgvc-kit/train-run"
#: the training state a resumable run leaves (tavt_kit.train.STATE_FILE, without importing torch for --help)
STATE_FILE_NAME = "train_state.safetensors"
#: options that build a model: a command that takes the model from --checkpoint (distill) refuses them
NOT_WITH_A_MODEL = ("pretrained", "model", "num_classes", "img_size", "head", "drop_path")
RESULTS_FILE = "results.json"
DEFAULT_OUT = os.path.join("runs", "train")


def builtin_recipe(name: str) -> Dict[str, Any]:
    """The short CPU recipe of a built-in dataset (the cluttered digits need more steps than the plain ones)."""
    return CLUTTERED_RECIPE if name.startswith("cluttered-") else DEMO_RECIPE


def data_spec(r: Dict[str, Any]):
    """The :class:`DataSpec` of a resolved run."""
    from ..data import DataSpec

    return DataSpec(name=r["dataset"], root=r["data"], holdout=r["holdout"], split_seed=r["split_seed"],
                    resize=r["resize"], train_crop=r["train_crop"], skip_bad_images=bool(r.get("skip_bad_images")),
                    options=r.get("dataset_options") or {})


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
def explicit_args(args: argparse.Namespace) -> Dict[str, Any]:
    keys = RESULT_KEYS + ("data", "num_classes", "test", "save_every", "log_every", "eval_batch_size",
                          "skip_bad_images")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def resolve_train_args(args: argparse.Namespace) -> Dict[str, Any]:
    """Every setting of a run: the options given, the recipe's defaults for the rest."""
    from ..data import dataset_info
    from .data_args import check_own_holdout

    info = dataset_info(args.dataset or "demo")
    name = info.name
    recipe = builtin_recipe(name) if info.builtin else SEEDS_RECIPE
    if info.builtin and getattr(args, "pretrained", None) and _foreign(args.pretrained):
        recipe = PRETRAINED_RECIPE
    check_own_holdout(name, args.holdout)
    r: Dict[str, Any] = dict(recipe)
    r.update(dataset=name, data=None, holdout=0.1, split_seed=0, resize=None, train_crop="random", model=None,
             pretrained=None, img_size=None, num_classes=None, head=None, scorer=None, drop_path=None, amp=None,
             test=True)
    given = explicit_args(args)
    r.update(given)
    r["notes"] = fit_warmup(r, given, recipe)
    return r


def _foreign(path) -> bool:
    """A checkpoint that is not fgvc-kit's own (pretrained weights of another layout)."""
    from ..errors import CheckpointError
    from ..models import read_spec

    try:
        return read_spec(path, required=False) is None
    except CheckpointError:  # an unreadable file: the model's loading names it
        return False


def fit_warmup(r: Dict[str, Any], given: Dict[str, Any], recipe: Dict[str, Any]) -> List[str]:
    """Warm-up the user did not set that leaves less than half of the steps for the decay becomes the
    recipe's fraction of the steps (a short ``--steps`` run never fails on it); returns what was changed."""
    if "warmup_steps" in given or 2 * r["warmup_steps"] <= r["steps"]:
        return []
    fraction = recipe["warmup_steps"] / recipe["steps"]
    old, r["warmup_steps"] = r["warmup_steps"], int(fraction * r["steps"])
    return [f"--warmup-steps not given: {r['warmup_steps']} ({fraction:.0%} of --steps {r['steps']}; the recipe's "
            f"{old} does not fit)"]


def fit_batch(r: Dict[str, Any], cfg, args: argparse.Namespace, n: int, world: int, resume: bool):
    """A batch size the user did not set that is larger than a small training split becomes the split's size
    (per process); returns the config to train with."""
    import dataclasses

    if resume or "batch_size" in explicit_args(args) or cfg.batch_size * world <= n or n < world:
        return cfg
    old, r["batch_size"] = cfg.batch_size, max(1, n // world)
    print(f"--batch-size not given: {r['batch_size']} (the recipe's {old} is more than the {n} training "
          "images)", flush=True)
    return dataclasses.replace(cfg, batch_size=r["batch_size"])


def open_run(args: argparse.Namespace, kind: str, resolve, command: str, default_out: str):
    """The run folder, whether it resumes, and the run's settings (stored ones when resuming, else resolved),
    with the notes of defaults that were fitted printed; shared by train and distill."""
    out = args.out or default_out
    resume = bool(args.resume)
    stored = check_run_dir(out, resume, bool(args.overwrite), RUN_FILE, STATE_FILE_NAME, kind=kind)
    r = resume_args(stored["args"], args, out) if stored is not None else resolve(args)
    for note in r.pop("notes", []):
        print(f"{command}: {note}", flush=True)
    return out, resume, os.path.join(out, RUN_FILE), r


def resume_args(stored: Dict[str, Any], args: argparse.Namespace, out: str) -> Dict[str, Any]:
    """The stored settings of a run being resumed; options that change its result must not differ."""
    return check_resume_args(stored, explicit_args(args), RESULT_KEYS, out, RESUMABLE_CHANGES)


def train_config(r: Dict[str, Any], args: argparse.Namespace):
    from ..train.config import TrainConfig

    return TrainConfig(steps=r["steps"], batch_size=r["batch_size"], accum_steps=r["accum_steps"],
                       optimizer=r["optimizer"], lr=r["lr"], weight_decay=r["weight_decay"], momentum=r["momentum"],
                       warmup_steps=r["warmup_steps"], lr_schedule=r["lr_schedule"], min_lr=r["min_lr"],
                       label_smoothing=r["label_smoothing"], clip_grad=r["clip_grad"], amp=r["amp"], seed=r["seed"],
                       eval_every=r["eval_every"], save_every=r["save_every"], log_every=r["log_every"],
                       eval_batch_size=r["eval_batch_size"], num_workers=getattr(args, "workers", None),
                       progress=getattr(args, "progress", None)).validate()


# --------------------------------------------------------------- image size
def image_size_choice(r: Dict[str, Any], dataset: str):
    """The image size rule's answer for a run (:func:`tavt_kit.train.sizing.default_img_size`)."""
    from ..models import read_spec
    from ..train.sizing import default_img_size

    ckpt_spec = read_spec(r["pretrained"], required=False) if r["pretrained"] is not None else None
    return default_img_size(dataset, r["model"], ckpt_spec, r["pretrained"])


def print_image_size(size: int, choice, given: bool, command: str = "train") -> None:
    """One line naming the size chosen and why when ``--img-size`` was not given; one warning line when the
    size gives far more tokens than the model was made for."""
    from ..train.sizing import token_warning

    if not given:
        print(f"{command}: image size {size} ({choice.reason}; --img-size to change)", flush=True)
    warning = token_warning(choice.made_for, size, suggest=choice.size)
    if warning:
        print(f"{command}: warning: {warning}", flush=True)


# ------------------------------------------------------------ long runs
def estimate_printer(command: str, resume: bool):
    """The ``on_estimate`` of a run's :class:`~tavt_kit.train.Trainer`: its ETA in one line, and when that is
    over an hour, the flag that shortens it (a resumed run keeps its steps: it says how many fit in an hour)."""
    def show(estimate) -> None:
        hint = None if resume else f"--steps to shorten (about {estimate.units_in()} steps take an hour here)"
        print(estimate.line(command, hint), flush=True)

    return show


def warn_oversubscribed(command: str) -> None:
    """One warning line when other jobs keep the machine's cores busy while torch uses several threads."""
    from ..machine import oversubscription

    warning = oversubscription()
    if warning:
        print(f"{command}: warning: {warning}", flush=True)


# -------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from ..data import build_dataset, class_names_of
    from ..errors import ConfigError
    from ..models import load_checkpoint
    from ..train.build import build_model
    from ..train import LAST_FILE, STATE_FILE, Trainer, init_distributed
    from ..files import write_json
    from ..train.evaluate import evaluate

    out, resume, run_path, r = open_run(args, RUN_FORMAT, resolve_train_args, "train", DEFAULT_OUT)
    cfg = train_config(r, args)
    spec = data_spec(r)
    for flag in ("img_size", "num_classes"):
        v = r.get(flag)
        if v is not None and v < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: expected a positive number, got {v}")
    if not spec.info.builtin and r["pretrained"] is None and r["model"] is None:
        raise ConfigError(f"--checkpoint: fine-tuning on {spec.name} needs weights to start from (ViT-B_16.npz, a "
                          "timm .pth, a seeds' .bin or an fgvc-kit checkpoint), or --model NAME to train from scratch")
    class_names = class_names_of(spec)
    if r["num_classes"] is not None and r["num_classes"] != len(class_names):
        raise ConfigError(f"--num-classes {r['num_classes']}: dataset {spec.name} has {len(class_names)} classes")
    rank, world, device = init_distributed(args.device)
    try:
        torch.manual_seed(r["seed"])
        if resume:
            model = load_checkpoint(os.path.join(out, LAST_FILE))
        else:
            choice = image_size_choice(r, spec.name)
            img_size = r["img_size"]
            if img_size is None and choice.source != "checkpoint":  # a checkpoint is built at its own size
                img_size = choice.size
            known = img_size or choice.size  # said before a large model is built, when known
            if rank == 0 and known:
                print_image_size(known, choice, given=r["img_size"] is not None)
            model = build_model(num_classes=len(class_names), class_names=class_names, model=r["model"],
                                pretrained=r["pretrained"], img_size=img_size, head=r["head"], scorer=r["scorer"],
                                drop_path=r["drop_path"])
            if rank == 0 and not known:  # the model's own size, known once its weights are read
                print_image_size(int(model.spec["img_size"][0]), choice, given=False)
        head = getattr(model, "fgvc_head", None)
        for arg, used in (getattr(head, "fitted", None) or {}).items():
            if rank == 0:
                print(f"train: head {model.head_name}: {arg} not given: {used}", flush=True)
        train_set = build_dataset(spec, split="train", model=model)
        cfg = fit_batch(r, cfg, args, len(train_set), world, resume)
        holdout_set = build_dataset(spec, split="holdout", model=model) if spec.holdout > 0 else None
        if rank == 0 and not resume:
            os.makedirs(out, exist_ok=True)
            for name in (STATE_FILE, LAST_FILE, "best.safetensors", RESULTS_FILE, "metrics.jsonl"):
                if os.path.exists(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
            write_json({"format": RUN_FORMAT, "version": 1, "args": r, "data": spec.to_dict(),
                        "train": cfg.to_dict()}, run_path)
        extra = {"data": spec.to_dict(),
                 "training": {"recipe": {k: r[k] for k in ("optimizer", "lr", "weight_decay", "steps", "batch_size",
                                                            "warmup_steps", "label_smoothing", "seed")},
                              "pretrained": r["pretrained"], "world_size": world}}
        trainer = Trainer(model, train_set, cfg, holdout_set=holdout_set, out_dir=out, class_names=class_names,
                          checkpoint_extra=extra, device=args.device,
                          log_extra={"data": train_set.describe(), "model": model.spec["backbone"]},
                          on_estimate=estimate_printer("train", resume))
        if rank == 0:
            print(f"train: {model.spec['backbone']['name']} {model.spec['img_size'][0]}px, {spec.name} "
                  f"{len(train_set)} train / {len(holdout_set) if holdout_set else 0} held-out images, "
                  f"{len(class_names)} classes, {cfg.steps} steps x {cfg.batch_size * cfg.accum_steps * world} "
                  f"images, {world} process{'es' if world > 1 else ''} on {trainer.device}"
                  + (f"; resuming {out}" if resume else ""), flush=True)
            warn_oversubscribed("train")
        result = trainer.fit(resume=resume)
        summary: Dict[str, Any] = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "steps": result.steps,
                                   "time_s": result.time_s, "images_per_s": result.images_per_s,
                                   "resumed_from": result.resumed_from, "world_size": world,
                                   "holdout": result.last_eval, "best_step": result.best_step,
                                   "best_score": result.best_score, "test": {}}
        if r.get("test", True):
            test_set = build_dataset(spec, split="test", model=model)
            amp = trainer.amp_dtype
            res = evaluate(trainer.model, test_set, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                           device=trainer.device, amp_dtype=amp)
            summary["test"]["last"] = {"step": result.steps, **res.summary()}
            best_path = os.path.join(out, "best.safetensors")
            if result.best_step is not None and result.best_step != result.steps and os.path.isfile(best_path):
                best = load_checkpoint(best_path).to(trainer.device)
                res_b = evaluate(best, test_set, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
                                 device=trainer.device, amp_dtype=amp)
                summary["test"]["best"] = {"step": result.best_step, **res_b.summary()}
            elif result.best_step is not None:
                summary["test"]["best"] = summary["test"]["last"]
        skipped = {s.split: s.meta["skipped_images"] for s in (train_set, holdout_set)
                   if s is not None and s.meta.get("skipped_images")}
        if skipped:
            summary["skipped_images"] = skipped
        if rank == 0:
            write_json(summary, os.path.join(out, RESULTS_FILE))
            for split, bad in skipped.items():
                print(f"skipped {len(bad)} unreadable {split} image{'s' if len(bad) != 1 else ''} "
                      f"(--skip-bad-images): " + ", ".join(b["path"] for b in bad[:5])
                      + (" ..." if len(bad) > 5 else "") + f"; all in {os.path.join(out, RESULTS_FILE)}")
            print(f"trained {result.steps} steps"
                  + (f" (resumed at {result.resumed_from})" if result.resumed_from is not None else "")
                  + f" in {result.time_s:.1f} s ({result.images_per_s:.0f} images/s) -> {out}")
            if result.last_eval:
                print(f"holdout: top-1 {pct(result.last_eval.get('top1'))}"
                      + (f" (best {pct(result.best_score)} at step {result.best_step})"
                         if result.best_step is not None else ""))
            for which, ev in summary["test"].items():
                print(f"test ({which}, step {ev['step']}): top-1 {pct(ev['top1'])}  top-5 {pct(ev['top5'])}  "
                      f"mean per-class {pct(ev['mean_class_acc'])}  ({ev['n']} images)")
            print(f"checkpoints: {os.path.join(out, LAST_FILE)}"
                  + (f", {os.path.join(out, 'best.safetensors')}" if result.best_step is not None else ""))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0



def output_folder(args) -> str:
    """The folder this command writes (held as its one writer while it runs; see tavt_kit.lock)."""
    return args.out or DEFAULT_OUT


add_arguments = add_train_arguments
run = run_train
