"""ONNX: export kiln graphs as standard ONNX models and run them in onnxruntime (imported lazily)."""

from kiln.backends.onnx.lowering import ONNX

__all__ = ["ONNX"]
