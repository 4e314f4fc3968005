"""The lean ONNX model server every deployment runs (Open Inference Protocol v2)."""
