"""CUDA source for fusion groups, as plain strings (no CuPy needed to generate or test them).

A ``fused.elementwise`` group becomes one CuPy ``ElementwiseKernel``: the
group's operands are its inputs (``x0, x1, ...``), the yielded values its
outputs (``y0, ...``), and the body is one ``const`` local per sub-op. CuPy's
indexer broadcasts the inputs by index arithmetic, so ``(N, 128) + (128,)``
needs no materialised bias. A group ending in a reduction becomes a
``ReductionKernel`` whose map is the body (the part the reduced value needs)
as a ``__device__`` function. A kernel iterates over one shape, so a group
whose results differ in shape (another value yielded before its reduction,
or independent updates of differently shaped parameters merged into one
group) becomes one kernel per shape, each recomputing the cheap sub-ops it
shares with the others rather than storing them. A ``fused.matmul`` is a
GEMM (cuBLAS) and its epilogue as elementwise kernels reading the product.

```
%h = "fused.elementwise"(%mm, %bias) {ops = ["tensor.add", "tensor.relu"], args = [[0, 1], [2]], ...}
->  in:  float32 x0, float32 x1     out: float32 y0
    const float t2 = (x0 + x1);
    const float t3 = (t2 > (float)0 ? t2 : (float)0);
    y0 = t3;
```

float16 operands are loaded into float locals (``const float h0 = (float)(x0);``), every sub-op computes in
float and rounds a float16 result once (``expressions.round_to_half``), and float16 outputs store
``__float2half_rn`` of their value: the kernel reads and writes 16 bits and rounds as often as PyTorch's half
kernels do, once per op. Such a kernel's preamble includes ``cuda_fp16.h``.

Kernel names carry a hash of the group's structure and dtypes, so a group
compiles once per process (and CuPy's on-disk kernel cache, keyed by source,
serves later processes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from kiln.backends.cupy.expressions import CUPY_TYPES, REDUCTIONS, STORAGE_TYPES, c_expression, c_type, round_to_half, to_half
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.fused import _body_types, sub_op_attrs
from kiln.compiler.ops.registry import has_trait


@dataclass(frozen=True)
class ElementwiseSource:
    """The arguments of ``cupy.ElementwiseKernel(in_params, out_params, body, name, preamble=...)``."""

    name: str
    in_params: str
    out_params: str
    body: str
    preamble: str = ""

    def text(self) -> str:
        """A readable rendering, as the golden files hold it."""
        header = f"// elementwise kernel {self.name}\n// in:  {self.in_params}\n// out: {self.out_params}\n"
        return header + (self.preamble + "\n" if self.preamble else "") + self.body + "\n"


@dataclass(frozen=True)
class ReductionSource:
    """The arguments of ``cupy.ReductionKernel``, plus the axes it reduces over."""

    name: str
    in_params: str
    out_params: str
    map_expr: str
    reduce_expr: str
    post_map_expr: str
    identity: str
    reduce_type: str
    preamble: str = ""
    axes: Any = None
    keepdims: bool = False

    def text(self) -> str:
        return (
            f"// reduction kernel {self.name} over axes {self.axes!r}, keepdims={self.keepdims}\n"
            f"// in:  {self.in_params}\n// out: {self.out_params}\n{self.preamble}\n"
            f"// map:    {self.map_expr}\n// reduce: {self.reduce_expr} (identity {self.identity}, in {self.reduce_type})\n"
            f"// post:   {self.post_map_expr}\n"
        )


@dataclass(frozen=True)
class KernelCall:
    """One generated kernel of a fused op: what it reads and which of the op's results it writes."""

    source: "ElementwiseSource | ReductionSource"
    reads: tuple[int, ...]
    """Body slots passed as the kernel's inputs, in order (the op's operands; for an epilogue also the product)."""
    writes: tuple[int, ...]
    """Positions in the fused op's results that the kernel's outputs fill, in order."""


@dataclass(frozen=True)
class GroupKernels:
    """What one fused op launches, in order: the GEMM (``fused.matmul``), then its generated kernels."""

    calls: tuple[KernelCall, ...] = ()
    gemm: tuple[int, int] | None = None
    """For ``fused.matmul``: the operand indices of the GEMM."""
    product: int | None = None
    """For ``fused.matmul``: the body slot of the GEMM's product."""
    direct_yields: tuple[int, ...] = field(default_factory=tuple)
    """For ``fused.matmul``: result positions that are the product itself."""

    def sources(self) -> list["ElementwiseSource | ReductionSource"]:
        return [call.source for call in self.calls]


