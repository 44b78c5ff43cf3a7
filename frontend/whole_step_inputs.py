"""A ``kiln.compile``d whole training step given tensors that require grad.

``kiln.compile(fn)`` called with a tensor that requires grad traces ``fn`` as a forward whose outputs a later
``backward()`` differentiates (``runtime/compiled_training.py``), as ``torch.compile``'s. A whole step (zero_grad,
loss, ``backward()``, ``optimizer.step()``) given such a tensor is not that: torchbeast's learner gets a batch stacked
from buffers an actor wrote with ``buffers[key][index][0, ...] = agent_output[key]``, where ``agent_output`` came from
a forward outside ``no_grad``, so the batch requires grad in PyTorch (its chain goes back to the actor). That trace
reaches ``backward()`` with no step capture; it raises ``BackwardInCompiledForward``, and the call takes the
whole-step path instead (``runtime/step_capture.py``). That path differentiates the parameters only, so where the loss
reaches such an argument (PyTorch's ``backward()`` would give it, or its chain, a gradient too) the step refuses
(``check_grad_arguments_unreached``); where it does not, as in torchbeast's (the behaviour policy's logits enter
V-trace under ``no_grad``), the step is PyTorch's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Sequence

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Value
from kiln.frontend.trace import TraceContext, located_error


_TRACING = threading.local()
"""``forward``: whether a compiled forward for arguments that require grad is being traced in this thread."""


class BackwardInCompiledForward(TraceError):
    """``backward()`` inside a ``kiln.compile``d forward traced for arguments that require grad: the function is a
    whole training step, traced again as one."""


@contextlib.contextmanager
def tracing_compiled_forward() -> Iterator[None]:
    """While a compiled forward for arguments that require grad is traced (what
    ``refuse_backward_in_compiled_forward`` looks for)."""
    saved, _TRACING.forward = getattr(_TRACING, "forward", False), True
    try:
        yield
    finally:
        _TRACING.forward = saved


def refuse_backward_in_compiled_forward() -> None:
    """Raise ``BackwardInCompiledForward`` where the trace is a compiled forward (``tracing_compiled_forward``)."""
    if getattr(_TRACING, "forward", False) and TraceContext.active():
        raise BackwardInCompiledForward("backward() inside a kiln.compile'd function given tensors that require grad: "
                                        "traced again as a whole training step")


def check_grad_arguments_unreached(differentiable_path: Callable[[Sequence[Value]], list[Any]],
                                   arguments: Sequence[Value]) -> None:
    """Refuse a compiled step's ``backward()`` whose loss depends (through differentiable ops) on an argument that
    requires grad: PyTorch would give it a gradient, which the step's graph cannot hand back."""
    if arguments and differentiable_path(arguments):
        raise located_error("backward() in a compiled training step: the loss depends on an argument that requires grad "
                            "(a tensor with a chain, or a leaf made with requires_grad=True), which PyTorch's backward() "
                            "would give a gradient too and a compiled step cannot; pass it detached (x.detach()), or run "
                            "the step eagerly")
