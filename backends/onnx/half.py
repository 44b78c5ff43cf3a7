"""float16 and bfloat16 on ONNX: the graph widened for onnxruntime, and bfloat16 across its Python boundary.

```python
graph = clone_graph(graph)
widen_half_for_onnxruntime(graph)   # after decomposition: what remains half runs on onnxruntime's CPU kernels
binding.bind_ortvalue_input("x", bfloat16_ortvalue(x))   # an ml_dtypes.bfloat16 array in
ortvalue_to_numpy(session_output)                          # and out
```

The ONNX model keeps kiln's half types at its edges: inputs, outputs and weights are FLOAT16/BFLOAT16, so a
deployed file is half the size. Inside, every op that computes is widened as the NumPy backend widens it
(``compiler/passes/widen_half.py``): Cast to float32, the op, Cast back, one rounding per op, which is PyTorch's
CPU semantics, and the only way most of them run: onnxruntime's CPU kernels take float16 for a few ops and
bfloat16 for almost none. Ops that only move elements stay half where onnxruntime has a kernel for them;
``Expand``, ``Where``, ``Trilu`` and ``Pad`` have no bfloat16 CPU kernel, so those are widened too (exactly: a
float32 copy of a half value holds it exactly).

onnxruntime's Python API knows no NumPy type for bfloat16 (``ml_dtypes.bfloat16`` arrays are refused, and
``OrtValue.numpy()`` of a bfloat16 tensor raises): a bfloat16 array goes in as its 16-bit patterns typed
BFLOAT16, and a bfloat16 result, bound to host memory, comes out by reading those patterns back.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import DType
from kiln.compiler.passes.widen_half import WidenHalf, touches_half, widen

NO_HALF_KERNEL = frozenset({"tensor.broadcast_to", "tensor.where", "tensor.tril", "tensor.triu", "tensor.pad"})
"""Element-moving ops whose ONNX form (Expand, Where, Trilu, Pad) onnxruntime's CPU provider runs in no bfloat16:
widened like computing ops (exact here) for both half dtypes, so a float16 and a bfloat16 model export alike."""

BFLOAT16_TYPE = "tensor(bfloat16)"
"""onnxruntime's name for a bfloat16 tensor type (``NodeArg.type``, ``OrtValue.data_type()``)."""


def widen_half_for_onnxruntime(graph: Graph) -> bool:
    """``widen-half``, then the element-moving ops without a bfloat16 kernel; whether anything changed."""
    changed = WidenHalf().run(graph)
    targets = [op for op in graph.ops if op.name in NO_HALF_KERNEL and touches_half(op)]
    widened: dict[Value, Value] = {}
    for op in targets:
        widen(graph, op, widened)
    return changed or bool(targets)


def is_bfloat16(array: Any) -> bool:
    return getattr(array, "dtype", None) == DType.bf16.numpy


def bfloat16_ortvalue(array: np.ndarray) -> Any:
    """An OrtValue typed BFLOAT16 holding ``array``'s values (its bit patterns, viewed as uint16)."""
    import onnx
    import onnxruntime

    bits = np.asarray(array, order="C").view(np.uint16)  # not ascontiguousarray: it makes a 0-d array 1-d
    return onnxruntime.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx.TensorProto.BFLOAT16)


def ortvalue_to_numpy(value: Any) -> np.ndarray:
    """``value.numpy()``, which onnxruntime cannot do for bfloat16: those are read from host memory as bit patterns."""
    if value.data_type() != BFLOAT16_TYPE:
        return value.numpy()
    if value.device_name().lower() != "cpu":
        raise RuntimeError(f"a bfloat16 OrtValue on {value.device_name()} cannot be read from Python; bind bfloat16 outputs to 'cpu'")
    shape = tuple(value.shape())
    count = math.prod(shape)
    if count == 0:
        return np.zeros(shape, DType.bf16.numpy)
    pointer = ctypes.cast(value.data_ptr(), ctypes.POINTER(ctypes.c_uint16))
    return np.ctypeslib.as_array(pointer, shape=(count,)).copy().view(DType.bf16.numpy).reshape(shape)


class BFloat16Result:
    """A bfloat16 OrtValue kept in onnxruntime (a donated result) whose ``numpy()`` works: what reads it back expects one."""

    def __init__(self, value: Any):
        self.value = value

    def numpy(self) -> np.ndarray:
        return ortvalue_to_numpy(self.value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.value, name)


__all__ = ["BFloat16Result", "NO_HALF_KERNEL", "bfloat16_ortvalue", "is_bfloat16", "ortvalue_to_numpy", "widen_half_for_onnxruntime"]
