"""The NumPy backend: the CPU reference. One generated Python function per graph."""

from __future__ import annotations

from kiln.backends.numpy.codegen import compile_function
from kiln.backends.numpy.lowering import NUMPY
from kiln.compiler.ir.core import Graph, clone_graph
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.dce import DCE
from kiln.compiler.passes.decompose import decompose_where
from kiln.runtime.executable import Executable


class NumpyBackend:
    name = "numpy"
    table = NUMPY

    def compile(self, graph: Graph) -> Executable:
        """Lower a copy of ``graph``: composites without a kernel expand, then one function is generated."""
        graph = clone_graph(graph)
        decompose_where(graph, lambda op: op.name not in self.table and lookup(op.name).is_composite)
        DCE().run(graph)
        function, source = compile_function(graph, self.table)
        return Executable(graph, function, self.name, source)


__all__ = ["NUMPY", "NumpyBackend"]
