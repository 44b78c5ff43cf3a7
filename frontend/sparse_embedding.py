"""``F.embedding(..., sparse=True)`` / ``nn.EmbeddingBag(sparse=True)``: which lookups give their weight a sparse gradient.

Eagerly, a sparse lookup of a trained ``Parameter`` is recorded in ``SPARSE_READS`` by the weight's leaf (each eager
read of a parameter is a new leaf, read by this lookup only). ``loss.backward()`` (``runtime/eager_backward.py``)
then also differentiates the lookup's rows and gives the weight a ``SparseGrad`` (``frontend/sparse_grad.py``): one
entry per looked-up index, in lookup order, ``padding_idx`` positions left out, as PyTorch's sparse backward.

In a ``kiln.compile``d training step (one that calls ``backward()``/``optimizer.step()``), a sparse lookup is refused
with what to do: ``kiln.compile`` then runs the step eagerly (warned once), where the gradient is sparse, as
``torch.compile`` runs what it cannot capture; with ``fullgraph=True`` the refusal is raised. Other traces (an
inference ``kiln.compile``, ``compile_train_step``, ONNX export) keep the dense gradient of kiln's one layout.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import PARAMETERS, eager_array
from kiln.frontend.grad_mode import is_grad_enabled
from kiln.frontend.trace import TraceContext, located_error, step_capture


@dataclass
class SparseRead:
    """One sparse lookup: its rows (weakly: the chain holds them), the flat indices, which positions count."""

    rows: "weakref.ref[Value]"
    indices: np.ndarray
    kept: np.ndarray | None
    """Positions that are not ``padding_idx`` (None: all)."""
    shape: tuple[int, ...]

    def gradient(self, rows_grad: np.ndarray) -> Any:
        """The weight's ``SparseGrad`` from the gradient of the looked-up rows."""
        from kiln.frontend.sparse_grad import SparseGrad

        values = np.asarray(rows_grad).reshape(-1, *self.shape[1:])
        if self.kept is None:
            return SparseGrad(self.indices, values.copy(), self.shape)
        return SparseGrad(self.indices[self.kept], values[self.kept], self.shape)


SPARSE_READS: "weakref.WeakKeyDictionary[Value, SparseRead]" = weakref.WeakKeyDictionary()
"""The weight leaf of each live eager sparse lookup -> the lookup."""


def record_sparse_lookup(rows: Any, weight: Any, input: Any, padding_idx: int | None, scale_grad_by_freq: bool,
                         caller: str, bag_mode: str | None = None) -> None:
    """Record ``rows`` (``take(weight, input)``) as a sparse lookup of ``weight`` (eagerly), or refuse it where a
    compiled training step is being traced (see the module doc). ``bag_mode``: ``embedding_bag``'s mode."""
    if bag_mode == "max":
        raise ValueError("max mode does not support sparse weights")
    if scale_grad_by_freq:
        raise RuntimeError("embedding_backward: scale_grad_by_freq not supported with sparse gradients (PyTorch refuses it "
                           "too, for EmbeddingBag as well); pass sparse=False to scale the dense gradient")
    if step_capture() is not None:
        raise located_error(f"{caller}(sparse=True) inside a kiln.compile'd training step: its weight's gradient is a sparse "
                            "tensor (for SparseAdam), which a compiled step cannot hold; kiln.compile runs this step eagerly "
                            "(as torch.compile does what it cannot capture), so drop fullgraph=True, or pass sparse=False "
                            "for a dense gradient and a compiled step (with Adam or SGD in place of SparseAdam)")
    if TraceContext.active() and not TraceContext.current().eager:
        _note_traced(weight)  # its gradient will be dense: SparseAdam's refusal says why
        if is_grad_enabled() and getattr(weight, "requires_grad", False):
            TRAINED_LOOKUPS.setdefault(TraceContext.current(), []).append(caller)
        return
    value, indices = getattr(rows, "__dict__", {}).get("_value"), _indices(input)
    leaf = value.producer.operands[0] if value is not None and value.producer is not None else None
    if leaf is None or indices is None or leaf not in PARAMETERS or not is_grad_enabled():
        return
    kept = None if padding_idx is None else indices != padding_idx % weight.shape[0]
    SPARSE_READS[leaf] = SparseRead(weakref.ref(value), indices, kept, tuple(weight.shape))


TRAINED_LOOKUPS: "weakref.WeakKeyDictionary[TraceContext, list[str]]" = weakref.WeakKeyDictionary()
"""The sparse lookups of a trained weight each trace made (by the function's name): a ``kiln.compile``d forward whose
backward runs eagerly refuses to compile them (``runtime/compiled_training.py``), its weight's gradient being sparse."""

_TRACED: "dict[int, weakref.ref[Any]]" = {}
"""Weights a traced function looked up with ``sparse=True`` (by ``id``, with a weak reference to tell reuse)."""


def _note_traced(weight: Any) -> None:
    try:
        _TRACED[id(weight)] = weakref.ref(weight)
    except TypeError:  # not weakly referable (a traced value): no parameter to name later
        pass


def looked_up_sparsely_in_a_trace(weight: Any) -> bool:
    """Whether a traced (compiled) function looked ``weight`` up with ``sparse=True``: its gradient there is dense."""
    reference = _TRACED.get(id(weight))
    return reference is not None and reference() is weight


def _indices(input: Any) -> np.ndarray | None:
    array = eager_array(input) if hasattr(input, "__dict__") else np.asarray(input)
    return None if array is None else np.asarray(array, dtype=np.int64).reshape(-1)


__all__ = ["SPARSE_READS", "SparseRead", "TRAINED_LOOKUPS", "looked_up_sparsely_in_a_trace", "record_sparse_lookup"]
