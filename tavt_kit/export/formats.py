"""Export formats, the precisions each takes and the runtime of each; the checks of ``formats`` / ``precision``."""
from __future__ import annotations

from typing import List, Sequence, Tuple

from ..errors import ConfigError
from ..target import Precision

FORMATS = ("onnx", "openvino")
#: precisions each format can be exported at (bf16 is an OpenVINO inference precision; ONNX Runtime's
#: CPU provider has no bf16 kernels)
FORMAT_PRECISIONS = {"onnx": tuple(Precision.ONNXRUNTIME), "openvino": (Precision.FP32, Precision.FP16,
                                                                        Precision.BF16, Precision.INT8)}
#: the format a deployment target's backend runs (torch targets: the ONNX graph)
FORMAT_OF_BACKEND = {"openvino": "openvino", "onnxruntime": "onnx", "torch": "onnx", "torch-compile": "onnx",
                     "torch-cudagraph": "onnx"}
#: the runtime each format is verified and timed in
BACKEND_OF_FORMAT = {"onnx": "onnxruntime", "openvino": "openvino"}


def parse_formats(value) -> Tuple[str, ...]:
    """``"onnx,openvino"`` (or a sequence) -> ``("onnx", "openvino")``, checked."""
    items = [v.strip().lower() for v in value.split(",")] if isinstance(value, str) else [str(v).lower()
                                                                                           for v in value]
    items = [v for v in items if v]
    aliases = {"ov": "openvino", "ir": "openvino"}
    out: List[str] = []
    for v in items:
        v = aliases.get(v, v)
        if v not in FORMATS:
            raise ConfigError(f"formats={v!r}: unknown format; expected one or more of {', '.join(FORMATS)} "
                              "(comma-separated)")
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError(f"formats={value!r}: give at least one of {', '.join(FORMATS)}")
    return tuple(out)


def check_format_precision(formats: Sequence[str], precision: str) -> str:
    """The precision (its one name), once each format is known to take it."""
    precision = Precision.parse(precision)
    for f in formats:
        if precision not in FORMAT_PRECISIONS[f]:
            raise ConfigError(f"precision={precision!r} is not available for formats={f!r} (ONNX Runtime has no "
                              f"bf16 CPU kernels; {f} takes {', '.join(FORMAT_PRECISIONS[f])}); export OpenVINO "
                              "alone at bf16")
    return precision
