"""The NumPy backend: the CPU reference. One generated Python function per graph."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from kiln.backends.numpy.codegen import compile_function, compile_planned
from kiln.backends.numpy.fusion import lower_for_fusion
from kiln.backends.numpy.float_error_state import FloatErrorState
from kiln.backends.numpy.lowering import NUMPY
from kiln.backends.numpy import lowering_conv, lowering_movement  # noqa: F401  (register their kernels into NUMPY)
from kiln.backends.numpy import lowering_losses, lowering_optim  # noqa: F401  (register their kernels into NUMPY)
from kiln.backends.numpy import lowering_comm  # noqa: F401  (registers the comm kernels into NUMPY)
from kiln.backends.numpy import lowering_reduce_prod  # noqa: F401  (registers its kernel into NUMPY)
from kiln.backends.numpy import lowering_linalg  # noqa: F401  (registers the linalg kernels into NUMPY)
from kiln.backends.numpy import lowering_linalg_factor  # noqa: F401  (registers the QR, LU and matrix_exp kernels)
from kiln.backends.numpy import lowering_linalg_spectral  # noqa: F401  (registers eigh's and svd's kernels into NUMPY)
from kiln.backends.numpy import lowering_linalg_ldl  # noqa: F401  (registers the LDL^T factor and solve kernels)
from kiln.backends.numpy import lowering_scan  # noqa: F401  (registers the running-scan kernels into NUMPY)
from kiln.backends.numpy import lowering_bitwise  # noqa: F401  (registers the integer bit-op kernels into NUMPY)
from kiln.backends.numpy import lowering_fft  # noqa: F401  (registers the fft dialect's np.fft kernels into NUMPY)
from kiln.compiler.ir.core import Graph, clone_graph
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.dce import DCE
from kiln.compiler.passes.chunk_causal_attention import split_long_causal_attention
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.widen_half import WidenHalf
from kiln.runtime.executable import Executable
from kiln.runtime.host_memory import keep_freed_host_memory


class NumpyBackend:
    name = "numpy"
    table = NUMPY
    plan_memory = True
    """Generate code over preallocated buffers (the memory plan); False: one allocating kernel call per op."""

    def __init__(self, profile: bool | None = None, float_errors: str | None = None):
        self.profile = os.environ.get("KILN_NUMPY_PROFILE") == "1" if profile is None else profile
        """Time every op of the planned code (``Executable.op_times``; ``benchmarks/cpu_profile.py``), never by default."""
        self.float_errors = float_errors or os.environ.get("KILN_NUMPY_FLOAT_ERRORS", "ignore")
        """What NumPy does on a division by zero, an overflow or an invalid operation inside compiled code, as
        ``np.errstate(all=...)``: ``"ignore"`` (the default: inf and NaN appear silently, as in PyTorch and JAX),
        ``"warn"`` (NumPy's default) or ``"raise"`` (a ``FloatingPointError`` at the first such op: a NaN hunt)."""
        if self.float_errors not in FLOAT_ERRORS:
            raise ValueError(f"NumpyBackend: float_errors must be one of {FLOAT_ERRORS}, got {self.float_errors!r}")

    def compile(self, graph: Graph) -> Executable:
        """Lower a copy of ``graph``: half-precision ops widened to float32 (``widen-half``), long causal attentions split into query chunks (``chunk-causal-attention``),
        composites without a kernel expand, then one function is generated.

        ``graph.donations`` (``{input index: output index}``, set by the training step) lets
        outputs be written into those inputs' arrays in place.
        """
        keep_freed_host_memory()  # a step's temporaries then reuse warm pages (runtime/host_memory.py)
        donations = dict(getattr(graph, "donations", {}))
        graph = clone_graph(graph)
        WidenHalf().run(graph)  # NumPy has no half-precision BLAS: half ops compute in float32, rounded per op
        split_long_causal_attention(graph)
        decompose_where(graph, lambda op: op.name not in self.table and lookup(op.name).is_composite)
        DCE().run(graph)
        if not self.plan_memory:
            function, source = compile_function(graph, self.table)
            return Executable(graph, under_errstate(function, self.float_errors, graph), self.name, source)
        lower_for_fusion(graph)
        function, source, op_seconds = compile_planned(graph, self.table, donations, self.profile)
        executable = Executable(graph, under_errstate(function, self.float_errors, graph), self.name, source, op_seconds)
        executable.timed_build = lambda: self._timed_build(graph, donations)
        return executable

    def _timed_build(self, graph: Graph, donations: dict[int, int]) -> tuple[Callable[..., Any], list[float]]:
        """The lowered ``graph`` as a profiling build (``kiln.profiler`` runs it while it records): the same code with
        a clock read after each op, its own buffers; the graph keeps the plan of the build it was compiled with."""
        memory_plan = graph.memory_plan  # type: ignore[attr-defined]
        function, _, op_seconds = compile_planned(graph, self.table, donations, profile=True)
        graph.memory_plan = memory_plan  # type: ignore[attr-defined]
        return under_errstate(function, self.float_errors), op_seconds  # type: ignore[return-value]


FLOAT_ERRORS = ("ignore", "warn", "raise")


NO_FLOAT_ERRORS = frozenset({"tensor.reshape", "tensor.transpose", "tensor.broadcast_to", "tensor.concat", "tensor.slice",
                             "tensor.expand_dims", "tensor.squeeze", "tensor.take"})
"""Ops whose kernels only view, copy or gather elements: NumPy meets no division, overflow or invalid value in them
(``tensor.pad`` casts its fill value, so it is not one)."""


def under_errstate(function: Callable[..., Any], float_errors: str, graph: Graph | None = None) -> Callable[..., Any]:
    """``function`` run under ``np.errstate(all=float_errors)`` (a quarter of a microsecond a call), or ``function``
    itself where every op of ``graph`` (the lowered graph it runs) is in ``NO_FLOAT_ERRORS``: eager mode's many one-op
    reshapes, transposes and slices skip even that."""
    if graph is not None and all(op.name in NO_FLOAT_ERRORS for op in graph.ops):
        return function
    return float_error_state(float_errors).around(function)  # np.errstate's, at a quarter of its cost


@functools.cache
def float_error_state(mode: str) -> FloatErrorState:
    """One shared ``FloatErrorState`` per mode: every executable meets the same few NumPy error states."""
    return FloatErrorState(mode)


__all__ = ["NUMPY", "NumpyBackend"]
