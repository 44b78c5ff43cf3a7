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

Around the CuPy pipeline and fusion, three more steps keep widen-half's casts out of kernels of their own (each
pinned by launch counts in ``tests/backends_cupy/test_cupy_half_launches.py``): ``narrow_half`` runs again after
``fold-batch-sum-matmul`` (a weight gradient becomes one float16 GEMM), ``split_heads_in_float`` widens attention's
inputs in the projection's epilogue, before the copy into heads, and ``fold_casts_into_reductions`` has a reduction
store its cast result (a float16 bias gradient).
"""

from __future__ import annotations

import numpy as np

from functools import lru_cache
from typing import Any

from kiln.backends.cupy.codegen import reduction_sink
from kiln.backends.cupy.expressions import BF16_UNSUPPORTED
from kiln.backends.cupy.gemm import transpose_copies
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
    narrow_half(graph)
    ConstantFold().run(graph)  # a float16 constant cast to float32 (a scale in an update) is a float32 constant


def narrow_half(graph: Graph) -> None:
    """Each ``KEPT_IN_HALF`` op between casts rebuilt on float16 (``narrow``), then the round trips left dropped. Run
    once after ``widen-half`` and again after the CuPy pipeline, whose ``fold-batch-sum-matmul`` turns a weight
    gradient's batched matmul and sum (widened together) into one matmul between casts."""
    for op in list(graph.ops):
        if op.name in KEPT_IN_HALF and _widened_from_half(op) and _half_kernel_applies(op):
            narrow(graph, op)
    drop_round_trips(graph)


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


def split_heads_in_float(graph: Graph) -> None:
    """Widen a float16 value before the transpose that copies it into heads, not after: ``cast(transpose(x))`` of a
    copying transpose (``gemm.transpose_copies``) read only by casts to float32 becomes ``transpose(cast(x))`` when an
    elementwise op makes ``x`` (through reshapes) and the cast would be a kernel of its own (attention reads it), so
    the cast fuses into that op's kernel (the projection's epilogue), and the one copy splits float32 heads: two
    launches (copy, cast) become one, the bytes the same. Run before fusion (and ``cast_per_reader``).

    ```
    %t = "tensor.transpose"(%q) {perm = [0, 2, 1, 3]}        %q32 = "tensor.cast"(%q) {dtype = f32}
    %t32 = "tensor.cast"(%t) {dtype = f32}             ->    %t32 = "tensor.transpose"(%q32) {perm = [0, 2, 1, 3]}
    ```
    """
    for op in list(graph.ops):
        if op.name != "tensor.transpose" or op.results[0].type.dtype is not DType.f16 or op.results[0] in graph.outputs:
            continue
        casts = [use for use, _ in op.results[0].uses]
        views = _single_use_reshapes(op.operands[0])
        root = views[0].operands[0] if views else op.operands[0]
        if (casts and all(_is_cast(c, DType.f16, DType.f32) for c in casts) and any(_stands_alone(graph, c) for c in casts)
                and transpose_copies(op.operands[0].type.shape, op.attrs["perm"])
                and root.producer is not None and has_trait(root.producer.name, "elementwise")):
            _widen_before(graph, op, views, root, casts)


def _stands_alone(graph: Graph, cast: Op) -> bool:
    """The cast would be a kernel of its own: a reader that is no elementwise op (a matmul, attention) takes its
    result, where ``cast_per_reader`` would otherwise move a copy of it into each (elementwise) reader's kernel."""
    result = cast.results[0]
    return result in graph.outputs or any(not has_trait(reader.name, "elementwise") for reader, _ in result.uses)


def _single_use_reshapes(value: Value) -> list[Op]:
    """The reshapes from a value down to ``value``, each read only by the next (outermost first)."""
    chain: list[Op] = []
    while value.producer is not None and value.producer.name == "tensor.reshape" and len(value.uses) == 1:
        chain.insert(0, value.producer)
        value = value.producer.operands[0]
    return chain


