"""Generates one straight-line Python function for a whole graph.

```python
def graph_train_step(v_x, v_w1, v_b1, v_lr):
    dim_N = v_x.shape[0]
    _pools = _per_thread.__dict__
    _pool = _pools.get((dim_N,))
    if _pool is None:
        _pool = _pools[(dim_N,)] = _allocate((dim_N,))
    b0, b1, = _pool
    np.matmul(v_x, v_0, out=b0)          # fused.matmul: matmul, add, relu
    np.add(b0, v_b1, out=b0)
    np.maximum(b0, 0, out=b1)
    ...
    np.subtract(v_w1, b2, out=v_w1)      # a donated parameter, updated in place
    return (v_loss, v_w1, )
```

With a memory plan (``plan-memory``), every op with an ``out=`` form writes
into a buffer preallocated once per binding of the symbolic dims (and per
thread: calls from two threads at once never share a buffer); a fused op
is its sub-ops' statements, so its intermediates live in reused buffers too.
Without one, each op is one kernel call that allocates its result. Kernels
and constant attributes are bound in the function's namespace, so a call
costs one NumPy call per op and nothing else. Attributes that mention
symbolic dims are emitted as tuple expressions over the bound dims.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from kiln.backends.base import LoweringTable, missing_lowering
from kiln.backends.numpy import out_nn
from kiln.backends.numpy.lowering_losses import cross_entropy_grad_into, softmax_cross_entropy_grad_into
from kiln.backends.numpy.out_kernels import IN_PLACE, OUT_KERNELS, VIEWS, index_expression, row_reduction
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.printer import assign_names, unique_name, print_graph
from kiln.compiler.ir.types import DType, TensorType, dim_factors, dim_value, normalize_axes
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.plan_memory import MemoryPlan, Policy, Region, Step, plan_memory


def generate(graph: Graph, table: LoweringTable) -> tuple[str, dict[str, Any]]:
    """The source of a function computing ``graph`` and the namespace it runs in."""
    names = variable_names(graph)
    namespace: dict[str, Any] = {}
    lines = [f"def {function_name(graph)}({', '.join(names[v] for v in graph.inputs)}):"]
    lines += _bind_symbols(graph, names)
    for index, op in enumerate(graph.ops):
        lines.append("    " + _emit_op(index, op, names, table, graph, namespace))
    outputs = "".join(f"{names[v]}, " for v in graph.outputs)
    lines.append(f"    return ({outputs})")
    return "\n".join(lines) + "\n", namespace


def compile_function(graph: Graph, table: LoweringTable) -> tuple[Any, str]:
    source, namespace = generate(graph, table)
    code = compile(source, f"<kiln:{graph.name}>", "exec")
    exec(code, namespace)
    return namespace[function_name(graph)], source


def function_name(graph: Graph) -> str:
    return "graph_" + re.sub(r"\W", "_", graph.name)


def variable_names(graph: Graph) -> dict[Value, str]:
    """``v_<printed name>`` for every value: valid, unique, and apart from kernel and attribute names."""
    names: dict[Value, str] = {}
    used: set[str] = set()
    for value, printed in assign_names(graph).items():
        names[value] = unique_name("v_" + re.sub(r"\W", "_", printed), used)
    return names


def _bind_symbols(graph: Graph, names: dict[Value, str]) -> list[str]:
    lines, seen = [], set()
    for value in graph.inputs:
        for axis, dim in enumerate(value.type.shape):
            if isinstance(dim, str) and "*" not in dim and dim not in seen:  # products are computed from their symbols
                seen.add(dim)
                lines.append(f"    {symbol_variable(dim)} = {names[value]}.shape[{axis}]")
    return lines


def _emit_op(index: int, op: Op, names: dict[Value, str], table: LoweringTable, graph: Graph, namespace: dict[str, Any]) -> str:
    results = ", ".join(names[r] for r in op.results) + ("," if len(op.results) > 1 else "")
    if op.name == "tensor.constant":
        return f"{results} = {_attr_expression(op.attrs['value'], f'c{index}', namespace)}"
    kernel = table.require(op, graph)
    kernel_name = "k_" + op.name.replace(".", "_")
    namespace[kernel_name] = kernel
    arguments = [names[v] for v in op.operands]
    for key, value in op.attrs.items():
        arguments.append(f"{key}={_attr_expression(value, f'a{index}_{key}', namespace)}")
    return f"{results} = {kernel_name}({', '.join(arguments)})"


def _attr_expression(value: Any, name: str, namespace: dict[str, Any]) -> str:
    """A literal for tuples that contain symbolic dims, else a namespace constant."""
    if isinstance(value, tuple) and (_mentions_symbol(value) or all(type(item) is int for item in value)):
        return "(" + "".join(f"{_dim_expression(item)}, " for item in value) + ")"
    namespace[name] = value
    return name


def _mentions_symbol(value: Any) -> bool:
    return any(isinstance(item, str) or (isinstance(item, tuple) and _mentions_symbol(item)) for item in value)


def _dim_expression(item: Any) -> str:
    if not isinstance(item, str):
        return repr(item)
    factor, symbols = dim_factors(item)
    terms = ([str(factor)] if factor != 1 else []) + [symbol_variable(symbol) for symbol in symbols]
    return terms[0] if len(terms) == 1 else "(" + "*".join(terms) + ")"


def symbol_variable(symbol: str) -> str:
    return f"dim_{symbol}"


# The planned generator: buffers from the memory plan, fused ops as out= statements.


def generate_planned(graph: Graph, table: LoweringTable, plan: MemoryPlan, profile: bool = False) -> tuple[str, dict[str, Any]]:
    """Like ``generate``, with results written into the plan's buffers (see the module docstring). ``profile``: each
    op's wall time goes into the namespace's ``_op_seconds`` list (``Executable.op_times``), for measuring only."""
    emitter = _PlannedEmitter(graph, table, plan)
    lines = [f"def {function_name(graph)}({', '.join(emitter.names[v] for v in graph.inputs)}):"]
    lines += _bind_symbols(graph, emitter.names) + emitter.pool_lines() + (["    _t0 = _clock()"] if profile else [])
    for index, op in enumerate(graph.ops):
        lines += ["    " + line for line in emitter.op_lines(index, op)]
        if profile:
            lines.append(f"    _t1 = _clock(); _op_seconds[{index}] = _t1 - _t0; _t0 = _t1")
    outputs = "".join(f"{emitter.expressions[plan.key_of[v]]}, " for v in graph.outputs)
    lines.append(f"    return ({outputs})")
    return "\n".join(lines) + "\n", emitter.namespace


class _PlannedEmitter:
    """Statement emission for one graph under one memory plan."""

    def __init__(self, graph: Graph, table: LoweringTable, plan: MemoryPlan):
        self.graph, self.table, self.plan = graph, table, plan
        self.names = variable_names(graph)
        self.namespace: dict[str, Any] = {"np": np, "_nn": out_nn}
        self.expressions: dict[Any, str] = {v: self.names[v] for v in graph.inputs}
        self.symbols = _symbols(graph)
        self.summed = batch_summed_matmuls(plan, {plan.key_of[v] for v in graph.outputs})
        self.folded = set(self.summed.values())
        self.concats_with_parts = {region.concat for region in plan.region_of.values()}
        self.loss_of_gradient = losses_with_gradient(plan)
        self.deferred = set(self.loss_of_gradient.values())
        self.packed = packed_transposes(plan)
        self.namespace.update(_softmax_cross_entropy=softmax_cross_entropy_grad_into, _cross_entropy_grad=cross_entropy_grad_into)

    def pool_lines(self) -> list[str]:
        if not self.plan.buffers:
            return []
        self.namespace["_allocate"] = _allocator(self.plan.buffers, self.symbols)
        key = "(" + "".join(f"{symbol_variable(s)}, " for s in self.symbols) + ")"
        unpack = "".join(f"b{i}, " for i in range(len(self.plan.buffers)))
        return ["    _pools = _per_thread.__dict__", f"    _pool = _pools.get({key})", "    if _pool is None:",
                f"        _pool = _pools[{key}] = _allocate({key})", f"    {unpack}= _pool"]

    def op_lines(self, index: int, op: Op) -> list[str]:
        if has_trait(op.name, "fused"):
            lines = [f"# {op.name}: {', '.join(op.attrs['ops'])}"]
            for sub_index in range(len(op.attrs["ops"])):
                lines += self.step_lines(f"{index}_{sub_index}", self.plan.step_by_key[(op, sub_index)])
            return lines
        if len(op.results) == 1:
            return self.step_lines(str(index), self.plan.step_by_key[op.result])
        return self.call_lines(str(index), op.name, [self.expressions[self.plan.key_of[v]] for v in op.operands], op.attrs,
                               list(op.results))

    def step_lines(self, tag: str, step: Step) -> list[str]:
        combined = self.combined_lines(tag, step)
        if combined is not None:
            return combined
        arguments = [self.expressions[key] for key in step.operands]
        if step.kind == "constant":
            self.expressions[step.key] = _attr_expression(step.attrs["value"], f"c{tag}", self.namespace)
            return []
        if step.kind == "opaque" and step.op_name in VIEWS:
            name = self.expressions[step.key] = self.value_name(tag, step.key)
            literal = lambda value: _attr_expression(value, f"a{tag}", self.namespace)  # noqa: E731  (one attribute each)
            rank = self.plan.type_of(step.operands[0]).rank
            view = VIEWS[step.op_name](arguments, step.attrs, literal, rank)
            return [f"{name} = np.ascontiguousarray({view})" if step.key in self.packed else f"{name} = {view}"]
        if step.kind == "opaque":
            return self.call_lines(tag, step.op_name, arguments, step.attrs, [step.key])
        out, lines = self.storage(tag, step)
        self.expressions[step.key] = out
        specialized = self.shape_specialized_lines(step, arguments, out)
        return lines + (OUT_KERNELS[step.op_name](arguments, out, step.attrs) if specialized is None else specialized)

    def shape_specialized_lines(self, step: Step, arguments: list[str], out: str) -> list[str] | None:
        """Faster statements for some operand types: row sums as a GEMV, a stack of matrices times a matrix as one GEMM."""
        if self.reduces_rows(step):
            width = self.plan.type_of(step.operands[0]).shape[-1]
            return row_reduction(arguments[0], out, width, step.op_name == "tensor.reduce_mean")
        split = self.leading_axes_split(step)
        if split is not None:
            (leading, rest), keep = split, bool(step.attrs["keepdims"])
            inner = f"np.add.reduce({arguments[0]}, axis={leading!r}, keepdims={keep})"
            return [f"np.add.reduce({inner}, axis={rest!r}, keepdims={keep}, out={out})"]
        if step.op_name == "tensor.matmul" and self.plan.type_of(step.operands[0]).rank > 2 and self.plan.type_of(step.operands[1]).rank == 2:
            return [f"_nn.stacked_matmul_into({arguments[0]}, {arguments[1]}, {out})"]
        if step.op_name == "tensor.concat" and step.key in self.concats_with_parts:
            return self.concat_rest_lines(step, arguments, out)
        if self.selects_or_zero(step):
            bits = f"np.int{8 * step.type.dtype.numpy.itemsize}"
            return [f"np.bitwise_and({arguments[1]}.view({bits}), np.negative({arguments[0]}, dtype={bits}), out={out}.view({bits}))"]
        return None

    def concat_rest_lines(self, step: Step, arguments: list[str], out: str) -> list[str]:
        """A concat some of whose operands were computed into their parts of ``out``: copy only the others."""
        axis, start, lines = step.attrs["axis"] % step.type.rank, 0, []
        for key, argument in zip(step.operands, arguments):
            stop = start + self.plan.type_of(key).shape[axis]
            if not self.is_part_of(key, step.key):
                lines.append(f"np.copyto({index_expression(out, {axis: f'{start}:{stop}'}, step.type.rank)}, {argument})")
            start = stop
        return lines

    def is_part_of(self, operand: Any, concat: Any) -> bool:
        """``operand`` of ``concat`` was computed into its part of the concat's buffer (itself, or what it expands)."""
        step = self.plan.step_by_key.get(operand)
        if operand not in self.plan.region_of and step is not None and step.op_name == "tensor.expand_dims":
            operand = step.operands[0]
        region = self.plan.region_of.get(operand)
        return region is not None and region.concat == concat

    def selects_or_zero(self, step: Step) -> bool:
        """``where(c, x, 0)`` with ``x`` and ``c`` of the result's shape: ``x``'s bits AND a mask of all-ones where ``c``
        (``lowering_conv._kept``'s trick, written into the planned buffer): exact where a multiply by the mask turns an
        inf or NaN into NaN, branch-free where ``np.where`` is 4-15x slower. Same-size ints view any float array."""
        if step.op_name != "tensor.where" or step.type.dtype not in (DType.f32, DType.f64):
            return False
        condition, x, y = step.operands
        zero = self.plan.step_by_key.get(y)
        return zero is not None and zero.kind == "constant" and zero.type.rank == 0 and not np.any(zero.attrs["value"]) \
            and self.plan.type_of(x) == step.type and self.plan.type_of(condition).shape == step.type.shape

    def leading_axes_split(self, step: Step) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """A float sum over the leading axes and some later ones (a convolution's bias gradient sums ``(0, 2, 3)``):
        the axes of the leading run first, a contiguous reduction of whole rows, then the others over that small
        result (as the second reduction's axes). NumPy's one reduction over all of them ran 4-9x slower on W5's
        shapes; the sum's order changes, as between any two summation orders."""
        if step.op_name != "tensor.reduce_sum" or step.attrs["axes"] is None:
            return None
        x = self.plan.type_of(step.operands[0])
        axes = normalize_axes(step.attrs["axes"], x.rank)
        count = next((k for k in range(len(axes) + 1) if k not in axes), len(axes))
        if not x.dtype.is_float or count == 0 or count == len(axes):
            return None
        shift = 0 if step.attrs["keepdims"] else count
        return tuple(range(count)), tuple(axis - shift for axis in sorted(axes) if axis >= count)

    def reduces_rows(self, step: Step) -> bool:
        """A float sum or mean over just the last (static) axis: ``row_reduction`` (contiguity is checked at run time)."""
        if step.op_name not in ("tensor.reduce_sum", "tensor.reduce_mean") or step.attrs["axes"] is None:
            return False
        x = self.plan.type_of(step.operands[0])
        return x.dtype.is_float and x.rank >= 2 and isinstance(x.shape[-1], int) and x.shape[-1] > 1 \
            and normalize_axes(step.attrs["axes"], x.rank) == (x.rank - 1,)

    def combined_lines(self, tag: str, step: Step) -> list[str] | None:
        """Steps computed together with another one (``batch_summed_matmuls``, ``losses_with_gradient``), else None."""
        if step.key in self.folded or step.key in self.deferred:
            return []  # computed with the reduce_sum that follows, or with the loss's gradient
        if step.key in self.loss_of_gradient:
            return self.loss_with_gradient_lines(tag, step, self.plan.step_by_key[self.loss_of_gradient[step.key]])
        if step.key in self.summed:
            out, lines = self.storage(tag, step)
            self.expressions[step.key] = out
            a, b = (self.expressions[key] for key in self.plan.step_by_key[self.summed[step.key]].operands)
            return lines + [f"_nn.batch_summed_matmul_into({a}, {b}, {out})"]
        return None

    def loss_with_gradient_lines(self, tag: str, gradient: Step, loss: Step) -> list[str]:
        out, lines = self.storage(tag, gradient)
        self.expressions[gradient.key] = out
        name = self.expressions[loss.key] = self.value_name(f"{tag}_loss", loss.key)
        arguments = [self.expressions[key] for key in gradient.operands]
        for key, value in loss.attrs.items():
            arguments.append(f"{key}={_attr_expression(value, f'a{tag}_loss_{key}', self.namespace)}")
        return lines + [f"{name} = _softmax_cross_entropy({', '.join(arguments)}, out={out})"]

    def storage(self, tag: str, step: Step) -> tuple[str, list[str]]:
        """Where ``step`` writes: its buffer, its part of a concat's buffer, a donated input, or a fresh array (a graph
        output)."""
        if step.key in self.plan.region_of:
            name = self.value_name(tag, step.key)
            return name, [f"{name} = {region_expression(self.plan, self.plan.region_of[step.key])}"]
        if step.key in self.plan.buffer_of:
            return f"b{self.plan.buffer_of[step.key]}", []
        if step.key in self.plan.donated:
            return self.names[self.graph.inputs[self.plan.donated[step.key]]], []
        name = self.value_name(tag, step.key)
        shape = "(" + "".join(f"{_dim_expression(d)}, " for d in step.type.shape) + ")"
        return name, [f"{name} = np.empty({shape}, {step.type.dtype.numpy.name!r})"]

    def call_lines(self, tag: str, op_name: str, arguments: list[str], attrs: dict[str, Any], keys: list[Any]) -> list[str]:
        kernel = self.table.get(op_name)
        if kernel is None:
            op = next((o for o in self.graph.ops if o.name == op_name), None)
            raise missing_lowering(self.table.backend, op or Op(op_name, [], []), self.graph, self.table.names())
        kernel_name = "k_" + op_name.replace(".", "_")
        self.namespace[kernel_name] = kernel
        for key, value in attrs.items():
            arguments = arguments + [f"{key}={_attr_expression(value, f'a{tag}_{key}', self.namespace)}"]
        names = [self.value_name(f"{tag}_{i}", key) for i, key in enumerate(keys)]
        for key, name in zip(keys, names):
            self.expressions[key] = name
        results = ", ".join(names) + ("," if len(names) > 1 else "")
        return [f"{results} = {kernel_name}({', '.join(arguments)})"]

    def value_name(self, tag: str, key: Any) -> str:
        return self.names[key] if isinstance(key, Value) else f"s{tag}"


