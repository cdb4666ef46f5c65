"""INT8 post-training quantisation with NNCF (optional: ``pip install 'fgvc-kit[int8]'``).

:func:`quantize_onnx` quantises an fp32 ``.onnx`` file into a QDQ graph that
ONNX Runtime runs with integer kernels; :func:`quantize_openvino` quantises an
fp32 OpenVINO IR (or converts an ``.onnx`` first) into an int8 IR. Both use
NNCF's ``quantize`` with ``model_type=TRANSFORMER`` (the ViT recipe: SmoothQuant,
attention/LayerNorm patterns kept in float) on calibration images — by default
a seeded subset of the *training* split (:func:`calibration_images`), so that
the test split used for verification is never seen by the quantiser.

In the OpenVINO IR the MatMuls of two activations (attention's Q·Kᵀ; NNCF
already leaves softmax·V in float) are kept in float
(:func:`activation_matmuls`): on CPUs without VNNI (AVX2 only, AVX-512 without
VNNI) OpenVINO runs an int8 MatMul of two 8-bit activations with ``vpmaddubsw``,
whose pairwise int16 sums saturate for full-range operands; the attention scores
then move by several units and the token drop keeps other tokens (measured: the
trained 2-block test model lost 5.5 top-1 points that way). ONNX Runtime runs
them in int8 without that loss on the same CPU, so the ``.onnx`` graph keeps
them quantised.

Given ``validation=(images, labels)`` — *held-out* images, never the test split —
both use NNCF's ``quantize_with_accuracy_control`` instead: plain post-training
quantisation first, then the quantised operations that cost the most top-1 on
those images are reverted to float, one at a time, until the drop is within
``max_accuracy_drop`` points (absolute). The result records the f32, plain-PTQ
and final int8 top-1 on the held-out images and the operations kept in higher
precision (:func:`reverted_operations`: the ops whose quantizers the accuracy
control removed, by comparing the plain-PTQ graph with the final one). On fewer
than 200 held-out images the top-1 NNCF compares is too coarse to keep a drop
of half a point: the result's ``validation`` records a ``warning`` saying so
(and a direct call warns, :class:`UserWarning`; ``export_model`` says it in its
log instead).
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
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import BackendError, ConfigError, ExportError, TavtKitError
from ..files import atomic_path, disk_full_error
from .options import check_calibration_split

#: NNCF presets (performance: symmetric activations; mixed: asymmetric activations, symmetric weights)
PRESETS = ("performance", "mixed")


def _raise_if_disk_full(e: BaseException) -> None:
    """NNCF writes its intermediate models to the temporary folder: a full disk there is said as such, not as a
    failed quantisation."""
    err = disk_full_error(e, tempfile.gettempdir(), note="")
    if err is not None:
        raise err from e


def require_nncf():
    """Import NNCF, or raise :class:`BackendError` saying how to install it."""
    lg = logging.getLogger("torch.utils.cpp_extension")
    level = lg.level
    lg.setLevel(logging.ERROR)  # "No CUDA runtime is found" when NNCF imports its torch backend
    try:
        import nncf
    except ImportError:
        raise BackendError("precision='int8' needs NNCF, which is not installed; pip install nncf "
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
    #: "ptq" (nncf.quantize) or "accuracy_control" (nncf.quantize_with_accuracy_control)
    mode: str = "ptq"
    #: why plain PTQ was used where accuracy control could have been (None otherwise)
    reason: Optional[str] = None
    #: the held-out images accuracy control validated on ({"images": N, "split": ..., "dataset": ...})
    validation: Optional[Dict[str, Any]] = None
    #: NNCF's max_drop, in top-1 points (absolute)
    max_accuracy_drop: Optional[float] = None
    #: top-1 (%) on the held-out images: the f32 model, plain PTQ, and the int8 model written
    f32_accuracy: Optional[float] = None
    ptq_accuracy: Optional[float] = None
    int8_accuracy: Optional[float] = None
    #: f32_accuracy - int8_accuracy (points) and whether it is within max_accuracy_drop
    accuracy_drop: Optional[float] = None
    drop_met: Optional[bool] = None
    #: operations (friendly / node names) fed by a quantizer in the plain-PTQ graph and not in the file written
    kept_in_higher_precision: Optional[List[str]] = None
    #: operations fed by a quantizer: in the file written, and in the plain-PTQ graph
    quantized_layers: Optional[int] = None
    quantized_layers_ptq: Optional[int] = None
    #: operations NNCF was told to leave in float (OpenVINO: the MatMuls of two activations, see the module doc)
    kept_in_float: Optional[List[str]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def calibration_images(model, data=None, *, root: Optional[str] = None, split: str = "train", n: int = 300,
                       seed: int = 0) -> np.ndarray:
    """``n`` images (seeded subset of ``split``) in the model's normalisation, float32 ``N x 3 x H x W``.

    ``data`` as in :func:`tavt_kit.export.verify.load_verify_data` (default: the checkpoint's dataset,
    else the demo).
    """
    from .verify import load_verify_data, normalized_batches

    check_calibration_split(split)
    if isinstance(n, bool) or int(n) < 1:
        raise ConfigError(f"n={n!r}: expected a positive number of calibration images")
    vd = load_verify_data(model, _spec_of(data), root=root, split=split, max_images=int(n), seed=seed,
                          where="calibration data")
    return np.concatenate([x.numpy() for x in normalized_batches(model, vd.images, 64)]).astype(np.float32)


def _spec_of(data):
    """A built dataset stands for its data: the split asked for is built from its spec (never its own split)."""
    from ..data import FGVCDataset

    return data.spec if isinstance(data, FGVCDataset) else data


def held_out_images(model, data=None, *, root: Optional[str] = None, split: str = "holdout",
                    n: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Labelled held-out images for accuracy-controlled quantisation: ``(normalised float32 N x 3 x H x W,
    int64 labels, info)``; ``data`` as in :func:`calibration_images` (default: the checkpoint's dataset).

    Raises :class:`~tavt_kit.errors.ConfigError` / :class:`~tavt_kit.errors.DatasetError` when the dataset has
    no such split (``--holdout 0``), and :class:`~tavt_kit.errors.DatasetError` when the checkpoint records no
    dataset and none is given (the demo would stand in: not the model's data).
    """
    from ..errors import DatasetError
    from .verify import load_verify_data, normalized_batches

    if split == "test":
        raise ConfigError("accuracy-controlled int8 validates on held-out images, never on the test split")
    vd = load_verify_data(model, _spec_of(data), root=root, split=split, max_images=n, seed=seed,
                          where="accuracy-control data")
    if vd.labels is None or vd.info.get("note"):  # the demo standing in for an unrecorded dataset
        raise DatasetError(f"no {split} images of the model's own data: "
                           f"{vd.info.get('note', 'the images are not labelled with its classes')}")
    x = np.concatenate([b.numpy() for b in normalized_batches(model, vd.images, 64)]).astype(np.float32)
    info = {"dataset": vd.info.get("dataset", vd.info.get("source")), "split": split, "images": int(x.shape[0]),
            "available": vd.info.get("available"), "seed": seed}
    return x, vd.labels.numpy().astype(np.int64), info


