"""The refusal of a traced tensor read as a NumPy array (``np.asarray(t)``, ``np.where(t != 0)``,
``torch.LongTensor(t)``): its values exist only when the compiled graph runs.

A ``kiln.compile``'d function traces its tensor arguments, and its NumPy array arguments too (a NumPy call gets NumPy
arrays back), so code that works on a batch through NumPy inside it (SASRec's ``torch.LongTensor(log_seqs)``,
``poss *= (log_seqs != 0)``, ``np.where(pos != 0)``) meets a traced tensor there. The error is a ``TypeError``, as
before (NumPy's protocol and ported code's ``except TypeError`` expect one), located at the user's line, and says what
to write instead.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.trace import TraceContext, located_error


class TracedArrayError(TraceError, TypeError):
    """A traced tensor read as a NumPy array: a ``TypeError`` too, as ``__array__``'s refusal was."""


def traced_array_error(tensor: Any) -> TracedArrayError:
    """The located error for ``tensor`` (traced, its values unknown) read as a NumPy array."""
    exporting = TraceContext.active() and TraceContext.current().exporting
    advice = ("an ONNX export has no values of its inputs: compute this with tensor ops, or outside the exported "
              "model" if exporting else
              "a NumPy array given to a kiln.compile'd function is traced as a tensor too. Write this with tensor ops "
              "(torch.where(x != 0), torch.arange(n).tile(b, 1), x.long()), or do the NumPy work outside the compiled "
              "function; to read values, return the tensor from it (a call given NumPy arrays returns NumPy arrays)")
    return located_error(f"np.asarray() of a traced {getattr(tensor, 'type', 'tensor')}: its values exist only when the "
                         f"compiled function runs; {advice}", kind=TracedArrayError)


__all__ = ["TracedArrayError", "traced_array_error"]
