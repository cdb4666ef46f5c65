"""Image transforms: the seeds' FGVC recipe, producing uint8 tensors.

Datasets return ``uint8`` CHW tensors; normalisation (mean/std from the
model's spec) is applied per batch on the device by :class:`Normalize`. That
keeps the decoded test images small enough to cache (4x less than float) and
makes the evaluation pipeline a pure function of the image file.

Train: resize to ``(R, R)`` then a random ``S x S`` crop and a horizontal flip
(TransFG/FFVT/TAVT), or ``train_crop="rrc"``: a random resized crop.
Test: resize to ``(R, R)`` then the centre ``S x S`` crop. ``R`` is the
dataset's resize ratio times ``S``: 600/448 (CUB, ...: 600 -> 448), 500/384
for the ultra-FGVC sets, unless a resize size is given; a plain folder tree
(not a benchmark) has ``R = S``: the whole image, nothing cropped off.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from ..errors import ConfigError

INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos")
TRAIN_CROPS = ("random", "rrc")

SizeLike = Union[int, Sequence[int]]


def pair(size: SizeLike, name: str = "img_size") -> Tuple[int, int]:
    """``(H, W)`` of a size given as N or (H, W); errors name the parameter ``name``."""
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ConfigError(f"{name}={size!r}: expected N or (H, W)")
        h, w = int(size[0]), int(size[1])
    else:
        h = w = int(size)
    if h < 1 or w < 1:
        raise ConfigError(f"{name}={size!r}: expected a positive size")
    return h, w


def resize_for(img_size: SizeLike, ratio: float, resize: Optional[SizeLike] = None) -> Tuple[int, int]:
    """The resize size before cropping ``img_size`` (``ratio * img_size``, rounded, unless given)."""
    h, w = pair(img_size)
    if resize is not None:
        rh, rw = pair(resize, "resize")
        if rh < h or rw < w:
            raise ConfigError(f"resize={resize}: smaller than the crop {h}x{w}; expected >= the image size")
        return rh, rw
    return max(h, int(round(h * ratio))), max(w, int(round(w * ratio)))


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    if name not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {name!r}; expected one of {', '.join(INTERPOLATIONS)}")
    return InterpolationMode(name)


def image_transform(train: bool, img_size: SizeLike, resize: Tuple[int, int], interpolation: str = "bicubic",
                    train_crop: str = "random", hflip: bool = True):
    """PIL image -> uint8 CHW tensor (see the module docstring)."""
    from torchvision import transforms as T

    size = pair(img_size)
    mode = _interp(interpolation)
    if train_crop not in TRAIN_CROPS:
        raise ConfigError(f"train_crop={train_crop!r}: expected one of {', '.join(TRAIN_CROPS)}")
    if train and train_crop == "rrc":
        steps = [T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=mode)]
    elif train:
        steps = [T.Resize(resize, interpolation=mode), T.RandomCrop(size)]
    else:
        steps = [T.Resize(resize, interpolation=mode), T.CenterCrop(size)]
    if train and hflip:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.PILToTensor())
    return T.Compose(steps)


class Normalize(torch.nn.Module):
    """uint8 (or float in [0, 255]) image batch -> float, ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_model(cls, model) -> "Normalize":
        """The normalisation of a model's spec (ImageNet statistics when it has none)."""
        from ..models.factory import IMAGENET_MEAN, IMAGENET_STD

        norm = (getattr(model, "spec", None) or {}).get("normalization") or {}
        return cls(norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float()
        else:
            x = x.to(self.mean.dtype)
        return (x / 255.0 - self.mean.to(x.device)) / self.std.to(x.device)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
