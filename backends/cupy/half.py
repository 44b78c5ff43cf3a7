"""Half precision on the CuPy backend: float16 stored in 16 bits and computed in float32; bfloat16 refused.

``widen-half`` (``compiler/passes/widen_half.py``) first turns every float16 op into its float32 twin between casts,
as on NumPy; fusion then pulls the casts into the generated kernels, so a fused kernel loads float16, computes in
float and stores float16, with no extra launch. The ops whose CuPy kernel already computes float16 in float32 and
rounds once go back to float16 (``narrow_half``): same values, but no float32 copy of their operands or result.

```
%a32 = "tensor.cast"(%a) {dtype = f32}                     (widen-half)
%b32 = "tensor.cast"(%b) {dtype = f32}
%y32 = "tensor.matmul"(%a32, %b32) : ... -> tensor<8x2xf32>       ->   %y = "tensor.matmul"(%a, %b) : ... -> tensor<8x2xf16>
%y = "tensor.cast"(%y32) {dtype = f16}                     (narrow_half: cuBLAS, float32 accumulation)
```

``KEPT_IN_HALF`` lists them: the matmul (cuBLAS ``gemmEx`` with ``CUBLAS_COMPUTE_32F``, float16 in and out, the
compute type CuPy's ``matmul`` picks for float16 whatever ``set_compute_type`` says, ``gemm.py``) and the row
kernels (``row_kernels.py``: softmax, log-softmax, the softmax gradient, masked softmax, layer norm and its
gradient; and
``loss_kernels.py``: cross-entropy and its gradient), which load float16 rows, reduce and compute in float and store
float16 (a loss: its float value rounded once).
"""

from __future__ import annotations

import numpy as np

from functools import lru_cache
from typing import Any

from kiln.backends.cupy.expressions import BF16_UNSUPPORTED
from kiln.backends.cupy.loss_kernels import cross_entropy_rows_apply
from kiln.backends.cupy.row_kernels import masked_rows_apply, row_op_fuses
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import DType
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.constant_fold import ConstantFold
from kiln.compiler.passes.rewrite import replace_uses
from kiln.compiler.passes.widen_half import WidenHalf

KEPT_IN_HALF = frozenset({"tensor.matmul", "nn.softmax", "nn.log_softmax", "nn.softmax_grad", "nn.masked_softmax", "nn.layer_norm",
                          "nn.layer_norm_grad", "nn.cross_entropy", "nn.cross_entropy_grad",
                          "tensor.reduce_max", "tensor.reduce_min"})
"""Ops whose CuPy kernel computes float16 operands in float32 and rounds its result once (see the module docstring),
and the reductions exact in float16 that widen-half widens anyway: max and min pick an element."""


def refuse_bfloat16(graph: Graph) -> None:
    """A ``LoweringError`` naming the first bfloat16 value (its op and source line) and what to use instead."""
    for value in graph.inputs:
        if value.type.dtype is DType.bf16:
            raise LoweringError(f"{BF16_UNSUPPORTED} (input %{value.name_hint or graph.inputs.index(value)} of @{graph.name}: {value.type})")
    for index, op in enumerate(graph.ops):
        for value in op.results:
            if value.type.dtype is DType.bf16:
                where = f" from {op.location}" if op.location else ""
                raise LoweringError(f"{BF16_UNSUPPORTED} ({op.name!r}, op #{index} in @{graph.name}{where}, makes {value.type})")


def compute_half_in_float(graph: Graph) -> None:
    """float16 ops computed in float32 and rounded once each (``widen-half``), then ``KEPT_IN_HALF`` ops narrowed back."""
    if not uses_half(graph):
        return
    WidenHalf().run(graph)
    for op in list(graph.ops):
        if op.name in KEPT_IN_HALF and _widened_from_half(op) and _half_kernel_applies(op):
            narrow(graph, op)
    drop_round_trips(graph)
    ConstantFold().run(graph)  # a float16 constant cast to float32 (a scale in an update) is a float32 constant


def drop_round_trips(graph: Graph) -> None:
    """``cast(cast(x, f32), f16)`` of a float16 ``x`` is ``x``: float32 holds every float16 exactly. (The other way
    round, float32 to float16 and back, rounds: ``widen-half`` keeps those, and so does this.)"""
    for op in graph.ops:
        inner = op.operands[0].producer if op.operands else None
        if _is_cast(op, DType.f32, DType.f16) and _is_cast(inner, DType.f16, DType.f32):
            replace_uses(graph, op.results[0], inner.operands[0])


def _values(graph: Graph) -> list[Value]:
    return list(graph.inputs) + [r for op in graph.ops for r in op.results]


VIEWS = frozenset({"tensor.transpose", "tensor.reshape", "tensor.expand_dims", "tensor.squeeze"})
"""Ops that only rearrange elements: a view of a float16 value cast up is the same view, cast up (the backward's
``transpose(cast(x))`` of a float16 ``x``)."""