@dataclass(frozen=True)
class _Body:
    """A straight-line body: typed inputs (slot, type), sub-ops (name, arg slots, attrs, result slot), outputs."""

    inputs: tuple[tuple[int, TensorType], ...]
    ops: tuple[tuple[str, tuple[int, ...], dict[str, Any], int], ...]
    outputs: tuple[int, ...]
    types: dict[int, TensorType]


def kernel_name(prefix: str, op_names: Any, structure: Any) -> str:
    """``kiln_<prefix>_<first ops>_<hash>``: readable, and unique per structure and dtypes."""
    digest = hashlib.sha1(repr(_with_ir_dtypes(structure)).encode()).hexdigest()[:10]
    short = "_".join(name.split(".")[-1] for name in list(op_names)[:3])
    return f"kiln_{prefix}_{short}_{digest}"


class _IrDType:
    """A dtype attribute in a kernel's structure, with the repr DType had before it printed as torch's
    (``<DType.f32: 'f32'>``, not ``kiln.float32``), so kernel names (and the golden kernels) stay as they were."""

    def __init__(self, dtype: DType) -> None:
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"<DType.{self.dtype.name}: {self.dtype.value!r}>"


def _with_ir_dtypes(item: Any) -> Any:
    if isinstance(item, DType):
        return _IrDType(item)
    if type(item) in (tuple, list):
        return type(item)(_with_ir_dtypes(part) for part in item)
    if isinstance(item, dict):
        return {key: _with_ir_dtypes(value) for key, value in item.items()}
    return item


def _statements(body: _Body, names: dict[int, str]) -> list[str]:
    lines = []
    for name, args, attrs, slot in body.ops:
        dtype = body.types[slot].dtype
        names[slot] = f"t{slot}"
        expression = c_expression(name, [names[a] for a in args], attrs, dtype)
        lines.append(f"const {c_type(dtype)} t{slot} = {expression};")
    return lines


def _params(prefix: str, types: list[TensorType]) -> str:
    return ", ".join(f"{CUPY_TYPES[t.dtype]} {prefix}{i}" for i, t in enumerate(types))


HALF_HEADER = "#include <cuda_fp16.h>"
"""The preamble of a kernel that touches float16: ``__half``, ``__float2half_rn`` and ``__half2float``."""


def _half_loads(body: _Body, names: dict[int, str]) -> list[str]:
    """``const float hI = (float)(xI);`` per float16 input (CuPy's ``float16`` and ``__half`` both convert exactly),
    so the body computes on floats only: mixing ``__half`` and ``float`` operands would be ambiguous C++."""
    lines = []
    for i, (slot, t) in enumerate(body.inputs):
        if t.dtype is DType.f16:
            names[slot] = f"h{i}"
            lines.append(f"const float h{i} = (float)(x{i});")
    return lines


def _store(slot: int, body: _Body, names: dict[int, str]) -> str:
    return to_half(names[slot]) if body.types[slot].dtype is DType.f16 else names[slot]


def _touches_half(body: _Body) -> bool:
    slots = [slot for slot, _ in body.inputs] + [op[3] for op in body.ops] + list(body.outputs)
    return any(body.types[slot].dtype is DType.f16 for slot in slots)


def _elementwise(name: str, body: _Body) -> ElementwiseSource:
    names = {slot: f"x{i}" for i, (slot, _) in enumerate(body.inputs)}
    lines = _half_loads(body, names) + _statements(body, names)
    lines += [f"y{i} = {_store(slot, body, names)};" for i, slot in enumerate(body.outputs)]
    in_params = _params("x", [t for _, t in body.inputs])
    preamble = HALF_HEADER if _touches_half(body) else ""
    return ElementwiseSource(name, in_params, _params("y", [body.types[s] for s in body.outputs]), "\n".join(lines), preamble)


def _cone(body: _Body, targets: tuple[int, ...]) -> _Body:
    """The part of ``body`` that computes ``targets``: the sub-ops they depend on and the inputs those read."""
    needed = set(targets)
    for _, args, _, slot in reversed(body.ops):
        if slot in needed:
            needed |= set(args)
    ops = tuple(op for op in body.ops if op[3] in needed)
    return _Body(tuple(i for i in body.inputs if i[0] in needed), ops, targets, body.types)


