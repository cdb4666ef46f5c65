"""The preparation every export of one model at one schedule shares: :func:`prepare_export`.

It loads the model, resolves the schedule and the formats, checks the request, and holds what does not
depend on the precision — the verification images and PyTorch's logits on them, int8 calibration and held-out
images, the checked fp32 ONNX graph — so that :func:`~tavt_kit.export.export_model` (one precision) and
:func:`tavt_kit.bench.export_fastest` (every precision this machine runs, timed) prepare the same way and the
latter loads and computes each of these once.
"""
from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..data.splits import holdout_advice, small_split_warning
from ..errors import ConfigError, DatasetError, TavtKitError
from ..schedules import schedule_from_drop_file
from ..target import DeploymentTarget, Precision
from .formats import FORMAT_OF_BACKEND, check_format_precision, parse_formats
from .options import ExportOptions, QuantizeOptions, VerifyOptions


@dataclass
class OnnxReuse:
    """The checked fp32 ONNX graph of one model at one schedule, shared by the exports of several precisions:
    exported once into ``folder``, copied by the later exports."""

    folder: str
    key: Optional[tuple] = None
    path: Optional[str] = None
    exporter: Optional[Dict[str, Any]] = None
    info: Optional[Dict[str, Any]] = None


@dataclass
class PreparedExport:
    """A model at a schedule, ready to export at any precision (made by :func:`prepare_export`; each export is
    :func:`~tavt_kit.export.pipeline.run_export`)."""

    model: nn.Module
    schedule: Any
    source: Dict[str, Any]
    formats: Tuple[str, ...]
    target: DeploymentTarget
    verify: VerifyOptions
    quantize: QuantizeOptions
    options: ExportOptions
    checkpoint: Optional[str] = None
    #: set to share the fp32 ONNX graph between the exports of several precisions
    onnx_reuse: Optional[OnnxReuse] = None
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ what every precision shares
    def _given_tensors(self) -> bool:
        return isinstance(self.verify.data, (tuple, list))

    def verify_data(self):
        """The verification images (:class:`~tavt_kit.export.VerifyData`), loaded once."""
        if "data" not in self._cache:
            from .verify import load_verify_data

            v = self.verify
            self._cache["data"] = load_verify_data(self.model, v.data, root=v.root, split=v.split,
                                                   max_images=v.images, seed=v.seed, where="verify.data")
        return self._cache["data"]

    def reference_logits(self) -> np.ndarray:
        """PyTorch's logits on the verification images at the schedule, computed once."""
        if "reference" not in self._cache:
            from .verify import pytorch_logits

            self._cache["reference"] = pytorch_logits(self.model, self.verify_data().images, self.schedule,
                                                      self.verify.batch_size)
        return self._cache["reference"]

    def calibration(self) -> Tuple[np.ndarray, Dict[str, Any]]:
        """int8 calibration images and their record: given, else a seeded subset of ``calibration_split`` of
        the verification dataset (never the verification images themselves)."""
        if "calibration" not in self._cache:
            q = self.quantize
            if q.calibration is not None:
                calib = np.asarray(q.calibration, dtype=np.float32)
                rec = {"source": "given", "images": int(calib.shape[0])}
            else:
                from .quantize import calibration_images

                data = self.verify.data
                # verification tensors are never calibration images: the checkpoint's dataset (else the demo)
                given = self._given_tensors()
                calib = calibration_images(self.model, None if given else data,
                                           root=None if given else self.verify.root, split=q.calibration_split,
                                           n=q.calibration_images, seed=q.seed)
                name = data if isinstance(data, str) else \
                    ((getattr(self.model, "spec", None) or {}).get("data") or {}).get("name", "demo") \
                    if data is None or given else getattr(data, "name", None)
                rec = {"source": "dataset", "dataset": name, "split": q.calibration_split,
                       "images": int(calib.shape[0]), "seed": q.seed}
            self._cache["calibration"] = (calib, rec)
        calib, rec = self._cache["calibration"]
        return calib, copy.deepcopy(rec)

    def held_out(self) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """int8 accuracy control's held-out images (``{"images", "labels", "info", "max_accuracy_drop"}``), or
        None and why plain post-training quantisation is used instead."""
        if "held_out" not in self._cache:
            self._cache["held_out"] = self._load_held_out()
        return self._cache["held_out"]

    def _load_held_out(self):
        from .quantize import held_out_images

        q = self.quantize
        if not q.accuracy_control:
            return None, "accuracy control turned off (--no-accuracy-control)"
        given = self._given_tensors()  # verification tensors: the checkpoint's dataset instead
        try:
            x, y, info = held_out_images(self.model, None if given else self.verify.data,
                                         root=None if given else self.verify.root, split="holdout",
                                         n=q.accuracy_control_images, seed=q.seed)
        except (ConfigError, DatasetError) as e:
            return None, f"no held-out images to control the accuracy on ({e}); plain post-training quantisation"
        if q.calibration_split in ("holdout", "trainval"):
            info["note"] = (f"the calibration images (--calibration-split {q.calibration_split}) may include "
                            "these held-out images")
        small = small_split_warning(info["images"], "int8 accuracy control's held-out split",
                                    self._held_out_advice(info))
        if small:  # said in the log and recorded with the quantisation (exports.<format>.quantization.validation)
            info["warning"] = small
        return {"images": x, "labels": y, "info": info,
                "max_accuracy_drop": float(self.verify.max_accuracy_drop)}, None

    def _held_out_advice(self, info: Dict[str, Any]) -> str:
        """How to give accuracy control more held-out images: all of them, or a larger held-out split (chosen
        when the model is trained: export has no option for it)."""
        available = info.get("available")
        if self.quantize.accuracy_control_images is not None and isinstance(available, int) \
                and available > info["images"]:
            return f"a larger --accuracy-control-images, or none: all {available} held-out images"
        from ..data import DataSpec

        data = None if self._given_tensors() else self.verify.data
        try:
            if data is None:
                recorded = (getattr(self.model, "spec", None) or {}).get("data")
                data = DataSpec.from_dict(recorded) if isinstance(recorded, dict) else None
            elif isinstance(data, str):
                data = DataSpec(name=data, root=self.verify.root)
        except TavtKitError:  # the images were loaded from it: only the advice would be less precise
            data = None
        # export takes the held-out split the data was given when training (train/distill's options)
        return f"a larger held-out split, set when training: {holdout_advice(getattr(data, 'spec', data))}"

    def close(self) -> None:
        """Remove the shared ONNX graph (if any) and forget the cached images."""
        if self.onnx_reuse is not None:
            shutil.rmtree(self.onnx_reuse.folder, ignore_errors=True)
        self._cache.clear()


