"""ONNX export of a token-drop model at a fixed schedule, checked against PyTorch in ONNX Runtime.

``export_onnx(model, path, schedule)`` fixes the schedule (``model.schedule``)
and exports ``model(x)``: the token counts are static in the graph (top-k with
a fixed k, gather, sort), the batch dimension is dynamic. It uses the
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``: the same graph
as the dynamo exporter for these models, about 20x faster) and falls back to
the dynamo exporter (``dynamo=True``) when TorchScript fails, cannot write the
opset or its graph disagrees with PyTorch; the result records which one was
used and why.
Every export is checked with ``onnx.checker`` and run in ONNX Runtime on the
same random images as PyTorch (max absolute logit difference); exports that
differ by more than ``atol`` (times the largest logit's magnitude where it is
above 1: float32 rounding grows with it) raise :class:`~tavt_kit.errors.ExportError`.
A schedule that merges tokens (ToMe; per-block ``reducers`` or the model's
``reducer``) exports the same way, its matching (sort, gather, ``scatter_add``)
static in the graph; the file's metadata records each block's reducer.

:func:`export_module` is the same primitive for any module with one tensor
input (single blocks for latency tables), with named dynamic axes.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import BackendError, ConfigError, DiskFullError, ExportError
from ..files import disk_full_as_error
from .graph import first_line, write_metadata

#: ONNX opset fgvc-kit exports to (ONNX Runtime >= 1.14, OpenVINO >= 2023.0 read it)
DEFAULT_OPSET = 18
#: the lowest opset an exporter writes a ViT at (attention, scaled_dot_product_attention, needs opset 14; the
#: dynamo exporter writes 18 below its own lowest and the opset it wrote is checked, see export_module)
MIN_OPSET = 14


def max_opset() -> int:
    """The highest opset the installed ``onnx`` knows (what the checker and the runtimes can read)."""
    try:
        import onnx.defs

        return int(onnx.defs.onnx_opset_version())
    except Exception:  # pragma: no cover - onnx is a dependency
        return DEFAULT_OPSET


def file_opset(path: str) -> Optional[int]:
    """The default-domain (``ai.onnx``) opset an ONNX file declares (None when it declares none)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
EXPORTERS = ("auto", "dynamo", "torchscript")
#: metadata_props keys written into exported files
META_FORMAT = "fgvc_kit.format"
META_SPEC = "fgvc_kit.spec"
META_SCHEDULE = "fgvc_kit.schedule"
META_EXPORTER = "fgvc_kit.exporter"
#: each block's reducer ("drop"/"merge", null where it keeps its tokens); absent when nothing merges
META_REDUCERS = "fgvc_kit.reducers"
ONNX_FORMAT = "fgvc-kit/onnx"
#: parameters above this many bytes go to an external data file (protobuf's 2 GB limit)
_EXTERNAL_DATA_BYTES = 1_800_000_000

_log = logging.getLogger(__name__)


@dataclass
class ModuleExport:
    """What :func:`export_module` did."""

    path: str
    exporter: str
    opset: int
    max_abs_diff: Optional[float] = None
    checked_batches: List[int] = field(default_factory=list)
    fallback_reason: Optional[str] = None
    seconds: float = 0.0


