"""OpenVINO IR conversion and compilation (f32 unless asked otherwise).

``convert_openvino(onnx_or_model, xml_path)`` converts an exported ``.onnx``
file (or a token-drop model, exported to ONNX first with
:func:`~tavt_kit.export.onnx.export_onnx`) with ``openvino.convert_model`` and
writes ``model.xml`` + ``model.bin`` with ``openvino.save_model``. Weights stay
f32 (``save_model`` would compress them to f16 by default).

``compile_openvino`` compiles with ``INFERENCE_PRECISION_HINT`` = f32 unless
another precision is asked for: on CPUs with bf16 support (AVX512-BF16, AMX)
OpenVINO otherwise infers in bf16 and logits move by ~1e-2. The precision
actually used is read back from the compiled model and reported.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import BackendError, ConfigError, ExportError, TavtKitError
from ..files import disk_full_as_error, disk_full_error
from ..target import Precision
from .graph import first_line
from .onnx import (META_EXPORTER, META_FORMAT, META_REDUCERS, META_SCHEDULE, META_SPEC, ExportedInfo, OnnxExport,
                   export_onnx, exported_info, quiet_exporters, read_onnx_info)

#: inference precisions a user may ask for (OpenVINO's names: f32, bf16, f16)
PRECISIONS = tuple(dict.fromkeys(Precision.OPENVINO_HINT.values()))
#: the ONNX metadata an IR carries over in its rt_info
RT_KEYS = (META_FORMAT, META_SPEC, META_SCHEDULE, META_EXPORTER, META_REDUCERS)


def require_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise BackendError("openvino is not installed; pip install openvino "
                           "(or pip install 'fgvc-kit[openvino]')") from None
    return ov


_CORE = None


def core():
    """A shared ``openvino.Core``."""
    global _CORE
    ov = require_openvino()
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


@dataclass
class OpenVinoConversion:
    """Result of :func:`convert_openvino`."""

    xml_path: str
    bin_path: str
    source: str
    onnx_export: Optional[Dict[str, Any]]
    compress_to_fp16: bool
    precision_checked: Optional[str]
    max_abs_diff: Optional[float]
    reference: Optional[str]
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _precision_name(value) -> str:
    text = str(value).lower()
    for name, keys in (("bf16", ("bf16", "bfloat16")), ("f16", ("f16", "float16")), ("f32", ("f32", "float32"))):
        if any(k in text for k in keys):
            return name
    return text


def inference_precision(compiled) -> str:
    """The inference precision a compiled model actually uses (``"f32"``, ``"bf16"``, ``"f16"``)."""
    try:
        return _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:
        return "unknown"


#: OpenVINO inference precision -> the OPTIMIZATION_CAPABILITIES entry a device needs to run it natively
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
#: what gives a CPU each capability (for the error message)
_CAPABILITY_HINT = {"bf16": "AVX512-BF16 or AMX", "f16": "AVX512-FP16 or AMX-FP16"}


def device_capabilities(device: str = "cpu") -> Tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of a device (``("FP32", "BF16", "INT8", ...)``)."""
    try:
        return tuple(str(c).upper() for c in core().get_property(_device_name(device), "OPTIMIZATION_CAPABILITIES"))
    except TavtKitError:
        raise
    except Exception as e:
        raise BackendError(f"OpenVINO cannot query device {device} ({first_line(e)})") from None


def check_device_precision(precision: str, device: str = "cpu", param: str = "precision",
                           flag: Optional[str] = None) -> None:
    """Raise :class:`BackendError` unless ``device`` runs OpenVINO inference ``precision`` (f32, bf16, f16) natively.

    Without the capability OpenVINO would quietly run f32 instead, so a bf16 latency or accuracy measured
    there would be an f32 one under another name. ``param``: the caller's name for the precision (the error
    says ``precision='bf16': ...``); ``flag`` (a command line's option) is still accepted in its place.
    """
    need = _CAPABILITY.get(precision)
    if need is None:
        return
    have = device_capabilities(device)
    if need not in have:
        user = Precision.parse(precision)
        name = f"{flag} {user}" if flag else f"{param}={user!r}"
        raise BackendError(f"{name}: this {device.upper()} has no native {user} inference (OpenVINO reports "
                           f"{', '.join(have) or 'no capabilities'}; {user} needs {_CAPABILITY_HINT[precision]})")


def _device_name(device: str) -> str:
    d = device.lower()
    if d.startswith("cuda"):
        raise BackendError(f"device={device!r}: OpenVINO does not run on CUDA devices; use device='cpu' "
                           "(or the onnxruntime / torch backends on CUDA)")
    return device.upper() if d in ("cpu", "gpu", "npu", "auto") else device


