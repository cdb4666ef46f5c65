"""Fine-tuning's recipes and settings: what a run uses for each setting not given (:class:`FineTuneSettings`).

The seeds' recipe for real datasets, short CPU recipes for the built-in ones, a gentle one for pretrained
backbones on them; :func:`resolve_settings` fills a run's settings from the recipe and fits the defaults that
do not suit a short run (warm-up, batch size). Messages name the settings (``steps=``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..errors import ConfigError

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
#: what a run uses for the data and model settings not given
BASE_SETTINGS: Dict[str, Any] = dict(data=None, holdout=0.1, split_seed=0, resize=None, train_crop="random",
                                     model=None, pretrained=None, img_size=None, num_classes=None, head=None,
                                     scorer=None, drop_path=None, amp=None, test=True)

#: settings that change what a run computes: a resumed run must keep them
RESULT_KEYS = ("dataset", "dataset_options", "holdout", "split_seed", "resize", "train_crop", "model", "pretrained",
               "img_size", "head", "scorer", "drop_path", "optimizer", "lr", "weight_decay", "momentum", "steps",
               "warmup_steps", "lr_schedule", "min_lr", "batch_size", "accum_steps", "label_smoothing",
               "clip_grad", "amp", "seed", "eval_every")
#: settings a resumed run may change (where the data lives, logging, the final test)
RESUMABLE_CHANGES = ("data", "test", "save_every", "log_every", "eval_batch_size", "skip_bad_images")
#: settings that build a model: a run that starts from a given model (distillation) has none
NOT_WITH_A_MODEL = ("pretrained", "model", "num_classes", "img_size", "head", "drop_path")
RUN_FORMAT = "fgvc-kit/train-run"
RESULTS_FILE = "results.json"
#: results.json's format and version (train, distill)
RESULTS_FORMAT = "fgvc-kit/run-results"
RESULTS_VERSION = 1


@dataclass(frozen=True)
class DataSettings:
    """The data of a run; None = the recipe's (or the checkpoint's recorded) value."""

    dataset: Optional[str] = None  #: a dataset format (tavt_kit.data.DATASETS); default: demo
    data: Optional[str] = None  #: the dataset's root folder
    holdout: Optional[float] = None  #: held-out fraction of the training set (default 0.1)
    split_seed: Optional[int] = None
    resize: Optional[int] = None
    train_crop: Optional[str] = None
    dataset_options: Optional[Dict[str, Any]] = None
    skip_bad_images: Optional[bool] = None
    workers: Optional[int] = None  #: data loader processes

    def given(self) -> Dict[str, Any]:
        """The settings given (not None), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class OptimSettings(DataSettings):
    """Data plus optimisation and run settings (fine-tuning's and distillation's); None = the recipe's."""

    scorer: Optional[str] = None  #: patch-drop scorer stored with the model (tavt, cls, tavt-sampled)
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    momentum: Optional[float] = None
    steps: Optional[int] = None
    #: passes over the training split: sets ``steps`` from the split's size once it is read (not with ``steps``)
    epochs: Optional[float] = None
    warmup_steps: Optional[int] = None
    lr_schedule: Optional[str] = None
    min_lr: Optional[float] = None
    batch_size: Optional[int] = None
    accum_steps: Optional[int] = None
    label_smoothing: Optional[float] = None
    clip_grad: Optional[float] = None
    amp: Optional[str] = None  #: auto, bf16 or fp16 (None: full precision)
    seed: Optional[int] = None
    eval_every: Optional[int] = None
    save_every: Optional[int] = None
    log_every: Optional[int] = None
    eval_batch_size: Optional[int] = None
    test: Optional[bool] = None  #: report test accuracy at the end (default True)
    progress: Optional[bool] = None  #: a progress bar (default: when stderr is a terminal)


@dataclass(frozen=True)
class FineTuneSettings(OptimSettings):
    """Every setting of a fine-tuning run (:func:`tavt_kit.train.fine_tune`); None = the recipe's value."""

    pretrained: Optional[str] = None  #: weights to start from (any file tavt_kit.models reads)
    model: Optional[str] = None  #: model to build (timm ViT name or fgvc_tiny)
    img_size: Optional[int] = None
    num_classes: Optional[int] = None
    head: Optional[str] = None
    drop_path: Optional[float] = None


def builtin_recipe(name: str) -> Dict[str, Any]:
    """The short CPU recipe of a built-in dataset (the cluttered digits need more steps than the plain ones)."""
    return CLUTTERED_RECIPE if name.startswith("cluttered-") else DEMO_RECIPE


def stored_settings(given: Dict[str, Any]) -> Dict[str, Any]:
    """The given settings a run stores (and a resumed run compares): not the loader's or the progress bar's."""
    return {k: v for k, v in given.items() if k not in ("workers", "progress")}


