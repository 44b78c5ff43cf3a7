"""``kiln.nn.utils.rnn``: PyTorch's variable-length sequence API (``pack_padded_sequence``, ``pad_packed_sequence``,
``pad_sequence``, ``pack_sequence``, ``PackedSequence``) for kiln's recurrent layers.

PyTorch packs a padded batch into one time-sorted tensor of the valid steps, so its kernels skip the padding. kiln
unrolls its time loop at trace time over a static length ``L``, so it keeps the padded batch and *masks* instead: a
``PackedSequence`` is the padded data, time-major ``(L, N, *)``, plus the int64 ``lengths`` ``(N,)`` (a graph
input, or a constant when given as a list or array). ``RNN``, ``LSTM`` and ``GRU`` given one run every step for
every row and keep a row's state where ``t >= length`` (``where(t < lengths, new, old)``), so each sequence's final
state is the one after its own last step, the reverse direction of a bidirectional layer starts at each sequence's
own last element, and the outputs past a length are zero: the numbers of PyTorch's packed path.

Differences from PyTorch, all of them consequences of masking instead of packing:

- the rows keep their order, so kiln never needs the lengths sorted: ``enforce_sorted=True`` with unsorted lengths
  is accepted (a graph input cannot be checked at trace time anyway) and gives PyTorch's
  ``enforce_sorted=False`` results;
- ``PackedSequence.data`` is the padded time-major batch, not PyTorch's ``(sum(lengths), *)`` rows, and there are
  no ``batch_sizes`` or sorting indices; elementwise functions of ``data`` still work, as in PyTorch, because
  ``pad_packed_sequence`` fills the padding afresh;
- ``pad_packed_sequence`` returns ``L`` time steps where PyTorch returns ``max(lengths)`` when the lengths are a
  graph input; when they are known (a list, an array, an eager tensor), kiln returns ``max(lengths)`` steps, as
  PyTorch does (``total_length`` steps if given).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from kiln.compiler.ir.types import DType, format_shape
from kiln.frontend import functional as F
from kiln.frontend.eager_values import eager_array
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


class PackedSequence(NamedTuple):
    """A padded batch with each sequence's length: what ``pack_padded_sequence`` makes and the recurrent layers
    take and return. A tuple, as PyTorch's, so a traced function may return it (as its two tensors)."""

    data: Tensor
    """The padded batch, time-major ``(L, N, *)`` whatever the layout it was packed from; ``L`` is static."""
    lengths: Tensor
    """int64 ``(N,)``: sequence ``n`` holds steps ``0 .. lengths[n] - 1`` of ``data``; a graph input or a constant."""


def pack_padded_sequence(input: Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True) -> PackedSequence:
    """``input`` ``(L, N, *)`` (``(N, L, *)`` with ``batch_first``) with ``lengths`` ``(N,)``, each in ``[1, L]``: a
    traced integer tensor, or a list or array (then a constant, checked here). ``enforce_sorted`` is accepted and
    ignored: kiln keeps the rows in their order, so the results are PyTorch's with ``enforce_sorted=False``."""
    function = "pack_padded_sequence"
    if not isinstance(input, Tensor) or input.ndim < 2:
        got = input.type if isinstance(input, Tensor) else type(input).__name__
        raise located_error(f"{function}: input must be a traced tensor (L, N, *) (or (N, L, *) with batch_first=True), got {got}")
    data = input.transpose(0, 1) if batch_first else input
    if not isinstance(data.shape[0], int):
        raise located_error(f"{function}: kiln unrolls recurrent layers at trace time, so the padded length must be static; the time "
                            f"dim of {input.type} is the symbolic {data.shape[0]!r} (pad every batch to one length)")
    return PackedSequence(data, lengths_tensor(function, lengths, data))