def _by_shape(body: _Body, slots: list[int]) -> list[tuple[int, ...]]:
    """``slots`` grouped by shape, in order of first appearance: one kernel iterates over one shape."""
    parts: dict[tuple[Any, ...], list[int]] = {}
    for slot in slots:
        parts.setdefault(tuple(body.types[slot].shape), []).append(slot)
    return [tuple(part) for part in parts.values()]


def _elementwise_calls(prefix: str, body: _Body, slots: list[int], positions: dict[int, int], structure: Any) -> list[KernelCall]:
    """One elementwise kernel per shape among ``slots``, each recomputing the (cheap) sub-ops it shares with others."""
    calls = []
    for part, targets in enumerate(_by_shape(body, slots)):
        cone = _cone(body, targets)
        name = kernel_name(prefix, [op[0] for op in cone.ops], (structure, part))
        calls.append(KernelCall(_elementwise(name, cone), tuple(s for s, _ in cone.inputs), tuple(positions[t] for t in targets)))
    return calls


def _group_body(op: Op) -> _Body:
    operand_types = tuple(v.type for v in op.operands)
    ops, args, params = op.attrs["ops"], op.attrs["args"], op.attrs["params"]
    slots = _body_types(operand_types, tuple(ops), tuple(args), tuple(params))
    n = len(operand_types)
    sub_ops = tuple((name, tuple(arg), sub_op_attrs(name, param), n + k) for k, (name, arg, param) in enumerate(zip(ops, args, params)))
    return _Body(tuple(enumerate(operand_types)), sub_ops, tuple(op.attrs["yields"]), dict(enumerate(slots)))


def _structure(op: Op) -> tuple[Any, ...]:
    return (op.name, op.attrs["ops"], op.attrs["args"], op.attrs["params"], op.attrs["yields"], tuple(str(v.type) for v in op.operands))


def _positions(body: _Body) -> dict[int, int]:
    return {slot: index for index, slot in enumerate(body.outputs)}


def elementwise_kernel_source(op: Op) -> ElementwiseSource:
    """The kernel of a ``fused.elementwise`` group whose results all have one shape (the common case)."""
    calls = group_kernels(op).calls
    if op.name != "fused.elementwise" or len(calls) != 1 or not isinstance(calls[0].source, ElementwiseSource):
        raise LoweringError(f"{op.name} {list(op.attrs.get('ops', ()))} is not one elementwise kernel; use group_kernels(op)")
    return calls[0].source


def group_kernels(op: Op) -> GroupKernels:
    """Every kernel a fused op launches (see the module docstring)."""
    if op.name == "fused.matmul":
        return epilogue_kernels(op)
    body = _group_body(op)
    sink = reduction_sink(body.ops)
    positions = _positions(body)
    tail = [o[3] for o in body.ops[sink:]] if sink is not None else []
    if any(s in tail[:-1] for s in body.outputs):
        raise LoweringError(f"{op.name} {list(op.attrs['ops'])} yields a value between its reduction and the casts after it")
    calls = _elementwise_calls("ew", body, [s for s in body.outputs if s not in tail], positions, _structure(op))
    if sink is not None:
        calls.append(_reduction_call(op, body, sink, positions))
    return GroupKernels(tuple(calls))


def reduction_sink(ops: Any) -> int | None:
    """The index of the group's reduction, or ``None``: its last sub-op, or the one before a chain of casts that each
    read the previous result (applied to the reduced value as it is stored: a float16 bias gradient summed in
    float and stored as half, no cast kernel after it). ``ops``: a body's ``(name, args, attrs, slot)`` sub-ops."""
    index = len(ops) - 1
    while index > 0 and ops[index][0] == "tensor.cast" and tuple(ops[index][1]) == (ops[index - 1][3],):
        index -= 1
    return index if ops and has_trait(ops[index][0], "reduction") else None


def _reduction_call(op: Op, body: _Body, sink: int, positions: dict[int, int]) -> KernelCall:
    reduce_name, (operand,), attrs, reduced = body.ops[sink]
    cone = _cone(_Body(body.inputs, body.ops[:sink], (), body.types), (operand,))
    name = kernel_name("red", [o[0] for o in cone.ops] + [reduce_name], _structure(op))
    preamble, call = _map_function(name, cone)
    casts, result = body.ops[sink + 1:], body.ops[-1][3]
    if _touches_half(_Body(cone.inputs, cone.ops + casts, (reduced, result), body.types)):
        preamble = f"{HALF_HEADER}\n{preamble}"
    source = _reduction(name, reduce_name, attrs, cone.inputs, call, preamble, body.types, reduced, casts)
    return KernelCall(source, tuple(s for s, _ in cone.inputs), (positions[result],))


