"""The cluttered datasets' renderer: an item and fragments of other items composited on a canvas (pixel-wise max).

A :class:`Layout` says, for ``n`` images, where everything goes: each image's labelled item (its source, the
size it is scaled to, its top-left corner) and its ``clutter`` fragments (the source each is cut from, the
size that source is scaled to first, where in it the ``fragment`` x ``fragment`` cut is taken, and where the
cut is placed). :func:`composite` draws a layout: fragments dimmed to ``brightness`` percent, everything
combined with the pixel-wise maximum, so the order of drawing does not matter and every pixel of the labelled
item is still in the image (covered only by brighter clutter). It is vectorised over images (one gather and one
scatter per fragment slot and size), so tens of thousands of images take about a second.

Each dataset draws its layouts (``cluttered-digits`` one image at a time in its historical random order,
``cluttered-fashion`` all at once) and supplies ``images_at(size, sources)``: the source images scaled to
``size``, uint8 ``(m, size, size)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: ``images_at(size, sources)``: uint8 (len(sources), size, size)
ImagesAt = Callable[[int, np.ndarray], np.ndarray]


@dataclass
class Layout:
    """Where the items and fragments of ``n`` images go (all positions are top-left ``(y, x)``)."""

    item: np.ndarray          #: (n,) the source of each image's labelled item
    item_size: np.ndarray     #: (n,) its size in pixels
    item_pos: np.ndarray      #: (n, 2) its place on the canvas
    clutter: np.ndarray       #: (n, k) the source each fragment is cut from
    clutter_size: np.ndarray  #: (n, k) the size that source is scaled to before the cut
    clutter_cut: np.ndarray   #: (n, k, 2) where the cut is taken in the scaled source
    clutter_pos: np.ndarray   #: (n, k, 2) where the fragment is placed

    def __len__(self) -> int:
        return len(self.item)


def _paste(out: np.ndarray, rows: np.ndarray, sizes: np.ndarray, sources: np.ndarray, pos: np.ndarray,
           images_at: ImagesAt, cut: np.ndarray = None, side: int = 0, brightness: int = 100) -> None:
    """Max-composite one image per row of ``out`` (rows distinct): whole sources, or ``side``-pixel cuts."""
    for s in np.unique(sizes):
        sel = np.flatnonzero(sizes == s)
        img = images_at(int(s), sources[sel])
        if cut is not None:
            a = np.arange(side)
            img = img[np.arange(len(sel))[:, None, None], cut[sel, 0][:, None, None] + a[:, None],
                      cut[sel, 1][:, None, None] + a[None, :]]
        if brightness != 100:
            img = (img.astype(np.uint16) * brightness // 100).astype(np.uint8)
        a = np.arange(img.shape[1])
        r = rows[sel][:, None, None]
        ys = pos[sel, 0][:, None, None] + a[:, None]
        xs = pos[sel, 1][:, None, None] + a[None, :]
        out[r, ys, xs] = np.maximum(out[r, ys, xs], img)


def composite(layout: Layout, canvas: int, fragment: int, brightness: int, images_at: ImagesAt,
              chunk: int = 4096) -> np.ndarray:
    """The images of ``layout``: uint8 ``(n, canvas, canvas)`` (``chunk`` images at a time, to bound memory)."""
    n, k = layout.clutter.shape if layout.clutter.ndim == 2 else (len(layout), 0)
    out = np.zeros((n, canvas, canvas), dtype=np.uint8)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        view, rows = out[lo:hi], np.arange(hi - lo)
        for j in range(k):
            _paste(view, rows, layout.clutter_size[lo:hi, j], layout.clutter[lo:hi, j],
                   layout.clutter_pos[lo:hi, j], images_at, cut=layout.clutter_cut[lo:hi, j], side=fragment,
                   brightness=brightness)
        _paste(view, rows, layout.item_size[lo:hi], layout.item[lo:hi], layout.item_pos[lo:hi], images_at)
    return out