def _check_calibration(calibration) -> np.ndarray:
    arr = np.asarray(calibration, dtype=np.float32)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ConfigError(f"calibration samples must be a non-empty array with the samples first (N x 3 x H x W "
                          f"images, or N x ... inputs of a model part), got shape {arr.shape}")
    return arr


def _preset(nncf, preset: str):
    return nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED


def _ignored_scope(nncf, names: List[str]):
    return nncf.IgnoredScope(names=list(names), validate=False) if names else None


def _quantize(nncf, model, items, preset: str, fast_bias_correction: bool, transform, ignored: List[str] = (),
              bias_correction: bool = True):
    extra = {}
    if not bias_correction:  # the same graph, its biases left uncorrected: what a timing needs, 1.4x sooner
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        extra["advanced_parameters"] = AdvancedQuantizationParameters(disable_bias_correction=True)
    return nncf.quantize(model, nncf.Dataset(items, transform), subset_size=len(items), preset=_preset(nncf, preset),
                         model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=fast_bias_correction,
                         ignored_scope=_ignored_scope(nncf, ignored), **extra)


def _validation_warning(images: int) -> Optional[str]:
    """The line saying that accuracy control's held-out set is too small to tell its drops apart (or None)."""
    from ..data.splits import small_split_warning

    return small_split_warning(images, "int8 accuracy control's held-out split", "more held-out images")