def region_expression(plan: MemoryPlan, region: Region) -> str:
    """The view of the concat's buffer that a ``Region`` names: ``b3[5]`` (a stacked value) or ``b3[:, 4:8]``."""
    part = f"{region.start}" if region.squeezed else f"{region.start}:{region.stop}"
    return index_expression(f"b{plan.buffer_of[region.concat]}", {region.axis: part}, plan.type_of(region.concat).rank)


def batch_summed_matmuls(plan: MemoryPlan, outputs: set[Any]) -> dict[Any, Any]:
    """``reduce_sum`` key -> the batched ``matmul`` right before it that only it reads, for ``sum_n a[n] @ b[n]``.

    That is how a weight's gradient looks under a batch of sequences (``(N, T, K)`` inputs); one 2-D matmul over
    the stacked rows computes it, one GEMM instead of N plus a reduction (25% faster on W4's shapes).
    """
    readers = Counter(operand for step in plan.steps for operand in step.operands)
    found = {}
    for before, step in zip(plan.steps, plan.steps[1:]):
        if _sums_batch(step) and step.operands[0] == before.key and _plain_batched_matmul(plan, before) \
                and readers[before.key] == 1 and before.key not in outputs:
            found[step.key] = before.key
    return found


PACKED_TRANSPOSE_READERS = 4
"""A transposed matrix read as the right operand of at least this many matmuls is copied row-major once."""


