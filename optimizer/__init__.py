"""Offline model optimization: quantization, pruning and graph passes over ONNX, with measured
size, latency and accuracy trade-offs.

Importing this package is cheap: onnx, onnxruntime and torch are imported inside the functions
that need them, so the API can inspect uploads and the CLI can start instantly.
"""

from __future__ import annotations

from optimizer.convert import to_onnx
from optimizer.errors import (
    CalibrationDataError,
    InvalidModelError,
    OptimizationCancelledError,
    OptimizationFailedError,
    UnsafeModelError,
    UnsupportedModelError,
)
from optimizer.model_info import ModelFormat, ModelInfo, TensorSpec, inspect_model
from optimizer.pipeline import CandidateReport, OptimizationResult, ProgressEvent, optimize

__all__ = [
    "CalibrationDataError",
    "CandidateReport",
    "InvalidModelError",
    "ModelFormat",
    "ModelInfo",
    "OptimizationCancelledError",
    "OptimizationFailedError",
    "OptimizationResult",
    "ProgressEvent",
    "TensorSpec",
    "UnsafeModelError",
    "UnsupportedModelError",
    "inspect_model",
    "optimize",
    "to_onnx",
]