def _warn_small_validation(val, validation_info: Optional[Dict[str, Any]]) -> None:
    """A direct call on too few held-out images warns (:class:`UserWarning`); a caller that says how the images
    were chosen (``validation_info``, as ``export_model`` does) says it itself."""
    if val is None or validation_info is not None:
        return
    line = _validation_warning(int(val[0].shape[0]))
    if line:  # points at the caller of quantize_onnx / quantize_openvino
        warnings.warn(line, UserWarning, stacklevel=4)


def _checked_inputs(preset: str, calibration, validation, max_accuracy_drop: float,
                    validation_info: Optional[Dict[str, Any]]):
    """What both quantisers check first: the preset, the calibration array and the (images, labels) of accuracy
    control. Returns the calibration array and the validation pair (or None)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown quantisation preset {preset!r}; expected one of {', '.join(PRESETS)}")
    arr = _check_calibration(calibration)
    val = None if validation is None else _check_validation(validation, max_accuracy_drop)
    _warn_small_validation(val, validation_info)
    return arr, val


def _check_validation(validation, max_accuracy_drop: float) -> Tuple[np.ndarray, np.ndarray]:
    try:
        images, labels = validation
    except (TypeError, ValueError):
        raise ConfigError("validation: expected (images, labels) of held-out images") from None
    x = np.asarray(images, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[0] < 1 or y.shape[0] != x.shape[0]:
        raise ConfigError(f"validation: expected N x 3 x H x W normalised images and N labels, got images "
                          f"{x.shape} and {y.shape[0]} labels")
    if isinstance(max_accuracy_drop, bool) or not float(max_accuracy_drop) >= 0:
        raise ConfigError(f"max_accuracy_drop={max_accuracy_drop!r}: expected a non-negative number of points")
    return x, y


# ----------------------------------------------------------- running a model on the held-out images
def _logits(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits of an ``openvino.CompiledModel`` / ``openvino.Model`` (compiled at f32) or ``onnx.ModelProto``."""
    if type(model).__name__ == "ModelProto":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
    if type(model).__name__ == "Model":
        from .openvino import compile_openvino

        model, _ = compile_openvino(model, precision="f32")
    return np.concatenate([model(x[i:i + batch])[model.output(0)] for i in range(0, len(x), batch)])