@dataclass
class OnnxExport:
    """Result of :func:`export_onnx` (JSON-able with :meth:`to_dict`).

    Attributes:
        path: the ``.onnx`` file.
        exporter: ``"dynamo"`` (torch.export-based) or ``"torchscript"``.
        fallback_reason: why the dynamo exporter was not used (None when it was).
        opset: ONNX opset of the graph.
        schedule: patch tokens kept per block, fixed in the graph.
        input_name / output_name: graph input (``B x 3 x H x W`` images) and output (``B x classes`` logits).
        input_shape / output_shape: with ``"batch"`` for a dynamic batch dimension.
        max_abs_diff: largest |logit(ONNX Runtime) - logit(PyTorch)| over the checked batches (None if not verified).
        checked_batches: batch sizes run in ONNX Runtime.
        atol: the tolerance the check used.
    """

    path: str
    exporter: str
    fallback_reason: Optional[str]
    opset: int
    schedule: Optional[List[int]]
    batch_size: int
    dynamic_batch: bool
    input_name: str
    output_name: str
    input_shape: List[Any]
    output_shape: List[Any]
    max_abs_diff: Optional[float]
    checked_batches: List[int]
    atol: float
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------ helpers
def _param_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@contextlib.contextmanager
def quiet_exporters():
    """The exporters (and OpenVINO's ONNX reader) print progress and warnings; keep a library call silent
    (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export_once(module: nn.Module, example: torch.Tensor, path: str, exporter: str, opset: int,
                 input_name: str, output_name: str, dynamic_axes: Mapping[int, str],
                 output_axes: Mapping[int, str], dim_min: Mapping[int, int]) -> None:
    external = _param_bytes(module) > _EXTERNAL_DATA_BYTES
    with quiet_exporters(), torch.no_grad():
        if exporter == "dynamo":
            shapes = None
            if dynamic_axes:
                shapes = ({axis: torch.export.Dim(name, min=int(dim_min.get(axis, 1)))
                           for axis, name in dynamic_axes.items()},)
            torch.onnx.export(module, (example,), path, dynamo=True, external_data=external, opset_version=opset,
                              input_names=[input_name], output_names=[output_name], dynamic_shapes=shapes,
                              verbose=False)
        else:
            axes = {}
            if dynamic_axes:
                axes[input_name] = dict(dynamic_axes)
            if output_axes:
                axes[output_name] = dict(output_axes)
            torch.onnx.export(module, (example,), path, dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=[output_name],
                              dynamic_axes=axes or None, do_constant_folding=True)


def ort_session(path: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None,
                free_dims: Optional[Mapping[str, int]] = None, spinning: bool = True):
    """An ONNX Runtime session (all graph optimisations, sequential execution, ``threads`` intra-op threads).

    ``free_dims`` fixes named dynamic dimensions (``{"batch": 1}``) so the session optimises for static shapes.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError("onnxruntime is not installed; pip install onnxruntime "
                           "(onnxruntime-gpu for CUDA)") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for name, value in (free_dims or {}).items():
        so.add_free_dimension_override_by_name(name, int(value))
    try:
        return ort.InferenceSession(path, so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:
        raise ExportError(f"{path}: ONNX Runtime cannot load the file ({first_line(e)})") from None


def _ort_max_diff(path: str, module: nn.Module, inputs: Sequence[torch.Tensor]) -> Tuple[float, float]:
    """The largest absolute difference between ONNX Runtime's and PyTorch's outputs, and the largest magnitude
    of PyTorch's."""
    import numpy as np

    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for x in inputs:
            ref = module(x).detach().float().cpu().numpy()
            out = sess.run(None, {name: x.detach().cpu().numpy()})[0]
            if out.shape != ref.shape:
                raise ExportError(f"{path}: ONNX Runtime output has shape {tuple(out.shape)}, "
                                  f"PyTorch {tuple(ref.shape)}")
            worst = max(worst, float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64)))))
            scale = max(scale, float(np.max(np.abs(ref))))
    return worst, scale


