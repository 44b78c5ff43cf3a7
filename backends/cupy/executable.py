"""The CuPy executable: one generated Python function per graph, fused ops as generated-kernel launchers.

```python
def graph_train_step(v_x, v_w1, v_b1, v_lr):
    dim_N = v_x.shape[0]
    v_h, = f3(v_x, v_w1, v_b1)           # fused.matmul: cuBLAS GEMM, then one epilogue kernel (add, relu)
    v_loss = k_nn_cross_entropy(v_logits, v_y, reduction=a7_reduction)
    ...
```

Parameters and optimizer state stay on the GPU between calls (``keeps_state``):
donated results are kept as CuPy arrays, and ``RESIDENT`` for a donated input
means "last call's result". Arrays come from CuPy's memory pool, so a step
allocates no device memory after the first, and the function drops each value
after its last use (``dying_after``), so the pool reuses its memory within the
step: a GPT-2-small step holds about 11.5 GB of intermediates at once instead of
all 35 GB (``benchmarks/cupy_plan_model.py``). Kernel launches are asynchronous:
with ``lazy_outputs`` (set by a training step) only the 0-d float results (the
loss) come back as ``LazyScalar``, and the host waits only when one is read. Class labels
fed from the host are range-checked there before the upload (a bad label
raises before anything runs); checks that kernels deferred on device labels
(``defer_check``) travel with those scalars and raise when one is read;
without a lazy result they run when the call returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kiln.backends.base import LoweringTable, is_host_array
from kiln.backends.cupy.launch import launcher
from kiln.backends.cupy.plan import KernelLaunch, kernel_plan
from kiln.backends.numpy.codegen import _bind_symbols, _emit_op, function_name, variable_names
from kiln.backends.numpy.lowering_losses import check_labels
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ops.registry import has_trait
from kiln.runtime.executable import RESIDENT, Executable, OpTime
from kiln.runtime.lazy import DeferredCheck, LazyScalar, take_checks


OP_EVENTS = "_op_events"
"""In a profiling build, the namespace's CUDA events: one before the first op and one after each op."""


def generate(cupy: Any, graph: Graph, table: LoweringTable, profile: bool = False) -> tuple[str, dict[str, Any]]:
    """The step function's source and namespace; constants are uploaded once, here. ``profile``: a CUDA event is
    recorded after every op (``CupyExecutable.op_times``), for measuring, never by default."""
    names = variable_names(graph)
    namespace: dict[str, Any] = {}
    lines = [f"def {function_name(graph)}({', '.join(names[v] for v in graph.inputs)}):"] + _bind_symbols(graph, names)
    if profile:
        namespace[OP_EVENTS] = [cupy.cuda.Event() for _ in range(len(graph.ops) + 1)]
        lines.append(f"    {OP_EVENTS}[0].record()")
    dying = dying_after(graph)
    for index, op in enumerate(graph.ops):
        lines.append("    " + _emit(cupy, index, op, names, table, graph, namespace))
        if dying[index]:
            lines.append(f"    del {', '.join(names[v] for v in dying[index])}")
        if profile:
            lines.append(f"    {OP_EVENTS}[{index + 1}].record()")
    lines.append(f"    return ({''.join(f'{names[v]}, ' for v in graph.outputs)})")
    for key, value in namespace.items():
        if isinstance(value, np.ndarray):
            namespace[key] = cupy.asarray(value)
    return "\n".join(lines) + "\n", namespace


def dying_after(graph: Graph) -> list[list[Value]]:
    """Per op, the values whose variable the step drops right after it: operands read for the last time there and
    results nobody reads (graph outputs are returned, never dropped). The array goes back to CuPy's memory pool once
    nothing refers to it (a view keeps its base), so a step holds about its live values, not every intermediate; the
    pool hands the memory on in stream order, so a kernel still reading it finishes first."""
    last: dict[Value, int] = {}
    for index, op in enumerate(graph.ops):
        for value in list(op.operands) + list(op.results):
            last[value] = index
    kept = set(graph.outputs)
    dying: list[list[Value]] = [[] for _ in graph.ops]
    for value, index in last.items():
        if value not in kept:
            dying[index].append(value)
    return dying


def _emit(cupy: Any, index: int, op: Op, names: dict[Value, str], table: LoweringTable, graph: Graph, namespace: dict[str, Any]) -> str:
    if not has_trait(op.name, "fused"):
        return _emit_op(index, op, names, table, graph, namespace)
    namespace[f"f{index}"] = launcher(cupy, op)
    results = ", ".join(names[r] for r in op.results) + ("," if len(op.results) > 1 else "")
    return f"{results} = f{index}({', '.join(names[v] for v in op.operands)})  # {op.name}: {', '.join(op.attrs['ops'])}"


