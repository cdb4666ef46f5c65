"""``cluttered-fashion``: each Fashion-MNIST item on a larger canvas among fragments of other items.

The construction of ``cluttered-digits`` (:mod:`.cluttered`) on the items of an IDX dataset (:mod:`.fashion`:
the same root, default the Debian ``dataset-fashion-mnist`` folder, and the same class names). Each image is a
dark ``canvas`` x ``canvas`` square (default 56) with

* one item, at a random size between ``item_min`` and ``item_max`` pixels (default 28 and 28: the item's own
  pixels, no resampling; other sizes are bilinear), its centre at most ``spread`` pixels (default 2) from the
  canvas centre; it gives the label;
* ``clutter`` fragments (default 6), ``fragment`` x ``fragment`` pixels (default 10) cut at random from OTHER
  items of the same split (each scaled to a random item size first), at random places (over the item too), at
  ``clutter_brightness`` percent (default 100);

composited with the pixel-wise maximum (:mod:`.canvas`), so every pixel of the item is in the image unless
brighter clutter covers it.

Sources: a stratified 10 % of the training file's items (seeded by ``seed``) are the held-out split's, the rest
the training split's, and the test file's items are the test split's: no item (labelled or cut into clutter)
is shared between splits. ``train``, ``holdout``, ``test`` (defaults 54 000, 6 000, 10 000: each source once)
set each split's size; every source of a split is the labelled item equally often (up to one), in a seeded
order, so ``train=20000 holdout=2000 test=5000`` is a smaller benchmark of distinct items. Everything is a
pure function of the files and the options. On one core the defaults' 70 000 images take 2.6 s to generate
(20 000 / 2 000 / 5 000: 0.6 s; item sizes 20..36: 5.3 s), cached per process, plus 3.6 s to resize them to
64 px for the model.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import fashion
from .canvas import Layout, composite
from .cluttered import int_options
from .formats import RawDataset
from .splits import stratified_split

NAME = "cluttered-fashion"
#: the options of the generator and their defaults
DEFAULT_OPTIONS: Dict[str, int] = dict(seed=0, train=54000, holdout=6000, test=10000, canvas=56, item_min=28,
                                       item_max=28, spread=2, clutter=6, fragment=10, clutter_brightness=100)
#: the fraction of the training file's items that are the held-out split's sources
HOLDOUT_SOURCES = 0.1
#: the options that decide which items each split is drawn from (see :mod:`.cluttered`)
SOURCE_OPTIONS = ("seed",)
#: the smallest item size
MIN_ITEM = 4


def check_options(options: Mapping[str, Any]) -> Dict[str, int]:
    """The full option set: defaults for what is not given; unknown keys and bad values refused (one line)."""
    out = int_options(NAME, DEFAULT_OPTIONS, options)
    for k in ("train", "holdout", "test"):
        if out[k] < 1:
            raise ConfigError(f"options[{k!r}]={out[k]}: expected at least one image")
    if out["seed"] < 0:
        raise ConfigError(f"options['seed']={out['seed']}: expected a non-negative integer")
    if not MIN_ITEM <= out["item_min"] <= out["item_max"] <= out["canvas"]:
        raise ConfigError(f"options['item_min']={out['item_min']}, options['item_max']={out['item_max']}, "
                          f"options['canvas']={out['canvas']}: expected {MIN_ITEM} <= item_min <= item_max <= canvas")
    if not 0 <= out["clutter_brightness"] <= 100:
        raise ConfigError(f"options['clutter_brightness']={out['clutter_brightness']}: expected a percentage of "
                          "the item's brightness, 0 to 100")
    if out["spread"] < 0:
        raise ConfigError(f"options['spread']={out['spread']}: expected a non-negative shift in pixels")
    if out["clutter"] < 0 or not 1 <= out["fragment"] <= out["item_min"]:
        raise ConfigError(f"options['clutter']={out['clutter']}, options['fragment']={out['fragment']}: expected "
                          f"clutter >= 0 and 1 <= fragment <= item_min ({out['item_min']})")
    return out


def option_key(options: Mapping[str, Any]) -> Tuple[Tuple[str, int], ...]:
    """The options as a hashable key (defaults filled in)."""
    return tuple(sorted(check_options(options).items()))


def source_splits(key: Tuple, seed: int) -> Dict[str, np.ndarray]:
    """Disjoint item rows (:func:`.fashion.items`) for ``train``, ``holdout`` (stratified) and ``test``."""
    d = fashion.data(key)
    ytr, n_test = d["train"][1], len(d["test"][1])
    keep, held = stratified_split(ytr, HOLDOUT_SOURCES, seed=seed)
    return {"train": keep, "holdout": held, "test": len(ytr) + np.arange(n_test)}


def sources_of(options: Mapping[str, Any], root: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Each split's source items under ``options`` for the files in ``root``."""
    return source_splits(fashion.data_key(root), check_options(options)["seed"])