def resolve_target(target: Optional[DeploymentTarget], formats) -> Tuple[DeploymentTarget, Tuple[str, ...]]:
    """The target (default: fp32 on the CPU, for the runtime of the first format) and the formats (default:
    the format of ``target.backend``; ONNX without a target)."""
    if target is not None and not isinstance(target, DeploymentTarget):
        raise ConfigError(f"target: expected a tavt_kit.DeploymentTarget, got {type(target).__name__}")
    if formats is None:
        formats = (FORMAT_OF_BACKEND[target.backend],) if target is not None else ("onnx",)
    formats = parse_formats(formats)
    if target is None:
        target = DeploymentTarget(backend="openvino" if formats[0] == "openvino" else "onnxruntime")
    return target, formats


def check_request(formats: Sequence[str], precision: str, target: DeploymentTarget, verify: VerifyOptions) -> str:
    """The precision (its one name), once it is known that each format takes it and that this machine can
    build (and verify) it; before any work."""
    precision = Precision.parse(precision)
    check_format_precision(formats, precision)
    require_backends(formats, precision)
    if verify.enabled and "openvino" in formats and precision in (Precision.BF16, Precision.FP16):
        check_native_precision(precision, target.device)
    return precision


def require_backends(formats: Sequence[str], precision: str = Precision.FP32) -> None:
    """The optional backends a request needs."""
    if "openvino" in formats:
        from .openvino import require_openvino

        try:
            require_openvino()
        except TavtKitError as e:
            raise type(e)(f"formats='openvino': {e}") from None
    if precision == Precision.INT8:
        from .quantize import require_nncf

        require_nncf()


