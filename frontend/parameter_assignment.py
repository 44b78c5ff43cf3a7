"""Assigning a module's registered parameter name anything but an ``nn.Parameter`` or ``None``: PyTorch's TypeError.

``Module.__setattr__`` in PyTorch registers a Parameter; to a name already in ``_parameters`` it accepts only a
Parameter or ``None``, and refuses a plain tensor (``cannot assign 'torch.DoubleTensor' as parameter 'weight_hh_l0'
(torch.nn.Parameter or None expected)``) rather than quietly dropping the parameter for the tensor. salesforce/
awd-lstm-lm's WeightDrop meets it under torch 2.x: an eval forward's ``F.dropout(raw_w, training=False)`` returns the
raw Parameter, whose ``setattr`` registers ``weight_hh_l0`` again, and the next training forward's dropped tensor is
refused. kiln dropped the registered parameter and kept on training, so a port working in kiln failed in PyTorch."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import KilnError


class ParameterAssignmentError(KilnError, TypeError):
    """A tensor (or other non-Parameter) assigned to a registered parameter's name: PyTorch's TypeError."""


def type_name(value: Any) -> str:
    """``torch.typename(value)``: a tensor's type string (``'torch.DoubleTensor'``), else the class's dotted name."""
    from kiln.frontend.tensor import Tensor  # lazily: tensor imports much of the frontend

    if isinstance(value, Tensor):
        return value.type()
    cls = type(value)
    return cls.__qualname__ if cls.__module__ in ("", "builtins") else f"{cls.__module__}.{cls.__qualname__}"


def refuse_parameter_overwrite(module: Any, name: str, value: Any) -> None:
    """Raise, at the user's line, where ``module.name = value`` would replace the registered parameter ``name`` with
    something other than a Parameter or ``None``."""
    from kiln.frontend.trace import user_location  # lazily: trace imports the module machinery

    location = user_location()
    where = f"{location.describe()}\n  " if location else ""
    raise ParameterAssignmentError(
        f"{where}cannot assign '{type_name(value)}' as parameter '{name}' (torch.nn.Parameter or None expected); "
        f"to replace {type(module).__name__}.{name} by a computed tensor, first remove the parameter "
        f"(del module._parameters['{name}'], as WeightDrop's _setup does), or wrap the tensor in nn.Parameter")
