"""Export formats and the precisions each takes; the checks of ``--format`` / ``--precision``."""
from __future__ import annotations

from typing import List, Sequence, Tuple

from ..errors import ConfigError
from .verify import check_precision

FORMATS = ("onnx", "openvino")
#: precisions each format can be exported at (bf16 is an OpenVINO inference precision; ONNX Runtime's
#: CPU provider has no bf16 kernels)
FORMAT_PRECISIONS = {"onnx": ("fp32", "fp16", "int8"), "openvino": ("fp32", "fp16", "bf16", "int8")}


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
            raise ConfigError(f"--format: unknown format {v!r}; expected one or more of {', '.join(FORMATS)} "
                              "(comma-separated)")
        if v not in out:
            out.append(v)
    if not out:
        raise ConfigError(f"--format: give at least one of {', '.join(FORMATS)}")
    return tuple(out)


def check_format_precision(formats: Sequence[str], precision: str) -> None:
    check_precision(precision)
    for f in formats:
        if precision not in FORMAT_PRECISIONS[f]:
            raise ConfigError(f"--precision {precision} is not available for --format {f} (ONNX Runtime has no "
                              f"bf16 CPU kernels; {f} takes {', '.join(FORMAT_PRECISIONS[f])}); export OpenVINO "
                              "alone at bf16")