def _scaled(scale: float) -> str:
    """How the export check's ``atol`` was scaled: it holds up to logits of magnitude 1, and scales above."""
    return f" x the largest logit, {scale:.3g}" if scale > 1 else ""


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    path,
    *,
    exporter: str = "auto",
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_axes: Optional[Mapping[int, str]] = None,
    output_axes: Optional[Mapping[int, str]] = None,
    dim_min: Optional[Mapping[int, int]] = None,
    verify_inputs: Optional[Sequence[torch.Tensor]] = None,
    atol: float = 1e-4,
    metadata: Optional[Mapping[str, str]] = None,
) -> ModuleExport:
    """Export a one-input module to ONNX, check it and (optionally) compare it with PyTorch in ONNX Runtime.

    Args:
        example: input used to trace the graph (use a size other than 1 on dynamic axes:
            torch.export specialises size-1 dimensions).
        exporter: ``"auto"`` (TorchScript, then dynamo if TorchScript fails, writes another opset or
            disagrees with PyTorch), ``"dynamo"`` or ``"torchscript"``.
        dynamic_axes: input axis -> dimension name (``{0: "batch"}``); named dimensions can be
            fixed later (ONNX Runtime free-dimension overrides, OpenVINO ``reshape``).
        output_axes: output axis -> name, for the TorchScript exporter (dynamo infers them).
        dim_min: smallest size of a dynamic input axis (dynamo), e.g. the tokens a block keeps.
        verify_inputs: inputs run in PyTorch and ONNX Runtime; the export fails above ``atol``.
        metadata: written into the file's ``metadata_props``.
    """
    import onnx

    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; expected one of {', '.join(EXPORTERS)}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # auto: TorchScript first. Both write the same graph for these models (ONNX Runtime logits within 2e-5 of each
    # other, OpenVINO latency within noise; benchmarks/exporter_benchmark.py) and TorchScript does it 16-25x faster:
    # the searches export a model per verified int8 candidate and a table per target. Dynamo is the fallback where
    # TorchScript fails, writes another opset or disagrees with PyTorch.
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    module = module.eval()
    reasons: List[str] = []
    start = time.perf_counter()
    for i, name in enumerate(order):
        last = i == len(order) - 1
        try:
            with disk_full_as_error(path, partial=(path, path + ".data")):  # the other exporter would not fit
                _export_once(module, example, path, name, opset, input_name, output_name, dict(dynamic_axes or {}),
                             dict(output_axes or {}), dict(dim_min or {}))
            onnx.checker.check_model(path)
            written = file_opset(path)
        except DiskFullError:
            raise
        except Exception as e:
            reasons.append(f"{name} exporter failed ({first_line(e)})")
            if last:
                raise ExportError(f"{path}: export failed: {'; '.join(reasons)}") from None
            continue
        if written != opset:  # e.g. the dynamo exporter keeps opset 18 when it cannot convert to a lower one
            reasons.append(f"{name} exporter wrote opset {written}, not the requested {opset}")
            if last:
                raise ExportError(f"{path}: opset {opset} was not honoured ({'; '.join(reasons)}); expected an "
                                  f"opset the exporter writes ({DEFAULT_OPSET}, the default, always is)")
            continue
        diff = None
        if verify_inputs:
            diff, scale = _ort_max_diff(path, module, verify_inputs)  # float32 rounding grows with the logits
            if not diff <= atol * max(1.0, scale):
                reasons.append(f"{name} export differs from PyTorch by {diff:.3g} (> {atol:g}{_scaled(scale)})")
                if last:
                    raise ExportError(f"{path}: {'; '.join(reasons)}")
                continue
        meta = dict(metadata or {})
        meta[META_EXPORTER] = name
        write_metadata(path, meta)
        return ModuleExport(path=path, exporter=name, opset=written, max_abs_diff=diff,
                            checked_batches=[int(x.shape[0]) for x in (verify_inputs or [])],
                            fallback_reason="; ".join(reasons) or None, seconds=time.perf_counter() - start)
    raise AssertionError("unreachable")


def _image_size(model: nn.Module):
    from ..models.factory import geometry

    return tuple(geometry(model)["img_size"])


