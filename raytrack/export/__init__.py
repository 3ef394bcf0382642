"""Exports for deployment: ONNX, the model.bin binary format and its readers."""

from raytrack.export.model_bin import INCLUDE_DIR, BinModel, read_model_bin, write_model_bin
from raytrack.export.onnx_export import export_onnx, onnx_predict

__all__ = [
    "INCLUDE_DIR",
    "BinModel",
    "export_onnx",
    "onnx_predict",
    "read_model_bin",
    "write_model_bin",
]