def _top1(model, x: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float((_logits(model, x).argmax(1) == y).mean())


def _validation_fn(model, items) -> Tuple[float, List[float]]:
    """NNCF's validation function: top-1 of a (compiled) model on ``(image, label)`` items, and per item."""
    items = list(items)
    x = np.concatenate([it[0] for it in items])
    y = np.asarray([it[1] for it in items])
    hits = (_logits(model, x).argmax(1) == y).astype(np.float64)
    return float(hits.mean()), hits.tolist()


# ------------------------------------------------------------------ which ops are quantised
#: ops between a quantizer and the op it feeds (weight decompression: int8 Constant -> Convert -> Multiply, ...)
_OV_PASS = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}
#: ops that only move or decompress data: never listed as quantised operations themselves
_OV_MOVE = {"Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}
_OV_INT = {"i8", "u8", "i4", "u4"}
_ONNX_PASS = {"Transpose", "Reshape", "Cast", "Squeeze", "Unsqueeze", "Identity"}


def _ov_source_quantized(node, depth: int = 5) -> bool:
    """Whether an input comes from a FakeQuantize or from int8/int4 weights (through their decompression)."""
    for _ in range(depth):
        t = node.get_type_name()
        if t == "FakeQuantize":
            return True
        if t == "Constant":
            return node.get_output_element_type(0).get_type_name() in _OV_INT
        if t not in _OV_PASS:
            return False
        node = node.input(0).get_source_output().get_node()
    return False


def _ov_from_constant(node, depth: int = 5) -> bool:
    """Whether an input is a constant (weights), possibly through their decompression / reshaping."""
    t = node.get_type_name()
    if t == "Constant":
        return True
    if t not in _OV_PASS or depth <= 0:
        return False
    # Subtract / Multiply (decompression): every input constant; data movement: its data input
    inputs = node.inputs() if t in ("Subtract", "Multiply") else node.inputs()[:1]
    return all(_ov_from_constant(i.get_source_output().get_node(), depth - 1) for i in inputs)


def activation_matmuls(model) -> List[str]:
    """Friendly names of the MatMuls of an OpenVINO model (``openvino.Model``) whose inputs are both activations
    (attention's Q·Kᵀ and softmax·V; not the linear layers, whose second input is weights).

    :func:`quantize_openvino` keeps them in float: OpenVINO's int8 MatMul of two 8-bit activations saturates on
    CPUs without VNNI (see the module doc).
    """
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"
            and not any(_ov_from_constant(i.get_source_output().get_node()) for i in op.inputs())]


def quantized_op_inputs(model) -> Dict[str, Tuple[int, ...]]:
    """``{op name: input ports fed by a quantizer}`` of a quantised model.

    OpenVINO (``openvino.Model`` or ``.xml``): inputs from a ``FakeQuantize`` or from int8/int4 weights
    (``Constant -> Convert -> Multiply``); names are friendly names. ONNX (``ModelProto`` or ``.onnx``): inputs
    from a ``DequantizeLinear`` (through Transpose / Reshape / Cast); names are node names.
    """
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if path.lower().endswith(".onnx"):
            import onnx

            model = onnx.load(path, load_external_data=False)
        else:
            from .openvino import core

            model = core().read_model(path)
    out: Dict[str, Tuple[int, ...]] = {}
    if type(model).__name__ == "ModelProto":
        producer = {o: n for n in model.graph.node for o in n.output}
        for i, node in enumerate(model.graph.node):
            if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Shape") or node.op_type in _ONNX_PASS:
                continue
            ports = []
            for k, name in enumerate(node.input):
                src = producer.get(name)
                for _ in range(4):
                    if src is None or src.op_type not in _ONNX_PASS:
                        break
                    src = producer.get(src.input[0]) if src.input else None
                if src is not None and src.op_type == "DequantizeLinear":
                    ports.append(k)
            if ports:
                out[node.name or f"{node.op_type}_{i}"] = tuple(ports)
        return out
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t in ("FakeQuantize", "Constant", "Parameter", "Result", "ShapeOf") or t in _OV_MOVE:
            continue
        sources = [inp.get_source_output().get_node() for inp in op.inputs()]
        if t in _OV_PASS:  # Multiply / Subtract: an op of the model only when a FakeQuantize feeds it directly
            ports = tuple(k for k, src in enumerate(sources) if src.get_type_name() == "FakeQuantize")
        else:
            ports = tuple(k for k, src in enumerate(sources) if _ov_source_quantized(src))
        if ports:
            out[op.get_friendly_name()] = ports
    return out


def reverted_operations(ptq_model, controlled_model) -> List[str]:
    """Operations fed by a quantizer in ``ptq_model`` that lost (some of) their quantizers in ``controlled_model``.

    Both are quantised versions of one model (plain PTQ, and the accuracy-controlled result); models or paths.
    """
    before = quantized_op_inputs(ptq_model)
    after = quantized_op_inputs(controlled_model)
    return sorted(name for name, ports in before.items() if set(ports) - set(after.get(name, ())))