def check_own_holdout(name: str, holdout: Optional[float]) -> None:
    """``holdout`` given for a dataset that brings its own held-out split: refused (it would be ignored)."""
    from ..data import dataset_info

    if holdout is None or float(holdout) == 0.0:
        return
    info = dataset_info(name)
    if info.own_holdout:
        raise ConfigError(f"holdout={holdout}: dataset {info.name} has its own held-out split (disjoint source "
                          "images); set its size with dataset_options['holdout']=N, or holdout=0 for none")


def resolve_settings(given: Dict[str, Any]) -> Dict[str, Any]:
    """Every setting of a run: those given, the recipe's defaults for the rest (``notes``: the fitted ones)."""
    from ..data import dataset_info

    info = dataset_info(given.get("dataset") or "demo")
    recipe = builtin_recipe(info.name) if info.builtin else SEEDS_RECIPE
    if info.builtin and given.get("pretrained") and _foreign(given["pretrained"]):
        recipe = PRETRAINED_RECIPE
    check_own_holdout(info.name, given.get("holdout"))
    check_epochs(given)
    r: Dict[str, Any] = dict(recipe, **BASE_SETTINGS)
    r["dataset"] = info.name
    r.update(stored_settings({k: v for k, v in given.items() if k != "dataset"}))
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


def check_epochs(given: Dict[str, Any]) -> None:
    """``epochs`` is a positive number of passes and is not given with ``steps`` (which it sets)."""
    epochs = given.get("epochs")
    if epochs is None:
        return
    if "steps" in given:
        raise ConfigError(f"steps={given['steps']} and epochs={epochs:g} both given: epochs sets the steps from the "
                          "training split's size; give one of them")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 < epochs < float("inf"):
        raise ConfigError(f"epochs={epochs!r}: expected a positive number of passes over the training split")


def fit_steps(r: Dict[str, Any], cfg, given: Dict[str, Any], n: int, world: int, resume: bool,
              log: Callable[[str], None]):
    """``epochs`` given: the steps that pass that many times over the ``n`` training images (at least one), the
    warm-up not given kept at the recipe's share of the steps; returns the config to train with."""
    if resume or given.get("epochs") is None:
        return cfg
    per_step = cfg.batch_size * cfg.accum_steps * world
    before, r["steps"] = r["steps"], max(1, math.ceil(given["epochs"] * n / per_step))
    if "warmup_steps" not in given:
        r["warmup_steps"] = int(r["warmup_steps"] * r["steps"] / before)
    log(f"epochs={given['epochs']:g}: {r['steps']} steps of {per_step} images over the {n} training images "
        f"(warm-up {r['warmup_steps']} steps)")
    return dataclasses.replace(cfg, steps=r["steps"], warmup_steps=r["warmup_steps"])


def fit_warmup(r: Dict[str, Any], given: Dict[str, Any], recipe: Dict[str, Any]) -> List[str]:
    """Warm-up not given that leaves less than half of the steps for the decay becomes the recipe's fraction of
    the steps (a short run never fails on it); returns what was changed."""
    if "warmup_steps" in given or 2 * r["warmup_steps"] <= r["steps"]:
        return []
    fraction = recipe["warmup_steps"] / recipe["steps"]
    old, r["warmup_steps"] = r["warmup_steps"], int(fraction * r["steps"])
    return [f"warmup_steps= not given: {r['warmup_steps']} ({fraction:.0%} of steps= {r['steps']}; the recipe's "
            f"{old} does not fit)"]


def fit_batch(r: Dict[str, Any], cfg, given: Dict[str, Any], n: int, world: int, resume: bool,
              log: Callable[[str], None]):
    """A batch size not given that is larger than a small training split becomes the split's size (per
    process); returns the config to train with."""
    if resume or "batch_size" in given or cfg.batch_size * world <= n or n < world:
        return cfg
    old, r["batch_size"] = cfg.batch_size, max(1, n // world)
    log(f"batch_size= not given: {r['batch_size']} (the recipe's {old} is more than the {n} training images)")
    return dataclasses.replace(cfg, batch_size=r["batch_size"])


def train_config(r: Dict[str, Any], workers: Optional[int] = None, progress: Optional[bool] = None):
    """The :class:`~tavt_kit.train.TrainConfig` of a run's resolved settings."""
    from .config import TrainConfig

    keys = ("steps", "batch_size", "accum_steps", "optimizer", "lr", "weight_decay", "momentum", "warmup_steps",
            "lr_schedule", "min_lr", "label_smoothing", "clip_grad", "amp", "seed", "eval_every", "save_every",
            "log_every", "eval_batch_size")
    return TrainConfig(**{k: r[k] for k in keys}, num_workers=workers, progress=progress).validate()


def data_spec(r: Dict[str, Any]):
    """The :class:`~tavt_kit.data.DataSpec` of a run's resolved settings."""
    from ..data import DataSpec

    return DataSpec(name=r["dataset"], root=r["data"], holdout=r["holdout"], split_seed=r["split_seed"],
                    resize=r["resize"], train_crop=r["train_crop"], skip_bad_images=bool(r.get("skip_bad_images")),
                    options=r.get("dataset_options") or {})
