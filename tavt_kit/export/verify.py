"""Accuracy verification of an exported model against PyTorch, on real images.

:func:`verify_export` runs the PyTorch model and an exported file (``.onnx`` in
ONNX Runtime, OpenVINO ``.xml``) at the same token schedule on the same images
and reports top-1 of each, the agreement of their predictions, the max / mean
absolute logit difference and the precision the runtime actually used. The
export passes when the top-1 drop is at most ``max_accuracy_drop`` points (and,
if given, the max logit difference at most ``max_logit_diff``).

OpenVINO compiles with ``INFERENCE_PRECISION_HINT`` = f32 for fp32 files (on a
bf16-capable CPU it would otherwise run bf16); lower precisions are asked for
only when requested, and the precision reported is the one read back from the
compiled model. For ONNX files it is read from the graph (fp16 initialisers,
quantize/dequantize nodes).

:func:`graph_token_counts` is the structural check that an exported graph keeps
the token drop: the sequence lengths of its token tensors (rank 3, last axis =
the model's width).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import BackendError, ConfigError, DatasetError, ExportError
from ..target import Precision

#: precisions fgvc-kit exports at (:class:`~tavt_kit.target.Precision`'s names)
PRECISIONS = Precision.ALL
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "QLinearConv",
              "MatMulInteger", "ConvInteger", "QLinearAdd", "QLinearMul"}


# ------------------------------------------------------------------------- data
@dataclass
class VerifyData:
    """Images (uint8 ``N x 3 x H x W``) and labels (``None`` when they are not the model's classes)."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    info: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _subset(n: int, limit: Optional[int], seed: int) -> Optional[torch.Tensor]:
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g)[:limit].sort().values


def load_verify_data(model: nn.Module, data=None, *, root: Optional[str] = None, split: str = "test",
                     max_images: Optional[int] = None, seed: int = 0, where: str = "data") -> VerifyData:
    """Images to verify (or calibrate) an export on.

    Args:
        data: ``None`` (the dataset recorded in the checkpoint's spec, else the built-in demo),
            a dataset name (with ``root``), a :class:`~tavt_kit.data.DataSpec`, a dataset from
            :func:`~tavt_kit.data.build_dataset`, or ``(uint8 images, labels)``.
        split: the split (``test`` to verify; ``train`` for int8 calibration).
        max_images: a seeded random subset of at most this many images.
        where: what ``data`` is called in error messages (the caller's parameter).
    Returns:
        :class:`VerifyData`. With the demo as a fallback for a model of other classes the labels
        are ``None`` (only agreement with PyTorch can be measured).
    """
    from ..data import DataSpec, FGVCDataset, build_dataset, cached_tensors

    if max_images is not None and (isinstance(max_images, bool) or int(max_images) < 1):
        raise ConfigError(f"max_images={max_images!r}: expected a positive number of images")
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ConfigError(f"{where}: expected (images, labels), got a sequence of {len(data)}")
        images, labels = data
        images = torch.as_tensor(images)
        labels = None if labels is None else torch.as_tensor(labels).long()
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"{where}: expected images of shape N x 3 x H x W, got {tuple(images.shape)}")
        if labels is not None and labels.shape[0] != images.shape[0]:
            raise ConfigError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
        info: Dict[str, Any] = {"source": "tensors", "available": int(images.shape[0])}
    else:
        fallback = False
        if isinstance(data, FGVCDataset):
            dataset = data
        else:
            if data is None:
                recorded = (getattr(model, "spec", None) or {}).get("data")
                spec = DataSpec.from_dict(recorded) if isinstance(recorded, dict) else DataSpec("demo")
                fallback = not isinstance(recorded, dict)
            elif isinstance(data, DataSpec):
                spec = data
            elif isinstance(data, str):
                spec = DataSpec(name=data, root=root)
            else:
                raise ConfigError(f"{where}: expected a dataset name, DataSpec, dataset or (images, labels), "
                                  f"got {type(data).__name__}")
            dataset = build_dataset(spec, split=split, model=model, augment=False)
        labelled = True
        if fallback and int(getattr(model, "num_classes", 0)) != dataset.num_classes:
            labelled = False  # the demo's digits are not this model's classes: agreement only
        else:
            from ..train.build import check_model_fits

            check_model_fits(model, dataset, where)
        images, labels = cached_tensors(dataset)
        info = {"source": "dataset", **dataset.describe(), "available": int(images.shape[0])}
        if fallback:
            info["note"] = "the checkpoint records no dataset; the built-in demo was used" + (
                "" if labelled else f" and its labels are not the model's {model.num_classes} classes: "
                "only agreement with PyTorch is measured")
        if not labelled:
            labels = None
    H, W = _img_size(model)
    if tuple(images.shape[2:]) != (H, W):
        raise DatasetError(f"{where}: images are {images.shape[2]}x{images.shape[3]}, the model takes {H}x{W}")
    idx = _subset(int(images.shape[0]), max_images, seed)
    if idx is not None:
        images = images[idx]
        labels = labels[idx] if labels is not None else None
    if images.shape[0] == 0:
        raise DatasetError(f"{where}: no images in the {split} split")
    info["images"] = int(images.shape[0])
    info["labelled"] = labels is not None
    return VerifyData(images, labels, info)


