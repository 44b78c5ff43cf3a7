"""What ``kiln.vmap``, ``kiln.jacrev`` and ``kiln.hessian`` share: called on traced Tensors a transform traces into the
graph being built; called on arrays it traces, compiles and runs, once per signature (as ``kiln.grad`` does).

A subclass defines ``trace_into(*args)``: the transformed function on Tensors (arguments may nest in tuples and
lists), returning a Tensor or nested tuples and lists of them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, trace_context
from kiln.runtime.eager_transform_replay import needs_chain, replayed_transform
from kiln.runtime.eager_transforms import as_eager, on_eager_tensors
from kiln.runtime.executable import Executable
from kiln.runtime.pytree import Structure, flatten, unflatten
from kiln.frontend.autocast import autocast_signature

Compiled = tuple[Executable, list[Any], Structure]
"""The executable, the parameters it reads after the arguments, and the structure of its results."""


class TracedTransform:
    backend: str
    compiled: dict[tuple[Any, ...], Compiled]
    __name__: str

    def trace_into(self, *args: Any) -> Any:
        raise NotImplementedError

    def name_after(self, fn: Any, prefix: str) -> None:
        """``__name__`` ``prefix_<fn's name>`` (the compiled graph's name) and ``__wrapped__`` ``fn`` (whose signature
        gives input names on export)."""
        self.__wrapped__ = fn
        self.__name__ = f"{prefix}_{getattr(fn, '__name__', 'fn')}"

    def __call__(self, *args: Any) -> Any:
        leaves = flatten(args)[0]
        if on_eager_tensors(leaves):
            if needs_chain(leaves) or needs_chain(self._entry(args)[1]):  # a backward must reach them through the results
                return replayed_transform(self.trace_into, self.__name__, args)
            return as_eager(self._run(args))
        if any(isinstance(leaf, Tensor) for leaf in leaves):
            return self.trace_into(*args)
        return self._run(args)

    def _run(self, args: tuple[Any, ...]) -> Any:
        executable, parameters, results = self._entry(args)
        outputs = executable(*[np.asarray(leaf) for leaf in flatten(args)[0]], *[p.data for p in parameters])
        return unflatten(results, [np.asarray(output) for output in outputs])

    def _entry(self, args: tuple[Any, ...]) -> Compiled:
        """The compiled function for the arguments' signature, compiled on first sight."""
        leaves, structure = flatten(args)
        arrays = [np.asarray(leaf) for leaf in leaves]
        key = (structure, tuple((a.shape, a.dtype.str) for a in arrays), autocast_signature())  # traced inside an autocast region or not
        if key not in self.compiled:
            self.compiled[key] = self._compile(structure, arrays)
        return self.compiled[key]

    def _compile(self, structure: Structure, arrays: Sequence[np.ndarray]) -> Compiled:
        results: list[Structure] = []

        def traced(*tensors: Tensor) -> Any:
            result = self.trace_into(*unflatten(structure, tensors))
            results.append(flatten(result)[1])
            return result

        specs = [TensorSpec(a.shape, DType.of(a.dtype)) for a in arrays]
        context = trace_context(traced, *specs, name=self.__name__, what=f"{self.__name__}'s result")
        if context.seed_input is not None:
            raise KilnError(f"{self.__name__} traced random ops (dropout in training mode); call model.eval() first")
        return get_backend(self.backend).compile(context.graph), list(context.parameters), results[0]
