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
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.types import DType
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.module import Module, Parameter
from kiln.frontend.optim import Optimizer
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, TraceContext, trace_context
from kiln.runtime.eager_transform_replay import needs_chain, replayed_transform
from kiln.runtime.eager_transforms import as_eager, on_eager_tensors
from kiln.runtime.batch_dims import batch_signature, batch_specs
from kiln.runtime.executable import Executable
from kiln.runtime.forward_mode import alias
from kiln.runtime.pytree import Structure, flatten, unflatten
from kiln.runtime.step_graph import GradientOptions, _trace_loss, transform_gradients
from kiln.runtime.train_step import DEFAULT_PIPELINE, collection_paused
from kiln.frontend.autocast import autocast_signature


@dataclass
class GradFunction:
    """``fn``'s gradient with respect to the arguments at ``argnums`` (and its value, with ``with_value``)."""

    fn: Callable[..., Any]
    argnums: tuple[int, ...] = (0,)
    with_value: bool = False
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], tuple[Executable, list[Any], Structure]] = field(default_factory=dict)
    single: bool = True
    """``argnums`` was one int: the gradient itself, not a tuple of one (``argnums=(0,)`` gives ``(g,)``, as JAX and
    torch.func)."""

    def __post_init__(self) -> None:
        self.__wrapped__ = self.fn  # inspect.signature (input names on export) and __name__ see fn's
        self.__name__ = f"grad_{getattr(self.fn, '__name__', 'fn')}"

    def __call__(self, *args: Any) -> Any:
        leaves = flatten(args)[0]
        if on_eager_tensors(leaves):
            if needs_chain(leaves) or needs_chain(self._entry(args)[1]):  # a backward must reach them through the results
                return replayed_transform(self.trace_into, self.__name__, args)
            return as_eager(self._run(*args))
        if any(isinstance(leaf, Tensor) for leaf in leaves):
            return self.trace_into(*args)
        return self._run(*args)

    def trace_into(self, *args: Any) -> Any:
        """Emit ``fn`` and its backward into the graph being traced; returns Tensors. ``fn`` sees fresh aliases of the
        arguments it is differentiated with respect to, so a value it closes over is a constant to it even when that
        value is the argument itself (``grad(lambda z: (z * x).sum())(x)`` is ``x``, as in JAX and torch.func). An
        argument may be a tuple, list or dict of tensors (``{name: parameter}`` for ``kiln.func.functional_call``):
        its gradient has the same structure."""
        builder = Builder(TraceContext.current().graph)
        args, wrt, structures = list(args), [], []
        for index in self.argnums:
            leaves, structure = flatten(_argument(args, index))
            aliases = [Tensor(alias(builder, _float_leaf(leaf, index).value)) for leaf in leaves]
            TraceContext.current().grad_leaves.update(a.value for a in aliases)  # they require grad, as torch.func's
            args[index] = unflatten(structure, aliases)
            wrt.append([a.value for a in aliases])
            structures.append(structure)
        value = self.fn(*args)
        if not isinstance(value, Tensor) or value.shape != () or not value.dtype.is_float:
            raise AutodiffError(f"kiln.grad needs fn to return a floating-point scalar Tensor, got {value!r}; reduce it (e.g. .sum())")
        flat = iter(Tensor(g) for g in differentiate(TraceContext.current().graph, value.value, [v for vs in wrt for v in vs]))
        grads = tuple(unflatten(structure, [next(flat) for _ in values]) for structure, values in zip(structures, wrt))
        result = grads[0] if self.single else grads
        return (value, result) if self.with_value else result

    def _run(self, *args: Any) -> Any:
        executable, parameters, results = self._entry(args)
        arrays = [np.asarray(leaf) for leaf in flatten(args)[0]]
        outputs = [np.asarray(o) for o in executable(*arrays, *[p.data for p in parameters])]
        return unflatten(results, outputs)

    def _entry(self, args: tuple[Any, ...]) -> tuple[Executable, list[Any], Structure]:
        """The compiled function for the arguments' signature, compiled on first sight."""
        leaves, structure = flatten(args)
        arrays = [np.asarray(leaf) for leaf in leaves]
        key = (structure, tuple((a.shape, a.dtype.str) for a in arrays), autocast_signature())  # traced inside an autocast region or not
        if key not in self.compiled:
            self.compiled[key] = self._compile(structure, arrays)
        return self.compiled[key]

    def _compile(self, structure: Structure, arrays: Sequence[np.ndarray]) -> tuple[Executable, list[Any], Structure]:
        results: list[Structure] = []

        def traced(*tensors: Tensor) -> Any:
            result = self.trace_into(*unflatten(structure, tensors))
            results.append(flatten(result)[1])
            return result

        specs = [TensorSpec(a.shape, DType.of(a.dtype)) for a in arrays]
        context = trace_context(traced, *specs, name=self.__name__, what="kiln.grad's result")
        return get_backend(self.backend).compile(context.graph), list(context.parameters), results[0]


