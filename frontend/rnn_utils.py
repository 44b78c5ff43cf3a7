"""``kiln.nn.utils.rnn``: PyTorch's variable-length sequence API (``pack_padded_sequence``, ``pad_packed_sequence``,
``pad_sequence``, ``pack_sequence``, ``unpad_sequence``, ``unpack_sequence``, ``PackedSequence``) for kiln's recurrent
layers.

A ``PackedSequence`` takes one of two forms, decided when packing by whether the lengths are known then.

**PyTorch's layout, whenever the lengths are known**: a list or tuple of ints, a NumPy array, an eager tensor, or a
traced tensor computed from constants only (``frontend/trace_known_values.py``; in a ``kiln.compile`` trace also
``lengths.tolist()`` or ``lengths.cpu().numpy()`` of an argument, specialized and guarded by
``frontend/value_guards.py``). The four fields are PyTorch's, field by field: ``data`` ``(sum(lengths), *)``, time
step by time step and, within a step, the sequences by decreasing length; ``batch_sizes`` int64 ``(max(lengths),)``,
the sequences still running at each step; ``sorted_indices`` and ``unsorted_indices`` ``None`` with
``enforce_sorted=True`` (which then requires non-increasing lengths, a RuntimeError as PyTorch's) and int64
permutations otherwise. Packing and unpacking are each one gather at constant positions, so gradients flow through
``data`` eagerly and in ``kiln.compile``/``compile_train_step`` traces, and code that uses ``data`` directly (a loss
over ``packed.data``, ``PackedSequence(linear(ps.data), ps.batch_sizes, ps.sorted_indices, ps.unsorted_indices)``,
``ps.to(...)``) runs as in PyTorch. ``RNN``, ``LSTM`` and ``GRU`` given one unpack it to the padded batch, time-major
in the batch's order, run the masked recurrence below and pack their output in the input's layout; ``hx`` and ``h_n``
are in the batch's order, as PyTorch's.

**The masked form, only when the lengths are a traced tensor whose values exist only when the compiled step runs**
(an input of the step). PyTorch's layout is then impossible: the size of ``data`` and ``batch_sizes`` depends on the
values. kiln unrolls its time loop at trace time over the static padded length ``L``, so it keeps the padded batch
and *masks*: the recurrent layers run every step for every row and keep a row's state where ``t >= length``
(``where(t < lengths, new, old)``), so each final state is the one after its sequence's own last step, the reverse
direction starts at each sequence's own last element, and the outputs past a length are zero: the numbers of
PyTorch's packed path, and one compiled step serves every batch of lengths. What differs in that form:

- ``data`` is the padded batch, time-major ``(L, N, *)`` in the batch's order whatever ``batch_first``; functions of
  it that act per step (elementwise, ``Linear``, dropout) still work, since ``pad_packed_sequence`` and the layers
  mask the padding afresh; a reduction over its rows (a loss over ``packed.data``) does not mean PyTorch's;
- ``batch_sizes`` raises ``MaskedFieldError`` (an ``AttributeError`` and a ``TraceError``) saying why, and the tuple
  holds ``None`` in its place; ``sorted_indices`` and ``unsorted_indices`` are ``None``: the rows keep the batch's
  order. Rewrap transformed data with ``ps._replace(data=f(ps.data))``, which works in both forms;
- ``enforce_sorted`` is not checked (the values are unknown);
- ``pad_packed_sequence`` returns ``L`` steps (``total_length`` if given, at least ``L``), not ``max(lengths)``;
- ``unpad_sequence`` and ``unpack_sequence``, whose results have the lengths as shapes, raise.

Both forms carry ``lengths`` (int64 ``(N,)``, the batch's order), a kiln extension. Other differences from PyTorch:
equal lengths keep the batch's order (a stable sort) where ``torch.sort``, unstable past 16 elements, may order ties
otherwise, so with more than 16 sequences and ties ``sorted_indices`` and the order of ``data``'s rows within a step
may differ (every padded result is the same); lengths outside ``[1, L]`` are TraceErrors (PyTorch raises for 0 and
reads past ``L`` silently); ``unpad_sequence`` leaves its input alone (PyTorch's transposes it in place when
``batch_first=False``); a ``pad_packed_sequence`` ``total_length`` too short is a TraceError (PyTorch's a ValueError);
a ``kiln.compile``d function returning a ``PackedSequence`` returns its tensor fields as a plain tuple, without the
``None`` ones (``kiln.trace`` refuses those), where ``torch.compile`` returns the ``PackedSequence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType, format_shape
from kiln.frontend import functional as F
from kiln.frontend.eager_values import eager_array
from kiln.frontend.functional_nn import _filled
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import located_error


class MaskedFieldError(TraceError, AttributeError):
    """A field of PyTorch's layout read from a masked ``PackedSequence``: it does not exist there (an AttributeError, so
    ``hasattr`` says False), and the message says why and what to do."""


class PackedSequence(tuple):
    """PyTorch's ``PackedSequence``: the tuple ``(data, batch_sizes, sorted_indices, unsorted_indices)``, built as
    PyTorch's (``PackedSequence(data, batch_sizes, sorted_indices=None, unsorted_indices=None)``, the last computed
    from ``sorted_indices`` when missing), with ``_replace``, ``_asdict``, ``_fields`` and ``to``/``cpu``/``float``...
    The module docstring tells its two forms apart; ``pack_padded_sequence`` picks one."""

    _fields = ("data", "batch_sizes", "sorted_indices", "unsorted_indices")
    __match_args__ = _fields

    def __new__(cls, data: Any, batch_sizes: Any = None, sorted_indices: Tensor | None = None,
                unsorted_indices: Tensor | None = None) -> "PackedSequence":
        if batch_sizes is None:  # PyTorch's older form: PackedSequence((data, batch_sizes))
            if not isinstance(data, (tuple, list)) or len(data) != 2:
                raise located_error("PackedSequence: give data and batch_sizes (int64, one count per time step), or the pair "
                                    "(data, batch_sizes)")
            data, batch_sizes = data
        if not isinstance(batch_sizes, Tensor):
            batch_sizes = int64_constant(batch_sizes)
        if unsorted_indices is None and sorted_indices is not None:
            unsorted_indices = inverse_permutation(sorted_indices)
        return tuple.__new__(cls, (data, batch_sizes, sorted_indices, unsorted_indices))

    @classmethod
    def _make(cls, fields: Iterable[Any]) -> "PackedSequence":
        """The fields as they are (``namedtuple._make``: nothing computed)."""
        fields = tuple(fields)
        if len(fields) != 4:
            raise TypeError(f"PackedSequence._make: expected 4 fields {cls._fields}, got {len(fields)}")
        return tuple.__new__(cls, fields)

    @property
    def data(self) -> Tensor:
        """``(sum(lengths), *)`` in PyTorch's order; masked: the padded batch ``(L, N, *)``."""
        return tuple.__getitem__(self, 0)

    @property
    def batch_sizes(self) -> Tensor:
        """int64 ``(max(lengths),)``: how many sequences run at each step; a ``MaskedFieldError`` when masked."""
        if masked_lengths(self) is not None:
            raise located_error(
                "PackedSequence.batch_sizes does not exist here: the lengths were a traced tensor (an input of the compiled "
                "step), so kiln keeps this sequence padded, data (L, N, *) with .lengths, and masks past each length; "
                "batch_sizes would hold max(lengths) counts, a size known only when the step runs. Rewrap transformed data "
                "with ps._replace(data=f(ps.data)), read ps.lengths, or pack with lengths known while tracing (a list, an "
                "array, an eager tensor, lengths.tolist()) to get PyTorch's layout", kind=MaskedFieldError)
        return tuple.__getitem__(self, 1)

    @property
    def sorted_indices(self) -> Tensor | None:
        """int64 ``(N,)``: the batch's rows by decreasing length (``enforce_sorted=False``), else None."""
        return tuple.__getitem__(self, 2)

    @property
    def unsorted_indices(self) -> Tensor | None:
        """int64 ``(N,)``: the inverse of ``sorted_indices``, or None."""
        return tuple.__getitem__(self, 3)

    @property
    def lengths(self) -> Tensor:
        """kiln's extension: int64 ``(N,)``, each sequence's length in the batch's order (``pad_packed_sequence``'s
        second result): a constant in PyTorch's layout, the traced lengths in the masked form."""
        masked = masked_lengths(self)
        return masked if masked is not None else int64_constant(Layout.of(self, "PackedSequence.lengths").lengths)

    def _replace(self, **changes: Any) -> "PackedSequence":
        """The sequence with some fields replaced, as ``namedtuple._replace`` (nothing recomputed); a masked one takes a
        new ``data`` only, of the same padded layout."""
        unknown = sorted(set(changes) - set(self._fields))
        if unknown:
            raise ValueError(f"PackedSequence._replace: got unexpected field names {unknown}")
        lengths = masked_lengths(self)
        if lengths is None:
            return self._make(changes.get(name, field) for name, field in zip(self._fields, tuple.__iter__(self)))
        if set(changes) - {"data"}:
            raise located_error("PackedSequence._replace: a masked sequence (traced lengths) takes a new data only, padded (L, N, *); "
                                f"got {sorted(changes)}", kind=MaskedFieldError)
        return masked_sequence(changes.get("data", self.data), lengths)

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}

    def __repr__(self) -> str:
        lengths = masked_lengths(self)
        if lengths is not None:
            return f"PackedSequence(data={self.data!r}, lengths={lengths!r}, masked: the lengths are traced)"
        return "PackedSequence(" + ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, tuple.__iter__(self))) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (type(self), tuple(tuple.__iter__(self)), masked_lengths(self))

    # Devices and dtypes: data converted, the indices follow its device, batch_sizes stays (PyTorch's); cpu, double
    # and the other conversions are made by _converting below -------------------------------------------------------

    def to(self, *args: Any, **kwargs: Any) -> "PackedSequence":
        """``data.to(...)`` in this layout; ``self`` when ``data`` is unchanged, as PyTorch's."""
        return self._with_data(self.data.to(*args, **kwargs))

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda

    def is_pinned(self) -> bool:
        return self.data.is_pinned()

    def _with_data(self, data: Tensor) -> "PackedSequence":
        """This sequence holding ``data`` (``self`` if it is the same tensor), its indices on ``data``'s device."""
        if data is self.data:
            return self
        lengths = masked_lengths(self)
        if lengths is not None:
            return masked_sequence(data, lengths)
        moved = [None if index is None else index.to(data.device) for index in (self.sorted_indices, self.unsorted_indices)]
        return tuple.__new__(type(self), (data, self.batch_sizes, *moved))


