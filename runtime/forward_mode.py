"""``kiln.vjp`` and ``kiln.jvp``: vector-Jacobian and Jacobian-vector products (JAX's and torch.func's).

```python
out, vjp_fn = kiln.vjp(lambda x, w: (x @ w).tanh(), x, w)
dx, dw = vjp_fn(np.ones_like(out))                          # u^T J, one cotangent per primal
out, tangent = kiln.jvp(lambda x: x.sin() * x, (x,), (v,))  # J v
```

Both work on arrays (trace, compile, run) and on traced Tensors (inside ``kiln.compile``, ``kiln.grad``,
``kiln.vmap``, a training step), where they trace into the graph being built, so they nest with every other
transformation. Primals may be tuples and lists of arrays; results nest as ``fn``'s do. ``fn`` sees fresh aliases of
the primals: a value it closes over is a constant to the product even if it was computed from a primal, as in JAX.

**vjp.** Traced, ``fn`` is traced into the graph and ``vjp_fn(u)`` appends its backward seeded with ``u``: one
backward walk for all the outputs with a cotangent (``differentiate_outputs``), so ops the outputs share are
differentiated once, not once per output. On arrays, the outputs come from one compiled graph, and ``vjp_fn``
compiles ``(primals, u) -> u^T J`` on its first call (that graph recomputes the forward; no residuals are kept
between the calls).

**jvp, by transposing the VJP.** kiln has no tangent rule per op; it has a VJP rule per op, each written in
differentiable ops. ``u -> J^T u`` is linear in ``u``, so ``J v = d/du <J^T u, v>``: jvp traces ``fn``, its backward
seeded with a placeholder cotangent ``u`` (zeros), and differentiates that backward once more with respect to ``u``,
seeded with ``v`` (JAX's ``linear_transpose`` of ``vjp``). The result is exact (the same ops, no differencing), every op
with a VJP rule gets forward mode for free, and an op whose VJP rule uses an op without one fails at trace time naming
it. Cost: the placeholder backward does not reach ``J v`` (the transpose of a rule linear in ``g`` reads the forward's
values, never ``g``), so dead-code elimination drops it, and what is left is the forward-mode graph itself: for a
3-layer tanh MLP ``J v`` compiles to ``tanh'(h3) * ((tanh'(h2) * ((tanh'(h1) * (v W1)) W2)) W3)`` after the forward, 22
ops with 6 matmuls, as many matmuls as its gradient (26 ops) and twice its forward's (9 ops, 3 matmuls). Unlike
JAX's one-pass forward mode, the primal and the tangent are not interleaved: the forward's values the tangent reads
(``tanh'(h)``) stay alive until the tangent is done, as a gradient's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.compiler.autodiff.differentiate import differentiate_outputs
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import format_shape
from kiln.frontend.op_dispatch import to_value
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, as_value, located_error
from kiln.runtime.pytree import Structure, flatten, unflatten
from kiln.runtime.eager_transforms import on_eager_tensors
from kiln.runtime.traced_transform import Compiled, TracedTransform, writes_suppressed


@dataclass
class Traced:
    """``fn`` traced on aliases of its primals: what its VJP and JVP differentiate."""

    primals: list[Value]
    """The aliases ``fn`` read, one per primal leaf: the values the products differentiate with respect to."""
    primal_structure: Structure
    outputs: list[Tensor]
    output_structure: Structure
    aux: Any


def trace_fn(fn: Callable[..., Any], primals: Sequence[Any], has_aux: bool, who: str) -> Traced:
    """Trace ``fn(*primals)`` into the graph being built, on fresh aliases of the (floating-point) primals."""
    builder = TraceContext.current().builder
    leaves, structure = flatten(tuple(primals))
    aliases = [alias(builder, _primal(leaf, index, who).value) for index, leaf in enumerate(leaves)]
    result = fn(*unflatten(structure, [Tensor(value) for value in aliases]))
    aux = None
    if has_aux:
        if not isinstance(result, tuple) or len(result) != 2:
            raise located_error(f"{who}(..., has_aux=True) needs fn to return a pair (output, aux), got {type(result).__name__}")
        result, aux = result
    outputs, output_structure = flatten(result)
    # the caller's handles stay valid after a vjp_fn call expands the composite (without a VJP rule) that made one
    outputs = [Tensor(alias(builder, as_value(output, f"{who}: fn's result"))) for output in outputs]
    return Traced(aliases, structure, outputs, output_structure, aux)


def replay_fn(fn: Callable[..., Any], primals: Sequence[Any], has_aux: bool, who: str) -> Traced:
    """``fn`` traced again for its pullback (``vjp_fn`` recomputes the forward it walks back through): the in-place
    writes ``fn`` records there (BatchNorm's running statistics) were made by the forward already, so they are
    dropped, and land once, as torch's (its ``vjp_fn`` reuses the forward's graph and runs no forward)."""
    with writes_suppressed():
        return trace_fn(fn, primals, has_aux, who)


def _primal(leaf: Any, index: int, who: str) -> Tensor:
    """A primal as a tensor of the graph being built: an eager tensor (a closure's parameters dict: the NTK's
    ``vjp(func_x1, params)`` inside ``vmap``) as the trace's value for it, as any operand; an array as a constant."""
    context = TraceContext.current()
    tensor = Tensor(to_value(context, leaf, None)) if isinstance(leaf, Tensor) else Tensor(context.builder.constant(np.asarray(leaf)))
    if not tensor.dtype.is_float:
        raise located_error(f"{who} differentiates floating-point inputs only, but primal {index} is {tensor.type}; close "
                            "fn over integer inputs instead (lambda x: fn(x, labels))")
    return tensor


