"""``loss.backward()``'s sparse gradients: a weight read by ``F.embedding(..., sparse=True)`` gets a ``SparseGrad``.

The lookups the loss depends on (``frontend/sparse_embedding.py``'s ``SPARSE_READS``) add their rows to the chain's
differentiated targets; each such weight leaf's dense gradient (a scatter of those rows' gradients) is replaced by the
``SparseGrad`` of the rows' gradients, one entry per looked-up index, as PyTorch's embedding backward with
``sparse=True``. A weight also read densely (tied to an output layer) sums to a dense ``.grad``, as PyTorch's.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import PARAMETERS
from kiln.frontend.sparse_embedding import SPARSE_READS, SparseRead

Found = tuple[Value, SparseRead, Value]
"""A sparse lookup the loss depends on: the weight leaf, the lookup, its rows."""


def sparse_reads(loss: Value, wanted: set[int] | None) -> list[Found]:
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
            found.append((leaf, read, rows))
    return found


def _trained(leaf: Value, wanted: set[int] | None) -> bool:
    parameter = PARAMETERS[leaf][0]
    return bool(parameter.requires_grad) and (wanted is None or id(parameter) in wanted)


def with_sparse_gradients(chain: Any, grads: Sequence[Any], found: list[Found]) -> list[Any]:
    """``grads`` (the trained leaves', then the targets', the found lookups' rows last) with each found lookup's weight
    leaf's dense gradient replaced by its ``SparseGrad``, and the rows' gradients dropped."""
    kept = list(grads[: len(grads) - len(found)])
    sparse = {id(leaf): read.gradient(rows_grad) for (leaf, read, _), rows_grad in zip(found, grads[len(kept):])}
    trained_leaves = [source for given, source in zip(chain.inputs, chain.sources) if given.trained is not None]
    for position, leaf in enumerate(trained_leaves):
        if id(leaf) in sparse:
            kept[position] = sparse[id(leaf)]
    return kept


def summed(previous: Any, grad: Any) -> Any:
    """Two gradients of one parameter summed (either may be sparse: ``frontend/sparse_grad.accumulated``)."""
    from kiln.frontend.sparse_grad import SparseGrad, accumulated

    if isinstance(previous, SparseGrad) or isinstance(grad, SparseGrad):
        return accumulated(previous, grad)
    return previous + np.asarray(grad)


__all__ = ["sparse_reads", "summed", "with_sparse_gradients"]
