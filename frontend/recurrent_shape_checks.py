"""PyTorch's shape checks of ``nn.RNN``/``nn.GRU``/``nn.LSTM`` and their cells, with its words and error types:

```python
nn.GRU(4, 8)(x)          # x (5, 2, 3): input.size(-1) must be equal to input_size. Expected 4, got 3
nn.GRU(4, 8)(x, h)       # h (1, 2, 7): Expected hidden size (1, 2, 8), got [1, 2, 7]
nn.LSTM(4, 8)(x, (h, c)) # h (1, 2, 7): Expected hidden[0] size (1, 2, 8), got [1, 2, 7]
nn.GRUCell(4, 8)(x, h)   # h (2, 7):    hidden0 has inconsistent hidden_size: got 7, expected 8
```

A wrong rank is torch's ``ValueError``, the rest its ``RuntimeError``; each names the user's line. An unbatched input's
states are checked as PyTorch does, after it gives them a batch dim of 1.
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located


class RecurrentShapeError(TraceError, RuntimeError):
    """An input or state whose sizes do not fit the recurrent layer (torch's ``RuntimeError``)."""


class RecurrentRankError(TraceError, ValueError):
    """An input of a rank the recurrent layer does not take (torch's ``ValueError``)."""


def check_sequence_input(owner: str, input: Any, input_size: int) -> None:  # noqa: A002  (torch's names)
    """An ``RNN``/``GRU``/``LSTM`` input: 2-D or 3-D, its last dim ``input_size``."""
    if input.ndim not in (2, 3):
        _refuse(RecurrentRankError, f"{owner}: Expected input to be 2D or 3D, got {input.ndim}D instead")
    if input.shape[-1] != input_size:
        _refuse(RecurrentShapeError, f"input.size(-1) must be equal to input_size. Expected {input_size}, "
                                     f"got {input.shape[-1]}")


def check_sequence_states(states: Sequence[Any], leading: tuple[Any, Any], sizes: Sequence[int], batched: bool) -> None:
    """The given initial states: each of the input's rank (3-D batched, 2-D unbatched) and of shape
    ``leading + (size,)`` (``leading``: layers times directions, and the batch, 1 when unbatched)."""
    rank = 3 if batched else 2
    for index, (state, size) in enumerate(zip(states, sizes)):
        if not hasattr(state, "shape"):
            continue  # not a tensor: kiln's own check says what it must be
        shape = tuple(state.shape)
        if len(shape) != rank:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            _refuse(RecurrentShapeError, f"For {kind} input, hx should also be {rank}-D but got {len(shape)}-D tensor")
        got, expected = shape if batched else (shape[0], 1, shape[1]), (*leading, size)
        if got != expected:
            name = f"hidden[{index}]" if len(states) == 2 else "hidden"
            _refuse(RecurrentShapeError, f"Expected {name} size ({', '.join(map(str, expected))}), got "
                                         f"[{', '.join(map(str, got))}]")


def check_cell_input(owner: str, input: Any, input_size: int) -> None:  # noqa: A002  (torch's names)
    """An ``RNNCell``/``GRUCell``/``LSTMCell`` input: 1-D or 2-D, its last dim ``input_size``."""
    if input.ndim not in (1, 2):
        _refuse(RecurrentRankError, f"{owner}: Expected input to be 1D or 2D, got {input.ndim}D instead")
    if input.shape[-1] != input_size:
        _refuse(RecurrentShapeError, f"input has inconsistent input_size: got {input.shape[-1]} expected {input_size}")


def check_cell_states(states: Sequence[Any], input: Any, hidden_size: int) -> None:  # noqa: A002
    """A cell's given states: the input's batch size (when batched) and ``hidden_size`` features."""
    for index, state in enumerate(states):
        shape = tuple(getattr(state, "shape", ()))
        if input.ndim == 2 and len(shape) == 2 and shape[0] != input.shape[0]:
            _refuse(RecurrentShapeError, f"Input batch size {input.shape[0]} doesn't match hidden{index} batch size "
                                         f"{shape[0]}")
        if shape and shape[-1] != hidden_size:
            _refuse(RecurrentShapeError, f"hidden{index} has inconsistent hidden_size: got {shape[-1]}, expected "
                                         f"{hidden_size}")


def _refuse(error_class: type[TraceError], message: str) -> None:
    raise located(error_class, message)
