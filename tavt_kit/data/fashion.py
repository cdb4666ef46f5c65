"""``fashion-mnist``: an IDX dataset (Fashion-MNIST, or MNIST, KMNIST, ... in the same files) held in memory.

* Root: the folder given, else ``/usr/share/datasets/fashion-mnist`` where Debian's ``dataset-fashion-mnist``
  package installs the files (:data:`DEFAULT_ROOT`); the files are read by :mod:`.idx`.
* Class names: Fashion-MNIST's ten (T-shirt/top ... Ankle boot) when the folder is named for it -- the root's
  name, a subfolder the files are found in, or the folder above their ``raw/`` folder contains ``fashion`` (any
  case), as Debian's folder and torchvision's ``FashionMNIST/raw`` do; then every label must lie in 0..9. Any
  other folder (MNIST, KMNIST, ...): the classes are ``0..K-1``, K = the largest training label + 1, named by
  their numbers.
* Samples are ``(row, label)``: rows index one array of every item, the training file's first (row = its index
  there), then the test file's (row = training count + its index), so a sample names the same item whatever
  the options.
* The held-out split is carved from the training file by ``holdout``/``split_seed`` (stratified), as for every
  dataset of files; the test split is the test file.
* Options (``DataSpec(options=...)``, the command line's ``--dataset-option``): ``train=N``, ``holdout=N``,
  ``test=N``: at most N images of that split (0 = all, the default), a stratified subset seeded by the split
  seed and taken after the held-out split is carved, so no count ever moves a training image into the held-out
  split. For CPU work: ``train=5000 holdout=1000 test=2000``.
* Images: grey uint8 ``(N, 1, H, W)`` at the model's input size (bilinear; antialiased when shrinking), repeated
  to three channels per item; no augmentation. The array holds every item at that size: 70 000 x H x W bytes
  (287 MB at 64 px), made once per process and size (reading the .gz files 0.4 s, resizing to 64 px
  2.4 s on one core).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import idx
from .cluttered import int_options
from .formats import RawDataset

NAME = "fashion-mnist"
#: where Debian's dataset-fashion-mnist package installs the IDX files
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
LAYOUT = f"{idx.LAYOUT} (Debian's dataset-fashion-mnist package installs them in {DEFAULT_ROOT})"
#: at most this many images per split; 0 = all
DEFAULT_OPTIONS: Dict[str, int] = dict(train=0, holdout=0, test=0)


def check_options(options: Mapping[str, Any]) -> Dict[str, int]:
    """The full option set (defaults filled in); unknown keys and bad values refused in one line."""
    out = int_options(NAME, DEFAULT_OPTIONS, options)
    for k, v in out.items():
        if v < 0:
            raise ConfigError(f"options[{k!r}]={v}: expected a number of images, or 0 for all of them")
    return out


def is_fashion(root: str) -> bool:
    """The folder is named for Fashion-MNIST: its name, a subfolder the files are found in, or the name of the
    folder above their ``raw/`` folder contains ``fashion`` (any case)."""
    root = os.path.abspath(os.fspath(root))
    folder = os.path.abspath(idx.idx_folder(root))
    names = [os.path.basename(root)] + os.path.relpath(folder, root).split(os.sep)
    if os.path.basename(folder).lower() == "raw":  # torchvision: <root>/FashionMNIST/raw
        names.append(os.path.basename(os.path.dirname(folder)))
    return any("fashion" in n.lower() for n in names)


def data_key(root: str) -> Tuple:
    """The key :func:`data` reads by (:func:`.idx.dataset_key`): ten classes for a Fashion-MNIST folder."""
    return idx.dataset_key(root, len(FASHION_CLASSES) if is_fashion(root) else None)


def data(key: Tuple) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}`` of a :func:`data_key` (read once)."""
    return idx.read_key(key)


def class_names(key: Tuple) -> List[str]:
    if key[2] is not None:
        return list(FASHION_CLASSES)
    return [str(i) for i in range(int(data(key)["train"][1].max()) + 1)]


def load_fashion(root: str, options: Mapping[str, Any] = ()) -> RawDataset:
    """The splits as ``(row, label)`` samples (the held-out split is carved later, by ``holdout``)."""
    o = check_options(dict(options))
    key = data_key(root)
    d = data(key)
    (_, ytr), (_, yte) = d["train"], d["test"]
    n = len(ytr)
    train = [(i, int(y)) for i, y in enumerate(ytr.tolist())]
    test = [(n + i, int(y)) for i, y in enumerate(yte.tolist())]
    meta = {"source": f"IDX files in {key[0]}", "train_items": n, "test_items": len(yte),
            "class_names": "Fashion-MNIST's" if key[2] is not None else "the label numbers",
            "image_size": list(d["train"][0].shape[1:])}
    limits = {k: v for k, v in o.items() if v > 0}
    return RawDataset(train, test, class_names(key), meta, limits=limits or None)


def resize_gray(x: torch.Tensor, size: Tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    """uint8 ``(N, 1, h, w)`` at ``size``: bilinear (antialiased when shrinking), rounded, ``chunk`` at a time."""
    size = tuple(int(v) for v in size)
    if tuple(x.shape[-2:]) == size:
        return x
    out = torch.empty((x.shape[0], x.shape[1]) + size, dtype=torch.uint8)
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    for lo in range(0, x.shape[0], chunk):
        y = torch.nn.functional.interpolate(x[lo:lo + chunk].float(), size=size, mode="bilinear",
                                            align_corners=False, antialias=shrink)
        out[lo:lo + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def items(key: Tuple) -> np.ndarray:
    """Every item, training file's first: uint8 ``(N, H, W)`` (the rows of the samples)."""
    return _items(key)


@functools.lru_cache(maxsize=1)
def _items(key: Tuple) -> np.ndarray:
    d = data(key)
    return np.concatenate([d["train"][0], d["test"][0]])


def images(root: Optional[str], options: Mapping[str, Any], size: Tuple[int, int]) -> torch.Tensor:
    """Every item at ``size``: uint8 ``(N, 1, H, W)``, indexed by the samples' rows (the options choose samples,
    not rows, so the array is one per size)."""
    return _images(data_key(root), tuple(size))


@functools.lru_cache(maxsize=2)
def _images(key: Tuple, size: Tuple[int, int]) -> torch.Tensor:
    return resize_gray(torch.from_numpy(items(key)).unsqueeze(1), size)
