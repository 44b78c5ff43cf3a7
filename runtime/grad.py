"""``kiln.grad(fn)``: the gradient of a scalar function, composable with itself (JAX's ``grad``).

```python
d2 = kiln.grad(lambda x: kiln.grad(lambda y: (y.tanh() * y).sum())(x).sum())
d2(np.linspace(-1, 1, 5))          # arrays in, arrays out: traced and compiled once per signature
```

Called on traced Tensors (inside another ``grad``, a compiled function or a
training step), ``grad(fn)`` traces ``fn`` into the graph being built and
appends its backward ops there; the outer transformation then differentiates
those ops like any others, which is why every VJP rule is written in
differentiable ops. Called on arrays, it traces, compiles and runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.autodiff.differentiate import AutodiffError, differentiate
from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, TraceContext, trace_context
from kiln.runtime.executable import Executable


@dataclass
class GradFunction:
    """``fn``'s gradient with respect to the arguments at ``argnums`` (and its value, with ``with_value``)."""

    fn: Callable[..., Any]
    argnums: tuple[int, ...] = (0,)
    with_value: bool = False
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], tuple[Executable, list[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.__wrapped__ = self.fn  # inspect.signature (input names on export) and __name__ see fn's
        self.__name__ = f"grad_{getattr(self.fn, '__name__', 'fn')}"

    def __call__(self, *args: Any) -> Any:
        if any(isinstance(arg, Tensor) for arg in args):
            return self.trace_into(*args)
        return self._run(*args)

    def trace_into(self, *args: Any) -> Any:
        """Emit ``fn`` and its backward into the graph being traced; returns Tensors."""
        value = self.fn(*args)
        if not isinstance(value, Tensor) or value.shape != () or not value.dtype.is_float:
            raise AutodiffError(f"kiln.grad needs fn to return a floating-point scalar Tensor, got {value!r}; reduce it (e.g. .sum())")
        wrt = [_as_tensor(args, index).value for index in self.argnums]
        grads = tuple(Tensor(g) for g in differentiate(TraceContext.current().graph, value.value, wrt))
        result = grads[0] if len(grads) == 1 else grads
        return (value, result) if self.with_value else result

    def _run(self, *args: Any) -> Any:
        arrays = [np.asarray(arg) for arg in args]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        if key not in self.compiled:
            self.compiled[key] = self._compile(arrays)
        executable, parameters = self.compiled[key]
        outputs = [np.asarray(o) for o in executable(*arrays, *[p.data for p in parameters])]
        grads = outputs[1:] if self.with_value else outputs
        result = grads[0] if len(grads) == 1 else tuple(grads)
        return (outputs[0], result) if self.with_value else result

    def _compile(self, arrays: Sequence[np.ndarray]) -> tuple[Executable, list[Any]]:
        specs = [TensorSpec(a.shape, DType.of(a.dtype)) for a in arrays]
        context = trace_context(self.trace_into, *specs, name=self.__name__, what="kiln.grad's result")
        return get_backend(self.backend).compile(context.graph), list(context.parameters)


def _as_tensor(args: Sequence[Any], index: int) -> Tensor:
    if index >= len(args) or not isinstance(args[index], Tensor) or not args[index].dtype.is_float:
        raise AutodiffError(f"kiln.grad: argument {index} must be a floating-point tensor to differentiate with respect to it")
    return args[index]


def grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> GradFunction:
    """The gradient of scalar ``fn`` w.r.t. argument ``argnums`` (a tuple of them for several)."""
    return GradFunction(fn, (argnums,) if isinstance(argnums, int) else tuple(argnums), False, backend)


def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> GradFunction:
    """``(fn(*args), grad(fn)(*args))`` from one graph."""
    return GradFunction(fn, (argnums,) if isinstance(argnums, int) else tuple(argnums), True, backend)