def _converting(name: str) -> Any:
    """``PackedSequence.<name>``: ``data.<name>(...)`` in the same layout (``cpu``, ``double``, ``half``...)."""
    def method(self: PackedSequence, *args: Any, **kwargs: Any) -> PackedSequence:
        return self._with_data(getattr(self.data, name)(*args, **kwargs))

    method.__name__ = method.__qualname__ = name
    return method


for _name in ("cpu", "cuda", "pin_memory", "double", "float", "half", "long", "int", "short", "char", "byte"):
    setattr(PackedSequence, _name, _converting(_name))


def _rebuilt(kind: type, fields: tuple[Any, ...], lengths: Tensor | None) -> PackedSequence:
    """``PackedSequence.__reduce__``'s inverse (``copy.copy``, pickling)."""
    return kind._make(fields) if lengths is None else masked_sequence(fields[0], lengths)


def masked_sequence(data: Tensor, lengths: Tensor) -> PackedSequence:
    """The masked form: ``data`` padded time-major ``(L, N, *)`` and the traced int64 ``lengths`` ``(N,)``."""
    sequence = tuple.__new__(PackedSequence, (data, None, None, None))
    sequence.__dict__["_masked_lengths"] = lengths
    return sequence


def masked_lengths(sequence: PackedSequence) -> Tensor | None:
    """The traced lengths of a masked ``sequence``; None in PyTorch's layout."""
    return sequence.__dict__.get("_masked_lengths")


