"""Decoding an image of any pixel mode a camera or a dataset ships into the 8-bit RGB a model reads.

``Image.convert("RGB")`` alone is silently wrong for several modes: a 16-bit grey PNG is clipped to white, a
32-bit float TIFF in [0, 1] comes out black, and transparent pixels keep whatever colour they stored. So, by
PIL mode:

* ``RGB``; ``L``; ``1`` (bits -> 0 / 255); ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``, and ``P`` without
  transparency: PIL's own conversion to RGB.
* With an alpha channel -- ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, and ``P`` with a transparent colour --
  the image is composited **on black**: a pixel's colour is multiplied by its opacity, so fully transparent
  pixels are black whatever colour they stored (what a premultiplied image holds, and the background of the
  cluttered datasets).
* 16-bit integers (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): scaled by their true range, ``v / 257``
  (65535 -> 255), rounded. ``I`` (32-bit signed, how PIL opens some 16-bit PNGs and 32-bit TIFFs): values
  within 0..65535 are 16-bit data and scaled the same; larger non-negative values by the 32-bit range,
  ``v * 255 / (2**31 - 1)``; negative values are refused.
* ``F`` (32-bit float): values in [0, 1] are intensities, times 255; otherwise values in [0, 255] are taken
  as 8-bit intensities; anything else (negative, above 255, NaN, infinite) is refused -- a per-image min-max
  stretch would give one class different contrasts in different images, silently.

Any other mode is refused. Every refusal is one :class:`DatasetError` line naming the file and its mode.
"""
from __future__ import annotations

import numpy as np

from ..errors import DatasetError

#: modes PIL converts to RGB correctly by itself
PIL_MODES = ("RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
#: modes with an alpha channel (composited on black)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
I32_MAX = 2 ** 31 - 1


def _grey(values: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")


def _on_black(im):
    from PIL import Image

    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
    rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def to_rgb(im, path: str = "image"):
    """``im`` (an open PIL image) as 8-bit RGB by the rules of this module; ``path`` names it in errors."""
    mode = im.mode
    if mode in PIL_MODES or (mode == "P" and "transparency" not in im.info):
        return im.convert("RGB")
    if mode in ("RGBa", "La"):  # premultiplied: the colour channels are the image on black already
        from PIL import Image

        colour = np.asarray(im)[..., :-1]
        return Image.fromarray(colour[..., 0], "L").convert("RGB") if mode == "La" else Image.fromarray(colour, "RGB")
    if mode in ALPHA_MODES or mode == "P":
        return _on_black(im)
    if mode in SIXTEEN_BIT:
        return _grey(np.asarray(im).astype(np.float64) / 257.0)
    if mode == "I":
        v = np.asarray(im).astype(np.int64)
        if v.size and v.min() < 0:
            raise DatasetError(f"{path}: 32-bit integer pixels down to {int(v.min())}; expected non-negative "
                               "intensities (16-bit data, or 0..2**31-1)")
        scale = 257.0 if not v.size or v.max() <= 65535 else I32_MAX / 255.0
        return _grey(v / scale)
    if mode == "F":
        v = np.asarray(im).astype(np.float64)
        if v.size and not np.isfinite(v).all():
            raise DatasetError(f"{path}: 32-bit float pixels include NaN or infinite values; expected "
                               "intensities in [0, 1] or [0, 255]")
        low, high = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
        if low < 0 or high > 255:
            raise DatasetError(f"{path}: 32-bit float pixels span {low:g}..{high:g}; expected intensities in "
                               "[0, 1] or [0, 255]")
        return _grey(v * 255.0 if high <= 1.0 else v)
    raise DatasetError(f"{path}: image mode {mode} is not one fgvc-kit decodes; expected an 8-bit, 16-bit or "
                       "float grey, RGB, RGBA, palette or CMYK image")