def _map_function(name: str, body: _Body) -> tuple[str, str]:
    """The elementwise body as ``__device__ T name_map(inputs)`` and the call that the map expression makes."""
    names = {slot: f"x{i}" for i, (slot, _) in enumerate(body.inputs)}
    lines = _statements(body, names)
    result_type = c_type(body.types[body.outputs[0]].dtype)
    params = ", ".join(f"{c_type(t.dtype)} x{i}" for i, (_, t) in enumerate(body.inputs))
    function = "\n".join([f"__device__ {result_type} {name}_map({params}) {{", *("    " + line for line in lines),
                          f"    return {names[body.outputs[0]]};", "}"])
    return function, f"{name}_map({', '.join(f'x{i}' for i in range(len(body.inputs)))})"


def _reduction(name: str, reduce_name: str, attrs: dict[str, Any], inputs: tuple[tuple[int, TensorType], ...], map_expr: str,
               preamble: str, types: dict[int, TensorType], reduced: int, casts: Any = ()) -> ReductionSource:
    """``casts``: sub-ops ``(name, args, attrs, slot)`` applied in turn to the reduced value in the post-map."""
    reduce_expr, identity, divides = REDUCTIONS[reduce_name]
    t = c_type(types[reduced].dtype)
    value = f"({t})(a / ((double)_in_ind.size() / (double)_out_ind.size()))" if divides else "a"
    if types[reduced].dtype is DType.f16 and casts:
        value = round_to_half(value)  # the float16 reduction's own rounding, before the casts
    for cast_name, _, cast_attrs, slot in casts:
        value = c_expression(cast_name, [value], cast_attrs, types[slot].dtype)
    out_type = types[casts[-1][3]] if casts else types[reduced]
    post = f"y0 = {to_half(value) if out_type.dtype is DType.f16 else value}"
    return ReductionSource(
        name, _params("x", [ty for _, ty in inputs]), _params("y", [out_type]), map_expr, reduce_expr, post,
        identity(t), t, preamble, attrs.get("axes"), bool(attrs.get("keepdims")),
    )


def epilogue_kernels(op: Op) -> GroupKernels:
    """A ``fused.matmul``: the GEMM's operands, and the epilogue as elementwise kernels (one per result shape) reading the product."""
    body = _group_body(op)
    (_, (a, b), _, product), *epilogue = body.ops
    direct = tuple(i for i, s in enumerate(body.outputs) if s == product)
    inputs = ((product, body.types[product]),) + body.inputs
    epilogue_body = _Body(inputs, tuple(epilogue), body.outputs, body.types)
    rest = [s for s in body.outputs if s != product]
    calls = _elementwise_calls("epilogue", epilogue_body, rest, _positions(body), _structure(op))
    return GroupKernels(tuple(calls), gemm=(a, b), product=product, direct_yields=direct)


def standalone_source(source: ElementwiseSource) -> str:
    """A complete CUDA translation unit around an elementwise body (one thread per element, no broadcasting).

    For checking with NVRTC or nvcc that the generated body is valid CUDA where no GPU (so no CuPy launch) is at hand.
    """
    ins, outs = _declared(source.in_params), _declared(source.out_params)
    params = [f"const {t}* {n}_data" for t, n in ins] + [f"{t}* {n}_data" for t, n in outs] + ["long long n"]
    lines = [source.preamble, f'extern "C" __global__ void {source.name}({", ".join(params)}) {{',
             "    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;", "    if (i >= n) return;"]
    lines += [f"    const {t} {n} = {n}_data[i];" for t, n in ins] + [f"    {t}& {n} = {n}_data[i];" for t, n in outs]
    return "\n".join(lines + ["    " + line for line in source.body.splitlines()] + ["}"]) + "\n"


def _declared(params: str) -> list[tuple[str, str]]:
    """``"float32 x0, int64 x1, float16 x2"`` -> ``[("float", "x0"), ("long long", "x1"), ("__half", "x2")]``."""
    by_name = {name: STORAGE_TYPES[dtype] for dtype, name in CUPY_TYPES.items()}
    return [(by_name[kind], name) for kind, name in (p.split() for p in params.split(", ") if p)]