# Packing ---------------------------------------------------------------------------------------------------------


def pack_padded_sequence(input: Tensor, lengths: Any, batch_first: bool = False, enforce_sorted: bool = True) -> PackedSequence:
    """``input`` ``(L, N, *)`` (``(N, L, *)`` with ``batch_first``) with ``lengths`` ``(N,)``, each in ``[1, L]``. Known
    lengths give PyTorch's layout (with ``enforce_sorted``, checked to be non-increasing); a traced tensor of them, the
    masked form (module docstring)."""
    function = "pack_padded_sequence"
    if not isinstance(input, Tensor) or input.ndim < 2:
        got = input.type if isinstance(input, Tensor) else type(input).__name__
        raise located_error(f"{function}: input must be a traced tensor (L, N, *) (or (N, L, *) with batch_first=True), got {got}")
    data = input.transpose(0, 1) if batch_first else input
    if not isinstance(data.shape[0], int):
        raise located_error(f"{function}: kiln unrolls recurrent layers at trace time, so the padded length must be static; the time "
                            f"dim of {input.type} is the symbolic {data.shape[0]!r} (pad every batch to one length)")
    known = known_ints(lengths)
    if known is None:
        return masked_sequence(data, traced_lengths(function, lengths, data))
    layout = Layout.sorting(_checked_constant(function, known, data), enforce_sorted)
    time, row = layout.steps()
    return layout.packed(taken_rows(data.flatten(0, 1), time * data.shape[1] + row), enforce_sorted)