def _accuracy_control(nncf, model, items, transform, preset, fast_bias_correction, x, y, max_drop, tmp,
                      ignored: List[str] = ()):
    """``(quantised model, plain-PTQ model)``: nncf.quantize_with_accuracy_control, its intermediate PTQ model kept."""
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    val = [(x[i:i + 1], int(y[i])) for i in range(x.shape[0])]
    val_ds = nncf.Dataset(val, (lambda it: it[0]) if transform is None else (lambda it: transform(it[0])))
    q = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(items, transform), val_ds, _validation_fn, max_drop=float(max_drop) / 100.0,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(items), preset=_preset(nncf, preset),
        model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=fast_bias_correction,
        ignored_scope=_ignored_scope(nncf, ignored),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(intermediate_model_dir=tmp))
    return q


def _controlled_fields(original, ptq, q, x, y, max_drop, validation_info) -> Dict[str, Any]:
    f32, p, i8 = _top1(original, x, y), _top1(ptq, x, y), _top1(q, x, y)
    info = dict(validation_info or {})
    info.setdefault("images", int(x.shape[0]))
    small = None if "warning" in info else _validation_warning(int(x.shape[0]))
    if small:
        info["warning"] = small
    return dict(mode="accuracy_control", validation=info, max_accuracy_drop=float(max_drop), f32_accuracy=f32,
                ptq_accuracy=p, int8_accuracy=i8, accuracy_drop=f32 - i8, drop_met=bool(f32 - i8 <= max_drop + 1e-9),
                kept_in_higher_precision=reverted_operations(ptq, q),
                quantized_layers_ptq=len(quantized_op_inputs(ptq)))


# ------------------------------------------------------------------------ the quantisers
def quantize_onnx(onnx_path, out_path, calibration, *, preset: str = "performance",
                  fast_bias_correction: bool = True, validation=None, max_accuracy_drop: float = 0.5,
                  validation_info: Optional[Dict[str, Any]] = None) -> QuantizeResult:
    """INT8-quantise an fp32 ``.onnx`` file (QDQ format, fgvc-kit metadata kept); checked with ``onnx.checker``.

    Args:
        calibration: float32 images ``N x 3 x H x W`` already normalised (:func:`calibration_images`);
            each image is one calibration sample (batch 1, as NNCF recommends for transformers).
        validation: ``(normalised images, labels)`` of held-out images (:func:`held_out_images`): NNCF's
            accuracy control keeps the top-1 drop on them within ``max_accuracy_drop`` points by reverting
            the most harmful quantised operations to float. ``None``: plain post-training quantisation.
        validation_info: how the held-out images were chosen (recorded).
    """
    import onnx

    from .graph import first_line, write_metadata

    nncf = require_nncf()
    arr, val = _checked_inputs(preset, calibration, validation, max_accuracy_drop, validation_info)
    onnx_path, out_path = os.fspath(onnx_path), os.fspath(out_path)
    start = time.perf_counter()
    model = onnx.load(onnx_path)
    name = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}][0]
    items = [arr[i:i + 1] for i in range(arr.shape[0])]
    extra: Dict[str, Any] = {}
    try:
        with _quiet_nncf(), tempfile.TemporaryDirectory(prefix="fgvc-kit-int8-") as tmp:
            if val is None:
                q = _quantize(nncf, model, items, preset, fast_bias_correction, lambda a: {name: a})
            else:
                q = _accuracy_control(nncf, model, items, lambda a: {name: a}, preset, fast_bias_correction,
                                      *val, max_accuracy_drop, tmp)
                ptq = onnx.load(os.path.join(tmp, "intermediate_model.onnx"))
                extra = _controlled_fields(onnx.load(onnx_path), ptq, q, *val, max_accuracy_drop, validation_info)
    except TavtKitError:
        raise
    except Exception as e:
        _raise_if_disk_full(e)
        raise ExportError(f"{onnx_path}: NNCF int8 quantisation failed ({first_line(e)})") from None
    with atomic_path(out_path, ".onnx") as tmp_path:
        onnx.save(q, tmp_path)
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
                          quantized_ops=n_q, nncf_version=nncf.__version__, seconds=time.perf_counter() - start,
                          quantized_layers=len(quantized_op_inputs(q)), kept_in_float=[], **extra)


