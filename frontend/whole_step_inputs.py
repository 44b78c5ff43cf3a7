"""A ``kiln.compile``d whole training step given tensors that require grad.

``kiln.compile(fn)`` called with a tensor that requires grad traces ``fn`` as a forward whose outputs a later
``backward()`` differentiates (``runtime/compiled_training.py``), as ``torch.compile``'s. A whole step (zero_grad,
loss, ``backward()``, ``optimizer.step()``) given such a tensor is not that: torchbeast's learner gets a batch stacked
from buffers an actor wrote with ``buffers[key][index][0, ...] = agent_output[key]``, where ``agent_output`` came from
a forward outside ``no_grad``, so the batch requires grad in PyTorch (its chain goes back to the actor). That trace
reaches ``backward()`` with no step capture; it raises ``BackwardInCompiledForward``, and the call takes the
whole-step path instead (``runtime/step_capture.py``).

An argument given a leaf (an attack's ``delta = torch.zeros_like(x).requires_grad_()`` passed to a compiled PGD step)
is a leaf of the step too: a ``backward()`` reaching it adds to its traced ``.grad`` (the caller's ``.grad`` fed in,
where it has one), which the call hands back to the caller's tensor (``GradArguments``), as torch's. Where the loss
reaches an argument with a chain (whose gradient PyTorch's ``backward()`` would carry on into the caller's graph) the
step refuses (``check_grad_arguments_unreached``); where it does not, as in torchbeast's (the behaviour policy's
logits enter V-trace under ``no_grad``), the step is PyTorch's.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GradArguments:
    """The arguments of a whole-step call that require grad (``positions``); those given leaves (``leaves``: the step's
    own leaves, whose ``.grad`` it hands back whole); those of the leaves holding a ``.grad`` at the call (``held``:
    fed in as the traced ``.grad`` a ``backward()`` adds to, a PGD loop's ``delta.grad.zero_()`` between calls)."""

    positions: tuple[int, ...] = ()
    leaves: tuple[int, ...] = ()
    held: tuple[int, ...] = ()

    @staticmethod
    def of(arguments: Sequence[Any], positions: Sequence[int]) -> "GradArguments":
        leaves = tuple(k for k in positions if arguments[k].is_leaf)
        return GradArguments(tuple(positions), leaves, tuple(k for k in leaves if arguments[k].grad is not None))


def check_grad_arguments_unreached(differentiable_path: Callable[[Sequence[Value]], list[Any]],
                                   arguments: Sequence[Value]) -> None:
    """Refuse a compiled step's ``backward()`` whose loss depends (through differentiable ops) on an argument that
    requires grad: PyTorch would give it a gradient, which the step's graph cannot hand back."""
    if arguments and differentiable_path(arguments):
        raise located_error("backward() in a compiled training step: the loss depends on an argument that requires grad "
                            "and is no leaf (a tensor with a chain), whose gradient PyTorch's backward() would carry on "
                            "into the caller's graph and a compiled step cannot; pass it detached (x.detach()), or run "
                            "the step eagerly")