def pack_sequence(sequences: Sequence[Tensor], enforce_sorted: bool = True) -> PackedSequence:
    """PyTorch's ``pack_sequence``: traced sequences ``(L_i, *)`` of static lengths, packed (one gather from their
    concatenation), ``enforce_sorted`` as ``pack_padded_sequence``'s."""
    shapes = [tuple(sequence.shape) if isinstance(sequence, Tensor) else None for sequence in sequences]
    if not shapes or None in shapes:
        kinds = [type(sequence).__name__ for sequence in sequences]
        raise located_error(f"pack_sequence: expected a non-empty list of traced tensors (L_i, *), got {kinds}")
    if mismatch := _trailing_mismatch(shapes):
        raise located_error(mismatch.replace("pad_sequence", "pack_sequence"))
    lengths = [shape[0] for shape in shapes]
    if any(not isinstance(length, int) or length < 1 for length in lengths):
        raise located_error(f"pack_sequence: every sequence needs a static length of at least 1, got shapes "
                            f"{[format_shape(shape) for shape in shapes]}")
    layout = Layout.sorting(np.array(lengths, dtype=np.int64), enforce_sorted)
    time, row = layout.steps()
    starts = np.concatenate([[0], np.cumsum(layout.lengths)[:-1]])
    return layout.packed(taken_rows(F.cat(list(sequences)), starts[row] + time), enforce_sorted)


# Unpacking -------------------------------------------------------------------------------------------------------


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = False, padding_value: float = 0.0,
                        total_length: int | None = None) -> tuple[Tensor, Tensor]:
    """``(padded, lengths)``: ``sequence``'s data with ``padding_value`` wherever ``t >= lengths[n]``, ``(T, N, *)``
    (``(N, T, *)`` with ``batch_first``) in the batch's order, and the int64 lengths ``(N,)``. ``T`` is
    ``total_length`` if given, else ``max(lengths)`` (the padded length ``L`` for a masked sequence)."""
    if not isinstance(sequence, PackedSequence):
        raise located_error(f"pad_packed_sequence: expected a PackedSequence (from pack_padded_sequence or a recurrent layer), got "
                            f"{type(sequence).__name__}")
    lengths = masked_lengths(sequence)
    if lengths is not None:
        padded = _masked_padded(sequence.data, lengths, padding_value, _output_steps(total_length, sequence.data.shape[0], masked=True))
    else:
        layout = Layout.of(sequence, "pad_packed_sequence")
        padded = layout.padded(sequence.data, _output_steps(total_length, int(layout.lengths.max()), masked=False), padding_value)
        lengths = int64_constant(layout.lengths)
    return (padded.transpose(0, 1) if batch_first else padded), lengths


