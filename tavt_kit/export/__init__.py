"""ONNX and OpenVINO export with accuracy verification and INT8 quantisation (never imports bench).

``export_model(model, out, schedule, formats, target=DeploymentTarget(...), verify=VerifyOptions(...),
quantize=QuantizeOptions(...), options=ExportOptions(...))`` -> :class:`ExportResult`;
:func:`prepare_export` is the preparation it shares with :func:`tavt_kit.bench.export_fastest`, and
:func:`run_export` one export of a prepared model at one precision.
"""
from .onnx import OnnxExport, export_onnx
from .openvino import OpenVinoConversion, compile_openvino, convert_openvino
from .formats import FORMATS
from .options import ExportOptions, QuantizeOptions, VerifyOptions
from .pipeline import export_model, run_export
from .prepare import PreparedExport, prepare_export
from .record import EXPORT_FILE, ExportResult
from .verify import (PRECISIONS, ExportedRunner, Verification, VerifyData, graph_token_counts, load_verify_data,
                     verify_export)

__all__ = [
    "EXPORT_FILE", "FORMATS", "PRECISIONS", "ExportOptions", "ExportResult", "ExportedRunner", "OnnxExport",
    "OpenVinoConversion", "PreparedExport", "QuantizeOptions", "Verification", "VerifyData", "VerifyOptions",
    "compile_openvino", "convert_openvino", "export_model", "export_onnx", "graph_token_counts", "load_verify_data",
    "prepare_export", "run_export", "verify_export",
]
