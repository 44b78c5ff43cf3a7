"""The kiln IR: types, values, ops, graphs, and their text form."""

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.parser import parse, parse_file
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.types import DType, Dim, TensorType
from kiln.compiler.ir.verifier import verify

__all__ = ["Builder", "DType", "Dim", "Graph", "Op", "TensorType", "Value", "parse", "parse_file", "print_graph", "verify"]