def draw(sources: np.ndarray, n: int, o: Mapping[str, int], rng: np.random.Generator) -> Layout:
    """The layout of ``n`` images from ``sources`` only (all random numbers drawn at once)."""
    C, F, k = o["canvas"], o["fragment"], o["clutter"]
    lo_s, hi_s = o["item_min"], o["item_max"] + 1
    reps = -(-n // len(sources))
    order = np.concatenate([rng.permutation(sources) for _ in range(reps)])[:n]
    sizes = rng.integers(lo_s, hi_s, size=n)
    centre = (C - sizes) // 2
    lo, hi = np.maximum(0, centre - o["spread"]), np.minimum(C - sizes, centre + o["spread"])
    pos = rng.integers(lo[:, None], hi[:, None] + 1, size=(n, 2))
    pool = np.sort(sources)
    if len(pool) > 1:  # another item of the split: skip the labelled one's place in the pool
        r = rng.integers(0, len(pool) - 1, size=(n, k))
        clutter = pool[r + (r >= np.searchsorted(pool, order)[:, None])]
    else:
        clutter = np.repeat(order[:, None], k, axis=1)
    c_size = rng.integers(lo_s, hi_s, size=(n, k))
    c_cut = rng.integers(0, (c_size - F + 1)[..., None], size=(n, k, 2))
    c_pos = rng.integers(0, C - F + 1, size=(n, k, 2))
    return Layout(order, sizes, pos, clutter, c_size, c_cut, c_pos)


def _images_at(every: np.ndarray):
    """``images_at(size, rows)`` of :func:`.canvas.composite` over the items ``every`` (N, H, W)."""
    def at(size: int, rows: np.ndarray) -> np.ndarray:
        x = every[rows]
        if x.shape[1:] == (size, size):
            return x
        return fashion.resize_gray(torch.from_numpy(x).unsqueeze(1), (size, size))[:, 0].numpy()
    return at


def generate(root: Optional[str], options: Mapping[str, Any]):
    """Every split's images: uint8 ``(N, 1, canvas, canvas)``, each split's ``(rows, labels)``, a description."""
    return _generate(fashion.data_key(root), option_key(options))[:3]


def provenance(root: Optional[str], options: Mapping[str, Any]) -> Dict[str, Layout]:
    """Per split, the :class:`~.canvas.Layout` of its images (sources are rows of :func:`.fashion.items`)."""
    return _generate(fashion.data_key(root), option_key(options))[3]


@functools.lru_cache(maxsize=2)
def _generate(key: Tuple, options: Tuple[Tuple[str, int], ...]):
    o = dict(options)
    every = fashion.items(key)
    labels = np.concatenate([fashion.data(key)["train"][1], fashion.data(key)["test"][1]])
    sources = source_splits(key, o["seed"])
    parts, splits, layouts, start = [], {}, {}, 0
    for k, split in enumerate(("train", "holdout", "test")):
        rng = np.random.default_rng([o["seed"], 0xF5, k])
        layout = draw(sources[split], o[split], o, rng)
        parts.append(composite(layout, o["canvas"], o["fragment"], o["clutter_brightness"], _images_at(every)))
        splits[split] = (np.arange(start, start + len(layout)), labels[layout.item])
        layouts[split] = layout
        start += len(layout)
    array = torch.from_numpy(np.concatenate(parts)).unsqueeze(1)
    meta = {"source": f"IDX files in {key[0]}, cluttered (generated)", "options": o,
            "source_items": {k: int(len(v)) for k, v in sources.items()},
            "splits": "disjoint source items per split (train / held-out / test), clutter from the same split"}
    return array, splits, meta, layouts


def load_cluttered_fashion(root: Optional[str], options: Mapping[str, Any] = ()) -> RawDataset:
    """Index-based splits (``(row, label)`` into :func:`generate`'s array), held-out split included."""
    _, splits, meta = generate(root, options)

    def samples(split):
        rows, labels = splits[split]
        return [(int(i), int(y)) for i, y in zip(rows, labels)]

    return RawDataset(samples("train"), samples("test"), fashion.class_names(fashion.data_key(root)), meta,
                      holdout=samples("holdout"))


def images(root: Optional[str], options: Mapping[str, Any], size: Tuple[int, int]) -> torch.Tensor:
    """The generated images at ``size``: uint8 ``(N, 1, H, W)``."""
    return _resized(fashion.data_key(root), option_key(options), tuple(size))


@functools.lru_cache(maxsize=2)
def _resized(key: Tuple, options: Tuple[Tuple[str, int], ...], size: Tuple[int, int]) -> torch.Tensor:
    return fashion.resize_gray(_generate(key, options)[0], size)