def compile_openvino(model, device: str = "cpu", precision: str = "f32", threads: Optional[int] = None,
                     hint: str = "LATENCY", num_streams: int = 1,
                     shape: Optional[Sequence[int]] = None,
                     extra: Optional[Mapping[str, Any]] = None) -> Tuple[Any, str]:
    """Compile an ``openvino.Model`` or an ``.xml``/``.onnx`` path; returns ``(compiled, precision used)``.

    Args:
        precision: ``"f32"`` (default), ``"bf16"`` or ``"f16"``; set as ``INFERENCE_PRECISION_HINT``.
        threads: ``INFERENCE_NUM_THREADS`` (None = OpenVINO's default).
        hint: ``PERFORMANCE_HINT`` (``LATENCY`` for single-request timing).
        shape: fix the (first) input's shape before compiling (static shapes, e.g. ``[1, 65, 96]``).
        extra: more OpenVINO properties (``{"PERF_COUNT": "YES"}`` for per-node profiling).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown OpenVINO precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dev = _device_name(device)
    c = core()
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ExportError(f"{path}: exported file not found")
        try:
            model = c.read_model(path)
        except Exception as e:
            raise ExportError(f"{path}: OpenVINO cannot read the file ({first_line(e)})") from None
    if shape is not None:
        model.reshape({model.inputs[0].get_any_name(): list(shape)})
    config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
    if num_streams:
        config["NUM_STREAMS"] = int(num_streams)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    config.update(extra or {})
    try:
        compiled = c.compile_model(model, dev, config)
    except Exception as e:
        raise BackendError(f"OpenVINO cannot compile for {dev} at {precision} ({first_line(e)})") from None
    return compiled, inference_precision(compiled)


def convert_openvino(
    onnx_or_model,
    xml_path,
    *,
    schedule=None,
    batch_size: int = 1,
    compress_to_fp16: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
    exporter: str = "auto",
    seed: int = 0,
) -> OpenVinoConversion:
    """Convert an ``.onnx`` file or a token-drop model to OpenVINO IR (``xml_path`` + ``.bin``).

    Args:
        onnx_or_model: path of an exported ``.onnx`` file, or a token-drop model (exported to
            ONNX at ``schedule`` first, in a temporary folder, and checked in ONNX Runtime).
        compress_to_fp16: store weights in f16 (OpenVINO's default; off here so that f32
            inference reproduces PyTorch).
        verify: compile the IR at f32 and compare its logits with PyTorch (model given) or ONNX
            Runtime (file given) on the same random images; raise
            :class:`~tavt_kit.errors.ExportError` above ``atol``.
    """
    ov = require_openvino()
    import torch

    xml_path = os.fspath(xml_path)
    if not xml_path.endswith(".xml"):
        raise ConfigError(f"{xml_path}: the OpenVINO IR path must end in .xml")
    os.makedirs(os.path.dirname(os.path.abspath(xml_path)), exist_ok=True)
    start = time.perf_counter()
    model = None
    export: Optional[OnnxExport] = None
    with tempfile.TemporaryDirectory(prefix="fgvc-kit-ov-") as tmp:
        if isinstance(onnx_or_model, torch.nn.Module):
            model = onnx_or_model
            export = export_onnx(model, os.path.join(tmp, "model.onnx"), schedule, batch_size=batch_size,
                                 exporter=exporter, verify=verify, atol=atol)
            onnx_path, source = export.path, "model"
        else:
            onnx_path, source = os.fspath(onnx_or_model), os.fspath(onnx_or_model)
            if schedule is not None:
                raise ConfigError("schedule= applies to a model; an exported .onnx file has its schedule fixed")
        info = read_onnx_info(onnx_path)
        save_ir(onnx_as_openvino(onnx_path), xml_path, compress_to_fp16=compress_to_fp16)
        diff = ref_name = checked = None
        if verify:
            diff, ref_name, checked = _check_ir(xml_path, onnx_path, info, model, export, batch_size, seed)
            if not compress_to_fp16 and not diff <= atol:
                raise ExportError(f"{xml_path}: OpenVINO (fp32) differs from {ref_name} by {diff:.3g} (> {atol:g})")
    return OpenVinoConversion(xml_path=xml_path, bin_path=xml_path[:-4] + ".bin", source=source,
                              onnx_export=export.to_dict() if export else None, compress_to_fp16=compress_to_fp16,
                              precision_checked=checked, max_abs_diff=diff, reference=ref_name,
                              seconds=time.perf_counter() - start)


def onnx_as_openvino(onnx_path: str, read: bool = False):
    """The ``.onnx`` file as an ``openvino.Model``, its fgvc-kit metadata copied into the rt_info. ``read``:
    read by the runtime's ONNX frontend (``Core.read_model``, 2-5x faster than the converter: what a model that
    is only quantised and scored needs) instead of converted for saving as IR (``convert_model``)."""
    ov = require_openvino()
    try:
        with quiet_exporters():
            ov_model = core().read_model(onnx_path) if read else ov.convert_model(onnx_path)
    except Exception as e:
        raise ExportError(f"{onnx_path}: OpenVINO cannot {'read' if read else 'convert'} the file "
                          f"({first_line(e)})") from None
    import onnx

    props = {p.key: p.value for p in onnx.load(onnx_path, load_external_data=False).metadata_props}
    for key in RT_KEYS:
        if key in props:
            ov_model.set_rt_info(props[key], ["fgvc_kit", key.split(".", 1)[1]])
    return ov_model


def _check_ir(xml_path: str, onnx_path: str, info: ExportedInfo, model, export: Optional[OnnxExport],
              batch_size: int, seed: int) -> Tuple[float, str, str]:
    """(max |logit diff|, reference, precision used) of the IR at f32 vs PyTorch or ONNX Runtime on random images."""
    import numpy as np
    import torch

    compiled, checked = compile_openvino(xml_path, precision="f32")
    H, W = info.img_size or (None, None)
    if H is None:
        raise ExportError(f"{onnx_path}: cannot verify, the input size is not static")
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch_size, 3, H, W, generator=gen)
    out = compiled(x.numpy())[compiled.output(0)]
    if model is not None:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                dev = next(model.parameters()).device
                ref = model(x.to(dev), drop=export.schedule).float().cpu().numpy()
        finally:
            model.train(was)
        ref_name = "pytorch"
    else:  # a file was given: the .onnx it was converted from, in ONNX Runtime, is the reference
        from .onnx import ort_session

        sess = ort_session(onnx_path)
        ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        ref_name = "onnxruntime"
    return float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64)))), ref_name, checked


def read_openvino_info(path) -> ExportedInfo:
    """Input size, classes and fgvc-kit metadata of an OpenVINO ``.xml`` file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExportError(f"{path}: exported file not found")
    try:
        m = core().read_model(path)
    except BackendError:
        raise
    except Exception as e:
        raise ExportError(f"{path}: OpenVINO cannot read the file ({first_line(e)})") from None
    if len(m.inputs) != 1:
        raise ExportError(f"{path}: expected one image input, got {len(m.inputs)}")

    def dims(port):
        ps = port.get_partial_shape()
        return [d.get_length() if d.is_static else None for d in ps]

    props = {}
    for key in RT_KEYS:
        k = ["fgvc_kit", key.split(".", 1)[1]]
        if m.has_rt_info(k):
            props[key] = m.get_rt_info(k).astype(str)
    return exported_info(path, "openvino", dims(m.inputs[0]), dims(m.outputs[0]), props)