def export_onnx(
    model: nn.Module,
    path,
    schedule=None,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    *,
    exporter: str = "auto",
    dynamic_batch: bool = True,
    verify: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
) -> OnnxExport:
    """Export a token-drop model at ``schedule`` to ONNX and check it against PyTorch.

    Args:
        model: a token-drop model (:func:`tavt_kit.create_model`, :func:`tavt_kit.load_checkpoint`).
        path: the ``.onnx`` file to write.
        schedule: counts, :class:`~tavt_kit.TokenSchedule` or drop-config path; ``None`` = the
            model's default schedule (``model.schedule``; the full model when unset). It is fixed
            in the graph: token counts are static, only the batch dimension is dynamic.
        batch_size: batch checked in ONNX Runtime (the graph is traced at ``max(2, batch_size)``
            when the batch is dynamic, and also checked at ``batch_size + 1``).
        opset: ONNX opset (default 18).
        exporter: ``"auto"`` (TorchScript, dynamo as fallback), ``"dynamo"`` or ``"torchscript"``.
        verify: run ONNX Runtime and PyTorch on the same random images; raise
            :class:`~tavt_kit.errors.ExportError` when the max abs logit difference exceeds ``atol`` (times
            the largest logit's magnitude where it is above 1).
    Returns:
        an :class:`OnnxExport`. The file's ``metadata_props`` hold the model spec, the schedule
        and the exporter, so a later step can tell what the file is.
    """
    _check_export_args(model, batch_size, verify)
    sched = model.schedule if schedule is None else model.make_schedule(schedule)
    H, W = _image_size(model)
    example, checks = _random_inputs(model, (H, W), batch_size, dynamic_batch, verify, seed)
    meta = _onnx_metadata(model, sched)
    was_training = model.training
    old = model.schedule
    model.eval()
    try:
        model.schedule = sched
        res = export_module(model, example, path, exporter=exporter, opset=opset, input_name="input",
                            output_name="logits", dynamic_axes={0: "batch"} if dynamic_batch else None,
                            output_axes={0: "batch"} if dynamic_batch else None, verify_inputs=checks,
                            atol=atol, metadata=meta)
    finally:
        model.schedule = old
        model.train(was_training)
    num_classes = int(getattr(model, "num_classes", 0))
    b = "batch" if dynamic_batch else batch_size
    return OnnxExport(
        path=res.path, exporter=res.exporter, fallback_reason=res.fallback_reason, opset=res.opset,
        schedule=list(sched.counts) if sched is not None else list(model.full_schedule().counts),
        batch_size=batch_size, dynamic_batch=dynamic_batch, input_name="input", output_name="logits",
        input_shape=[b, 3, H, W], output_shape=[b, num_classes], max_abs_diff=res.max_abs_diff,
        checked_batches=res.checked_batches, atol=atol, seconds=res.seconds)


def _check_export_args(model, batch_size, verify: bool) -> None:
    """Raises when :func:`export_onnx` cannot export ``model`` or check it as asked."""
    if not hasattr(model, "make_schedule"):
        raise ConfigError(f"export_onnx() takes a token-drop model (tavt_kit.create_model / load_checkpoint), "
                          f"got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BackendError("export verification needs onnxruntime; pip install onnxruntime "
                               "(or pass verify=False)") from None


def _random_inputs(model: nn.Module, size, batch_size: int, dynamic_batch: bool, verify: bool, seed: int):
    """Seeded random images on the model's device: the one to trace at, and those to check (None: no check)."""
    H, W = size
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    # torch.export specialises a dynamic dimension traced at size 1: trace a dynamic batch at 2 or more
    trace_batch = max(2, batch_size) if dynamic_batch else batch_size
    example = torch.randn(trace_batch, 3, H, W, generator=gen).to(device)
    checks = [torch.randn(b, 3, H, W, generator=gen).to(device)
              for b in ([batch_size, batch_size + 1] if dynamic_batch else [batch_size])] if verify else None
    return example, checks


def _onnx_metadata(model: nn.Module, sched) -> Dict[str, str]:
    """The fgvc-kit ``metadata_props`` of a model's export at ``sched``: format, schedule, reducers, spec."""
    meta = {META_FORMAT: ONNX_FORMAT, META_SCHEDULE: json.dumps(list(sched.counts) if sched is not None else None)}
    reducers = schedule_reducers(model, sched)
    if reducers is not None and "merge" in reducers:
        meta[META_REDUCERS] = json.dumps(reducers)
    spec = getattr(model, "spec", None)
    if spec is not None:
        from ..models import spec_of

        meta[META_SPEC] = json.dumps(spec_of(model))
    return meta


