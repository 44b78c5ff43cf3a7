"""What every backend shares: the lowering table and the missing-lowering error.

A backend is a lowering table (op name -> kernel) plus an executable builder.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

import numpy as np

from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Graph, Op

Kernel = Callable[..., Any]


class LoweringTable:
    """Op name -> kernel; a table may extend a parent (CuPy reuses NumPy's entries)."""

    def __init__(self, backend: str, parent: "LoweringTable | None" = None):
        self.backend = backend
        self.parent = parent
        self.kernels: dict[str, Kernel] = {}

    def register(self, *op_names: str) -> Callable[[Kernel], Kernel]:
        def decorate(kernel: Kernel) -> Kernel:
            for name in op_names:
                self.kernels[name] = kernel
            return kernel

        return decorate

    def get(self, op_name: str) -> Kernel | None:
        if op_name in self.kernels:
            return self.kernels[op_name]
        return self.parent.get(op_name) if self.parent else None

    def __contains__(self, op_name: str) -> bool:
        return self.get(op_name) is not None

    def names(self) -> list[str]:
        inherited = self.parent.names() if self.parent else []
        return sorted(set(inherited) | set(self.kernels))

    def require(self, op: Op, graph: Graph) -> Kernel:
        """The kernel for ``op``, or an error naming the op, where it is, and what is registered."""
        kernel = self.get(op.name)
        if kernel is None:
            raise missing_lowering(self.backend, op, graph, self.names())
        return kernel


def missing_lowering(backend: str, op: Op, graph: Graph, registered: Iterable[str]) -> LoweringError:
    position = graph.ops.index(op) if op in graph.ops else "?"
    where = f" (from {op.location})" if op.location else ""
    return LoweringError(
        f"{backend} backend has no lowering for {op.name!r} (op #{position} in @{graph.name}){where}; "
        f"registered: {', '.join(registered)}"
    )


class Backend(Protocol):
    """A backend turns a graph into something callable on arrays."""

    name: str

    def compile(self, graph: Graph) -> Callable[..., tuple[Any, ...]]: ...


def is_host_array(value: Any) -> bool:
    """A NumPy array in host memory; a device array (CuPy's: ``__cuda_array_interface__``) is not.

    NumPy kernels re-bound to CuPy use it to take host-only shortcuts (a check that would make the host wait
    for the device) only where the data is already on the host.
    """
    return isinstance(value, np.ndarray) and not hasattr(value, "__cuda_array_interface__")