LABEL_OPS = ("nn.cross_entropy", "nn.cross_entropy_grad", "nn.nll")
"""Losses whose operand 1 holds class indices when it is an integer tensor."""


@dataclass(frozen=True)
class LabelInput:
    """A graph input that holds the class labels of ``op`` (``classes`` from its scores' static shape)."""

    index: int
    op: str
    classes: int
    ignore_index: int

    def check(self, labels: np.ndarray) -> None:
        check_labels(self.op, labels, labels != self.ignore_index, self.classes, self.ignore_index)


def label_inputs(graph: Graph) -> tuple[LabelInput, ...]:
    """The graph inputs that reach a loss's labels directly or through reshapes."""
    found = []
    for op in graph.ops:
        if op.name not in LABEL_OPS or op.operands[1].type.dtype.numpy.kind not in "iu":
            continue
        labels, scores = op.operands[1], op.operands[0].type.shape
        while labels.producer is not None and labels.producer.name == "tensor.reshape":
            labels = labels.producer.operands[0]
        classes = scores[1] if len(scores) > 1 else scores[0]
        if labels in graph.inputs and isinstance(classes, int):
            found.append(LabelInput(graph.inputs.index(labels), op.name, classes, op.attrs["ignore_index"]))
    return tuple(found)


class CupyExecutable(Executable):
    """Runs the generated function on CuPy arrays; donated results stay on the device."""

    keeps_state = True
    asynchronous = True
    lazy_outputs = False
    """When set (by a training step), donated results stay CuPy arrays and 0-d float results come back as ``LazyScalar``."""

    def __init__(self, cupy: Any, graph: Graph, function: Callable[..., tuple[Any, ...]], source: str, donations: dict[int, int],
                 op_events: list[Any] | None = None):
        upload = cupy.asarray  # a no-op for arrays already on the device
        super().__init__(graph, lambda *arrays: function(*[upload(a) for a in arrays]), "cupy", source)
        self.cupy = cupy
        self.donations = dict(donations)
        self.resident: dict[int, Any] = {}
        """Input index -> the CuPy array the last call produced for it."""
        self.kernels: list[KernelLaunch] = kernel_plan(graph)
        """Every kernel one call launches (GEMMs, generated fused kernels, library kernels), in order."""
        self.labels = label_inputs(graph)
        self.op_events = op_events
        """A profiling build's events (``generate(profile=True)``), else ``None``."""

    def __call__(self, *arrays: Any) -> tuple[Any, ...]:
        for label in self.labels:
            if is_host_array(arrays[label.index]):
                label.check(arrays[label.index])  # on the host, before anything runs
        take_checks()  # a call that raised may have left some
        outputs = super().__call__(*[self.resident[i] if a is RESIDENT else a for i, a in enumerate(arrays)])  # checked once per signature
        for source, target in self.donations.items():
            self.resident[source] = outputs[target]
        checks = take_checks()
        returned = tuple(self._returned(index, value, checks) for index, value in enumerate(outputs))
        if not self.lazy_outputs or not any(isinstance(value, LazyScalar) for value in returned):
            for check in checks:  # nothing is left to read later: the results came back, so the host waited anyway
                check.run()
        return returned

    def _returned(self, index: int, value: Any, checks: tuple[DeferredCheck, ...]) -> Any:
        if not self.lazy_outputs:
            return self.cupy.asnumpy(value)
        if index in self.donations.values():
            return value
        lazy = getattr(value, "ndim", 0) == 0 and value.dtype.kind == "f"  # the loss; an integer counter comes back as it is
        return LazyScalar(value, checks) if lazy else self.cupy.asnumpy(value)

    def op_times(self) -> list[OpTime]:
        """GPU milliseconds of each op in the last call of a profiling build (waits for the call to finish): the time
        between the events recorded before and after the op's line, so a view or constant shows about 0."""
        if self.op_events is None:
            raise RuntimeError("op_times needs a profiling build: CupyBackend(profile=True) or KILN_CUPY_PROFILE=1")
        self.op_events[-1].synchronize()
        elapsed = self.cupy.cuda.get_elapsed_time
        return [OpTime(index, op, elapsed(self.op_events[index], self.op_events[index + 1])) for index, op in enumerate(self.graph.ops)]

