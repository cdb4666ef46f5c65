"""The option objects of an export: :class:`VerifyOptions`, :class:`QuantizeOptions`, :class:`ExportOptions`.

Each is a frozen dataclass checked when it is made, so a bad value fails before any work with one line
naming the field as ``verify.images=0`` / ``quantize.calibration_split='test'`` / ``options.opset=0`` (the
command line turns those names into its flags). Where the model runs (precision, threads, device, the batch
size latency is measured at) is a :class:`~tavt_kit.target.DeploymentTarget`, not an option here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import ConfigError


def _count(value, name: str, what: str, optional: bool = True) -> None:
    """``value`` is a positive integer (or None where ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}: expected a positive number of {what}")


def _number(value, name: str, what: str, low: float = 0.0, high: Optional[float] = None,
            optional: bool = True) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low \
        and (high is None or value <= high)
    if not ok:
        raise ConfigError(f"{name}={value!r}: expected {what}")


def _seed(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r}: expected an integer seed")


@dataclass(frozen=True)
class VerifyOptions:
    """How every exported file is checked against PyTorch on real images (default: on).

    Attributes:
        enabled: verify (default); off builds the files and records ``"verified": false`` with the reason.
        data: dataset name (with ``root``), :class:`~tavt_kit.data.DataSpec`, dataset, or ``(uint8 images,
            labels)``; None: the dataset recorded in the checkpoint, else the built-in demo.
        root: the folder of a dataset given by name.
        split: the split verified on (default ``test``).
        images: at most this many images (a seeded subset; None: all).
        max_accuracy_drop: the largest acceptable top-1 drop, in points (default 0.5).
        max_logit_diff: also require max |logit difference| <= this (None: no bound).
        min_agreement: also require this fraction of the predictions to agree with PyTorch's (None: no bound).
        batch_size: images per verification call (default 32; not the deployment batch size).
        seed: the seed of the image subset and of the random inputs the ONNX graph is first checked on.
    """

    data: Any = None
    root: Optional[str] = None
    split: str = "test"
    images: Optional[int] = None
    max_accuracy_drop: float = 0.5
    max_logit_diff: Optional[float] = None
    min_agreement: Optional[float] = None
    enabled: bool = True
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        from ..data.datasets import SPLITS

        if self.split not in SPLITS:
            raise ConfigError(f"verify.split={self.split!r}: expected one of {', '.join(SPLITS)}")
        _count(self.images, "verify.images", "images")
        _number(self.max_accuracy_drop, "verify.max_accuracy_drop", "a non-negative number of points",
                optional=False)
        _number(self.max_logit_diff, "verify.max_logit_diff", "a non-negative number")
        _number(self.min_agreement, "verify.min_agreement", "a fraction in [0, 1]", high=1.0)
        _count(self.batch_size, "verify.batch_size", "images", optional=False)
        _seed(self.seed, "verify.seed")
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"verify.enabled={self.enabled!r}: expected True or False")

    @property
    def bounds(self) -> Dict[str, Any]:
        """The pass/fail bounds, as :func:`~tavt_kit.export.verify_export` takes them."""
        return {"max_accuracy_drop": self.max_accuracy_drop, "max_logit_diff": self.max_logit_diff,
                "min_agreement": self.min_agreement}


#: the splits int8 calibration images may come from (never ``test``: verification measures accuracy there)
CALIBRATION_SPLITS = ("train", "holdout", "trainval")


def check_calibration_split(split: str, name: str = "split") -> str:
    """The split calibration images may come from: never ``test`` (verification measures accuracy there)."""
    if split == "test":
        raise ConfigError(f"{name}='test': int8 calibration must not see the test split, on which verification "
                          "measures the exported model's accuracy; use train (default), holdout or trainval")
    if split not in CALIBRATION_SPLITS:
        raise ConfigError(f"{name}={split!r}: expected one of {', '.join(CALIBRATION_SPLITS)}")
    return split


@dataclass(frozen=True)
class QuantizeOptions:
    """int8 quantisation with NNCF (used only when the precision is int8).

    Attributes:
        calibration: calibration images (normalised float ``N x 3 x H x W``); None: ``calibration_images``
            images of ``calibration_split`` of the verification dataset (never the verification images).
        calibration_split: ``train`` (default), ``holdout`` or ``trainval``; never ``test``.
        calibration_images: how many (a seeded subset; default 300).
        accuracy_control: NNCF's ``quantize_with_accuracy_control`` on the dataset's held-out split, keeping the
            operations that cost more than ``verify.max_accuracy_drop`` points there in float (default); without
            a held-out split, or off, plain post-training quantisation, and ``export.json`` says why.
        accuracy_control_images: at most this many held-out images (a seeded subset; None: all).
        seed: the seed of the calibration and held-out subsets.
    """

    calibration: Any = None
    calibration_split: str = "train"
    calibration_images: int = 300
    accuracy_control: bool = True
    accuracy_control_images: Optional[int] = None
    seed: int = 0

    def __post_init__(self):
        check_calibration_split(self.calibration_split, "quantize.calibration_split")
        _count(self.calibration_images, "quantize.calibration_images", "images", optional=False)
        _count(self.accuracy_control_images, "quantize.accuracy_control_images", "images")
        _seed(self.seed, "quantize.seed")
        if not isinstance(self.accuracy_control, bool):
            raise ConfigError(f"quantize.accuracy_control={self.accuracy_control!r}: expected True or False")
        if not self.accuracy_control and self.accuracy_control_images is not None:
            raise ConfigError(f"quantize.accuracy_control_images={self.accuracy_control_images} and "
                              "quantize.accuracy_control=False contradict each other: the images are for accuracy "
                              "control, which is off; give one of them")


@dataclass(frozen=True)
class ExportOptions:
    """The less-used knobs of an export.

    Attributes:
        exporter: ``auto`` (TorchScript, PyTorch's dynamo exporter as a recorded fallback), ``dynamo`` or
            ``torchscript``.
        opset: the ONNX opset (None: 18).
        checkpoint: the file a model given as a module was loaded from (recorded with its sha256; a model given
            as a path records its own).
        schedule_source: how the schedule was chosen (recorded in ``export.json``; e.g. the second value of
            :meth:`tavt_kit.search.SearchResult.schedule`).
        raise_on_failure: raise :class:`~tavt_kit.errors.ExportError` (after writing ``export.json``) when a file
            fails verification (default); off returns the result with ``verified`` False.
    """

    exporter: str = "auto"
    opset: Optional[int] = None
    checkpoint: Optional[str] = None
    schedule_source: Optional[Dict[str, Any]] = None
    raise_on_failure: bool = True

    def __post_init__(self):
        from .onnx import EXPORTERS, MIN_OPSET, max_opset

        if self.exporter not in EXPORTERS:
            raise ConfigError(f"options.exporter={self.exporter!r}: expected one of {', '.join(EXPORTERS)}")
        if self.opset is not None and (isinstance(self.opset, bool) or not isinstance(self.opset, int)
                                       or self.opset < 1):
            raise ConfigError(f"options.opset={self.opset!r}: expected an ONNX opset number (e.g. 18)")
        if self.opset is not None and not MIN_OPSET <= self.opset <= max_opset():
            # below it the exporters fail or keep a higher opset than asked; above it onnx cannot read the file
            raise ConfigError(f"options.opset={self.opset}: the exporters cannot write a ViT at it; expected "
                              f"{MIN_OPSET}..{max_opset()} (default 18)")
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))
        if self.schedule_source is not None and not isinstance(self.schedule_source, dict):
            raise ConfigError(f"options.schedule_source: expected a dict, got {type(self.schedule_source).__name__}")