def unpad_sequence(padded_sequences: Tensor, lengths: Any, batch_first: bool = False) -> list[Tensor]:
    """PyTorch's ``unpad_sequence``: sequence ``n`` of the padded batch, its first ``lengths[n]`` steps, for each
    ``n``. The results' shapes are the lengths, so these must be known (ints, an array, an eager tensor)."""
    known = known_ints(lengths)
    if known is None:
        raise located_error(f"unpad_sequence: each sequence comes back at its own length, so the lengths must be known while tracing "
                            f"(a list, an array, an eager tensor, lengths.tolist()); got the traced {lengths.type}. Keep the padded "
                            "batch and mask it (t < lengths) instead")
    batch = padded_sequences.shape[0 if batch_first else 1]
    if known.ndim != 1 or known.shape[0] != batch or (known.size and known.dtype.kind not in "iu"):
        raise located_error(f"unpad_sequence: lengths must be {batch} ints, one per sequence of the batch, got {known.tolist()}")
    return [padded_sequences[index, :length] if batch_first else padded_sequences[:length, index]
            for index, length in enumerate(known.tolist())]


def unpack_sequence(packed_sequences: PackedSequence) -> list[Tensor]:
    """PyTorch's ``unpack_sequence``: each sequence of ``packed_sequences`` ``(lengths[n], *)``, in the batch's order."""
    if isinstance(packed_sequences, PackedSequence) and masked_lengths(packed_sequences) is not None:
        raise located_error("unpack_sequence: this PackedSequence is masked (its lengths are traced), and each sequence would come "
                            "back at its own length, known only when the step runs; use pad_packed_sequence, or pack with "
                            "lengths known while tracing (a list, an array, an eager tensor, lengths.tolist())", kind=MaskedFieldError)
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


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


# For the recurrent layers ----------------------------------------------------------------------------------------


def unpacked_batch(sequence: PackedSequence) -> tuple[Tensor, Tensor]:
    """``(padded, lengths)``: ``sequence`` as the padded batch, time-major ``(T, N, *)`` in the batch's order
    (``T = max(lengths)``, zeros past each length; a masked one's data as it is), and its int64 lengths ``(N,)``."""
    lengths = masked_lengths(sequence)
    if lengths is not None:
        return sequence.data, lengths
    layout = Layout.of(sequence, "a recurrent layer")
    return layout.padded(sequence.data, int(layout.lengths.max()), 0.0), int64_constant(layout.lengths)


def repacked(sequence: PackedSequence, padded: Tensor) -> PackedSequence:
    """``padded`` ``(T, N, *)``, a per-step function of ``unpacked_batch(sequence)`` (a layer's output), in
    ``sequence``'s form: packed in its layout with its fields, or masked with its lengths."""
    lengths = masked_lengths(sequence)
    if lengths is not None:
        return masked_sequence(padded, lengths)
    time, row = Layout.of(sequence, "a recurrent layer").steps()
    return tuple.__new__(PackedSequence, (taken_rows(padded.flatten(0, 1), time * padded.shape[1] + row), *sequence[1:]))


def step_masks(lengths: Tensor, steps: int) -> list[Tensor | None]:
    """Per time step ``t``, which rows still run: ``lengths > t`` as a bool ``(N, 1)`` column, which broadcasts over a
    state ``(N, features)``; None where the lengths are known and every row runs (that step needs no mask)."""
    known, column = known_ints(lengths), lengths.unsqueeze(1)
    return [None if known is not None and bool((known > time).all()) else column > time for time in range(steps)]


def valid_steps(lengths: Tensor, steps: int, rank: int) -> Tensor:
    """``t < lengths[n]`` as a bool ``(steps, N, 1, ...)`` of ``rank`` dims, broadcasting over data ``(steps, N, *)``."""
    valid = apply("tensor.less", np.arange(steps, dtype=np.int64).reshape(steps, 1), lengths)
    for _ in range(rank - 2):
        valid = valid.unsqueeze(-1)
    return valid


