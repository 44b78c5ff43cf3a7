"""The errors kiln raises. Each says what went wrong, where, and what to do."""

from __future__ import annotations


class KilnError(Exception):
    """Base of every error kiln raises on purpose."""


class ShapeError(KilnError, ValueError):
    """A shape or dtype rule rejected its operands."""


class TraceError(KilnError):
    """An error while tracing user code; the message names the user's source line."""


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
