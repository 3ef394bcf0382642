"""Exports for deployment: ONNX, the model.bin binary format and its readers."""

from raytrack.export.model_bin import INCLUDE_DIR, BinModel, read_model_bin, write_model_bin
from raytrack.export.onnx_export import (
    export_jacobian_onnx,
    export_onnx,
    export_onnx_pair,
    onnx_predict,
    onnx_predict_with_jacobian,
)

__all__ = [
    "INCLUDE_DIR",
    "BinModel",
    "export_jacobian_onnx",
    "export_onnx",
    "export_onnx_pair",
    "onnx_predict",
    "onnx_predict_with_jacobian",
    "read_model_bin",
    "write_model_bin",
]