def packed_transposes(plan: MemoryPlan) -> set[Any]:
    """Keys of 2-D transposes (``w.T``) that enough matmuls read as their right operand to be worth one row-major copy.

    An unrolled RNN reads ``w_hh.T`` at every time step. OpenBLAS's ``A @ B.T`` (B transposed) ran 1.3-1.8x slower than
    with B row-major at the small row counts of a recurrence (32 x 128 by 128 x 512: 59 against 38 us); 64 such
    products took 3.6 ms with the view, 2.5 ms after one 63 us copy. At large row counts the two run alike, and the
    copy costs about three of the small products' difference: hence the reader threshold.
    """
    readers = Counter(step.operands[1] for step in plan.steps if step.op_name == "tensor.matmul" and len(step.operands) == 2)
    return {step.key for step in plan.steps if step.op_name == "tensor.transpose" and step.kind == "opaque"
            and step.type.rank == 2 and readers[step.key] >= PACKED_TRANSPOSE_READERS}


def losses_with_gradient(plan: MemoryPlan) -> dict[Any, Any]:
    """``nn.cross_entropy_grad`` key -> the ``nn.cross_entropy`` of the same operands before it, when nothing reads the
    loss before the graph returns and its operands are still intact at the gradient: both then come from one kernel
    that shares the max, exp and sum (``softmax_cross_entropy_grad_into``)."""
    readers = Counter(operand for step in plan.steps for operand in step.operands)
    losses: dict[Any, Step] = {}
    found = {}
    for index, step in enumerate(plan.steps):
        if step.op_name == "nn.cross_entropy" and step.kind == "opaque" and readers[step.key] == 0:
            losses.setdefault(tuple(step.operands), step)
        elif step.op_name == "nn.cross_entropy_grad" and step.kind == "buffer" and _loss_operands(step) in losses:
            loss = losses.pop(_loss_operands(step))
            if loss.attrs == step.attrs and all(_intact_until(plan, key, index) for key in loss.operands):
                found[step.key] = loss.key
    return found


