"""Backend parity: run one graph on every available backend from the same inputs and compare.

```python
report = kiln.parity(step.graph, feeds)     # or kiln.parity(step, x, y)
print(report)                                # largest difference per output, per backend
report.first_divergence                      # the first op whose results differ, if any
```

On a mismatch the graph is re-run with every intermediate result as an
output, and the first op (in program order) whose results differ beyond the
tolerance is named: the place to look, since everything before it agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from kiln.backends import available_backends, get_backend
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Graph, clone_graph
from kiln.compiler.ir.printer import assign_names, format_op


@dataclass
class Divergence:
    backend: str
    op_index: int
    op_text: str
    max_difference: float


@dataclass
class ParityReport:
    reference: str
    differences: dict[str, list[float]] = field(default_factory=dict)
    """Backend -> largest absolute difference per graph output, against the reference backend."""
    output_names: list[str] = field(default_factory=list)
    first_divergence: Divergence | None = None
    rtol: float = 1e-5
    atol: float = 1e-6
    unsupported: dict[str, str] = field(default_factory=dict)
    """Backend -> why it cannot run the graph (an op it has no lowering for): no parity shown there."""

    @property
    def ok(self) -> bool:
        return self.first_divergence is None and not self.unsupported

    def __str__(self) -> str:
        lines = [f"parity against {self.reference} (rtol {self.rtol}, atol {self.atol}):"]
        for backend, diffs in self.differences.items():
            worst = max(range(len(diffs)), key=diffs.__getitem__) if diffs else 0
            lines.append(f"  {backend:<12} max |diff| {max(diffs, default=0.0):.3g} (worst output %{self.output_names[worst]})")
        lines += [f"  {backend:<12} cannot run this graph: {reason}" for backend, reason in self.unsupported.items()]
        if self.first_divergence:
            d = self.first_divergence
            lines.append(f"  first divergence on {d.backend}: op #{d.op_index} (|diff| {d.max_difference:.3g})\n    {d.op_text}")
        return "\n".join(lines)


def parity(graph: Any, feeds: Sequence[Any], backends: Sequence[str] | None = None, reference: str = "numpy",
           rtol: float = 1e-5, atol: float = 1e-6) -> ParityReport:
    """Compare ``graph``'s outputs on each backend (default: every available one) with ``reference``.

    ``graph`` may also be a training step, with ``feeds`` its batch: the step is compared from its
    current state, which no backend run changes.
    """
    if not isinstance(graph, Graph):
        graph, feeds = step_graph_and_feeds(graph, feeds)
    names = assign_names(graph)
    report = ParityReport(reference, output_names=[names[v] for v in graph.outputs], rtol=rtol, atol=atol)
    expected = _run(reference, graph, feeds)
    for backend in backends or [b for b in available_backends() if b != reference]:
        try:
            got = _run(backend, graph, feeds)
        except LoweringError as error:
            report.unsupported[backend] = str(error)
            continue
        report.differences[backend] = [_max_difference(g, e) for g, e in zip(got, expected)]
        if report.first_divergence is None and not all(_close(g, e, rtol, atol) for g, e in zip(got, expected)):
            report.first_divergence = first_divergence(graph, feeds, backend, reference, rtol, atol)
    return report


def first_divergence(graph: Graph, feeds: Sequence[Any], backend: str, reference: str, rtol: float, atol: float) -> Divergence | None:
    """Run with every op result as an output on both backends; the first op whose results differ."""
    probe = clone_graph(graph)
    probe.outputs = [result for op in probe.ops for result in op.results]
    owners = [index for index, op in enumerate(probe.ops) for _ in op.results]
    names = assign_names(probe)
    for owner, got, expected in zip(owners, _run(backend, probe, feeds), _run(reference, probe, feeds)):
        if not _close(got, expected, rtol, atol):
            op = probe.ops[owner]
            return Divergence(backend, owner, format_op(op, names), _max_difference(got, expected))
    return None


def step_graph_and_feeds(step: Any, batch: Sequence[Any]) -> tuple[Graph, list[Any]]:
    """A training step's graph for this batch and every input it would be fed, from its current state."""
    from kiln.runtime.train_step import split_micro_batches

    arrays = [np.asarray(array) for array in batch]
    compiled = step._compiled_for(arrays)
    return compiled.graph, step._feeds(compiled.step_graph, split_micro_batches(arrays, step.accumulate, step.batch_dim))


def _run(backend: str, graph: Graph, feeds: Sequence[Any]) -> list[np.ndarray]:
    copies = [np.array(feed, copy=True) for feed in feeds]  # a backend may update its inputs in place
    return [np.asarray(o) for o in get_backend(backend).compile(graph)(*copies)]


def _close(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True))


def _max_difference(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
