"""ONNX and OpenVINO export with accuracy verification."""
