"""``loss.backward()``'s sparse gradients: a weight read by ``F.embedding(..., sparse=True)`` gets a ``SparseGrad``.

The lookups the loss depends on (``frontend/sparse_embedding.py``'s ``SPARSE_READS``) add their rows to the chain's
differentiated targets and their weight leaves are left undifferentiated (no dense scatter into the whole table):
each lookup's ``SparseGrad`` is its rows' gradient, one entry per looked-up index, as PyTorch's embedding backward with
``sparse=True``. A weight also read densely (tied to an output layer) sums to a dense ``.grad``, as PyTorch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import PARAMETERS
from kiln.frontend.sparse_embedding import SPARSE_READS, SparseRead


@dataclass
class SparseLookup:
    """A sparse lookup the loss depends on: the weight's leaf, the lookup, its rows, the weight."""

    leaf: Value
    read: SparseRead
    rows: Value
    parameter: Any


def sparse_reads(loss: Value, wanted: set[int] | None) -> list[SparseLookup]:
    """The live sparse lookups ``loss`` depends on, of trained parameters (those in ``wanted`` when given)."""
    if not SPARSE_READS:
        return []
    from kiln.runtime.eager_backward import chain_of  # lazily: eager_backward calls this module

    found = []
    for op in chain_of([loss]):
        leaf = op.operands[0] if op.name == "tensor.take" and op.operands else None
        read = SPARSE_READS.get(leaf) if leaf is not None else None
        rows = read.rows() if read is not None else None
        if rows is not None and _trained(leaf, wanted):
            found.append(SparseLookup(leaf, read, rows, PARAMETERS[leaf][0]))
    return found


def _trained(leaf: Value, wanted: set[int] | None) -> bool:
    parameter = PARAMETERS[leaf][0]
    return bool(parameter.requires_grad) and (wanted is None or id(parameter) in wanted)


def with_sparse_gradients(grads: Sequence[Any], found: list[SparseLookup]) -> list[Any]:
    """``grads`` with the found lookups' rows' gradients (the last ones) made their weights' ``SparseGrad``s."""
    kept = list(grads[: len(grads) - len(found)])
    return kept + [lookup.read.gradient(rows_grad) for lookup, rows_grad in zip(found, grads[len(kept):])]


def summed(previous: Any, grad: Any) -> Any:
    """Two gradients of one parameter summed (either may be sparse: ``frontend/sparse_grad.accumulated``)."""
    from kiln.frontend.sparse_grad import SparseGrad, accumulated

    if isinstance(previous, SparseGrad) or isinstance(grad, SparseGrad):
        return accumulated(previous, grad)
    return previous + np.asarray(grad)


__all__ = ["SparseLookup", "sparse_reads", "summed", "with_sparse_gradients"]