def alias(builder: Builder, value: Value) -> Value:
    """``value`` under a new name (a same-shape broadcast, which canonicalize removes after autodiff). Differentiating
    with respect to an alias sees only the uses made of it, not other uses of the primal in the enclosing trace; and an
    alias of a result stays a valid handle when autodiff expands the composite that produced ``value`` in place
    (``nn.layer_norm_grad`` has no VJP rule: ``differentiate`` replaces it by its primitives, follows the replacement
    itself, but ``value`` is then produced by nothing, and a Tensor the caller holds on it would dangle)."""
    return builder.broadcast_to(value, shape=value.type.shape)


def pull_back(graph: Graph, outputs: Sequence[Value], cotangents: Sequence[Value | None], wrt: Sequence[Value]) -> list[Value]:
    """``sum_k u_k^T J_k`` for each of ``wrt``, from one backward walk seeded with every cotangent ``u_k`` that is not
    ``None`` (integer outputs have none); zeros when none is."""
    seeded = [(output, cotangent) for output, cotangent in zip(outputs, cotangents) if cotangent is not None]
    return differentiate_outputs(graph, [output for output, _ in seeded], wrt, [cotangent for _, cotangent in seeded])


def zeros(builder: Builder, like: Value) -> Value:
    return builder.broadcast_to(builder.constant(0, like.type.dtype), shape=like.type.shape)


def check_like(given: Sequence[Any], expected: Sequence[Value], given_structure: Structure, expected_structure: Structure,
               what: str, of: str, who: str) -> list[Value]:
    """``given`` (Tensors or arrays, made constants) as values of exactly ``expected``'s nesting, shapes and dtypes."""
    if given_structure != expected_structure:
        raise located_error(f"{who}: the {what}s must nest as the {of} do ({len(expected)} arrays), got {len(given)} "
                            f"array(s) nested differently")
    builder, values = TraceContext.current().builder, []
    for index, (item, like) in enumerate(zip(given, expected)):
        value = to_value(TraceContext.current(), item, None) if isinstance(item, Tensor) else builder.constant(np.asarray(item))
        if value.type.shape != like.type.shape or value.type.dtype != like.type.dtype:
            raise located_error(f"{who}: {what} {index} is {format_shape(value.type.shape)} {value.type.dtype.name}, but "
                                f"its {of[:-1]} is {format_shape(like.type.shape)} {like.type.dtype.name}; each must have "
                                f"the same shape and dtype")
        values.append(value)
    return values


def vjp_function(traced: Traced, who: str = "kiln.vjp",
                 retrace: Callable[[], Traced] | None = None) -> Callable[[Any], tuple[Any, ...]]:
    """``vjp_fn(cotangents)``: the primals' cotangents (a tuple, one entry per primal), traced into the current graph.
    Called inside another trace than the one that made it (``vmap(get_ntk_slice)`` in the torch.func NTK tutorial:
    the cotangents are the inner trace's), ``fn`` is traced again there by ``retrace``, so the pullback walks a graph
    that holds its ops."""
    made_in = TraceContext.current().graph

    def vjp_fn(cotangents: Any) -> tuple[Any, ...]:
        here = traced if retrace is None or TraceContext.current().graph is made_in else retrace()
        return _pulled(here, cotangents, who)

    return vjp_fn


def _pulled(traced: Traced, cotangents: Any, who: str) -> tuple[Any, ...]:
    """``traced``'s primals' cotangents for ``cotangents``, nested as its primals."""
    output_values = [output.value for output in traced.outputs]
    leaves, structure = flatten(cotangents)
    seeds = check_like(leaves, output_values, structure, traced.output_structure, "cotangent", "outputs", who)
    seeds = [seed if seed.type.dtype.is_float else None for seed in seeds]  # integer outputs have no cotangent
    grads = pull_back(TraceContext.current().graph, output_values, seeds, traced.primals)
    return tuple(unflatten(traced.primal_structure, [Tensor(g) for g in grads]))