def _from_half(value: Value) -> bool:
    """``value`` is a float16 value cast to float32, a view of one, or a float32 constant that float16 holds exactly
    (the loss's seed cotangent, 1.0)."""
    producer = value.producer
    if producer is not None and producer.name in VIEWS:
        return _from_half(producer.operands[0])
    if value.type.dtype is DType.f32 and producer is not None and producer.name == "tensor.constant":
        array = np.asarray(producer.attrs["value"])
        return bool(np.array_equal(array.astype(np.float16).astype(array.dtype), array, equal_nan=True))
    return value.type.dtype is DType.f32 and _is_cast(producer, DType.f16, DType.f32)


def _half_value(build: Builder, value: Value) -> Value:
    """The float16 value ``value`` was cast from, its views rebuilt on it, or the float16 constant (``_from_half``)."""
    producer = value.producer
    assert producer is not None
    if producer.name in VIEWS:
        return build.create(producer.name, [_half_value(build, producer.operands[0])], dict(producer.attrs)).results[0]
    if producer.name == "tensor.constant":
        return build.constant(np.asarray(producer.attrs["value"]).astype(np.float16))
    return producer.operands[0]


def _widened_from_half(op: Op) -> bool:
    """``op`` is float32 between casts: each float operand a float16 value cast up, each result read only by casts down."""
    floats = [v for v in op.operands if v.type.dtype.is_float]
    if not floats or not all(_from_half(v) for v in floats):
        return False
    return all(result.uses and all(_is_cast(use, DType.f32, DType.f16) for use, _ in result.uses) for result in op.results)


def _half_kernel_applies(op: Op) -> bool:
    """The row kernel fits (an axis to reduce over, a mask it can read); the matmul always."""
    if op.name == "nn.masked_softmax":
        return masked_rows_apply(op.operands[0].type, op.operands[1].type)
    if op.name in ("nn.cross_entropy", "nn.cross_entropy_grad"):
        weighted = len(op.operands) > (3 if op.name.endswith("grad") else 2)
        return cross_entropy_rows_apply(op.operands[0].type, op.operands[1].type, weighted)
    if op.name in ("nn.softmax", "nn.log_softmax", "nn.softmax_grad", "nn.layer_norm", "nn.layer_norm_grad"):
        return row_op_fuses(op.name, op.attrs.get("axis"), op.operands[0].type.rank, DType.f16)
    return True


def _is_cast(op: Op | None, source: DType, target: DType) -> bool:
    return op is not None and op.name == "tensor.cast" and op.operands[0].type.dtype is source and op.results[0].type.dtype is target


def narrow(graph: Graph, op: Op) -> None:
    """Rebuild ``op`` on the float16 values its operands were cast from; its casts down then read the new results."""
    build = Builder(graph, insert_before=op, location=op.location, region=op.region)
    operands = [_half_value(build, v) if v.type.dtype.is_float else v for v in op.operands]
    twin = build.create(op.name, operands, dict(op.attrs))
    for old, new in zip(op.results, twin.results):
        for cast, _ in list(old.uses):
            new.name_hint = new.name_hint or cast.results[0].name_hint
            replace_uses(graph, cast.results[0], new)
            graph.erase(cast)
    graph.erase(op)


def cast_per_reader(graph: Graph) -> None:
    """Give each elementwise reader of a float16 value cast to float32 its own cast, just before it, so fusion puts
    the cast into the reader's kernel (which then loads 16 bits) instead of one kernel writing a float32 copy that the
    others read. Run after ``cse`` (which would merge the copies back), before fusion."""
    for op in list(graph.ops):
        if not _is_cast(op, DType.f16, DType.f32) or len(op.results[0].uses) < 2:
            continue
        for reader, index in list(op.results[0].uses):
            if has_trait(reader.name, "elementwise"):
                build = Builder(graph, insert_before=reader, location=op.location, region=op.region)
                reader.set_operand(index, build.create(op.name, list(op.operands), dict(op.attrs)).results[0])
        if not op.results[0].uses and op.results[0] not in graph.outputs:
            graph.erase(op)


def uses_half(graph: Graph) -> bool:
    return any(v.type.dtype is DType.f16 for v in _values(graph))


def require_half_headers(cupy: Any) -> None:
    """A ``LoweringError`` saying what to install when CuPy's NVRTC cannot find ``cuda_fp16.h`` (CuPy no longer
    bundles it: CUDA 12.2+ headers come from the toolkit or the ``nvidia-cuda-runtime`` wheel), instead of a
    compile error at the first float16 launch. One tiny float16 kernel, built and run once per process."""
    problem = _half_header_problem(cupy)
    if problem:
        raise LoweringError(f"cupy backend: CuPy cannot compile float16 kernels here ({problem}); install the CUDA headers: "
                            "pip install nvidia-cuda-runtime-cu12 (or -cu13, matching CuPy), or set CUDA_PATH to a CUDA toolkit")


@lru_cache(maxsize=None)
def _half_header_problem(cupy: Any) -> str | None:
    try:
        cupy.ElementwiseKernel("float16 x", "float16 y", "y = __float2half_rn((float)(x));", "kiln_half_probe",
                               preamble="#include <cuda_fp16.h>")(cupy.zeros(1, dtype="float16"))
    except Exception as error:  # noqa: BLE001  (CuPy's CompileException, whose log names the missing header)
        if "cuda_fp16" not in str(error):
            raise
        return str(error).strip().splitlines()[0][:200]
    return None
