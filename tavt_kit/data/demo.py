"""The built-in demo dataset: scikit-learn's bundled handwritten digits.

1797 grey 8x8 images of the digits 0-9 (shipped inside scikit-learn, no
download). They are scaled to 0-255, upscaled (bilinear) to the model's input
size and repeated to 3 channels; no augmentation. The test split is a fixed
stratified 25 % (seed 0); the held-out split is carved from the rest like for
every dataset.
"""
from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
import torch

from ..errors import DatasetError
from .formats import RawDataset
from .splits import stratified_split

DEMO_TEST_FRACTION = 0.25
DEMO_CLASSES = [str(i) for i in range(10)]


@functools.lru_cache(maxsize=1)
def digits() -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8) in 0..255, labels int64)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the demo dataset needs scikit-learn (pip install scikit-learn)")
    # the file load_digits() reads (8x8 pixels in 0..16, then the label), without importing
    # scikit-learn itself (seconds of imports)
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
    if os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",")
        pixels, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:  # another scikit-learn layout
        from sklearn.datasets import load_digits

        d = load_digits()
        pixels, target = d.images, d.target
    images = np.clip(np.round(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, target.astype(np.int64)


def load_demo(root=None) -> RawDataset:
    """Index-based splits of the digits: samples are ``(index, label)``."""
    _, labels = digits()
    train, test = stratified_split(labels, DEMO_TEST_FRACTION, seed=0)
    return RawDataset([(int(i), int(labels[i])) for i in train], [(int(i), int(labels[i])) for i in test],
                      list(DEMO_CLASSES), {"source": "sklearn.datasets.load_digits",
                                           "test_split": "fixed stratified 25 % (seed 0)"})


@functools.lru_cache(maxsize=4)
def upscaled(img_size: Tuple[int, int]) -> torch.Tensor:
    """All digits as uint8 (N, 1, H, W) at ``img_size`` (bilinear)."""
    images, _ = digits()
    x = torch.from_numpy(images).float().unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=tuple(img_size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)
