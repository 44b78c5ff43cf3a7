"""The legacy ``torch.nn.utils.weight_norm`` / ``remove_weight_norm``: ``weight_g`` and ``weight_v`` Parameters on the
module itself (the ``state_dict`` names of PyTorch's legacy form) and ``weight`` computed from them.

PyTorch recomputes ``module.weight`` in a forward pre-hook; here it is a property of the module's ``Parametrized<Class>``
(``frontend/parametrize.py``): traced from ``g`` and ``v`` inside a trace, an eager tensor of them outside (``backward()`` reaches both).
New code should use ``kiln.nn.utils.parametrizations.weight_norm``, as PyTorch advises.
"""

from __future__ import annotations

import warnings
from typing import Any

from kiln.frontend.module import Module, Parameter
from kiln.frontend.parametrizations import DimensionError, norm_except_dim
from kiln.frontend.parametrize import ParametrizationError, _inject_new_class, evaluate, injected, is_parametrized


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """``module.<name>`` becomes ``<name>_v * (<name>_g / norm_except_dim(<name>_v, dim))``; ``dim=None`` normalizes the whole.
    Warns as PyTorch 2.13's does (a ``FutureWarning`` naming the parametrization to use)."""
    warnings.warn("`kiln.nn.utils.weight_norm` is deprecated in favor of `kiln.nn.utils.parametrizations.weight_norm`.",
                  FutureWarning, stacklevel=2)
    if name not in module._parameters:
        raise ParametrizationError(f"weight_norm: Module '{type(module).__name__}' has no parameter named '{name}'")
    if name in module.__dict__.get("_legacy_weight_norms", {}):
        raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
    weight = module._parameters[name]
    dim = -1 if dim is None else dim
    if not -weight.data.ndim <= dim < weight.data.ndim:
        raise DimensionError(f"weight_norm: dim {dim} is out of range for {name!r} of shape {weight.data.shape}")
    g = evaluate(lambda w: norm_except_dim(w, dim), weight.data)
    delattr(module, name)
    setattr(module, f"{name}_g", Parameter(g, weight.requires_grad))
    setattr(module, f"{name}_v", Parameter(weight.data, weight.requires_grad))
    if not injected(module):
        _inject_new_class(module)
    module.__dict__.setdefault("_legacy_weight_norms", {})[name] = dim
    setattr(type(module), name, property(lambda self: _weight(self, name), doc=f"``{name}`` from ``{name}_g`` and ``{name}_v``"))
    return module


def _weight(module: Module, name: str) -> Any:
    dim = module._legacy_weight_norms[name]
    g, v = getattr(module, f"{name}_g"), getattr(module, f"{name}_v")
    compute = lambda g, v: v * (g / norm_except_dim(v, dim))  # noqa: E731
    return compute(g, v)  # traced in a trace, else eager (runtime/eager.py): either way the gradient reaches g and v


def remove_weight_norm(module: Module, name: str = "weight") -> Module:
    """Make ``module.<name>`` a plain Parameter again, holding the current normalized weight."""
    norms = module.__dict__.get("_legacy_weight_norms", {})
    if name not in norms:
        raise ValueError(f"weight_norm of '{name}' not found in {type(module).__name__}")
    value, requires_grad = getattr(module, name), getattr(module, f"{name}_v").requires_grad
    delattr(type(module), name)
    del norms[name]
    delattr(module, f"{name}_g")
    delattr(module, f"{name}_v")
    setattr(module, name, Parameter(value, requires_grad))
    if not norms and not is_parametrized(module):
        object.__delattr__(module, "_legacy_weight_norms")
        object.__setattr__(module, "__class__", type(module).__bases__[0])
    return module


__all__ = ["remove_weight_norm", "weight_norm"]