def _widen_before(graph: Graph, transpose: Op, views: list[Op], root: Value, casts: list[Op]) -> None:
    build = Builder(graph, insert_before=transpose, location=transpose.location, region=transpose.region)
    value = build.create("tensor.cast", [root], dict(casts[0].attrs)).results[0]
    for view in views + [transpose]:
        value = build.create(view.name, [value], dict(view.attrs)).results[0]
    for cast in casts:
        value.name_hint = value.name_hint or cast.results[0].name_hint
        replace_uses(graph, cast.results[0], value)
        graph.erase(cast)
    for dead in [transpose] + views[::-1]:
        graph.erase(dead)


def fold_casts_into_reductions(graph: Graph) -> None:
    """After fusion: a float16 cast of a fused group's reduced value (a float16 bias gradient summed in float32, or
    an embedding gradient rounded to half and widened for its update), alone in its own kernel, becomes the group's
    post-map instead (``codegen.reduction_sink``): the reduction kernel stores the cast value, one launch less.

    ```
    %g32 = "fused.elementwise"(%dy) {ops = ["tensor.cast", "tensor.reduce_sum"], ...}   ->  %g = "fused.elementwise"(%dy)
    %g = "tensor.cast"(%g32) {dtype = f16}                                                     {ops = [..., "tensor.reduce_sum", "tensor.cast"], ...}
    ```
    """
    for reader in list(graph.ops):
        dtypes = _cast_chain(reader)
        reduced = reader.operands[0] if dtypes else None
        group = reduced.producer if reduced is not None else None
        if group is None or not _sinks_into(group, reduced) or len(reduced.uses) != 1 or reduced in graph.outputs:
            continue
        if DType.f16 in dtypes + [reduced.type.dtype]:
            _append_casts(graph, group, reduced, reader, dtypes)


def _cast_chain(op: Op) -> list[DType]:
    """The float dtypes a standalone ``tensor.cast``, or a fused group of only a chain of casts of its one operand,
    casts to in turn; ``[]`` for anything else."""
    if op.name == "tensor.cast":
        dtypes = [op.attrs["dtype"]]
    elif op.name == "fused.elementwise" and len(op.operands) == 1 and set(op.attrs["ops"]) == {"tensor.cast"}:
        chained = all(tuple(arg) == (k,) for k, arg in enumerate(op.attrs["args"]))
        dtypes = [dict(zip(p[::2], p[1::2])).get("dtype") for p in op.attrs["params"]] if chained and tuple(op.attrs["yields"]) == (len(op.attrs["ops"]),) else []
    else:
        return []
    dtypes = [DType.of(d) for d in dtypes if d is not None]
    return dtypes if dtypes and all(d.is_float for d in dtypes) and op.operands[0].type.dtype.is_float else []


def _sinks_into(group: Op, value: Value) -> bool:
    """``value`` is what ``group``'s reduction (and the casts already after it) yields."""
    if group.name != "fused.elementwise":
        return False
    n, ops = len(group.operands), group.attrs["ops"]
    body = [(name, tuple(arg), None, n + k) for k, (name, arg) in enumerate(zip(ops, group.attrs["args"]))]
    return reduction_sink(body) is not None and group.attrs["yields"][group.results.index(value)] == n + len(ops) - 1


def _append_casts(graph: Graph, group: Op, reduced: Value, reader: Op, dtypes: list[DType]) -> None:
    last = len(group.operands) + len(group.attrs["ops"]) - 1
    position = group.results.index(reduced)
    attrs = dict(group.attrs)
    attrs["ops"] = tuple(group.attrs["ops"]) + ("tensor.cast",) * len(dtypes)
    attrs["args"] = tuple(tuple(a) for a in group.attrs["args"]) + tuple((last + k,) for k in range(len(dtypes)))
    attrs["params"] = tuple(tuple(p) for p in group.attrs["params"]) + tuple(("dtype", d) for d in dtypes)
    attrs["yields"] = tuple(last + len(dtypes) if i == position else y for i, y in enumerate(group.attrs["yields"]))
    types = [reader.results[0].type if i == position else r.type for i, r in enumerate(group.results)]
    folded = Builder(graph, insert_before=group, location=group.location, region=group.region).create_typed(group.name, list(group.operands), attrs, types)
    for i, (old, new) in enumerate(zip(group.results, folded.results)):
        source = reader.results[0] if i == position else old
        new.name_hint = source.name_hint
        replace_uses(graph, source, new)
    graph.erase(reader)
    graph.erase(group)


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
