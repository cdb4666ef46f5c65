"""Command-line options every data-taking command shares (train, distill, evaluate, search, prune)."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

from ..data import DATASETS, DataSpec, dataset_info
from ..data.transforms import TRAIN_CROPS
from ..errors import ConfigError


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--dataset --data --holdout --split-seed --resize --train-crop --workers``."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", metavar="NAME",
                   help=f"dataset format: {', '.join(DATASETS)} (default: the checkpoint's dataset, else demo, "
                        "the built-in digits)")
    g.add_argument("--data", metavar="DIR", help="the dataset's root folder (not needed for demo; fashion-mnist and "
                                                 "cluttered-fashion: default /usr/share/datasets/fashion-mnist)")
    g.add_argument("--holdout", type=float, metavar="FRACTION",
                   help="fraction of the training set held out (stratified, seeded) for model selection and "
                        "search; 0 = none (default: 0.1)")
    g.add_argument("--dataset-option", dest="dataset_options", action=OptionAction, metavar="KEY=VALUE",
                   help="an option of a generated dataset, repeatable (cluttered-digits: seed, train, holdout, "
                        "test, canvas, digit_min, digit_max, clutter, fragment; cluttered-fashion: the same with "
                        "item_min, item_max; fashion-mnist: train, holdout, test = at most N images; see the README)")
    g.add_argument("--split-seed", type=int, metavar="N", help="seed of the held-out split (default: 0)")
    g.add_argument("--resize", type=int, metavar="N",
                   help="resize size before cropping (default: 600/448 of the image size, 500/384 for "
                        "ultra-FGVC sets; plain folders: the whole image resized to the input, no crop)")
    g.add_argument("--train-crop", choices=TRAIN_CROPS,
                   help="training crop: random = resize + random crop (the seeds'), rrc = random resized crop")
    g.add_argument("--workers", type=int, metavar="N",
                   help="data loader processes (default: 0 for demo, else up to 8)")
    g.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="leave out images that cannot be decoded (missing, truncated, not an image) instead of "
                        "stopping; how many and which are printed and recorded")
    return g


class OptionAction(argparse.Action):
    """``--dataset-option KEY=VALUE`` (repeatable) into a dict; a malformed pair is a one-line error."""

    def __call__(self, parser, namespace, value, option_string=None):
        key, sep, val = str(value).partition("=")
        if not sep or not key.strip():
            parser.error(f"{option_string} {value}: expected KEY=VALUE, e.g. seed=1")
        d = dict(getattr(namespace, self.dest, None) or {})
        key, val = key.strip(), val.strip()
        if key in d and d[key] != val:
            parser.error(f"{option_string} {key}= given twice ({key}={d[key]}, then {key}={val}); expected each "
                         "key once")
        d[key] = val
        setattr(namespace, self.dest, d)


def check_own_holdout(name: str, holdout: Optional[float]) -> None:
    """``--holdout`` given for a dataset that brings its own held-out split: refused (it would be ignored)."""
    if holdout is None or float(holdout) in (0.0,):
        return
    info = dataset_info(name)
    if info.own_holdout:
        raise ConfigError(f"--holdout {holdout}: dataset {info.name} has its own held-out split (disjoint source "
                          "images); set its size with --dataset-option holdout=N, or --holdout 0 for none")


def _recorded(fallback: Optional[Dict[str, Any]]) -> Optional[DataSpec]:
    """A checkpoint's recorded data as a :class:`DataSpec` (None when it records none or an unreadable one)."""
    from ..errors import TavtKitError

    if not isinstance(fallback, dict) or not fallback.get("name"):
        return None
    try:
        return DataSpec.from_dict(fallback)
    except (TavtKitError, TypeError, ValueError):
        return None


def merged_options(recorded: Optional[Dict[str, Any]], given: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``--dataset-option``s over the options a checkpoint records, key by key (the given ones win)."""
    if given is None:
        return None
    return {**dict(recorded or {}), **dict(given)}


def check_no_training_images(trained: Optional[DataSpec], spec: DataSpec) -> None:
    """Refuse data options that would score a model on images it trained on (held-out or test images drawn from
    its training sources): one line naming the option. ``trained``: the data the model records."""
    from ..data.datasets import training_overlap

    if trained is None:
        return
    why = training_overlap(trained, spec)
    if why is not None:
        raise ConfigError(why)


def data_spec_from_args(args: argparse.Namespace, fallback: Optional[Dict[str, Any]] = None) -> DataSpec:
    """A :class:`DataSpec` from the options; ``fallback`` (a checkpoint's recorded data) fills what is not given.

    With the checkpoint's dataset (no ``--dataset``, or the same one) its record is the base: each option given
    replaces its value, ``--dataset-option``s key by key over the recorded ones. Options that would put images the
    model trained on into the held-out or test split are refused (:func:`check_no_training_images`).
    """
    from ..data import dataset_info as info_of

    trained = _recorded(fallback)
    same = trained is not None and (getattr(args, "dataset", None) is None
                                    or info_of(args.dataset).name == trained.name)
    base: Dict[str, Any] = {}
    if same:
        base = {k: v for k, v in fallback.items() if k in DataSpec.__dataclass_fields__}
    elif getattr(args, "dataset", None) is None and getattr(args, "data", None):
        raise ConfigError(f"--data {args.data}: give --dataset too (one of {', '.join(DATASETS)})")
    else:
        base = {"name": args.dataset or "demo"}
    for flag, key in (("data", "root"), ("holdout", "holdout"), ("split_seed", "split_seed"),
                      ("resize", "resize"), ("train_crop", "train_crop"), ("skip_bad_images", "skip_bad_images")):
        v = getattr(args, flag, None)
        if v is not None:
            base[key] = v
    given = getattr(args, "dataset_options", None)
    if given is not None:
        base["options"] = merged_options(base.get("options") if same else None, given)
    check_own_holdout(base.get("name", "demo"), getattr(args, "holdout", None))
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers: expected a non-negative number of processes, got {workers}")
    spec = DataSpec(**base)
    check_no_training_images(trained if same else None, spec)
    return spec