def _img_size(model: nn.Module) -> Tuple[int, int]:
    from ..models.factory import geometry

    h, w = geometry(model)["img_size"]
    return int(h), int(w)


def normalized_batches(model: nn.Module, images: torch.Tensor, batch_size: int):
    """Float batches in the model's normalisation (mean/std of its spec)."""
    from ..data import Normalize

    norm = Normalize.from_model(model)
    for i in range(0, int(images.shape[0]), batch_size):
        yield norm(images[i:i + batch_size])


@torch.no_grad()
def pytorch_logits(model: nn.Module, images: torch.Tensor, schedule=None, batch_size: int = 32) -> np.ndarray:
    """PyTorch's logits (float64 numpy) at ``schedule`` on uint8 images, in eval mode."""
    was = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        out = [model(x.to(dev), drop=schedule).float().cpu().numpy()
               for x in normalized_batches(model, images, batch_size)]
    finally:
        model.train(was)
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------- runners
class ExportedRunner:
    """Runs an exported file on float batches: ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``."""

    def __init__(self, path, precision: str = "fp32", threads: Optional[int] = None, device: str = "cpu"):
        self.path = os.fspath(path)
        precision = Precision.parse(precision)
        if not os.path.exists(self.path):
            raise ExportError(f"{self.path}: exported file not found")
        low = self.path.lower()
        if low.endswith(".onnx"):
            import onnxruntime as ort

            from .onnx import ort_session

            self.kind = "onnx"
            self.session = ort_session(self.path, threads=threads)
            self.input_name = self.session.get_inputs()[0].name
            self.precision_used = onnx_file_precision(self.path)
            self.runtime = f"onnxruntime {ort.__version__} ({self.session.get_providers()[0]})"
        elif low.endswith(".xml"):
            from .openvino import compile_openvino, require_openvino

            ov = require_openvino()
            self.kind = "openvino"
            hint = Precision.OPENVINO_HINT[precision]
            self.compiled, used = compile_openvino(self.path, device=device, precision=hint, threads=threads)
            used = Precision.ALIASES.get(used, used)  # OpenVINO's f32 / f16 -> fp32 / fp16
            self.precision_used = f"int8+{used}" if openvino_file_quantized(self.path) else used
            self.runtime = f"openvino {ov.get_version().split('-')[0]} ({device.upper()}, " \
                           f"INFERENCE_PRECISION_HINT={hint})"
        else:
            raise ExportError(f"{self.path}: not an exported model (expected .onnx or OpenVINO .xml)")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from .graph import first_line

        try:
            if self.kind == "onnx":
                return self.session.run(None, {self.input_name: x})[0]
            return self.compiled(x)[self.compiled.output(0)]
        except Exception as e:
            raise ExportError(f"{self.path}: inference failed ({first_line(e)})") from None