def check_native_precision(precision: str, device: str = "cpu") -> None:
    """Refuse to verify (or time) an OpenVINO file at bf16 / fp16 on a CPU that would quietly run f32 instead."""
    from .openvino import check_device_precision

    precision = Precision.parse(precision)
    try:
        check_device_precision(Precision.OPENVINO_HINT[precision], device=device)
    except TavtKitError as e:
        raise type(e)(f"{e}: verification would measure f32 and record it as {precision}; export at fp32 or int8 "
                      f"here, or build the file with verify.enabled=False and verify it on a machine that has "
                      f"{precision}") from None


def check_options(verify, quantize, options) -> None:
    """Each option object is of its type (``verify=False`` is ``verify=VerifyOptions(enabled=False)``)."""
    for name, value, kind in (("verify", verify, VerifyOptions), ("quantize", quantize, QuantizeOptions),
                              ("options", options, ExportOptions)):
        if not isinstance(value, kind):
            raise ConfigError(f"{name}={value!r}: expected a tavt_kit.export.{kind.__name__}"
                              + (" (verify=VerifyOptions(enabled=False) turns verification off)"
                                 if name == "verify" and isinstance(value, bool) else ""))


def prepare_export(model, schedule=None, formats=None, *, target: Optional[DeploymentTarget] = None,
                   verify: VerifyOptions = VerifyOptions(), quantize: QuantizeOptions = QuantizeOptions(),
                   options: ExportOptions = ExportOptions()) -> PreparedExport:
    """Load ``model``, resolve ``schedule`` and ``formats``; see :func:`~tavt_kit.export.export_model` for the
    arguments. Returns a :class:`PreparedExport`; :func:`~tavt_kit.export.pipeline.run_export` writes it at one
    precision."""
    check_options(verify, quantize, options)
    target, formats = resolve_target(target, formats)
    require_backends(formats)
    model, checkpoint = resolve_model(model, options.checkpoint)
    sched, source = resolve_schedule(model, schedule, options.schedule_source)
    return PreparedExport(model=model, schedule=sched, source=source, formats=formats, target=target, verify=verify,
                          quantize=quantize, options=options, checkpoint=checkpoint)


def resolve_model(model, checkpoint: Optional[str]) -> Tuple[nn.Module, Optional[str]]:
    """A token-drop model in eval mode, and the checkpoint it came from (recorded with its hash)."""
    from ..models import load_checkpoint

    if isinstance(model, (str, os.PathLike)):
        checkpoint = os.fspath(model)
        model = load_checkpoint(checkpoint)
    if not hasattr(model, "make_schedule"):
        raise ConfigError(f"model: expected a token-drop model or a checkpoint path, got {type(model).__name__}")
    model.eval()
    return model, checkpoint


def resolve_schedule(model: nn.Module, schedule, schedule_source: Optional[Dict[str, Any]]):
    """The schedule to export (given, a drop-config file, the model's own or the full model) and its source."""
    if schedule is None:
        sched = model.schedule if model.schedule is not None else model.full_schedule()
        return sched, schedule_source or {"kind": "checkpoint" if model.schedule is not None else "full"}
    if isinstance(schedule, (str, os.PathLike)):
        return (schedule_from_drop_file(model, schedule, "schedule"),
                schedule_source or {"kind": "drop-config", "file": os.path.basename(os.fspath(schedule))})
    return model.make_schedule(schedule), schedule_source or {"kind": "given"}
