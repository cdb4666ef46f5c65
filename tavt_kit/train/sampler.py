"""A resumable, distributed batch sampler with per-sample augmentation seeds.

Each epoch is a permutation of the training set drawn from ``(seed, epoch)``.
Global batches of ``batch_size * world_size`` consecutive indices are cut from
it (the incomplete last one is dropped) and rank ``r`` takes every
``world_size``-th index of each from ``r``, so N processes with batch B see
exactly the images one process with batch N*B sees. Items are ``(index,
augmentation seed)``; the seed depends on ``(seed, epoch, index)`` only, so the
image a step sees does not depend on worker processes or on the global RNG.
``set_position(epoch, batch)`` restarts mid-epoch after a resume.
"""
from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
from torch.utils.data import Sampler

from ..errors import ConfigError

_MASK = (1 << 63) - 1


def augmentation_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, index) (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & _MASK


class ResumableBatchSampler(Sampler[List[Tuple[int, int]]]):
    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: expected a positive batch size")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.global_batch = self.batch_size * self.world_size
        if self.num_samples < self.global_batch:
            raise ConfigError(f"batch_size={batch_size}"
                              f"{f' x {world_size} processes' if world_size > 1 else ''} is larger than the "
                              f"training split ({num_samples} images); lower it")
        self.batches_per_epoch = self.num_samples // self.global_batch
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, batch: int = 0) -> None:
        if not 0 <= batch <= self.batches_per_epoch:
            raise ValueError(f"batch position {batch} outside 0..{self.batches_per_epoch}")
        self.epoch, self.start = int(epoch), int(batch)

    def permutation(self, epoch: int) -> List[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + epoch) & _MASK)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        perm = self.permutation(self.epoch)
        G = self.global_batch
        for b in range(self.start, self.batches_per_epoch):
            chunk = perm[b * G:(b + 1) * G][self.rank::self.world_size]
            yield [(i, augmentation_seed(self.seed, self.epoch, i)) for i in chunk]


class _IndexOnly(torch.utils.data.Dataset):
    """A plain map-style dataset behind ``(index, seed)`` keys (its own augmentation is not seeded)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[0] if isinstance(key, tuple) else key]


def seeded_dataset(dataset):
    """``dataset`` if it takes ``(index, seed)`` keys (:class:`~tavt_kit.data.FGVCDataset`), else an adapter."""
    from ..data import FGVCDataset

    if isinstance(dataset, FGVCDataset) or getattr(dataset, "accepts_seed_keys", False):
        return dataset
    return _IndexOnly(dataset)
