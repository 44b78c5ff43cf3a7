"""Which dim of each batch input is the batch: the symbolic dim of a compiled graph, and the dim micro-batches split.

``batch_dim`` is what ``kiln.compile`` and ``kiln.compile_train_step`` take: ``0`` (the default) for
batch-first inputs, another int for every input (``1`` for PyTorch's sequence-first ``(L, N, ...)``), a tuple
with one entry per input (``(1, 1)`` for sequence-first tokens and targets, ``(1, 0)`` for a per-sequence label),
or ``None`` for no batch dim (every shape static: a new shape compiles anew). An entry ``None`` in a tuple
makes that input static.

```python
step = kiln.compile_train_step(model, loss_fn, optimizer, batch_dim=1)   # x (L, N, F) and y (L, N)
step(x, y)          # traced with x: tensor<Lx N xF>; another N reuses the graph
```
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from kiln.compiler.errors import InputError
from kiln.compiler.ir.types import DType
from kiln.frontend.trace import TensorSpec

BatchDim = Union[int, None, Sequence[Union[int, None]]]

BATCH = "N"
"""The name of the symbolic batch dim in traced graphs."""


def batch_axes(arrays: Sequence[Any], batch_dim: BatchDim) -> list[int | None]:
    """Each input's batch axis (non-negative), or ``None`` where the input has none; an ``InputError`` saying which
    input and why when ``batch_dim`` does not fit the inputs."""
    if batch_dim is None or isinstance(batch_dim, (int, np.integer)):
        per_input = [batch_dim] * len(arrays)
    else:
        per_input = list(batch_dim)
        if len(per_input) != len(arrays):
            raise InputError(f"batch_dim={tuple(per_input)} names {len(per_input)} inputs, but the call passed {len(arrays)}; "
                             "give one entry per input (None for an input without a batch dim)")
    return [_axis(index, np.ndim(array), axis) for index, (array, axis) in enumerate(zip(arrays, per_input))]


def scalars_unbatched(arrays: Sequence[Any], batch_dim: BatchDim) -> BatchDim:
    """``batch_dim`` with each 0-d input (a Python number or 0-d tensor beside the batch: a guidance scale, a timestep)
    made an input without a batch dim, as ``kiln.compile`` takes them; ``batch_dim`` itself when there is none (a
    training step's batch inputs all need one)."""
    if not isinstance(batch_dim, (int, np.integer)) or all(np.ndim(array) for array in arrays):
        return batch_dim
    return tuple(None if np.ndim(array) == 0 else batch_dim for array in arrays)


def _axis(index: int, rank: int, axis: int | None) -> int | None:
    if axis is None:
        return None
    if not -rank <= axis < rank:
        shape = "a 0-d array" if rank == 0 else f"a {rank}-d array"
        raise InputError(f"batch input {index} is {shape}, which has no batch dim {axis}: every batch input needs a leading batch "
                         "dim, or name each input's with batch_dim (a tuple, one entry per input; None keeps a shape static)")
    return int(axis) % rank


def batch_specs(arrays: Sequence[Any], batch_dim: BatchDim = 0) -> list[TensorSpec]:
    """Specs with the symbolic ``N`` at each input's batch axis, so a smaller last batch does not recompile."""
    specs = []
    for array, axis in zip(arrays, batch_axes(arrays, batch_dim)):
        shape: list[Any] = list(np.shape(array))
        if axis is not None:
            shape[axis] = BATCH
        specs.append(TensorSpec(tuple(shape), DType.of(array.dtype)))
    return specs


def batch_signature(arrays: Sequence[Any], batch_dim: BatchDim = 0) -> tuple[Any, ...]:
    """What a compiled graph is keyed on: each input's dtype and shape with its batch dim left out (computed on every
    call of a step, so the default's form is the cheap one: a 1 ms step would pay 0.5% for the general one)."""
    if type(batch_dim) is int and batch_dim == 0:
        return tuple((array.shape[1:], array.dtype.str) for array in arrays)
    return tuple((_without(np.shape(array), axis), np.dtype(array.dtype).str) for array, axis in zip(arrays, batch_axes(arrays, batch_dim)))


def _without(shape: tuple[int, ...], axis: int | None) -> tuple[Any, ...]:
    return shape if axis is None else shape[:axis] + (BATCH,) + shape[axis + 1 :]


def split_micro_batches(arrays: Sequence[Any], count: int, batch_dim: BatchDim = 0) -> list[Any]:
    """Each input cut into ``count`` equal blocks along its batch axis, ordered micro-batch by micro-batch (views)."""
    if count == 1:
        return list(arrays)
    axes = batch_axes(arrays, batch_dim)
    if None in axes:
        raise InputError(f"accumulate={count}: batch input {axes.index(None)} has no batch dim to split into micro-batches; "
                         "give every input a batch dim (batch_dim) or use accumulate=1")
    sizes = {np.shape(array)[axis] for array, axis in zip(arrays, axes)}
    size = sizes.pop()
    if sizes or size % count:
        raise InputError(
            f"accumulate={count}: the batch inputs have {sorted({np.shape(a)[x] for a, x in zip(arrays, axes)})} rows, which do not "
            f"split into {count} equal micro-batches; pass batches whose size is a multiple of {count} (drop a short last batch)"
        )
    rows = size // count
    return [_rows(array, axis, k * rows, (k + 1) * rows) for k in range(count) for array, axis in zip(arrays, axes)]


def _rows(array: Any, axis: int, start: int, stop: int) -> Any:
    index = [slice(None)] * np.ndim(array)
    index[axis] = slice(start, stop)
    return array[tuple(index)]
