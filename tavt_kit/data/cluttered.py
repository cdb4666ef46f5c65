"""``cluttered-digits``: a built-in benchmark where only a small part of each image carries the class.

The cluttered-MNIST construction of the spatial-transformer literature, built
from scikit-learn's bundled 8x8 digits (no download). Each image is a dark
``canvas`` x ``canvas`` square with

* one digit, upscaled (bilinear) to a random size between ``digit_min`` and
  ``digit_max`` pixels, its centre at most ``spread`` pixels from the canvas
  centre (fine-grained objects are mostly centred; a from-scratch ViT that
  must also learn translation invariance does not reach 90 % within the demo's
  few minutes: spread 6 gave 60 % where spread 2 gave 84 % after 600 steps);
  it gives the label;
* ``clutter`` fragments, ``fragment`` x ``fragment`` pixels cut at random from
  other digits (at random sizes), at random positions (over the digit too),
  drawn first, at ``clutter_brightness`` percent;

composited with the pixel-wise maximum. With the defaults (64-pixel canvas,
30-34 pixel digits, six 8-pixel fragments) the digit covers about a quarter of
the image and the clutter is spread over all of it, so, as in fine-grained
recognition, which tokens a schedule keeps decides the answer.

The 1797 source digits are first split, stratified by class, into disjoint
train / held-out / test sources (60 / 15 / 25 %): no source image (neither a
labelled digit nor a clutter fragment) is shared between splits, so held-out
and test accuracy measure generalisation to unseen handwriting. Each split
then draws its images from its own sources: every source appears as the
labelled digit equally often (up to one), in a seeded order. Everything is a
pure function of the options (``seed`` and the sizes), so every machine and
every command builds the same images.

Default sizes: 9000 training, 1500 held-out and 3000 test images, so one image
is 0.033 points of test accuracy and 0.067 points of held-out accuracy.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from .canvas import Layout, composite
from .demo import DEMO_CLASSES, digits
from .formats import RawDataset
from .splits import stratified_split

NAME = "cluttered-digits"

#: the options of the generator (``DataSpec(options={KEY: VALUE})``) and their defaults
DEFAULT_OPTIONS: Dict[str, int] = dict(seed=0, train=9000, holdout=1500, test=3000, canvas=64, digit_min=30,
                                       digit_max=34, spread=2, clutter=6, fragment=8, clutter_brightness=100)
#: fractions of the 1797 source digits given to the held-out and test splits (the rest trains)
HOLDOUT_SOURCES, TEST_SOURCES = 0.15, 0.25


def int_options(name: str, defaults: Mapping[str, int], options: Mapping[str, Any]) -> Dict[str, int]:
    """``defaults`` updated with ``options`` as integers (text such as a command line's is parsed); an unknown key
    or a value that is not an integer is refused in one line naming it (``name``: the dataset)."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"options[{unknown[0]!r}]={options[unknown[0]]}: {name} has no such option; expected "
                          f"one of {', '.join(defaults)}")
    out = dict(defaults)
    for k, v in options.items():
        try:
            iv = int(v)
            if isinstance(v, bool) or (isinstance(v, float) and iv != v) or (isinstance(v, str) and str(iv) != v.strip()):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"options[{k!r}]={v}: expected an integer") from None
        out[k] = iv
    return out


def check_options(options: Mapping[str, Any]) -> Dict[str, int]:
    """The full option set: defaults for what is not given; unknown keys and bad values refused (one line)."""
    out = int_options(NAME, DEFAULT_OPTIONS, options)
    for k in ("train", "holdout", "test"):
        if out[k] < 1:
            raise ConfigError(f"options[{k!r}]={out[k]}: expected at least one image")
    if out["seed"] < 0:
        raise ConfigError(f"options['seed']={out['seed']}: expected a non-negative integer")
    if not 8 <= out["digit_min"] <= out["digit_max"] <= out["canvas"]:
        raise ConfigError(f"options['digit_min']={out['digit_min']}, options['digit_max']={out['digit_max']}, "
                          f"options['canvas']={out['canvas']}: expected 8 <= digit_min <= digit_max <= canvas")
    if not 0 <= out["clutter_brightness"] <= 100:
        raise ConfigError(f"options['clutter_brightness']={out['clutter_brightness']}: expected a percentage of "
                          "the digit's brightness, 0 to 100")
    if out["spread"] < 0:
        raise ConfigError(f"options['spread']={out['spread']}: expected a non-negative shift in pixels")
    if out["clutter"] < 0 or not 1 <= out["fragment"] <= out["digit_min"]:
        raise ConfigError(f"options['clutter']={out['clutter']}, options['fragment']={out['fragment']}: expected "
                          f"clutter >= 0 and 1 <= fragment <= digit_min ({out['digit_min']})")
    return out


#: the options that decide which source digits each split is drawn from (another value makes the held-out and
#: test images of one seed out of the training digits of another); the others only size and render the splits
SOURCE_OPTIONS = ("seed",)


def sources_of(options: Mapping[str, Any], root=None) -> Dict[str, np.ndarray]:
    """Each split's source digits under ``options`` (the full or given options; ``root`` is not used)."""
    return source_splits(check_options(options)["seed"])


