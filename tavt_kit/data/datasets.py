"""Datasets by name, their splits, and data loaders.

``build_dataset(name, root, split, img_size)`` gives a torch ``Dataset`` of
``(uint8 CHW image, label)`` for one split:

* ``train``: the official training set minus the held-out split;
* ``holdout``: a deterministic stratified fraction of the training set
  (``holdout=0.1``, ``split_seed=0``) for search and model selection;
* ``test``: the official test set, only for reporting;
* ``trainval``: the whole official training set.

Augmentation (random crop, flip) is drawn per sample from a seed: a training
sampler passes ``(index, seed)`` keys and the image is a pure function of the
file and that seed, so data order and augmentation are independent of worker
processes and can be resumed exactly. Evaluation transforms are deterministic.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DatasetError
from ..files import atomic_path
from . import formats
from . import cluttered, cluttered_fashion, fashion
from .decode import to_rgb
from .demo import load_demo, upscaled
from .splits import check_fraction, stratified_split, stratified_subset
from .transforms import TRAIN_CROPS, image_transform, pair, resize_for

SPLITS = ("train", "holdout", "test", "trainval")

SEEDS_RATIO = 600 / 448   # CUB, NABirds, Dogs, Cars, iNat: resize 600 -> crop 448
UFGVC_RATIO = 500 / 384   # Cotton80, SoyLoc and the other ultra-FGVC sets: 500 -> 384


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset format fgvc-kit reads."""

    name: str
    load: Callable[[Optional[str]], formats.RawDataset]
    description: str
    layout: str
    #: resize size / crop size; None: the whole image resized to the input, no crop (plain folders)
    resize_ratio: Optional[float] = SEEDS_RATIO
    img_size: Optional[int] = 448  # the seeds' crop size; None = the model's own
    hflip: bool = True
    needs_root: bool = True
    aliases: Tuple[str, ...] = ()
    #: the dataset brings its own held-out split (``--holdout`` does not apply)
    own_holdout: bool = False
    #: generator options (``--dataset-option KEY=VALUE``): a function that validates them and fills defaults
    options: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
    #: a generated dataset: the options that decide which source images each split is drawn from (a change of
    #: one of them can put images a model trained on into its held-out or test split), and a function of the full
    #: options giving each split's source indices (``{"train": ..., "holdout": ..., "test": ...}``)
    #: ``sources(options, root)`` (``root``: the dataset's folder, None for a dataset without one)
    source_options: Tuple[str, ...] = ()
    sources: Optional[Callable[[Dict[str, Any], Optional[str]], Dict[str, Any]]] = None
    #: an in-memory dataset of small images: ``array(root, options, (H, W))`` gives every image at that size,
    #: uint8 ``(N, 1 or 3, H, W)``, indexed by the first element of its samples ``(row, label)``
    array: Optional[Callable[[Optional[str], Dict[str, Any], Tuple[int, int]], torch.Tensor]] = None
    #: the folder read when no root is given (None: a root is required when ``needs_root``)
    default_root: Optional[str] = None

    @property
    def builtin(self) -> bool:
        """Small images held in memory (bundled, generated, or IDX files read whole): the short CPU recipe, the
        tiny model and the model's own input size are its defaults, and its images are not augmented."""
        return self.array is not None