def trace_vjp(fn: Callable[..., Any], primals: Sequence[Any], has_aux: bool) -> Any:
    traced = trace_fn(fn, primals, has_aux, "kiln.vjp")
    outputs = unflatten(traced.output_structure, traced.outputs)
    vjp_fn = vjp_function(traced, retrace=lambda: replay_fn(fn, primals, has_aux, "kiln.vjp"))
    return (outputs, vjp_fn) + ((traced.aux,) if has_aux else ())


def trace_jvp(fn: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool) -> Any:
    """``(fn(*primals), J v)``: the backward seeded with a placeholder ``u``, then differentiated w.r.t. ``u`` along ``v``."""
    context = TraceContext.current()
    traced = trace_fn(fn, primals, has_aux, "kiln.jvp")
    tangent_leaves, tangent_structure = flatten(tuple(tangents))
    directions = check_like(tangent_leaves, traced.primals, tangent_structure, traced.primal_structure, "tangent", "primals", "kiln.jvp")
    builder = Builder(context.graph, location="jvp")
    outputs = [output.value for output in traced.outputs]
    placeholders = [zeros(builder, out) if out.type.dtype.is_float else None for out in outputs]
    transposed = pull_back(context.graph, outputs, placeholders, traced.primals)  # J^T u, linear in u
    wanted = [u for u in placeholders if u is not None]
    pushed = iter(pull_back(context.graph, transposed, directions, wanted) if wanted else [])  # d/du <J^T u, v> = J v
    tangents_out = [Tensor(next(pushed) if u is not None else zeros(builder, out)) for u, out in zip(placeholders, outputs)]
    result = (unflatten(traced.output_structure, traced.outputs), unflatten(traced.output_structure, tangents_out))
    return result + ((traced.aux,) if has_aux else ())


@dataclass
class _Transform(TracedTransform):
    """One of this module's products on arrays: traced, compiled and run once per call signature."""

    fn: Callable[..., Any]
    has_aux: bool
    trace: Callable[..., Any]
    name: str
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], Compiled] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name_after(self.fn, self.name)

    def trace_into(self, *args: Any) -> Any:
        return self.trace(self, *args)


def _forward(transform: _Transform, *primals: Any) -> Any:
    traced = trace_fn(transform.fn, primals, transform.has_aux, "kiln.vjp")
    outputs = unflatten(traced.output_structure, traced.outputs)
    return (outputs, traced.aux) if transform.has_aux else outputs


def _pullback(transform: _Transform, primals: tuple[Any, ...], cotangents: Any) -> tuple[Any, ...]:
    return vjp_function(replay_fn(transform.fn, primals, transform.has_aux, "kiln.vjp"))(cotangents)


def _pushforward(transform: _Transform, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> Any:
    return trace_jvp(transform.fn, primals, tangents, transform.has_aux)


def vjp(fn: Callable[..., Any], *primals: Any, has_aux: bool = False, backend: str = "numpy") -> Any:
    """``(fn(*primals), vjp_fn)`` (and ``aux`` with ``has_aux``): ``vjp_fn(u)`` is ``u^T J``, a tuple with one
    cotangent per primal, for ``u`` nested as ``fn``'s outputs."""
    leaves = flatten(primals)[0]
    if any(isinstance(leaf, Tensor) for leaf in leaves) and not on_eager_tensors(leaves):
        return trace_vjp(fn, primals, has_aux)
    result = _Transform(fn, has_aux, _forward, "vjp", backend)(*primals)
    outputs, aux = result if has_aux else (result, None)
    pullback = _Transform(fn, has_aux, _pullback, "vjp", backend)  # compiled on vjp_fn's first call, then reused
    return (outputs, lambda cotangents: pullback(primals, cotangents)) + ((aux,) if has_aux else ())


def jvp(fn: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool = False,
        backend: str = "numpy") -> Any:
    """``(fn(*primals), J v)`` (and ``aux`` with ``has_aux``) for tangents ``v`` nested as ``primals``, each of its
    primal's shape and dtype; the tangent outputs nest as ``fn``'s outputs."""
    for what, items in (("primals", primals), ("tangents", tangents)):
        if not isinstance(items, (tuple, list)):
            raise located_error(f"kiln.jvp takes the {what} as a tuple or list (one entry per argument of fn), got "
                                f"{type(items).__name__}; write kiln.jvp(fn, (x,), (v,))")
    return _Transform(fn, has_aux, _pushforward, "jvp", backend)(tuple(primals), tuple(tangents))