# PyTorch's layout ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where PyTorch's packed layout puts each step of each sequence, from lengths known while tracing."""

    lengths: np.ndarray
    """int64 ``(N,)``: each sequence's length, in the batch's order."""
    order: np.ndarray
    """int64 ``(N,)``: the batch's rows by decreasing length, PyTorch's ``sorted_indices`` (ties in batch order)."""

    @classmethod
    def sorting(cls, lengths: np.ndarray, enforce_sorted: bool) -> "Layout":
        """The layout of a batch with ``lengths`` (positive, checked by the caller); with ``enforce_sorted``, PyTorch's
        error unless they are non-increasing."""
        if enforce_sorted and np.any(lengths[1:] > lengths[:-1]):
            raise located_error("`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
                                "`enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this requirement if "
                                "you do not need ONNX exportability.")
        return cls(lengths, np.argsort(-lengths, kind="stable").astype(np.int64))

    @classmethod
    def of(cls, sequence: PackedSequence, user: str) -> "Layout":
        """The layout of ``sequence``'s fields, which must be known (``user`` needs it): ``batch_sizes`` positive and
        non-increasing, summing to ``data``'s rows, and ``unsorted_indices`` (else ``sorted_indices``) a permutation."""
        sizes = known_ints(sequence.batch_sizes)
        rows = sequence.data.shape[0] if sequence.data.ndim else None
        if sizes is None or sizes.ndim != 1 or not sizes.size or np.any(sizes < 1) or np.any(sizes[1:] > sizes[:-1]) or sizes.sum() != rows:
            got = sizes.tolist() if sizes is not None else f"the traced {sequence.batch_sizes.type}"
            raise located_error(f"{user}: a PackedSequence needs batch_sizes known while tracing, positive, non-increasing and summing "
                                f"to data's {rows} rows (PyTorch's layout, from pack_padded_sequence); got {got}")
        sorted_lengths = (sizes[None, :] > np.arange(sizes[0])[:, None]).sum(1)
        unsorted = _permutation(sequence, int(sizes[0]), user)
        if unsorted is None:
            return cls(sorted_lengths, np.arange(sizes[0], dtype=np.int64))
        return cls(sorted_lengths[unsorted], np.argsort(unsorted).astype(np.int64))

    @property
    def batch_sizes(self) -> np.ndarray:
        """int64 ``(max(lengths),)``: how many sequences run at each step."""
        return (self.lengths[None, :] > np.arange(self.lengths.max())[:, None]).sum(1).astype(np.int64)

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(time, row)`` of each row of the packed data, in its order: step by step, rows by decreasing length."""
        sizes = self.batch_sizes
        return np.repeat(np.arange(sizes.size), sizes), np.concatenate([self.order[:size] for size in sizes])

    def packed(self, data: Tensor, enforce_sorted: bool) -> PackedSequence:
        """``data`` in this layout with PyTorch's fields: indices only without ``enforce_sorted``."""
        indices = (None, None) if enforce_sorted else (int64_constant(self.order), int64_constant(np.argsort(self.order)))
        return tuple.__new__(PackedSequence, (data, int64_constant(self.batch_sizes), *indices))

    def padded(self, data: Tensor, steps: int, padding_value: float) -> Tensor:
        """Packed ``data`` as the padded batch ``(steps, N, *)`` in the batch's order: one gather from its rows and a
        row of ``padding_value`` (only where some sequence is shorter than ``steps``)."""
        batch, total = self.lengths.size, data.shape[0]
        time, row = self.steps()
        positions = np.full(steps * batch, total, dtype=np.int64)
        positions[time * batch + row] = np.arange(total)
        if positions.max() == total:
            data = F.cat([data, _filled(padding_value, (), data).broadcast_to((1, *data.shape[1:]))])
        return taken_rows(data, positions).reshape(steps, batch, *data.shape[1:])


def _permutation(sequence: PackedSequence, batch: int, user: str) -> np.ndarray | None:
    """``unsorted_indices`` (else the inverse of ``sorted_indices``) as a known permutation of ``batch`` rows, or None."""
    given = sequence.unsorted_indices if sequence.unsorted_indices is not None else sequence.sorted_indices
    if given is None:
        return None
    known = known_ints(given)
    if known is None or known.shape != (batch,) or not np.array_equal(np.sort(known), np.arange(batch)):
        got = known.tolist() if known is not None else f"the traced {given.type}"
        raise located_error(f"{user}: a PackedSequence's sorted_indices and unsorted_indices must be permutations of its {batch} "
                            f"sequences, known while tracing; got {got}")
    return known if sequence.unsorted_indices is not None else np.argsort(known)


