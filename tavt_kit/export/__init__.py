"""ONNX and OpenVINO export with accuracy verification, INT8 quantisation and structural pruning."""
from .onnx import OnnxExport, export_onnx
from .openvino import OpenVinoConversion, compile_openvino, convert_openvino
from .pipeline import (EXPORT_FILE, FORMATS, ExportResult, export_model, schedule_from_drop_file,
                       schedule_from_search, select_budget)
from .verify import (PRECISIONS, ExportedRunner, Verification, VerifyData, graph_token_counts, load_verify_data,
                     verify_export)

__all__ = [
    "EXPORT_FILE", "FORMATS", "PRECISIONS", "ExportResult", "ExportedRunner", "OnnxExport", "OpenVinoConversion",
    "Verification", "VerifyData", "compile_openvino", "convert_openvino", "export_model", "export_onnx",
    "graph_token_counts", "load_verify_data", "schedule_from_drop_file", "schedule_from_search", "select_budget",
    "verify_export",
]