#: canonical name -> DatasetInfo
DATASETS: Dict[str, DatasetInfo] = {}
_ALIASES: Dict[str, str] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make a dataset format available to ``build_dataset`` and ``--dataset``."""
    DATASETS[info.name] = info
    for a in (info.name,) + tuple(info.aliases):
        _ALIASES[a.lower()] = info.name
    return info


register_dataset(DatasetInfo("demo", load_demo, "built-in handwritten digits (scikit-learn, no download)",
                             "nothing (bundled)", resize_ratio=1.0, img_size=None, hflip=False, needs_root=False,
                             aliases=("digits",), array=lambda root, options, size: upscaled(size)))
register_dataset(DatasetInfo(cluttered.NAME, cluttered.load_cluttered,
                             "built-in cluttered digits: one digit among clutter on a larger canvas, disjoint "
                             "source digits per split (generated, no download)", "nothing (generated)",
                             resize_ratio=1.0, img_size=None, hflip=False, needs_root=False,
                             aliases=("cluttered", "cluttered_digits"), own_holdout=True,
                             options=cluttered.check_options, source_options=cluttered.SOURCE_OPTIONS,
                             sources=cluttered.sources_of,
                             array=lambda root, o, size: cluttered.resized(cluttered.option_key(o), size)))
register_dataset(DatasetInfo("cub", formats.load_cub, "CUB-200-2011 (200 bird species)", formats.CUB_LAYOUT,
                             aliases=("cub200", "cub_200_2011", "cub-200-2011")))
register_dataset(DatasetInfo("nabirds", formats.load_nabirds, "NABirds (555 North American bird classes)",
                             formats.NABIRDS_LAYOUT))
register_dataset(DatasetInfo("dogs", formats.load_dogs, "Stanford Dogs (120 breeds)", formats.DOGS_LAYOUT,
                             aliases=("stanford_dogs", "stanforddogs")))
register_dataset(DatasetInfo("cars", formats.load_cars, "Stanford Cars (196 models)", formats.CARS_LAYOUT,
                             aliases=("stanford_cars", "stanfordcars")))
register_dataset(DatasetInfo("inat2017", formats.load_inat2017, "iNaturalist 2017 (5089 species; val = test)",
                             formats.INAT_LAYOUT, aliases=("inaturalist2017", "inat")))
for _name, _desc in (("cotton80", "Cotton80 (ultra-FGVC, 80 cultivars)"),
                     ("soyloc", "SoyLoc (ultra-FGVC, 200 cultivars)"),
                     ("soygene", "SoyGene (ultra-FGVC)"), ("soyglobal", "SoyGlobal (ultra-FGVC)"),
                     ("soyageing", "SoyAgeing (ultra-FGVC; its root is one of R1..R6)"),
                     ("ufgvc", "any set in the ultra-FGVC anno/ layout")):
    register_dataset(DatasetInfo(_name, formats.load_ufgvc, _desc, formats.UFGVC_LAYOUT, resize_ratio=UFGVC_RATIO, img_size=384,
                                 aliases=("cotton",) if _name == "cotton80" else ()))
register_dataset(DatasetInfo("folder", formats.load_folder, "plain class folders", formats.FOLDER_LAYOUT,
                             resize_ratio=None, img_size=None, aliases=("folders", "imagefolder")))
register_dataset(DatasetInfo(fashion.NAME, fashion.load_fashion, "Fashion-MNIST (10 kinds of clothing; or MNIST, "
                             "KMNIST, ... in IDX files), held in memory", fashion.LAYOUT, resize_ratio=1.0,
                             img_size=None, hflip=False, aliases=("fashion", "fashion_mnist", "fashionmnist", "idx"),
                             options=fashion.check_options, array=fashion.images, default_root=fashion.DEFAULT_ROOT))
register_dataset(DatasetInfo(cluttered_fashion.NAME, cluttered_fashion.load_cluttered_fashion,
                             "cluttered Fashion-MNIST: one item among fragments of others on a larger canvas, "
                             "disjoint source items per split (generated from the IDX files)", fashion.LAYOUT,
                             resize_ratio=1.0, img_size=None, hflip=False,
                             aliases=("cluttered_fashion", "cluttered-idx", "cluttered-fashion-mnist"),
                             own_holdout=True, options=cluttered_fashion.check_options,
                             source_options=cluttered_fashion.SOURCE_OPTIONS, sources=cluttered_fashion.sources_of,
                             array=cluttered_fashion.images, default_root=fashion.DEFAULT_ROOT))


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset name or alias (case-insensitive)."""
    key = _ALIASES.get(str(name).lower())
    if key is None:
        close = difflib.get_close_matches(str(name).lower(), list(_ALIASES), n=1, cutoff=0.6)
        hint = f" (did you mean {_ALIASES[close[0]]}?)" if close else ""
        raise DatasetError(f"unknown dataset {name!r}{hint}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def list_datasets() -> List[str]:
    return list(DATASETS)


# ---------------------------------------------------------------------- spec
@dataclass
class DataSpec:
    """Which data, and how it is split and preprocessed (JSON-able; stored in checkpoints).

    ``resize`` (default: the dataset's ratio times the image size; a plain folder: the whole image),
    ``train_crop`` (``random``: resize + random crop, the seeds' recipe; ``rrc``:
    random resized crop) and the held-out split (``holdout`` fraction of the
    training set, stratified, ``split_seed``).
    """

    name: str = "demo"
    root: Optional[str] = None
    holdout: float = 0.1
    split_seed: int = 0
    resize: Optional[int] = None
    train_crop: str = "random"
    #: leave out images that cannot be decoded (each is checked once when the split is built) instead of failing
    skip_bad_images: bool = False
    #: a generated dataset's options (``{KEY: VALUE}``), as given (defaults are not stored)
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = dataset_info(self.name).name
        self.holdout = check_fraction(self.holdout, "holdout")
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, (int, np.integer)):
            raise ConfigError(f"split_seed={self.split_seed!r}: expected an integer")
        self.split_seed = int(self.split_seed)
        if self.train_crop not in TRAIN_CROPS:
            raise ConfigError(f"train_crop={self.train_crop!r}: expected one of {', '.join(TRAIN_CROPS)}")
        if self.resize is not None and (isinstance(self.resize, bool) or int(self.resize) < 1):
            raise ConfigError(f"resize={self.resize!r}: expected a positive size")
        if self.root is not None:
            self.root = os.fspath(self.root)
            if not self.info.needs_root and self.root:
                raise ConfigError(f"root={self.root}: the built-in {self.name} dataset has no root folder; give "
                                  "the format of the data in that folder as the dataset (cub, folder, ...)")
            if self.root:  # stored absolute: a checkpoint or search.json used from another folder still finds it
                self.root = os.path.abspath(os.path.expanduser(self.root))
        self.options = dict(self.options or {})
        if self.options:
            if self.info.options is None:
                key = next(iter(self.options))
                raise ConfigError(f"options[{key!r}]={self.options[key]}: dataset {self.name} takes no options "
                                  "(only generated datasets do)")
            full = self.info.options(self.options)  # validates, one line
            self.options = {k: full[k] for k in self.options}  # as given, in their types (CLI values are text)

    @property
    def info(self) -> DatasetInfo:
        return dataset_info(self.name)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DataSpec":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# -------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=8)