def taken_rows(source: Tensor, positions: np.ndarray) -> Tensor:
    """Rows ``positions`` of ``source`` by one gather at constant positions (its gradient scatters back); ``source``
    itself where they are all its rows in order."""
    if positions.size == source.shape[0] and np.array_equal(positions, np.arange(positions.size)):
        return source
    return apply("tensor.take", source, int64_constant(positions), axis=0)


def inverse_permutation(permutation: Tensor) -> Tensor:
    """PyTorch's ``invert_permutation``: a constant where ``permutation`` is known, else a traced ``argsort``."""
    known = known_ints(permutation)
    return int64_constant(np.argsort(known)) if known is not None else permutation.argsort()


def int64_constant(values: Any) -> Tensor:
    """``values`` as a constant int64 tensor (an eager one outside a trace)."""
    return apply("tensor.constant", value=np.asarray(values, dtype=np.int64))


# Lengths ---------------------------------------------------------------------------------------------------------


def known_ints(values: Any) -> np.ndarray | None:
    """The values of ``values`` if known now: a list or array, an eager tensor, a traced tensor computed from constants
    only (``frontend/trace_known_values.py``); None for a traced tensor whose values exist only when the graph runs."""
    if not isinstance(values, Tensor):
        return np.asarray(values)
    known = eager_array(values)
    if known is None:
        from kiln.frontend.trace_known_values import known_value  # lazily: it evaluates with the backend's kernels

        known = known_value(values)
    return None if known is None else np.asarray(known)


def traced_lengths(function: str, lengths: Tensor, data: Tensor) -> Tensor:
    """Traced ``lengths`` for the time-major ``data`` ``(L, N, *)``: checked to be an integer tensor ``(N,)``, as int64."""
    if lengths.ndim != 1 or lengths.shape[0] != data.shape[1]:
        raise located_error(f"{function}: lengths must have shape {format_shape((data.shape[1],))}, one length per sequence of "
                            f"the batch, got {lengths.type}")
    if lengths.dtype.is_float or lengths.dtype is DType.bool:
        raise located_error(f"{function}: lengths must be an integer tensor (int64), got {lengths.type}")
    return lengths if lengths.dtype is DType.i64 else lengths.to(DType.i64)


def _checked_constant(function: str, lengths: Any, data: Tensor) -> np.ndarray:
    """Known ``lengths`` as an int64 array, checked against the batch and the padded length."""
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


def _output_steps(total_length: Any, longest: int, masked: bool) -> int:
    """The time steps ``pad_packed_sequence`` returns: ``total_length``, else ``longest`` (the longest length, or a
    masked sequence's padded length ``L``); ``total_length`` may not cut a sequence (a masked one: be under ``L``)."""
    if total_length is None:
        return longest
    if isinstance(total_length, bool) or not isinstance(total_length, (int, np.integer)) or total_length < longest:
        what = "the padded length L (traced lengths: kiln cannot know their maximum)" if masked else "the longest length"
        raise located_error(f"pad_packed_sequence: total_length must be an int of at least {longest}, {what}, got {total_length!r}")
    return int(total_length)


def _masked_padded(data: Tensor, lengths: Tensor, padding_value: float, steps: int) -> Tensor:
    """A masked sequence's data ``(L, N, *)`` with ``padding_value`` wherever ``t >= lengths[n]``, padded to ``steps``."""
    padded = F.where(valid_steps(lengths, data.shape[0], data.ndim), data, padding_value)
    if steps > data.shape[0]:
        padded = F.pad(padded, [0, 0] * (data.ndim - 1) + [0, steps - data.shape[0]], value=padding_value)
    return padded


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


__all__ = ["MaskedFieldError", "PackedSequence", "pack_padded_sequence", "pack_sequence", "pad_packed_sequence", "pad_sequence",
           "unpack_sequence", "unpad_sequence"]
