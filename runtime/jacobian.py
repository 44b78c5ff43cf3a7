"""``kiln.jacrev``, ``kiln.jacfwd`` and ``kiln.hessian``: whole Jacobians as one batched graph (JAX's and torch.func's).

```python
kiln.jacrev(lambda x: x.tanh() * x.sum())(np.ones(3))      # (3, 3): d out_i / d x_j
kiln.hessian(lambda x: (x.sin() * x).sum())(np.ones(3))    # (3, 3)
```

The Jacobian of ``out = fn(x)`` holds one vector-Jacobian product per element
of ``out``: ``J[i] = e_i^T J``. ``jacrev`` traces ``fn`` and its backward with
the cotangent ``e_i`` as an input, then ``kiln.vmap`` batches that pullback over
the rows of the identity: one graph computes every row at once. The result has
the output's shape followed by the input's (``out.shape + x.shape``).

kiln has no forward mode: ``jacfwd`` computes the same matrix the same way,
by reverse-mode products, so it exists for code written against JAX or
torch.func and costs one backward per output element, not one forward per input
element. ``hessian(fn)`` is ``jacrev(grad(fn))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.compiler.autodiff.differentiate import AutodiffError, differentiate
from kiln.compiler.ir.types import TensorType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from kiln.runtime.grad import _as_tensor, grad
from kiln.runtime.pytree import Structure, flatten, unflatten
from kiln.runtime.traced_transform import Compiled, TracedTransform
from kiln.runtime.vmap import detach, inner_context, vmap


@dataclass
class JacobianFunction(TracedTransform):
    """The Jacobian of ``fn``'s results with respect to the arguments at ``argnums``."""

    fn: Callable[..., Any]
    argnums: int | tuple[int, ...] = 0
    name: str = "jacrev"
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], Compiled] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.__wrapped__ = self.fn
        self.__name__ = f"{self.name}_{getattr(self.fn, '__name__', 'fn')}"

    def trace_into(self, *args: Any) -> Any:
        """Emit every row's VJP, batched, into the graph being traced; returns the Jacobian Tensors."""
        types, structure = output_types(self.fn, args)
        jacobians = [self._jacobian(args, index, out_type) for index, out_type in enumerate(types)]
        return unflatten(structure, jacobians)

    def _jacobian(self, args: Sequence[Any], index: int, out_type: TensorType) -> Any:
        """Output ``index``'s Jacobian: one ``out.shape + x.shape`` Tensor per argument (one Tensor for an int argnums)."""
        argnums = (self.argnums,) if isinstance(self.argnums, int) else tuple(self.argnums)
        rows = vmap(self._pullback(index, argnums), in_axes=(0,) + (None,) * len(args))(identity(out_type), *args)
        jacobians = tuple(row.reshape(out_type.shape + args[j].shape) for row, j in zip(rows, argnums))
        return jacobians[0] if isinstance(self.argnums, int) else jacobians

    def _pullback(self, index: int, argnums: tuple[int, ...]) -> Callable[..., tuple[Tensor, ...]]:
        def pullback(cotangent: Tensor, *primals: Any) -> tuple[Tensor, ...]:
            # e^T J: the backward of fn's output `index` seeded with the cotangent e
            out = flatten(self.fn(*primals))[0][index]
            wrt = [_as_tensor(primals, j).value for j in argnums]
            return tuple(Tensor(g) for g in differentiate(TraceContext.current().graph, out.value, wrt, seed=cotangent.value))

        return pullback


def output_types(fn: Callable[..., Any], args: Sequence[Any]) -> tuple[list[TensorType], Structure]:
    """The types of ``fn(*args)``'s results and their nesting, from a trace into a scratch graph (then dropped)."""
    probe = inner_context(TraceContext.current(), "probe")
    with probe:
        inputs = [Tensor(probe.graph.add_input(arg.type)) if isinstance(arg, Tensor) else arg for arg in args]
        leaves, structure = flatten(fn(*inputs))
    detach(probe.graph)
    for leaf in leaves:
        if not isinstance(leaf, Tensor) or not leaf.dtype.is_float or not leaf.type.is_static:
            raise AutodiffError(f"kiln.jacrev needs fn to return floating-point Tensors of static shapes, got {leaf!r}")
    return [leaf.type for leaf in leaves], structure


def identity(out_type: TensorType) -> Tensor:
    """The cotangents ``e_i``, one per element of the output: ``(n,) + out.shape``."""
    count = int(np.prod(out_type.shape, dtype=np.int64))
    basis = np.eye(count, dtype=out_type.dtype.numpy).reshape((count,) + out_type.shape)
    return Tensor(TraceContext.current().builder.constant(basis))


def jacrev(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> JacobianFunction:
    """The Jacobian of ``fn`` w.r.t. argument ``argnums`` (a tuple of Jacobians for a tuple), by reverse mode."""
    return JacobianFunction(fn, argnums if isinstance(argnums, int) else tuple(argnums), "jacrev", backend)


def jacfwd(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> JacobianFunction:
    """``jacrev``'s Jacobian under JAX's forward-mode name: kiln has no forward mode, so it is computed by reverse-mode
    products (one per output element) and equals ``jacrev(fn, argnums)`` exactly."""
    return JacobianFunction(fn, argnums if isinstance(argnums, int) else tuple(argnums), "jacfwd", backend)


def hessian(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> JacobianFunction:
    """The Hessian of scalar ``fn``: ``jacrev(grad(fn, argnums), argnums)``, shape ``x.shape + x.shape``
    (nested tuples ``H[i][j]`` for a tuple ``argnums``)."""
    return jacrev(grad(fn, argnums, backend), argnums, backend)
