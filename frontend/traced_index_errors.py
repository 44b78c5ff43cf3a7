"""The refusal of a traced tensor used where Python needs an int at once: a slice bound (``masks[..., :size[0]]``), a
size (``F.interpolate(x, size=(h, w))`` with ``h, w`` tensors), ``range(t)``.

A kiln graph's shapes are fixed when it is traced. ``kiln.compile`` specializes such a value when it is computed from
the call's inputs (``frontend/value_guards.py``); anything else, and any value read from an ONNX export's inputs (the
file must serve every input), is refused here, naming the user's line and what to do. SAM's ``SamOnnxModel`` meets
this: ``mask_postprocessing`` crops and resizes its masks to ``orig_im_size``, an input of the exported file.
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.trace import TraceContext, located_error


class TracedIndexError(TraceError, TypeError):
    """A traced tensor used as a Python int: a ``TypeError`` too, as ``__index__``'s refusal is (Python's protocols
    and ported code's ``except TypeError`` expect one)."""


def traced_index_error(tensor: Any) -> TracedIndexError:
    """The located error for ``tensor`` (traced, its value unknown) used as a Python int."""
    exporting = TraceContext.active() and TraceContext.current().exporting
    advice = ("an ONNX export cannot read it from the export's inputs (the file must serve every input, and kiln's "
              "exported shapes are static): pass the size as a Python int (hard-coded into the file), or do this step "
              "outside the exported model" if exporting else
              "kiln.compile specializes such a value only when it is computed from the call's inputs, lifted tensors "
              "or frozen buffers; compute it from those, or pass a Python int")
    return located_error(f"a traced {getattr(tensor, 'type', 'tensor')} used as a Python int (a slice bound, a size, "
                         f"an index): its value exists only when the graph runs; {advice}", kind=TracedIndexError)