def _loss_operands(gradient: Step) -> tuple[Any, ...]:
    """The loss's operands (logits, target, the class weight if any): the gradient's without its cotangent, the third."""
    return tuple(gradient.operands[:2]) + tuple(gradient.operands[3:])


def _intact_until(plan: MemoryPlan, key: Any, index: int) -> bool:
    """No step overwrites the storage of ``key`` before step ``index``: a graph input nothing is written into, or live till then."""
    donated = set(plan.donated.values())
    return all((root in plan.inputs and plan.inputs.index(root) not in donated) or plan.last_use.get(root, -1) >= index
               for root in plan.roots[key])


def _sums_batch(step: Step) -> bool:
    axes = step.attrs.get("axes")
    return step.op_name == "tensor.reduce_sum" and step.kind == "buffer" and axes is not None \
        and tuple(np.atleast_1d(axes)) == (0,) and not step.attrs["keepdims"]


def _plain_batched_matmul(plan: MemoryPlan, step: Step) -> bool:
    """A matmul of two rank-3 operands with the same batch dim (no broadcasting) into a plannable buffer."""
    if step.op_name != "tensor.matmul" or step.kind != "buffer" or step.type.rank != 3:
        return False
    a, b = (plan.type_of(key) for key in step.operands)
    return a.rank == b.rank == 3 and a.shape[0] == b.shape[0]