def pack_sequence(sequences: Sequence[Tensor], enforce_sorted: bool = True) -> PackedSequence:
    """PyTorch's ``pack_sequence``: ``pad_sequence`` then ``pack_padded_sequence`` with the (constant) lengths."""
    lengths = [sequence.shape[0] for sequence in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0,
                        total_length: int | None = None) -> tuple[Tensor, Tensor]:
    """``(padded, lengths)``: ``sequence``'s data with ``padding_value`` wherever ``t >= lengths[n]``, ``(T, N, *)``
    (``(N, T, *)`` with ``batch_first``). ``T`` is ``total_length`` if given, else ``max(lengths)`` for constant
    lengths and the padded length ``L`` for traced ones."""
    if not isinstance(sequence, PackedSequence):
        raise located_error(f"pad_packed_sequence: expected a PackedSequence (from pack_padded_sequence or a recurrent layer), got "
                            f"{type(sequence).__name__}")
    data, lengths = sequence
    steps = output_steps(sequence, total_length)
    if steps < data.shape[0]:  # constant lengths, all shorter than L
        data = data[:steps]
    padded = F.where(valid_steps(lengths, data.shape[0], data.ndim), data, padding_value)
    if steps > data.shape[0]:
        padded = F.pad(padded, [0, 0] * (data.ndim - 1) + [0, steps - data.shape[0]], value=padding_value)
    return (padded.transpose(0, 1) if batch_first else padded), lengths


def pad_sequence(sequences: Sequence[Any], batch_first: bool = False, padding_value: float = 0.0,
                 padding_side: str = "right") -> Any:
    """Sequences ``(L_i, *)`` stacked into ``(max L_i, B, *)`` (``(B, max L_i, *)`` with ``batch_first``), each
    padded with ``padding_value`` on ``padding_side``. NumPy arrays give an array (outside tracing, e.g. in a data
    pipeline); traced tensors, whose lengths must be static, give a tensor."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"pad_sequence: padding_side must be 'left' or 'right', got {padding_side!r}")
    if len(sequences) == 0:
        raise ValueError("pad_sequence: expected a non-empty sequence of sequences")
    traced = [isinstance(sequence, Tensor) for sequence in sequences]
    if any(traced) and not all(traced):
        raise located_error("pad_sequence: got both traced tensors and arrays; pass all of one kind (an array inside a model: a "
                            "constant, made by an op of the model)")
    if all(traced):
        return _pad_tensors(list(sequences), batch_first, padding_value, padding_side)
    return _pad_arrays([np.asarray(sequence) for sequence in sequences], batch_first, padding_value, padding_side)


# Lengths ---------------------------------------------------------------------------------------------------------


def lengths_tensor(function: str, lengths: Any, data: Tensor) -> Tensor:
    """``lengths`` for the time-major ``data`` ``(L, N, *)`` as an int64 tensor ``(N,)``: a traced integer tensor
    (cast to int64), or a list, an array or an eager tensor (its values known now) checked to lie in ``[1, L]`` and
    made a constant, so that ``pad_packed_sequence`` knows their maximum, as PyTorch's."""
    known = eager_array(lengths) if isinstance(lengths, Tensor) else None
    if known is not None and known.dtype.kind in "iu":
        return apply("tensor.constant", value=_checked_constant(function, known, data))
    if isinstance(lengths, Tensor):
        if lengths.ndim != 1 or lengths.shape[0] != data.shape[1]:
            raise located_error(f"{function}: lengths must have shape {format_shape((data.shape[1],))}, one length per sequence of "
                                f"the batch, got {lengths.type}")
        if lengths.dtype.is_float or lengths.dtype is DType.bool:
            raise located_error(f"{function}: lengths must be an integer tensor (int64), got {lengths.type}")
        return lengths if lengths.dtype is DType.i64 else lengths.to(DType.i64)
    return apply("tensor.constant", value=_checked_constant(function, lengths, data))


def _checked_constant(function: str, lengths: Any, data: Tensor) -> np.ndarray:
    """Constant ``lengths`` as an int64 array, checked against the batch and the padded length."""
    array = np.asarray(lengths)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise located_error(f"{function}: lengths must be a 1-D list of ints or an int64 tensor (N,), got {lengths!r}")
    batch, length = data.shape[1], data.shape[0]
    if not isinstance(batch, int):
        raise located_error(f"{function}: constant lengths need a static batch, but the input's batch dim is the symbolic "
                            f"{batch!r}; pass the lengths as an input of the model (an int64 tensor (N,)) instead")
    if array.shape[0] != batch:
        raise located_error(f"{function}: lengths must have shape ({batch},), one length per sequence of the batch, got {array.shape[0]}")
    if array.size and (array.min() < 1 or array.max() > length):
        raise located_error(f"{function}: every length must be in [1, {length}] (the padded length), got {array.tolist()}")
    return array.astype(np.int64)


