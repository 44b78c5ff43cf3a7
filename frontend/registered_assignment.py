"""Assigning a module's registered name (a parameter, a child module, a buffer) a value of the wrong kind: PyTorch's
TypeError, at the user's line.

``Module.__setattr__`` in PyTorch accepts, for a name already registered, only its kind or ``None``: a Parameter for a
parameter (``cannot assign 'torch.DoubleTensor' as parameter 'weight_hh_l0' (torch.nn.Parameter or None expected)``),
a Module for a child module, a tensor for a buffer; it refuses anything else rather than quietly dropping the
registered entry for a plain attribute. salesforce/awd-lstm-lm's WeightDrop meets it under torch 2.x: an eval forward's
``F.dropout(raw_w, training=False)`` returns the raw Parameter, whose ``setattr`` registers ``weight_hh_l0`` again, and
the next training forward's dropped tensor is refused. kiln dropped the registered entry and went on, so a port
working in kiln failed in PyTorch."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import KilnError


class RegisteredAssignmentError(KilnError, TypeError):
    """A value of the wrong kind assigned to a registered parameter, child module or buffer name: PyTorch's TypeError."""


def type_name(value: Any) -> str:
    """``torch.typename(value)``: a tensor's type string (``'torch.DoubleTensor'``), else the class's dotted name."""
    from kiln.frontend.tensor import Tensor  # lazily: tensor imports much of the frontend

    if isinstance(value, Tensor):
        return value.type()
    cls = type(value)
    return cls.__qualname__ if cls.__module__ in ("", "builtins") else f"{cls.__module__}.{cls.__qualname__}"


def check_registered_assignment(module: Any, name: str, value: Any, is_parameter: bool) -> None:
    """Raise where ``module.name = value`` gives a registered name a value of another kind, in PyTorch's order: a
    Parameter (``is_parameter``) may replace anything, a Module any module or buffer, a tensor a buffer; ``None``
    clears any."""
    from kiln.frontend.module import Module  # lazily: module imports this
    from kiln.frontend.tensor import Tensor

    if value is None or is_parameter:
        return
    if name in module._parameters:
        _refuse(module, name, value, "parameter", "torch.nn.Parameter or None expected")
    if isinstance(value, Module):
        return
    if name in module._modules:
        _refuse(module, name, value, "child module", "torch.nn.Module or None expected")
    if name in module._buffers and not isinstance(value, Tensor):
        _refuse(module, name, value, "buffer", "torch.nn.Buffer, torch.Tensor or None expected")


def _refuse(module: Any, name: str, value: Any, kind: str, expected: str) -> None:
    from kiln.frontend.trace import user_location  # lazily: trace imports the module machinery

    location = user_location()
    where = f"{location.describe()}\n  " if location else ""
    removal = f"del module._parameters['{name}'], as WeightDrop's _setup does" if kind == "parameter" else f"del module.{name}"
    raise RegisteredAssignmentError(
        f"{where}cannot assign '{type_name(value)}' as {kind} '{name}' ({expected}); to give "
        f"{type(module).__name__}.{name} another kind of value, first remove the registered {kind} ({removal})")
