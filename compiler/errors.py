"""The errors kiln raises. Each says what went wrong, where, and what to do."""

from __future__ import annotations


class KilnError(Exception):
    """Base of every error kiln raises on purpose."""


class ShapeError(KilnError, ValueError, RuntimeError):
    """A shape or dtype rule rejected its operands (a ``RuntimeError`` too, as PyTorch's shape errors are)."""


class TorchShapeError(ShapeError):
    """A shape rule's refusal in PyTorch's own words, which name no op: a trace shows it as it is, under the user's
    line (``shape '[4, 2]' is invalid for input of size 6``)."""


class BroadcastError(TorchShapeError):
    """Shapes that do not broadcast; the message is PyTorch's sentence (``The size of tensor a (3) must match ...``),
    which names no op, so it reaches the user as it is, under the user's line."""


class DimOutOfRangeError(TorchShapeError, IndexError):
    """A dim outside ``[-rank, rank)``: an ``IndexError``, as PyTorch's ``Dimension out of range``."""


class TraceError(KilnError, RuntimeError):
    """An error while tracing user code (or running it eagerly); the message names the user's source line. A
    ``RuntimeError``, as PyTorch's errors at run time are: ported code's ``except RuntimeError`` catches it."""


class IndexValueError(KilnError, IndexError, RuntimeError):
    """A compiled graph's index tensor holds a value outside its range (``tensor.check_index``): an ``IndexError`` as
    torch's ``index out of range in self``, and a ``RuntimeError`` as its ``gather`` and ``one_hot`` errors."""


class VerificationError(KilnError):
    """The verifier found a malformed graph."""


class ParseError(KilnError):
    """The IR text could not be parsed; the message shows line:col and a caret."""


class LoweringError(KilnError):
    """A backend cannot lower an op."""


class InputError(KilnError, TypeError):
    """A compiled function was called with arrays of the wrong type."""


class CheckpointError(KilnError):
    """A checkpoint could not be written or read, or does not fit what it is loaded into."""