def onnx_file_precision(path) -> str:
    """``int8`` (quantize/dequantize or integer ops), ``fp16`` (mostly fp16 weights) or ``fp32``."""
    import onnx

    m = onnx.load(os.fspath(path), load_external_data=False)
    if any(n.op_type in _QUANT_OPS for n in m.graph.node):
        return "int8"
    f16 = sum(1 for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    f32 = sum(1 for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return "fp16" if f16 > f32 else "fp32"


def openvino_file_quantized(path) -> bool:
    """Whether an IR holds quantized (FakeQuantize / int8-weight) operations."""
    from .openvino import core

    m = core().read_model(os.fspath(path))
    for op in m.get_ordered_ops():
        t = op.get_type_name()
        if t == "FakeQuantize":
            return True
        if t == "Constant" and str(op.get_output_element_type(0)) in ("<Type: 'int8_t'>", "<Type: 'uint8_t'>"):
            return True
    return False


# ------------------------------------------------------------------ verification
@dataclass(frozen=True)
class Verification:
    """PyTorch vs an exported file on the same images at the same schedule: one format's entry of
    ``export.json``'s ``verification.results`` (accuracies in %, logit differences absolute).

    A file that could not be loaded or run has only ``format``, ``passed`` (False) and ``reason``.
    """

    format: str
    passed: bool
    reason: Optional[str] = None
    path: Optional[str] = None
    #: the precision the file was exported at, and the one its runtime used (``int8+fp32`` for OpenVINO int8)
    precision: Optional[str] = None
    precision_used: Optional[str] = None
    runtime: Optional[str] = None
    images: Optional[int] = None
    #: top-1 of PyTorch and of the exported file (None without labels), and the drop in points
    accuracy_torch: Optional[float] = None
    accuracy_exported: Optional[float] = None
    accuracy_drop: Optional[float] = None
    #: the fraction of the images on which both predict the same class
    agreement: Optional[float] = None
    max_logit_diff: Optional[float] = None
    mean_logit_diff: Optional[float] = None
    #: the bounds checked (None: not checked)
    limit_accuracy_drop: Optional[float] = None
    limit_logit_diff: Optional[float] = None
    limit_agreement: Optional[float] = None
    criterion: Optional[str] = None
    seconds: Optional[float] = None

    #: (field, export.json key), in the order export.json holds them
    JSON_KEYS = (("format", "format"), ("path", "path"), ("precision", "precision"),
                 ("precision_used", "precision_used"), ("runtime", "runtime"), ("images", "images"),
                 ("accuracy_torch", "top1_pytorch"), ("accuracy_exported", "top1_exported"),
                 ("accuracy_drop", "accuracy_drop"), ("agreement", "agreement"),
                 ("max_logit_diff", "max_abs_logit_diff"), ("mean_logit_diff", "mean_abs_logit_diff"),
                 ("limit_accuracy_drop", "max_accuracy_drop"), ("limit_logit_diff", "max_logit_diff"),
                 ("limit_agreement", "min_agreement"), ("criterion", "criterion"), ("passed", "passed"),
                 ("reason", "reason"), ("seconds", "seconds"))

    @property
    def ran(self) -> bool:
        """Whether the file was run at all (False: it could not be loaded or run; ``reason`` says why)."""
        return self.runtime is not None

    def to_dict(self) -> Dict[str, Any]:
        """The entry as ``export.json`` holds it."""
        if not self.ran:
            return {"format": self.format, "passed": self.passed, "reason": self.reason}
        return {key: getattr(self, name) for name, key in self.JSON_KEYS}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Verification":
        """Reads :meth:`to_dict` (an entry of ``export.json``'s ``verification.results``)."""
        kw = {name: d.get(key) for name, key in cls.JSON_KEYS if key in d}
        kw.setdefault("format", d.get("format") or "")
        kw["passed"] = bool(d.get("passed"))
        return cls(**kw)

    def summary(self) -> str:
        if not self.ran:
            return f"{self.format}: not run ({self.reason})"
        acc = (f"top-1 {self.accuracy_torch:.2f} % -> {self.accuracy_exported:.2f} % "
               f"({self.accuracy_drop:+.2f} points drop), " if self.accuracy_torch is not None else "")
        return (f"{self.format} ({self.precision_used}): {acc}agreement {100 * self.agreement:.2f} %, "
                f"max |logit diff| {self.max_logit_diff:.3g} on {self.images} images")


def verify_export(
    model: nn.Module,
    exported,
    data: Union[VerifyData, Tuple[torch.Tensor, Optional[torch.Tensor]]],
    *,
    schedule=None,
    precision: str = "fp32",
    max_accuracy_drop: float = 0.5,
    max_logit_diff: Optional[float] = None,
    min_agreement: Optional[float] = None,
    batch_size: int = 32,
    threads: Optional[int] = None,
    reference_logits: Optional[np.ndarray] = None,
    format: Optional[str] = None,
    device: str = "cpu",
) -> Verification:
    """Run ``model`` (PyTorch, at ``schedule``) and ``exported`` on the same images and compare.

    Args:
        exported: an ``.onnx`` file, an OpenVINO ``.xml`` file, or an :class:`ExportedRunner`.
        data: :class:`VerifyData` (:func:`load_verify_data`) or ``(uint8 images, labels or None)``.
        schedule: the schedule the file was exported at (``None``: the model's own).
        precision: the precision the file was exported at; OpenVINO compiles with the matching
            inference hint (f32 for fp32 and int8), and the precision it actually used is reported.
        max_accuracy_drop: the largest acceptable top-1 drop, in points (without labels: the
            disagreement rate, an upper bound of the drop).
        max_logit_diff: also require max |logit difference| <= this.
        min_agreement: also require that this fraction of the predictions agree with PyTorch's.
        reference_logits: PyTorch's logits on these images, if already computed.
        device: where OpenVINO runs the file (``cpu``).
    Returns:
        a :class:`Verification`; ``passed`` is False (with ``reason``) when the export fails the check.
        A file that cannot be loaded or run raises :class:`~tavt_kit.errors.ExportError`.
    """
    if not isinstance(data, VerifyData):
        images, labels = data
        data = VerifyData(torch.as_tensor(images), None if labels is None else torch.as_tensor(labels).long())
    precision = Precision.parse(precision)
    _check_bounds(max_accuracy_drop, max_logit_diff, min_agreement, batch_size)
    start = time.perf_counter()
    runner = exported if isinstance(exported, ExportedRunner) else \
        ExportedRunner(exported, precision, threads, device=device)
    if schedule is not None:
        schedule = model.make_schedule(schedule)
    ref = reference_logits if reference_logits is not None else \
        pytorch_logits(model, data.images, schedule, batch_size)
    out = _exported_logits(runner, model, data.images, batch_size)
    if out.shape != ref.shape:
        raise ExportError(f"{runner.path}: outputs {tuple(out.shape)}, PyTorch {tuple(ref.shape)}")
    finite = bool(np.isfinite(out).all())
    diff = np.abs(out - ref)
    pred_ref, pred_out = ref.argmax(1), out.argmax(1)
    agreement = float((pred_ref == pred_out).mean())
    top1_ref = top1_out = drop = None
    if data.labels is not None:
        y = data.labels.numpy()
        top1_ref = 100.0 * float((pred_ref == y).mean())
        top1_out = 100.0 * float((pred_out == y).mean())
        drop = top1_ref - top1_out
        measured, criterion = drop, "top-1 drop (points)"
    else:
        measured, criterion = 100.0 * (1.0 - agreement), "disagreement with PyTorch (points; no labels)"
    max_diff = float(diff.max()) if finite else float("inf")
    reasons = _failures(finite, measured, drop, top1_ref, top1_out, agreement, max_diff, max_accuracy_drop,
                        max_logit_diff, min_agreement)
    fmt = format or runner.kind
    return Verification(
        format=fmt, path=runner.path, precision=precision, precision_used=runner.precision_used,
        runtime=runner.runtime, images=len(data), accuracy_torch=top1_ref, accuracy_exported=top1_out,
        accuracy_drop=drop, agreement=agreement, max_logit_diff=max_diff,
        mean_logit_diff=float(diff.mean()) if finite else float("inf"), limit_accuracy_drop=float(max_accuracy_drop),
        limit_logit_diff=max_logit_diff, limit_agreement=min_agreement, criterion=criterion, passed=not reasons,
        reason="; ".join(reasons) or None, seconds=time.perf_counter() - start)


def _check_bounds(max_accuracy_drop, max_logit_diff, min_agreement, batch_size) -> None:
    """Raises :class:`ConfigError` for a bound or batch size :func:`verify_export` cannot check against."""
    if not max_accuracy_drop >= 0:
        raise ConfigError(f"max_accuracy_drop={max_accuracy_drop!r}: expected a non-negative number of points")
    if max_logit_diff is not None and not max_logit_diff >= 0:
        raise ConfigError(f"max_logit_diff={max_logit_diff!r}: expected a non-negative number")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise ConfigError(f"min_agreement={min_agreement!r}: expected a fraction in [0, 1]")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: expected a positive number of images")


def _exported_logits(runner, model: nn.Module, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """The exported file's logits (float64) on ``images``, fed as PyTorch's normalised float32 batches."""
    outs = []
    for x in normalized_batches(model, images, batch_size):
        outs.append(np.asarray(runner(x.numpy().astype(np.float32))))
    return np.concatenate(outs).astype(np.float64)


def _failures(finite: bool, measured: float, drop, top1_ref, top1_out, agreement: float, max_diff: float,
              max_accuracy_drop: float, max_logit_diff, min_agreement) -> List[str]:
    """Why the export fails the check, one reason per bound it breaks (empty: it passes)."""
    reasons: List[str] = []
    if not finite:
        reasons.append("the exported model outputs NaN or infinite logits")
    if measured > max_accuracy_drop + 1e-9:
        # with labels the bound is on the top-1 drop; without, on the disagreement (an upper bound of the drop)
        if drop is not None:
            reasons.append(f"top-1 drops by {drop:.2f} points ({top1_ref:.2f} % -> {top1_out:.2f} %), "
                           f"more than --max-accuracy-drop {max_accuracy_drop:g}")
        else:
            reasons.append(f"predictions disagree with PyTorch on {measured:.2f} % of the images, more than "
                           f"--max-accuracy-drop {max_accuracy_drop:g}")
    if max_logit_diff is not None and not max_diff <= max_logit_diff:
        reasons.append(f"max |logit difference| {max_diff:.3g} exceeds --max-logit-diff {max_logit_diff:g}")
    if min_agreement is not None and agreement < min_agreement:
        reasons.append(f"predictions agree with PyTorch on {100 * agreement:.2f} % of the images, less than "
                       f"--min-agreement {min_agreement:g}")
    return reasons


# ------------------------------------------------------------ structural check
def graph_token_counts(path, width: int) -> Optional[List[int]]:
    """Sequence lengths of the token tensors (rank 3, static last axis == ``width``) in an exported graph.

    A graph exported at a schedule that drops tokens holds the shorter sequences (prefix + kept
    patch tokens); a full-schedule graph only the full length. ONNX files are read through
    OpenVINO's shape inference where it is installed: ONNX's own leaves the lengths of a
    TorchScript-exported graph unknown (its reshapes take computed shapes). ``None`` when
    neither can tell the lengths.
    """
    path = os.fspath(path)
    lower = path.lower()
    if not lower.endswith((".onnx", ".xml")):
        raise ExportError(f"{path}: not an exported model (expected .onnx or OpenVINO .xml)")
    from .openvino import core

    try:
        model = core().read_model(path)
    except BackendError:  # no OpenVINO: an IR cannot be read at all, an ONNX file by ONNX's shape inference
        if lower.endswith(".xml"):
            raise
        return _onnx_token_counts(path, width)
    found = set()
    for op in model.get_ordered_ops():
        for out in op.outputs():
            ps = out.get_partial_shape()
            if ps.rank.is_static and ps.rank.get_length() == 3 and ps[2].is_static and ps[1].is_static \
                    and ps[2].get_length() == width:
                found.add(int(ps[1].get_length()))
    return sorted(found)


def _onnx_token_counts(path: str, width: int) -> Optional[List[int]]:
    """:func:`graph_token_counts` by ONNX's shape inference; ``None`` where a token tensor's length is unknown."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:  # shapes the exporter wrote are used as they are
        pass
    found, unknown = set(), False
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        t = vi.type.tensor_type
        if not t.HasField("shape") or len(t.shape.dim) != 3:
            continue
        n, c = t.shape.dim[1], t.shape.dim[2]
        if c.HasField("dim_value") and c.dim_value == width:
            if n.HasField("dim_value"):
                found.add(int(n.dim_value))
            else:
                unknown = True
    return None if unknown else sorted(found)


def expected_token_counts(model: nn.Module, schedule) -> List[int]:
    """Sequence lengths a schedule must leave in the graph: prefix + kept patch tokens (+1 fused token).

    Every block's count but the last is checked for FFVT, whose last block reads the class token
    plus its selected tokens instead.
    """
    from ..models.factory import geometry

    prefix = int(geometry(model).get("num_prefix_tokens", 0))
    extra = 1 if getattr(model, "fuse", False) else 0
    counts = list(schedule.counts if hasattr(schedule, "counts") else schedule)
    if getattr(model, "head_name", "linear") == "ffvt":
        counts = counts[:-1]
    full = int(model.num_patches)
    return sorted({prefix + c + (extra if c < full else 0) for c in counts})
