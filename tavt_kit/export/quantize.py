"""INT8 post-training quantisation with NNCF (optional: ``pip install 'fgvc-kit[int8]'``).

:func:`quantize_onnx` quantises an fp32 ``.onnx`` file into a QDQ graph that
ONNX Runtime runs with integer kernels; :func:`quantize_openvino` quantises an
fp32 OpenVINO IR (or converts an ``.onnx`` first) into an int8 IR. Both use
NNCF's ``quantize`` with ``model_type=TRANSFORMER`` (the ViT recipe: SmoothQuant,
attention/LayerNorm patterns kept in float) on calibration images — by default
a seeded subset of the *training* split (:func:`calibration_images`), so that
the test split used for verification is never seen by the quantiser.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import numpy as np

from ..errors import BackendError, ConfigError, ExportError

#: NNCF presets (performance: symmetric activations; mixed: asymmetric activations, symmetric weights)
PRESETS = ("performance", "mixed")


def require_nncf():
    """Import NNCF, or raise :class:`BackendError` saying how to install it."""
    lg = logging.getLogger("torch.utils.cpp_extension")
    level = lg.level
    lg.setLevel(logging.ERROR)  # "No CUDA runtime is found" when NNCF imports its torch backend
    try:
        import nncf
    except ImportError:
        raise BackendError("--precision int8 needs NNCF, which is not installed; pip install nncf "
                           "(or pip install 'fgvc-kit[int8]')") from None
    finally:
        lg.setLevel(level)
    return nncf


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF logs and draws progress bars; keep a library call silent (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("nncf", "openvino")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@dataclass
class QuantizeResult:
    """What :func:`quantize_onnx` / :func:`quantize_openvino` did."""

    path: str
    backend: str  # "onnx" | "openvino"
    source: str
    calibration_images: int
    preset: str
    model_type: str
    fast_bias_correction: bool
    quantized_ops: int
    nncf_version: str
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def calibration_images(model, data=None, *, root: Optional[str] = None, split: str = "train", n: int = 300,
                       seed: int = 0) -> np.ndarray:
    """``n`` images (seeded subset of ``split``) in the model's normalisation, float32 ``N x 3 x H x W``.

    ``data`` as in :func:`tavt_kit.export.verify.load_verify_data` (default: the checkpoint's dataset,
    else the demo).
    """
    from .verify import load_verify_data, normalized_batches

    if isinstance(n, bool) or int(n) < 1:
        raise ConfigError(f"--calibration-images: expected a positive number of images, got {n!r}")
    vd = load_verify_data(model, data, root=root, split=split, max_images=int(n), seed=seed,
                          where="calibration data")
    return np.concatenate([x.numpy() for x in normalized_batches(model, vd.images, 64)]).astype(np.float32)


def _check_calibration(calibration) -> np.ndarray:
    arr = np.asarray(calibration, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ConfigError(f"calibration samples must be a non-empty array with the samples first (N x 3 x H x W "
                          f"images, or N x ... inputs of a model part), got shape {arr.shape}")
    return arr


def _quantize(nncf, model, items, preset: str, fast_bias_correction: bool, transform):
    return nncf.quantize(model, nncf.Dataset(items, transform), subset_size=len(items),
                         preset=nncf.QuantizationPreset.PERFORMANCE if preset == "performance"
                         else nncf.QuantizationPreset.MIXED,
                         model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=fast_bias_correction)


def quantize_onnx(onnx_path, out_path, calibration, *, preset: str = "performance",
                  fast_bias_correction: bool = True) -> QuantizeResult:
    """INT8-quantise an fp32 ``.onnx`` file (QDQ format, fgvc-kit metadata kept); checked with ``onnx.checker``.

    Args:
        calibration: float32 images ``N x 3 x H x W`` already normalised (:func:`calibration_images`);
            each image is one calibration sample (batch 1, as NNCF recommends for transformers).
    """
    import onnx

    from .graph import first_line, write_metadata

    nncf = require_nncf()
    if preset not in PRESETS:
        raise ConfigError(f"unknown quantisation preset {preset!r}; expected one of {', '.join(PRESETS)}")
    arr = _check_calibration(calibration)
    onnx_path, out_path = os.fspath(onnx_path), os.fspath(out_path)
    start = time.perf_counter()
    model = onnx.load(onnx_path)
    name = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}][0]
    items = [arr[i:i + 1] for i in range(arr.shape[0])]
    try:
        with _quiet_nncf():
            q = _quantize(nncf, model, items, preset, fast_bias_correction, lambda a: {name: a})
    except Exception as e:
        raise ExportError(f"{onnx_path}: NNCF int8 quantisation failed ({first_line(e)})") from None
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    onnx.save(q, out_path)
    try:
        onnx.checker.check_model(out_path)
    except Exception as e:
        raise ExportError(f"{out_path}: the quantised graph fails onnx.checker ({first_line(e)})") from None
    props = {p.key: p.value for p in model.metadata_props}
    props["fgvc_kit.precision"] = "int8"
    write_metadata(out_path, props)
    n_q = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear")
    return QuantizeResult(path=out_path, backend="onnx", source=onnx_path, calibration_images=int(arr.shape[0]),
                          preset=preset, model_type="transformer", fast_bias_correction=fast_bias_correction,
                          quantized_ops=n_q, nncf_version=nncf.__version__, seconds=time.perf_counter() - start)


def quantize_openvino(source, out_xml, calibration, *, preset: str = "performance",
                      fast_bias_correction: bool = True) -> QuantizeResult:
    """INT8-quantise an fp32 OpenVINO IR (``.xml``) or ``.onnx`` file into an int8 IR (f32 weights elsewhere).

    fgvc-kit's rt_info (spec, schedule, exporter) is kept and ``precision`` = int8 added.
    """
    from .graph import first_line
    from .openvino import RT_KEYS, convert_openvino, core, require_openvino

    ov = require_openvino()
    nncf = require_nncf()
    if preset not in PRESETS:
        raise ConfigError(f"unknown quantisation preset {preset!r}; expected one of {', '.join(PRESETS)}")
    arr = _check_calibration(calibration)
    source, out_xml = os.fspath(source), os.fspath(out_xml)
    if not out_xml.endswith(".xml"):
        raise ConfigError(f"{out_xml}: the OpenVINO IR path must end in .xml")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fgvc-kit-int8-") as tmp:
        xml = source
        if source.lower().endswith(".onnx"):
            xml = convert_openvino(source, os.path.join(tmp, "fp32.xml"), verify=False).xml_path
        try:
            model = core().read_model(xml)
        except Exception as e:
            raise ExportError(f"{xml}: OpenVINO cannot read the file ({first_line(e)})") from None
        rt = {}
        for key in RT_KEYS:
            k = ["fgvc_kit", key.split(".", 1)[1]]
            if model.has_rt_info(k):
                rt[key] = model.get_rt_info(k).astype(str)
        items = [arr[i:i + 1] for i in range(arr.shape[0])]
        try:
            with _quiet_nncf():
                q = _quantize(nncf, model, items, preset, fast_bias_correction, None)
        except Exception as e:
            raise ExportError(f"{source}: NNCF int8 quantisation failed ({first_line(e)})") from None
        for key, value in rt.items():
            q.set_rt_info(value, ["fgvc_kit", key.split(".", 1)[1]])
        q.set_rt_info("int8", ["fgvc_kit", "precision"])
        os.makedirs(os.path.dirname(os.path.abspath(out_xml)), exist_ok=True)
        ov.save_model(q, out_xml, compress_to_fp16=False)
    n_q = sum(1 for op in q.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    return QuantizeResult(path=out_xml, backend="openvino", source=source, calibration_images=int(arr.shape[0]),
                          preset=preset, model_type="transformer", fast_bias_correction=fast_bias_correction,
                          quantized_ops=n_q, nncf_version=nncf.__version__, seconds=time.perf_counter() - start)
