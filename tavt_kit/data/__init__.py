"""Datasets and transforms (built-in demo dataset, CUB, NABirds, Dogs, Cars, iNat, ultra-FGVC, folders, IDX files).

``build_dataset(name, root, split, img_size)`` returns one split as a torch
dataset of ``(uint8 CHW image, label)``; :class:`Normalize` turns a batch into
the model's input (mean/std of its spec). ``split`` is ``train`` (minus the
held-out part), ``holdout`` (deterministic, stratified, seeded), ``test`` or
``trainval``. :func:`cached_tensors` decodes an evaluation split once.
"""
from ..errors import DatasetError
from .datasets import (DATASETS, SPLITS, DataSpec, DatasetInfo, FGVCDataset, build_dataset, cached_tensors,
                       class_names_of, dataset_info, default_workers, list_datasets, load_raw, make_eval_loader,
                       register_dataset, shard_indices, split_samples)
from .formats import RawDataset
from .splits import check_fraction, stratified_split
from .transforms import Normalize, image_transform, resize_for

__all__ = [
    "DATASETS", "SPLITS", "DataSpec", "DatasetError", "DatasetInfo", "FGVCDataset", "Normalize", "RawDataset",
    "build_dataset", "cached_tensors", "check_fraction", "class_names_of", "dataset_info", "default_workers",
    "image_transform", "list_datasets", "load_raw", "make_eval_loader", "register_dataset", "resize_for",
    "shard_indices", "split_samples", "stratified_split",
]