def _symbols(graph: Graph) -> list[str]:
    seen: list[str] = []
    for value in graph.inputs:
        seen += [d for d in value.type.symbols if d not in seen]
    return seen


def _allocator(buffers: list[TensorType], symbols: list[str]):
    """``allocate(dims)``: one array per planned buffer for these values of the symbolic dims."""

    def allocate(dims: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        bound = dict(zip(symbols, dims))
        return tuple(np.empty(tuple(dim_value(d, bound) for d in t.shape), t.dtype.numpy) for t in buffers)

    return allocate


def compile_planned(graph: Graph, table: LoweringTable, donations: dict[int, int],
                    profile: bool = False) -> tuple[Any, str, list[float] | None]:
    """Plan, generate and compile; a graph that prints the same as an earlier one reuses its code (fresh buffers).
    Returns the function, its source and, in a profiling build, the list its calls write each op's seconds into.

    Sets ``graph.memory_plan`` (the plan the code follows; from the first such graph on a cache hit).
    """
    key = (print_graph(graph), tuple(sorted(donations.items())), id(table), profile)
    if key not in _CODE_CACHE:
        plan = plan_memory(graph, numpy_policy(), donations)
        source, namespace = generate_planned(graph, table, plan, profile)
        _CODE_CACHE[key] = (source, namespace, compile(source, f"<kiln:{graph.name}>", "exec"), plan)
    source, template, code, graph.memory_plan = _CODE_CACHE[key]  # type: ignore[attr-defined]
    namespace = {**template, "_per_thread": threading.local()}  # buffers per thread: concurrent calls never share one
    op_seconds = [0.0] * len(graph.ops) if profile else None
    namespace.update(_clock=time.perf_counter, _op_seconds=op_seconds)
    exec(code, namespace)
    return namespace[function_name(graph)], source, op_seconds


_CODE_CACHE: dict[tuple[Any, ...], tuple[str, dict[str, Any], Any, MemoryPlan]] = {}
"""Generated code by graph text: compiling the same model again costs a lookup (and an ``exec``)."""


def numpy_policy() -> Policy:
    """What the planned generator can do: ops with an ``out=`` emitter write into buffers."""
    return Policy(writes_into=OUT_KERNELS.__contains__, in_place=IN_PLACE.__contains__, concat_regions=True)
