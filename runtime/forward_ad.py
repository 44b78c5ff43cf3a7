"""``kiln.autograd.forward_ad``: PyTorch's dual tensors (``torch.autograd.forward_ad``), for the forward-mode
derivatives PINN code takes of its inputs.

```python
import kiln.autograd.forward_ad as fwAD
with fwAD.dual_level():
    x_dual = fwAD.make_dual(x, torch.ones_like(x))   # x with the tangent dx = 1
    u = model(x_dual)
    u_x = fwAD.unpack_dual(u).tangent                # du/dx along the tangent: J v
```

kiln has no per-op tangents: ``make_dual`` gives a tensor of the primal's values whose ops kiln's autograd follows
(a view of a tensor that requires grad, keeping its chain; else a new leaf that requires grad),
and ``unpack_dual(y)`` computes ``y``'s tangent when asked, as the Jacobian-vector product of ``y`` by the level's
duals, ``J v``: the VJP of the VJP (``u -> u^T J`` at a zero cotangent ``u``, then its VJP with the tangents), with
``create_graph`` so a later ``backward()`` differentiates through it (reverse over forward, as PyTorch allows). A
tensor no dual reaches has no tangent (None), as PyTorch's. One level at a time, as PyTorch; eagerly and inside a
trace alike. Under ``no_grad`` kiln's autograd does not follow the ops, so ``make_dual`` refuses there.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple

from kiln.compiler.errors import KilnError
from kiln.frontend.autograd import differentiate
from kiln.frontend.grad_mode import is_grad_enabled
from kiln.frontend.tensor import Tensor
from kiln.runtime.autograd_functional_graph import zeros_for

_LEVELS: list[list[tuple[Any, Any]]] = []
"""The entered levels (one at most), each the ``(dual, tangent)`` pairs made in it."""


class UnpackedDualTensor(NamedTuple):
    """``unpack_dual``'s result: the primal and its tangent (None where the tensor has none)."""

    primal: Any
    tangent: Any


def enter_dual_level() -> int:
    """Enter a level (``dual_level``'s ``__enter__``); its index."""
    if _LEVELS:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    _LEVELS.append([])
    return len(_LEVELS) - 1


def exit_dual_level(*, level: int | None = None) -> None:
    """Leave the current level: its duals are plain tensors again."""
    if not _LEVELS:
        raise RuntimeError("Trying to exit a forward AD level that was not the last one that was created.")
    _LEVELS.pop()


@contextlib.contextmanager
def dual_level() -> Iterator[int]:
    """The context in which ``make_dual`` works and ``unpack_dual`` gives tangents."""
    level = enter_dual_level()
    try:
        yield level
    finally:
        exit_dual_level(level=level)


def make_dual(tensor: Any, tangent: Any, *, level: int | None = None) -> Any:
    """A tensor of ``tensor``'s values with the tangent ``tangent`` (its shape and dtype)."""
    if not _LEVELS:
        raise RuntimeError("Trying to create a dual Tensor for forward AD but no level exists, make sure to "
                           "enter_dual_level() first.")
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError(f"make_dual expects tensors, got {type(tensor).__name__} and {type(tangent).__name__}")
    if tuple(tangent.shape) != tuple(tensor.shape):
        raise RuntimeError(f"Trying to set a forward gradient that has a different size than that of the original "
                           f"Tensor, this is not supported. Tensor is of size {list(tensor.shape)} while the given "
                           f"forward gradient is of size {list(tangent.shape)}.")
    if not is_grad_enabled():
        raise KilnError("kiln.autograd.forward_ad.make_dual under no_grad: kiln computes tangents through its "
                        "reverse-mode autograd, which does not follow ops under no_grad; make the dual tensor with "
                        "gradients enabled, or use kiln.func.jvp")
    dual = tensor.view_as(tensor) if tensor.requires_grad else tensor.detach().requires_grad_(True)
    _LEVELS[-1].append((dual, tangent.to(tensor.dtype)))
    return dual


def unpack_dual(tensor: Any, *, level: int | None = None) -> UnpackedDualTensor:
    """``(primal, tangent)`` of ``tensor``: a dual's own tangent, a result's ``J v`` by the level's duals, or None."""
    pairs = _LEVELS[-1] if _LEVELS else []
    for dual, tangent in pairs:
        if dual is tensor:
            return UnpackedDualTensor(tensor, tangent)
    if not pairs or not isinstance(tensor, Tensor) or not tensor.dtype.is_float:
        return UnpackedDualTensor(tensor, None)
    return UnpackedDualTensor(tensor, _jvp(tensor, pairs))


def _jvp(output: Any, pairs: list[tuple[Any, Any]]) -> Any:
    """``J v`` of ``output`` by the duals along their tangents (None where no dual reaches it): the VJP of the VJP."""
    cotangent = zeros_for(tuple(output.shape), output.dtype.numpy)  # the variable of the first VJP
    duals = [dual for dual, _ in pairs]
    pulled = differentiate([output], duals, [cotangent], create_graph=True, allow_unused=True)
    used = [(g, tangent) for g, (_, tangent) in zip(pulled, pairs) if g is not None]
    if not used:
        return None
    total = sum((g * tangent).sum() for g, tangent in used)
    return differentiate([total], [cotangent], create_graph=True, allow_unused=True)[0]


__all__ = ["UnpackedDualTensor", "dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual"]