def _load_raw_cached(name: str, root: Optional[str], stamp: Tuple, options: Tuple) -> formats.RawDataset:
    if DATASETS[name].options is not None:
        return DATASETS[name].load(root, dict(options))
    return DATASETS[name].load(root)


def load_raw(name: str, root: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> formats.RawDataset:
    """The official splits of a dataset (parsed once per process, root and options)."""
    info = dataset_info(name)
    key = tuple(sorted(info.options(dict(options or {})).items())) if info.options is not None else ()
    root = root_of(info, root)
    stamp: Tuple = ()
    if root is not None and os.path.isdir(root):
        st = os.stat(root)
        stamp = (os.path.realpath(root), st.st_mtime_ns)
    return _load_raw_cached(info.name, root, stamp, key)


def root_of(info: DatasetInfo, root: Optional[str]) -> Optional[str]:
    """The folder a dataset is read from: ``root``, else its default folder; None for a dataset without one."""
    if not info.needs_root:
        return None
    if root is None or root == "":
        if info.default_root is None:
            raise DatasetError(f"root={root!r}: dataset {info.name} needs its root folder; expected {info.layout}")
        if not os.path.isdir(info.default_root):
            raise DatasetError(f"root={root!r}: dataset {info.name} needs its root folder, and its default "
                               f"{info.default_root} is not there; expected {info.layout}")
        return info.default_root
    return root


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return to_rgb(im, path)
    except DatasetError:  # a mode it refuses, said by to_rgb (a ValueError too)
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: image listed by the dataset is missing") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from None


class FGVCDataset(Dataset):
    """One split of a dataset: items are ``(uint8 CHW tensor, label)``.

    A key may be an index or ``(index, seed)``; with a seed the random
    augmentation is drawn from that seed alone (resumable, worker-independent).

    Attributes: ``name``, ``split``, ``class_names``, ``num_classes``,
    ``targets`` (labels in item order), ``samples`` (``(path, label)``; for the
    demo ``(digit index, label)``), ``spec`` (:class:`DataSpec`), ``img_size``,
    ``augment``, ``transform_info``.
    """

    def __init__(self, spec: DataSpec, split: str, samples: List[Tuple[Any, int]], class_names: List[str],
                 img_size: Tuple[int, int], augment: bool, transform, transform_info: Dict[str, Any],
                 array: Optional[torch.Tensor] = None, meta: Optional[Dict[str, Any]] = None):
        self.spec = spec
        self.name = spec.name
        self.split = split
        self.samples = samples
        self.targets = [int(lab) for _, lab in samples]
        self.class_names = list(class_names)
        self.num_classes = len(class_names)
        self.img_size = img_size
        self.augment = augment
        self.transform = transform
        self.transform_info = transform_info
        self.meta = dict(meta or {})
        self._array = array

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        """The decoded image before the transform (PIL for files, a uint8 tensor for the demo)."""
        src, _ = self.samples[index]
        if self._array is not None:
            return self._array[src].expand(3, -1, -1)
        return _open_image(src)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        img = self.load(index)
        if self.transform is not None:
            if seed is not None and self.augment:
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(int(seed))  # CPU only: transforms draw from it
                    img = self.transform(img)
            else:
                img = self.transform(img)
        if self._array is not None:
            img = img.contiguous()
        return img, self.targets[index]

    def describe(self) -> Dict[str, Any]:
        counts = np.bincount(self.targets, minlength=self.num_classes) if self.targets else np.zeros(0)
        return {"dataset": self.name, "root": self.spec.root, "split": self.split, "size": len(self),
                "num_classes": self.num_classes,
                "holdout": "own split" if self.spec.info.own_holdout else self.spec.holdout,
                "split_seed": self.spec.split_seed,
                **({"options": self.spec.options} if self.spec.options else {}),
                "images_per_class": [int(counts.min()), int(counts.max())] if len(counts) else [0, 0],
                **({"skipped_images": self.meta["skipped_images"]} if "skipped_images" in self.meta else {}),
                **self.transform_info}

    def __repr__(self) -> str:
        return f"FGVCDataset({self.name}, split={self.split}, {len(self)} images, {self.num_classes} classes)"


def split_samples(raw: formats.RawDataset, split: str, holdout: float, split_seed: int) -> List[Tuple[Any, int]]:
    """The samples of one split (``train`` and ``holdout`` carved from the official training set)."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if split == "test":
        return [raw.test[i] for i in _limited(raw, "test", np.arange(len(raw.test)), raw.test, split_seed)]
    if raw.holdout is not None:  # the dataset's own held-out split (disjoint sources): never carved from train
        return {"train": list(raw.train), "holdout": list(raw.holdout),
                "trainval": list(raw.train) + list(raw.holdout)}[split]
    if holdout == 0 and split != "holdout":
        return [raw.train[i] for i in _limited(raw, "train", np.arange(len(raw.train)), raw.train, split_seed)]
    if holdout == 0:
        raise ConfigError("split='holdout': there is no held-out split with holdout=0")
    if split == "trainval" and not raw.limits:
        return list(raw.train)
    keep, held = stratified_split([lab for _, lab in raw.train], holdout, split_seed)
    parts = {"train": keep, "holdout": held}
    idx = np.sort(np.concatenate([_limited(raw, k, parts[k], raw.train, split_seed)
                                  for k in (("train", "holdout") if split == "trainval" else (split,))]))
    return [raw.train[i] for i in idx]


def _limited(raw: formats.RawDataset, split: str, idx: np.ndarray, samples, seed: int) -> np.ndarray:
    """``idx`` (positions in ``samples``), or a stratified, seeded subset of ``raw.limits[split]`` of them."""
    n = (raw.limits or {}).get(split)
    if not n or n >= len(idx):
        return np.asarray(idx, dtype=np.int64)
    return np.asarray(idx)[stratified_subset([samples[i][1] for i in idx], n, seed)]


def training_overlap(trained: DataSpec, used: DataSpec) -> Optional[str]:
    """Why evaluating with ``used`` would score a model on images it trained on (``trained``: the data it was
    trained with, as its checkpoint records it), or None.

    A generated dataset draws each split from its own source images, chosen by some of its options (the
    cluttered digits' ``seed``): another value of one of them makes held-out and test images out of the model's
    training sources. A dataset whose held-out split is carved from the training set (``holdout``,
    ``split_seed``): another split puts training images into the held-out split. Nothing else is compared (the
    official test split and other sizes or rendering options are fine).
    """
    if trained.name != used.name:
        return None
    info = used.info
    if info.sources is not None:
        old, new = info.options(dict(trained.options)), info.options(dict(used.options))
        changed = [k for k in info.source_options if old[k] != new[k]]
        if not changed:
            return None
        root = root_of(info, used.root)
        a, b = info.sources(old, root), info.sources(new, root)
        seen = set(np.asarray(a["train"]).tolist())
        hit = {s: len(set(np.asarray(b[s]).tolist()) & seen) for s in ("holdout", "test")}
        if not any(hit.values()):
            return None
        k = changed[0]
        return (f"options[{k!r}]={new[k]}: the model was trained on {info.name} with {k} {old[k]}; with {k} "
                f"{new[k]}, {hit['test']} of the {len(b['test'])} source images of the test split and "
                f"{hit['holdout']} of the {len(b['holdout'])} of the held-out split are ones it trained on, so its "
                f"test images would overlap the model's training images; keep {k} {old[k]} (the sizes may change)")
    if info.own_holdout or used.holdout == 0 or \
            (used.holdout, used.split_seed) == (trained.holdout, trained.split_seed):
        return None
    raw = load_raw(used.name, used.root, used.options)
    seen = set(split_samples(load_raw(used.name, used.root, trained.options),  # the options it trained with
                             "trainval" if trained.holdout == 0 else "train", trained.holdout, trained.split_seed))
    held = split_samples(raw, "holdout", used.holdout, used.split_seed)
    n = sum(1 for sample in held if sample in seen)
    if not n:
        return None
    changed = ", ".join(f"{k}={getattr(used, k)}" for k in ("holdout", "split_seed")
                        if getattr(used, k) != getattr(trained, k))
    return (f"{changed}: {n} of the {len(held)} held-out images are images the model trained on (it was trained "
            f"with holdout {trained.holdout:g} and split seed {trained.split_seed}); use the split it was trained "
            "with")


def _model_img_size(model) -> Optional[Tuple[int, int]]:
    spec = getattr(model, "spec", None) or {}
    if spec.get("img_size"):
        return pair(spec["img_size"])
    return None


def build_dataset(name="demo", root: Optional[str] = None, split: str = "train", img_size=None, *,
                  holdout: Optional[float] = None, split_seed: Optional[int] = None,
                  augment: Optional[bool] = None, model=None, resize: Optional[int] = None,
                  interpolation: Optional[str] = None, train_crop: Optional[str] = None) -> FGVCDataset:
    """One split of a dataset, ready for a model.

    Args:
        name: a dataset name (``demo``, ``cub``, ``nabirds``, ``dogs``, ``cars``, ``inat2017``, ``cotton80``,
            ``soyloc``, ..., ``folder``, ``fashion-mnist``, ``cluttered-fashion``) or a :class:`DataSpec`.
        root: the dataset's folder (not needed for the demo; the Fashion-MNIST sets default to Debian's).
        split: ``train``, ``holdout``, ``test`` or ``trainval``.
        img_size: the crop size (default: the model's, else 448; 64 for the demo).
        holdout, split_seed: the held-out fraction of the training set and its seed.
        augment: random crop + flip (default: for ``train``/``trainval``).
        model: take ``img_size`` and ``interpolation`` from its spec.
        resize: resize size before the crop (default: ratio 600/448, or 500/384
            for ultra-FGVC sets, times ``img_size``; plain folders: the whole image
            resized to ``img_size``, no crop).
        interpolation: ``bicubic`` (default, or the model's), ``bilinear``, ...
        train_crop: ``random`` (resize + random crop) or ``rrc`` (random resized crop).
    """
    if isinstance(name, DataSpec):
        spec = name
        changes = {k: v for k, v in dict(root=root, holdout=holdout, split_seed=split_seed, resize=resize,
                                          train_crop=train_crop).items() if v is not None}
        if changes:
            spec = DataSpec(**{**spec.to_dict(), **changes})
    else:
        spec = DataSpec(name=name, root=root, holdout=0.1 if holdout is None else holdout,
                        split_seed=0 if split_seed is None else split_seed, resize=resize,
                        train_crop=train_crop or "random")
    info = spec.info
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if img_size is None:
        img_size = _model_img_size(model) if model is not None else None
    if img_size is None:
        img_size = info.img_size or (64 if info.builtin else 448)
    size = pair(img_size)
    if interpolation is None:
        interpolation = ((getattr(model, "spec", None) or {}).get("normalization") or {}).get(
            "interpolation", "bicubic") if model is not None else "bicubic"
    raw = load_raw(info.name, spec.root, spec.options)
    samples = split_samples(raw, split, spec.holdout, spec.split_seed)
    if augment is None:
        augment = split in ("train", "trainval")
    if info.array is not None:
        # no augmentation: flips mirror digits, and random translations slow a from-scratch ViT down more
        # than they help it in the demo's few hundred steps (the cluttered digits are already placed at random)
        t_info = {"img_size": list(size), "resize": None, "interpolation": "bilinear", "train_crop": None,
                  "augment": False}
        array = info.array(root_of(info, spec.root), spec.options, size)
        return FGVCDataset(spec, split, samples, raw.class_names, size, False, None, t_info,
                           array=array, meta=raw.meta)
    meta = dict(raw.meta)
    if spec.skip_bad_images:
        samples, bad = _decodable(samples)
        meta["skipped_images"] = bad
    whole = info.resize_ratio is None and spec.resize is None  # plain folders: nothing cut off by default
    rsz = resize_for(size, 1.0 if info.resize_ratio is None else info.resize_ratio, spec.resize)
    transform = image_transform(augment, size, rsz, interpolation, spec.train_crop, hflip=info.hflip)
    t_info = {"img_size": list(size), "resize": list(rsz), "interpolation": interpolation,
              "fit": "whole image" if whole else "crop",
              "train_crop": spec.train_crop if augment else None, "augment": bool(augment)}
    return FGVCDataset(spec, split, samples, raw.class_names, size, augment, transform, t_info, meta=meta)


def _decodable(samples: List[Tuple[Any, int]]) -> Tuple[List[Tuple[Any, int]], List[Dict[str, str]]]:
    """The samples whose image decodes completely, and the others with the reason (``--skip-bad-images``)."""
    keep, bad = [], []
    for path, label in samples:
        try:
            _open_image(path)
        except DatasetError as e:
            bad.append({"path": str(path), "reason": str(e).split(": ", 1)[-1]})
        else:
            keep.append((path, label))
    if not keep:
        raise DatasetError(f"none of the {len(samples)} images of the split could be decoded "
                           f"(first: {bad[0]['path']}: {bad[0]['reason']})")
    return keep, bad


def class_names_of(spec: DataSpec) -> List[str]:
    """The class names of a dataset (parses the annotations, decodes nothing)."""
    return list(load_raw(spec.name, spec.root, spec.options).class_names)


# -------------------------------------------------------------------- loaders
def default_workers(dataset: FGVCDataset) -> int:
    """In-memory demo: 0; image files: up to 8 worker processes, no more than the cores this process may run on
    (``taskset``, a container's CPU set: more workers than those only wait for them)."""
    if dataset._array is not None:
        return 0
    from ..machine import available_cores

    return max(0, min(8, available_cores()))


def shard_indices(n: int, rank: int = 0, world_size: int = 1) -> List[int]:
    """Every ``world_size``-th index from ``rank``: shards cover the set exactly once, no padding."""
    return list(range(rank, n, world_size))


def make_eval_loader(dataset: FGVCDataset, batch_size: int = 64, num_workers: Optional[int] = None,
                     rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """Deterministic, ordered loader of this rank's shard of ``dataset`` (uint8 images, labels)."""
    from torch.utils.data import Subset

    if num_workers is None:
        num_workers = default_workers(dataset)
    ds = dataset if world_size == 1 else Subset(dataset, shard_indices(len(dataset), rank, world_size))
    # a private generator: iterating must not consume the global RNG (exact resume of training)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False, generator=torch.Generator())


def _cache_key(dataset: FGVCDataset) -> Dict[str, Any]:
    paths = [str(s) for s, _ in dataset.samples]
    digest = hashlib.sha256("\n".join(f"{p}\t{t}" for p, t in zip(paths, dataset.targets)).encode()).hexdigest()
    return {"format": "fgvc-kit/eval-tensors", "version": 1, "dataset": dataset.name, "split": dataset.split,
            "holdout": dataset.spec.holdout, "split_seed": dataset.spec.split_seed, "size": len(dataset),
            **({"options": dataset.spec.options} if dataset.spec.options else {}),
            **({"root": dataset.spec.root} if dataset._array is not None and dataset.spec.root else {}),  # rows
            "samples_sha256": digest, **{k: v for k, v in dataset.transform_info.items()}}


def cached_tensors(dataset: FGVCDataset, cache_dir: Optional[str] = None, batch_size: int = 64,
                   num_workers: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """All images of an evaluation split decoded and preprocessed: ``(uint8 (N, 3, H, W), int64 labels)``.

    With ``cache_dir`` the tensors are stored there (safetensors, keyed by the
    dataset, split, held-out settings, sample list and transform) and read back
    on later calls, so a search decodes each image once. Augmenting datasets
    are refused: cached tensors must be deterministic.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    if dataset.augment:
        raise ConfigError(f"cached_tensors: the {dataset.split} split is built with augmentation; "
                          "build it with augment=False")
    key = _cache_key(dataset)
    path = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = os.path.join(cache_dir, f"{dataset.name}-{dataset.split}-{h}.safetensors")
        if os.path.isfile(path):
            try:
                with safe_open(path, framework="pt") as f:
                    meta = f.metadata() or {}
                    if json.loads(meta.get("key", "{}")) == key:
                        return f.get_tensor("images"), f.get_tensor("labels")
            except (SafetensorError, OSError, ValueError):  # a broken cache file is rebuilt below
                pass
    if dataset._array is not None:
        idx = torch.tensor([s for s, _ in dataset.samples], dtype=torch.long)
        images = dataset._array[idx].expand(-1, 3, -1, -1).contiguous()
        labels = torch.tensor(dataset.targets, dtype=torch.long)
    else:
        xs, ys = [], []
        for x, y in make_eval_loader(dataset, batch_size, num_workers):
            xs.append(x)
            ys.append(y)
        H, W = dataset.img_size
        images = torch.cat(xs) if xs else torch.zeros(0, 3, H, W, dtype=torch.uint8)
        labels = torch.cat(ys).long() if ys else torch.zeros(0, dtype=torch.long)
    if path is not None:
        needed = images.numel() * images.element_size() + labels.numel() * labels.element_size()
        with atomic_path(path, needed=needed) as tmp:  # a full disk: one DiskFullError naming the cache file
            save_file({"images": images, "labels": labels}, tmp, metadata={"key": json.dumps(key)})
    return images, labels
