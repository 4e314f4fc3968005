"""Offline model optimization: quantization, pruning and graph passes over ONNX, with measurements."""