def constant_lengths(lengths: Tensor) -> np.ndarray | None:
    """The values of ``lengths`` when it is a constant of the graph (given as a list or array), else ``None``."""
    producer = lengths.value.producer
    return np.asarray(producer.attrs["value"]) if producer is not None and producer.name == "tensor.constant" else None


def step_masks(sequence: PackedSequence) -> list[Tensor]:
    """Per time step ``t``, which rows are still running: ``lengths > t`` as a bool ``(N, 1)`` column, which
    broadcasts over a state ``(N, features)``."""
    column = sequence.lengths.unsqueeze(1)
    return [column > time for time in range(sequence.data.shape[0])]


def valid_steps(lengths: Tensor, steps: int, rank: int) -> Tensor:
    """``t < lengths[n]`` as a bool ``(steps, N, 1, ...)`` of ``rank`` dims, broadcasting over data ``(steps, N, *)``."""
    valid = apply("tensor.less", np.arange(steps, dtype=np.int64).reshape(steps, 1), lengths)
    for _ in range(rank - 2):
        valid = valid.unsqueeze(-1)
    return valid


def output_steps(sequence: PackedSequence, total_length: int | None) -> int:
    """The time steps ``pad_packed_sequence`` returns: ``total_length``, else the longest constant length, else ``L``;
    ``total_length`` may not cut a sequence (for traced lengths: may not be under ``L``)."""
    known, padded = constant_lengths(sequence.lengths), sequence.data.shape[0]
    longest = int(known.max()) if known is not None and known.size else padded
    if total_length is None:
        return longest
    if isinstance(total_length, bool) or not isinstance(total_length, (int, np.integer)) or total_length < longest:
        what = "the longest length" if known is not None else "the padded length L (traced lengths: kiln cannot know their maximum)"
        raise located_error(f"pad_packed_sequence: total_length must be an int of at least {longest}, {what}, got {total_length!r}")
    return int(total_length)


# pad_sequence ----------------------------------------------------------------------------------------------------


def _trailing_mismatch(shapes: Sequence[tuple[Any, ...]]) -> str | None:
    """What is wrong, unless every sequence has a time dim and the same trailing dims."""
    if any(len(shape) == 0 for shape in shapes) or len({shape[1:] for shape in shapes}) > 1:
        return f"pad_sequence: every sequence must be (L_i, *) with the same trailing dims, got shapes {[format_shape(s) for s in shapes]}"
    return None


def _pad_arrays(arrays: list[np.ndarray], batch_first: bool, padding_value: float, padding_side: str) -> np.ndarray:
    if mismatch := _trailing_mismatch([array.shape for array in arrays]):
        raise ValueError(mismatch)
    longest = max(array.shape[0] for array in arrays)
    padded = np.full((len(arrays), longest, *arrays[0].shape[1:]), padding_value, dtype=np.result_type(*arrays))
    for row, array in zip(padded, arrays):
        (row[longest - array.shape[0] :] if padding_side == "left" else row[: array.shape[0]])[...] = array
    return padded if batch_first else padded.swapaxes(0, 1).copy()


def _pad_tensors(tensors: list[Tensor], batch_first: bool, padding_value: float, padding_side: str) -> Tensor:
    shapes = [tuple(tensor.shape) for tensor in tensors]
    if mismatch := _trailing_mismatch(shapes):
        raise located_error(mismatch)
    if any(not isinstance(shape[0], int) for shape in shapes):
        raise located_error(f"pad_sequence: traced sequences need static lengths, got shapes {[format_shape(s) for s in shapes]}")
    longest = max(shape[0] for shape in shapes)
    padded = [F.pad(tensor, [0, 0] * (tensor.ndim - 1) + _sides(longest - tensor.shape[0], padding_side), value=padding_value)
              for tensor in tensors]
    return F.stack(padded, dim=0 if batch_first else 1)


def _sides(missing: int, padding_side: str) -> list[int]:
    """``F.pad``'s ``(before, after)`` for the time dim."""
    return [missing, 0] if padding_side == "left" else [0, missing]


__all__ = ["PackedSequence", "pack_padded_sequence", "pack_sequence", "pad_packed_sequence", "pad_sequence"]
