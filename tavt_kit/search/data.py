"""The images a search scores candidates on: held-out and test splits as decoded tensors, and int8 calibration.

:func:`search_data` turns what a caller has — a :class:`~tavt_kit.data.DataSpec`, a dataset name, a pair of
datasets or of :class:`EvalSet` — into :class:`SearchData`. Images stay uint8 as decoded; the search applies
the model's normalisation itself (:class:`~tavt_kit.data.Normalize`), so a caller never has to. A held-out
split of fewer than 200 images (:data:`~tavt_kit.data.splits.SMALL_SPLIT_IMAGES`) is said in one ``warning:``
line of the log (:func:`holdout_warning`): accuracies measured on it are too coarse to choose candidates by.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch

from ..data.splits import SMALL_SPLIT_IMAGES, holdout_advice, small_split_warning
from ..errors import ConfigError


@dataclass
class EvalSet:
    """Decoded, preprocessed images of one split (uint8) with labels."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    def __post_init__(self):
        for key in ("images", "labels"):
            if not isinstance(getattr(self, key), torch.Tensor):
                raise ConfigError(f"{self.name}.{key}={type(getattr(self, key)).__name__}: expected a tensor (images "
                                  "(N, 3, H, W) and labels (N,))")
        if len(self.images) != len(self.labels) or (len(self.labels) and (self.images.dim() != 4
                                                                           or self.labels.dim() != 1)):
            raise ConfigError(f"{self.name}: images of shape {tuple(self.images.shape)} and labels of shape "
                              f"{tuple(self.labels.shape)}: expected images (N, 3, H, W) and one label per image (N,)")

    def digest(self) -> str:
        """sha256 of the images and labels: what metrics measured on them are of."""
        import hashlib

        h = hashlib.sha256(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass
class SearchData:
    """The held-out split (fitness), the test split (reported once, for the results; may be None) and, for int8,
    a function returning calibration images (normalised training images)."""

    holdout: EvalSet
    test: Optional[EvalSet] = None
    spec: Optional[object] = None  # the DataSpec the splits came from, recorded in search.json
    calibration: Optional[Callable[[int, int], np.ndarray]] = None  # (n, seed) -> images

    def __post_init__(self):
        for key, optional in (("holdout", False), ("test", True)):
            v = getattr(self, key)
            if not isinstance(v, EvalSet) and not (optional and v is None):
                raise ConfigError(f"data.{key}={type(v).__name__}: expected an EvalSet" + (" or None" if optional
                                                                                           else ""))


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard(evalset: EvalSet) -> EvalSet:
    """This rank's share of the images (every world_size-th); counts are summed across ranks."""
    rank, world = _dist()
    if world == 1:
        return evalset
    return EvalSet(evalset.images[rank::world], evalset.labels[rank::world], evalset.name)


def all_reduce(values: List, dtype=torch.long) -> List:
    rank, world = _dist()
    if world == 1 or not values:
        return values
    t = torch.tensor(values, dtype=dtype)
    torch.distributed.all_reduce(t)
    return t.tolist()


def take_subset(holdout: EvalSet, subset: Optional[int], seed: int,
                log: Optional[Callable[[str], None]] = None) -> EvalSet:
    """``subset`` images of ``holdout`` (seeded, in their order); all of them when ``subset`` is None or larger.

    ``log``: where to say (one ``warning:`` line) that the subset is too small to tell candidates apart, when
    it cuts a held-out split large enough on its own (:func:`search_data` has said so of a small one)."""
    if subset is None:
        return holdout
    if subset < 1:
        raise ConfigError(f"subset={subset}: expected a positive number of images")
    if subset >= len(holdout.labels):
        return holdout
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(holdout.labels), generator=g)[:subset].sort().values
    if log is not None and len(holdout.labels) >= SMALL_SPLIT_IMAGES and _dist()[0] == 0:
        line = small_split_warning(len(idx), "held-out subset searched on",
                                   f"a larger --subset, or none: all {len(holdout.labels)} held-out images")
        if line:
            log(f"warning: {line}")
    return EvalSet(holdout.images[idx], holdout.labels[idx], holdout.name)


def holdout_warning(data: "SearchData") -> Optional[str]:
    """The line saying that the held-out split candidates are chosen on is too small to tell them apart
    (fewer than :data:`~tavt_kit.data.splits.SMALL_SPLIT_IMAGES` images; None otherwise, or when it is empty:
    the search refuses that)."""
    n = len(data.holdout.labels)
    if n == 0:
        return None
    advice = holdout_advice(data.spec) if data.spec is not None else "more held-out images"
    return small_split_warning(n, "held-out split", advice)


def _evalset(ds, name: str, cache_dir: Optional[str]) -> EvalSet:
    if isinstance(ds, EvalSet):
        return ds
    if isinstance(ds, (tuple, list)) and len(ds) == 2:
        return EvalSet(torch.as_tensor(ds[0]), torch.as_tensor(ds[1]), name)
    from ..data import cached_tensors

    return EvalSet(*cached_tensors(ds, cache_dir=cache_dir), name)


def search_data(model, data, *, cache_dir: Optional[str] = None, log: Callable[[str], None] = print) -> SearchData:
    """:class:`SearchData` from ``data``: a SearchData (as it is), a DataSpec or dataset name (its held-out and
    test splits built for ``model``; None: the dataset the checkpoint records), or a ``(holdout, test)`` pair of
    datasets / EvalSets / ``(images, labels)`` tensors (``test`` may be None)."""
    from ..data import DataSpec, build_dataset

    if isinstance(data, SearchData):
        return _said(data, log)
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], torch.Tensor):
        hold, test = data
        return _said(SearchData(_evalset(hold, "holdout", None),
                                None if test is None else _evalset(test, "test", None)), log)
    spec = data
    if data is None or isinstance(data, str):
        recorded = ((getattr(model, "spec", None) or {}).get("data")) or {}
        if data is None and not recorded:
            raise ConfigError("data=None: the checkpoint records no dataset; give a DataSpec, a dataset name or "
                              "(holdout, test)")
        spec = DataSpec.from_dict(recorded) if data is None else DataSpec(name=data)
    if not isinstance(spec, DataSpec):
        raise ConfigError(f"data={type(data).__name__}: expected a SearchData, DataSpec, dataset name or "
                          "(holdout, test) pair")
    hold_ds = build_dataset(spec, split="holdout", model=model, augment=False)
    test_ds = build_dataset(spec, split="test", model=model, augment=False)
    log(f"caching {len(hold_ds)} held-out and {len(test_ds)} test images ...")
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)

    def calibration(n: int, seed: int) -> np.ndarray:
        from ..export.quantize import calibration_images

        log(f"int8 calibration: {n} training images")
        return calibration_images(model, spec, split="train", n=n, seed=seed)

    return _said(SearchData(_evalset(hold_ds, "holdout", cache_dir), _evalset(test_ds, "test", cache_dir), spec,
                            calibration), log)


def _said(data: SearchData, log: Callable[[str], None]) -> SearchData:
    """``data``, once a held-out split too small to choose by has been said (one ``warning:`` line, rank 0)."""
    line = holdout_warning(data)
    if line and _dist()[0] == 0:
        log(f"warning: {line}")
    return data