def _argnums(argnums: int | Sequence[int]) -> tuple[int, ...]:
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _argument(args: Sequence[Any], index: int) -> Any:
    if index >= len(args):
        raise AutodiffError(f"kiln.grad: argnums names argument {index}, but fn was called with {len(args)}")
    return args[index]


def _float_leaf(leaf: Any, index: int) -> Tensor:
    if not isinstance(leaf, Tensor) or not leaf.dtype.is_float:
        raise AutodiffError(f"kiln.grad: argument {index} must be a floating-point tensor (or a tuple, list or dict of "
                            "them) to differentiate with respect to it")
    return leaf


def grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> GradFunction:
    """The gradient of scalar ``fn`` w.r.t. argument ``argnums`` (a tuple of them for several)."""
    return GradFunction(fn, _argnums(argnums), False, backend, single=isinstance(argnums, int))


def value_and_grad(fn: Callable[..., Any], argnums: int | Sequence[int] = 0, backend: str = "numpy") -> GradFunction:
    """``(fn(*args), grad(fn)(*args))`` from one graph."""
    return GradFunction(fn, _argnums(argnums), True, backend, single=isinstance(argnums, int))


@dataclass
class _LossGraph:
    """A compiled loss-and-gradient graph and where its inputs and outputs come from."""

    executable: Executable
    parameters: list[Parameter]
    """Trained parameters: graph inputs after the batch, and their gradients the outputs after the loss."""
    frozen: list[Parameter]
    """Parameters the model reads that are not trained (inputs after the trained ones)."""
    buffers: list[Parameter]
    """Buffers the forward updates (BatchNorm's running statistics): their new values are the last outputs."""


@dataclass
class LossAndGrad:
    """``(loss, gradients)`` of ``loss_fn(model(*inputs), target)`` at the parameters' current values, one compiled
    graph per batch signature, run as often as asked: the closure L-BFGS re-evaluates (``kiln.optim.LBFGS``).

    The gradients come in ``optimizer.parameters()`` order, as arrays; a frozen parameter (``requires_grad=False``)
    gets zeros, as PyTorch's L-BFGS reads a ``None`` gradient. Buffers the forward updates (BatchNorm's running
    statistics) are written back after every call, as each of PyTorch's closure calls updates them.
    """

    model: Module
    loss_fn: Callable[..., Tensor]
    optimizer: Optimizer
    backend: str = "numpy"
    compiled: dict[tuple[Any, ...], _LossGraph] = field(default_factory=dict)

    def __call__(self, *batch: Any) -> tuple[float, list[np.ndarray]]:
        arrays = [np.asarray(array) for array in batch]
        key = (batch_signature(arrays), tuple(bool(p.requires_grad) for p in self.optimizer.parameters()), autocast_signature())  # traced inside an autocast region or not
        if key not in self.compiled:
            self.compiled[key] = self._compile(arrays)
        compiled = self.compiled[key]
        outputs = [np.asarray(o) for o in compiled.executable(*arrays, *[p.data for p in compiled.parameters + compiled.frozen])]
        for buffer, value in zip(compiled.buffers, outputs[1 + len(compiled.parameters) :]):
            np.copyto(buffer.data, value)
        grads = {id(p): g for p, g in zip(compiled.parameters, outputs[1:])}
        return float(outputs[0]), [grads[id(p)] if id(p) in grads else np.zeros_like(p.data) for p in self.optimizer.parameters()]

    def _compile(self, arrays: Sequence[np.ndarray]) -> _LossGraph:
        """The training step's loss tracing and gradients (``runtime/step_graph.py``), returning the gradients instead of
        an update."""
        with collection_paused():
            graph, loss, parameters, frozen, buffer_updates = _trace_loss(self.model, self.loss_fn, self.optimizer, batch_specs(arrays), GradientOptions())
            if len(graph.inputs) > len(arrays) + len(parameters) + len(frozen):
                raise KilnError("loss_and_grad traced random ops (dropout in training mode), but L-BFGS re-evaluates the loss and "
                                "needs the same function each time; call model.eval() first")
            values = graph.inputs[len(arrays) :][: len(parameters)]
            grads = transform_gradients(graph, loss, values, None, GradientOptions())
            graph.outputs = [loss, *grads, *(value for _, value in buffer_updates)]
            PassManager(DEFAULT_PIPELINE).run(graph)
            executable = get_backend(self.backend).compile(graph)
        return _LossGraph(executable, parameters, frozen, [buffer for buffer, _ in buffer_updates])


def loss_and_grad(model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, backend: str = "numpy") -> LossAndGrad:
    """``evaluate(*inputs, target) -> (loss, gradients)`` for ``optimizer``'s parameters; see ``LossAndGrad``."""
    get_backend(backend)  # fail now, not at the first batch, on an unknown backend
    return LossAndGrad(model, loss_fn, optimizer, backend)