def tag_precision(xml: str, precision: str) -> None:
    """Record the precision an IR was exported for in its rt_info (bf16: the inference hint to use)."""
    m = core().read_model(xml)
    m.set_rt_info(precision, ["fgvc_kit", "precision"])
    save_ir(m, xml)


def save_ir(model, xml: str, compress_to_fp16: bool = False) -> str:
    """``openvino.save_model`` as one atomic step: ``.xml`` + ``.bin`` are written in a temporary folder beside
    ``xml`` and moved into place (the ``.bin`` first: an ``.xml`` never points at a missing ``.bin``). A full
    disk is one :class:`~tavt_kit.errors.DiskFullError` naming ``xml``; the files there before are unchanged."""
    ov = require_openvino()
    xml = os.fspath(xml)
    folder = os.path.dirname(os.path.abspath(xml))
    with disk_full_as_error(xml):
        os.makedirs(folder, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=".fgvc-kit-ov-", dir=folder)
    try:
        tmp = os.path.join(tmp_dir, os.path.basename(xml))
        try:
            ov.save_model(model, tmp, compress_to_fp16=compress_to_fp16)
        except Exception as e:  # OpenVINO says "iostream error"; the weights' size tells a full disk from others
            err = disk_full_error(e, xml, _weight_bytes(model, compress_to_fp16))
            if err is None:
                raise
            raise err from e
        os.replace(tmp[:-4] + ".bin", xml[:-4] + ".bin")
        os.replace(tmp, xml)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return xml


def _weight_bytes(model, compress_to_fp16: bool) -> Optional[int]:
    """About the size of an IR's ``.bin``: its constants (halved where f32 is compressed to f16)."""
    try:
        n = sum(op.get_byte_size() for op in model.get_ops() if op.get_type_name() == "Constant")
    except Exception:
        return None
    return n // 2 if compress_to_fp16 else n