def schedule_reducers(model: nn.Module, sched) -> Optional[List[Optional[str]]]:
    """Each block's reducer at ``sched`` (None where it keeps its tokens); None when nothing is reduced."""
    if sched is None or sched.is_full:
        return None
    per_block = model.block_reducers(sched) if hasattr(model, "block_reducers") else ("drop",) * sched.depth
    out, prev = [], sched.num_patches
    for c, r in zip(sched.counts, per_block):
        out.append(r if c < prev else None)
        prev = min(prev, c)
    return out


# ------------------------------------------------------------------ reading back
@dataclass
class ExportedInfo:
    """What an exported file says about itself (read without running it)."""

    path: str
    kind: str  # "onnx" | "openvino"
    img_size: Optional[List[int]]
    num_classes: Optional[int]
    batch: Any  # int, or "batch"/None when dynamic
    spec: Optional[Dict[str, Any]]
    schedule: Optional[List[int]]
    exporter: Optional[str]
    reducers: Optional[List[Optional[str]]] = None  # per block, when the graph merges tokens


def _dims(shape) -> List[Any]:
    out = []
    for d in shape:
        if hasattr(d, "dim_value"):  # onnx TensorShapeProto.Dimension
            out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        else:
            out.append(d)
    return out


def read_onnx_info(path) -> ExportedInfo:
    """Input size, classes and fgvc-kit metadata of an ``.onnx`` file."""
    import onnx

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExportError(f"{path}: exported file not found")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ExportError(f"{path}: not a readable ONNX file ({first_line(e)})") from None
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1 or len(model.graph.output) < 1:
        raise ExportError(f"{path}: expected one image input and a logits output, got {len(inputs)} inputs")
    ishape = _dims(inputs[0].type.tensor_type.shape.dim)
    oshape = _dims(model.graph.output[0].type.tensor_type.shape.dim)
    props = {p.key: p.value for p in model.metadata_props}
    return exported_info(path, "onnx", ishape, oshape, props)


def exported_info(path: str, kind: str, ishape, oshape, props: Mapping[str, str]) -> ExportedInfo:
    """An :class:`ExportedInfo` from a file's input/output shapes and fgvc-kit metadata (ONNX or OpenVINO alike)."""
    img = [ishape[2], ishape[3]] if len(ishape) == 4 and all(isinstance(v, int) for v in ishape[2:]) else None
    classes = oshape[-1] if len(oshape) == 2 and isinstance(oshape[-1], int) else None
    batch = ishape[0] if ishape else None
    spec = schedule = reducers = None
    try:
        spec = json.loads(props[META_SPEC]) if META_SPEC in props else None
        schedule = json.loads(props[META_SCHEDULE]) if META_SCHEDULE in props else None
        reducers = json.loads(props[META_REDUCERS]) if META_REDUCERS in props else None
    except json.JSONDecodeError:
        raise ExportError(f"{path}: fgvc-kit metadata is not valid JSON") from None
    return ExportedInfo(path=path, kind=kind, img_size=img, num_classes=classes, batch=batch, spec=spec,
                        schedule=schedule, exporter=props.get(META_EXPORTER), reducers=reducers)


def check_exported_matches(info: ExportedInfo, spec: Mapping[str, Any]) -> None:
    """Raise :class:`ExportError` when an exported file does not fit a checkpoint's spec."""
    where = info.path
    img = list(spec.get("img_size") or [])
    if info.img_size is not None and img and list(info.img_size) != img:
        raise ExportError(f"{where} takes {info.img_size[0]}x{info.img_size[1]} images, the checkpoint "
                          f"{img[0]}x{img[1]}; export the checkpoint again")
    n = spec.get("num_classes")
    if info.num_classes is not None and n is not None and int(info.num_classes) != int(n):
        raise ExportError(f"{where} outputs {info.num_classes} classes, the checkpoint has {n}; "
                          "export the checkpoint again")
    if info.spec:
        for key in ("depth", "embed_dim", "num_patches", "patch_size"):
            a, b = info.spec.get(key), spec.get(key)
            if a is not None and b is not None and a != b:
                raise ExportError(f"{where} was exported from a model with {key} {a}, the checkpoint has {b}")
