"""ONNX: export kiln graphs as standard ONNX models, run them in onnxruntime, import ONNX models (all lazy)."""

from kiln.backends.onnx import lowering_nn  # noqa: F401  (registers the CNN and transformer emitters)
from kiln.backends.onnx import lowering_linalg  # noqa: F401  (registers Det and the linalg refusals)
from kiln.backends.onnx import lowering_scan  # noqa: F401  (registers the running scans' Scan emitters)
from kiln.backends.onnx import lowering_erf  # noqa: F401  (registers Erf and Gelu, in float64 from arithmetic)
from kiln.backends.onnx import lowering_bitwise  # noqa: F401  (registers the integer bit ops and shifts)
from kiln.backends.onnx import lowering_narrow_int  # noqa: F401  (MatMul, Pow on uint8/int8/int16 in int32)
from kiln.backends.onnx import lowering_fft  # noqa: F401  (refuses the fft dialect's ops by name)
from kiln.backends.onnx.lowering import ONNX

__all__ = ["ONNX"]