def quantize_openvino(source, out_xml, calibration, *, preset: str = "performance",
                      fast_bias_correction: bool = True, validation=None, max_accuracy_drop: float = 0.5,
                      validation_info: Optional[Dict[str, Any]] = None,
                      bias_correction: bool = True) -> QuantizeResult:
    """INT8-quantise an fp32 OpenVINO IR (``.xml``) or ``.onnx`` file into an int8 IR (f32 weights elsewhere).

    The MatMuls of two activations (:func:`activation_matmuls`: attention's Q·Kᵀ) stay in float, recorded in
    ``kept_in_float``: OpenVINO's int8 kernels for them saturate on CPUs without VNNI (see the module doc).
    fgvc-kit's rt_info (spec, schedule, exporter) is kept and ``precision`` = int8 added. ``validation``,
    ``max_accuracy_drop``, ``validation_info``: accuracy-controlled quantisation, as in :func:`quantize_onnx`
    (the models are validated compiled at f32 inference precision). ``bias_correction`` False: none (the
    same quantised graph with uncorrected biases, for a timing; not with ``validation``).
    """
    from .graph import first_line
    from .openvino import RT_KEYS, onnx_as_openvino, core, require_openvino, save_ir

    ov = require_openvino()
    nncf = require_nncf()
    arr, val = _checked_inputs(preset, calibration, validation, max_accuracy_drop, validation_info)
    source, out_xml = os.fspath(source), os.fspath(out_xml)
    if not out_xml.endswith(".xml"):
        raise ConfigError(f"{out_xml}: the OpenVINO IR path must end in .xml")
    start = time.perf_counter()
    extra: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fgvc-kit-int8-") as tmp:
        xml = source
        if source.lower().endswith(".onnx"):  # read by the ONNX frontend: no IR written and read back
            model = onnx_as_openvino(source, read=True)
        else:
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
        float_ops = activation_matmuls(model)
        try:
            with _quiet_nncf():
                if val is None:
                    q = _quantize(nncf, model, items, preset, fast_bias_correction, None, float_ops,
                                  bias_correction=bias_correction)
                else:
                    q = _accuracy_control(nncf, model, items, None, preset, fast_bias_correction, *val,
                                          max_accuracy_drop, tmp, float_ops)
                    ptq = core().read_model(os.path.join(tmp, "intermediate_model.xml"))
                    extra = _controlled_fields(core().read_model(xml), ptq, q, *val, max_accuracy_drop,
                                               validation_info)
        except TavtKitError:
            raise
        except Exception as e:
            _raise_if_disk_full(e)
            raise ExportError(f"{source}: NNCF int8 quantisation failed ({first_line(e)})") from None
        for key, value in rt.items():
            q.set_rt_info(value, ["fgvc_kit", key.split(".", 1)[1]])
        q.set_rt_info("int8", ["fgvc_kit", "precision"])
        save_ir(q, out_xml)
    n_q = sum(1 for op in q.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    return QuantizeResult(path=out_xml, backend="openvino", source=source, calibration_images=int(arr.shape[0]),
                          preset=preset, model_type="transformer", fast_bias_correction=fast_bias_correction,
                          quantized_ops=n_q, nncf_version=nncf.__version__, seconds=time.perf_counter() - start,
                          quantized_layers=len(quantized_op_inputs(q)), kept_in_float=float_ops, **extra)
