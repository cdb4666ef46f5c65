"""ONNX and OpenVINO export with accuracy verification and INT8 quantisation (never imports bench)."""
from .onnx import OnnxExport, export_onnx
from .openvino import OpenVinoConversion, compile_openvino, convert_openvino
from .formats import FORMATS
from .pipeline import export_model
from .record import EXPORT_FILE, ExportResult
from .verify import (PRECISIONS, ExportedRunner, Verification, VerifyData, graph_token_counts, load_verify_data,
                     verify_export)

__all__ = [
    "EXPORT_FILE", "FORMATS", "PRECISIONS", "ExportResult", "ExportedRunner", "OnnxExport", "OpenVinoConversion",
    "Verification", "VerifyData", "compile_openvino", "convert_openvino", "export_model", "export_onnx",
    "graph_token_counts", "load_verify_data", "verify_export",
]