def source_splits(seed: int) -> Dict[str, np.ndarray]:
    """Disjoint, class-stratified indices of the source digits for ``train``, ``holdout`` and ``test``."""
    _, labels = digits()
    rest, test = stratified_split(labels, TEST_SOURCES, seed=seed)
    keep, held = stratified_split(labels[rest], HOLDOUT_SOURCES / (1 - TEST_SOURCES), seed=seed + 1)
    return {"train": rest[keep], "holdout": rest[held], "test": test}


def _upscaled(size: int) -> np.ndarray:
    """All source digits as uint8 (N, size, size), bilinear."""
    images, _ = digits()
    x = torch.from_numpy(images).float().unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)[:, 0].numpy()


def _render(sources: np.ndarray, n: int, o: Dict[str, int], rng: np.random.Generator,
            scaled: Dict[int, np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images drawn from ``sources`` only: uint8 (n, canvas, canvas), the source of each image's digit and
    of each of its clutter fragments (n, clutter).

    The layout is drawn one image at a time in the generator's historical order (the images of every seed stay
    what they were); :func:`~.canvas.composite` draws it."""
    C, F, k = o["canvas"], o["fragment"], o["clutter"]
    reps = -(-n // len(sources))
    order = np.concatenate([rng.permutation(sources) for _ in range(reps)])[:n]
    sizes = rng.integers(o["digit_min"], o["digit_max"] + 1, size=n)
    clutter = np.zeros((n, k), dtype=np.int64)
    c_size, c_cut, c_pos = np.zeros((n, k), np.int64), np.zeros((n, k, 2), np.int64), np.zeros((n, k, 2), np.int64)
    pos = np.zeros((n, 2), dtype=np.int64)
    for i in range(n):
        for j in range(k):
            clutter[i, j] = int(rng.choice(sources))
            c_size[i, j] = int(rng.integers(o["digit_min"], o["digit_max"] + 1))
            c_cut[i, j] = rng.integers(0, c_size[i, j] - F + 1, size=2)
            c_pos[i, j] = rng.integers(0, C - F + 1, size=2)
        s = int(sizes[i])
        lo, hi = max(0, (C - s) // 2 - o["spread"]), min(C - s, (C - s) // 2 + o["spread"])
        pos[i] = rng.integers(lo, hi + 1, size=2)
    layout = Layout(order, sizes, pos, clutter, c_size, c_cut, c_pos)
    out = composite(layout, C, F, o["clutter_brightness"], lambda size, src: scaled[size][src])
    return out, order, clutter


def generate(options: Tuple[Tuple[str, int], ...]) -> Tuple[torch.Tensor, Dict[str, Any], Dict[str, Any]]:
    """All images of every split: uint8 (N, 1, canvas, canvas), each split's ``(rows, labels)``, a description.

    ``options`` is a sorted tuple of ``(key, value)`` (hashable, for the cache).
    """
    return _generate(options)[:3]


def provenance(options: Tuple[Tuple[str, int], ...]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per split: the source digit of each image's label and of each of its clutter fragments."""
    return _generate(options)[3]


@functools.lru_cache(maxsize=2)
def _generate(options):
    o = check_options(dict(options))
    _, labels = digits()
    scaled = {s: _upscaled(s) for s in range(o["digit_min"], o["digit_max"] + 1)}
    parts, rows, targets, used, start = [], {}, {}, {}, 0
    sources = source_splits(o["seed"])
    for k, split in enumerate(("train", "holdout", "test")):
        rng = np.random.default_rng([o["seed"], 0xC1, k])
        images, order, clutter = _render(sources[split], o[split], o, rng, scaled)
        used[split] = (order, clutter)
        parts.append(images)
        rows[split] = np.arange(start, start + len(images))
        targets[split] = labels[order]
        start += len(images)
    array = torch.from_numpy(np.concatenate(parts)).unsqueeze(1)
    meta = {"source": "sklearn.datasets.load_digits, cluttered (generated, no download)", "options": o,
            "source_digits": {k: int(len(v)) for k, v in sources.items()},
            "splits": "disjoint source digits per split (train / held-out / test), clutter from the same split"}
    return array, {k: (rows[k], targets[k]) for k in rows}, meta, used


def option_key(options: Mapping[str, Any]) -> Tuple[Tuple[str, int], ...]:
    """The options as the hashable key :func:`generate` caches on (defaults filled in)."""
    return tuple(sorted(check_options(options).items()))


def load_cluttered(root=None, options: Mapping[str, Any] = ()) -> RawDataset:
    """Index-based splits (samples are ``(row, label)`` into :func:`generate`'s array), held-out split included."""
    _, splits, meta = generate(option_key(dict(options)))

    def samples(split):
        idx, lab = splits[split]
        return [(int(i), int(y)) for i, y in zip(idx, lab)]

    return RawDataset(samples("train"), samples("test"), list(DEMO_CLASSES), meta, holdout=samples("holdout"))


@functools.lru_cache(maxsize=4)
def resized(options: Tuple[Tuple[str, int], ...], img_size: Tuple[int, int]) -> torch.Tensor:
    """The generated images at ``img_size`` (bilinear when it differs from the canvas)."""
    array, _, _ = generate(options)
    if tuple(array.shape[-2:]) == tuple(img_size):
        return array
    x = torch.nn.functional.interpolate(array.float(), size=tuple(img_size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)
