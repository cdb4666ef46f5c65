"""The images a search scores candidates on: held-out and test splits as decoded tensors, and int8 calibration.

:func:`search_data` turns what a caller has — a :class:`~tavt_kit.data.DataSpec`, a dataset name, a pair of
datasets or of :class:`EvalSet` — into :class:`SearchData`. Images stay uint8 as decoded; the search applies
the model's normalisation itself (:class:`~tavt_kit.data.Normalize`), so a caller never has to.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch

from ..errors import ConfigError


@dataclass
class EvalSet:
    """Decoded, preprocessed images of one split (uint8) with labels."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str


@dataclass
class SearchData:
    """The held-out split (fitness), the test split (reported once, for the results; may be None) and, for int8,
    a function returning calibration images (normalised training images)."""

    holdout: EvalSet
    test: Optional[EvalSet] = None
    spec: Optional[object] = None  # the DataSpec the splits came from, recorded in search.json
    calibration: Optional[Callable[[int, int], np.ndarray]] = None  # (n, seed) -> images


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


def take_subset(holdout: EvalSet, subset: Optional[int], seed: int) -> EvalSet:
    """``subset`` images of ``holdout`` (seeded, in their order); all of them when ``subset`` is None or larger."""
    if subset is None:
        return holdout
    if subset < 1:
        raise ConfigError(f"subset={subset}: expected a positive number of images")
    if subset >= len(holdout.labels):
        return holdout
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(holdout.labels), generator=g)[:subset].sort().values
    return EvalSet(holdout.images[idx], holdout.labels[idx], holdout.name)


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
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], torch.Tensor):
        hold, test = data
        return SearchData(_evalset(hold, "holdout", None), None if test is None else _evalset(test, "test", None))
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

    return SearchData(_evalset(hold_ds, "holdout", cache_dir), _evalset(test_ds, "test", cache_dir), spec,
                      calibration)
