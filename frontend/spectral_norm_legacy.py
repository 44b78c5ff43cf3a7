"""The legacy ``torch.nn.utils.spectral_norm`` / ``remove_spectral_norm`` (SNGAN, BigGAN and most GAN code written
before PyTorch 1.12): the weight kept as the Parameter ``<name>_orig``, the power iteration's vectors as the buffers
``<name>_u`` and ``<name>_v`` (the ``state_dict`` names of PyTorch's), and ``module.<name>`` a plain tensor that a
forward pre-hook sets to ``<name>_orig / sigma`` before each forward, as PyTorch's.

In training mode the hook first runs ``n_power_iterations`` steps (``v`` then ``u``, without gradient), writing the
buffers in place (a compiled training step writes them back each step, as BatchNorm's running statistics), and
computes ``sigma = u . (W v)`` from copies of them, so a second forward before ``backward()`` leaves the first one's
gradient alone; in eval mode it uses the stored vectors as they are. New code should use
``kiln.nn.utils.parametrizations.spectral_norm`` (``frontend/parametrizations.py``), as PyTorch advises.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.module import Module, Parameter
from kiln.frontend.parametrizations import DimensionError, _normalized


class SpectralNorm:
    """The forward pre-hook of one spectrally normalized parameter (``torch.nn.utils.spectral_norm.SpectralNorm``)."""

    def __init__(self, name: str = "weight", n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12):
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got n_power_iterations={n_power_iterations}")
        self.name, self.n_power_iterations, self.dim, self.eps = name, n_power_iterations, dim, eps

    def reshape_weight_to_matrix(self, weight: Any) -> Any:
        """The weight as a matrix of ``weight.shape[dim]`` rows."""
        if self.dim != 0:
            weight = weight.permute(self.dim, *[d for d in range(weight.dim()) if d != self.dim])
        return weight.reshape(weight.size(0), -1)

    def compute_weight(self, module: Module, do_power_iteration: bool) -> Any:
        """``<name>_orig / sigma``; with ``do_power_iteration``, the buffers first take the iteration's new vectors."""
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        weight_mat = self.reshape_weight_to_matrix(weight)
        if do_power_iteration:
            with no_grad():
                for _ in range(self.n_power_iterations):
                    v.copy_(F.normalize(weight_mat.t() @ u, dim=0, eps=self.eps))
                    u.copy_(F.normalize(weight_mat @ v, dim=0, eps=self.eps))
                u, v = u.clone(), v.clone()  # the next forward's iteration writes the buffers, not this graph's copies
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def remove(self, module: Module) -> None:
        with no_grad():
            weight = self.compute_weight(module, do_power_iteration=False)
        for suffix in ("", "_u", "_v", "_orig"):
            delattr(module, self.name + suffix)
        module.register_parameter(self.name, Parameter(weight.detach().numpy()))

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module, do_power_iteration=module.training))


def _hooks_of(module: Module) -> dict[int, Any]:
    """The module's ``SpectralNorm`` pre-hooks by their handle's id."""
    registry = module.__dict__.get("_forward_pre_hooks", {})
    return {key: hook for key, hook in registry.items() if isinstance(hook, SpectralNorm)}


def _output_dim(module: Module) -> int:
    """PyTorch's default ``dim``: 1 for the transposed convolutions (their weight is ``in x out x ...``), else 0."""
    from kiln.frontend.layers_conv import ConvTranspose2d
    from kiln.frontend.layers_conv3d import ConvTranspose3d
    from kiln.frontend.layers_extra import ConvTranspose1d

    return 1 if isinstance(module, (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)) else 0


def spectral_norm(module: Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> Module:
    """Spectral normalization of ``module.<name>`` in PyTorch's legacy form (``torch.nn.utils.spectral_norm``)."""
    if any(hook.name == name for hook in _hooks_of(module).values()):
        raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
    weight = module._parameters.get(name)
    if weight is None:
        raise KeyError(f"spectral_norm: {type(module).__name__} has no parameter named {name!r} "
                       f"(its parameters: {list(module._parameters)})")
    dim = _output_dim(module) if dim is None else dim
    if not -weight.data.ndim <= dim < weight.data.ndim:
        raise DimensionError(f"spectral_norm: dim {dim} is out of range for {name!r} of shape {tuple(weight.shape)}")
    hook = SpectralNorm(name, n_power_iterations, dim % weight.data.ndim, eps)
    height = weight.data.shape[hook.dim]
    width = weight.data.size // height
    dtype = str(weight.data.dtype)
    delattr(module, name)
    module.register_parameter(name + "_orig", weight)
    setattr(module, name, weight.data)
    module.register_buffer(name + "_u", _normalized(init.normal((height,), dtype=dtype), eps))
    module.register_buffer(name + "_v", _normalized(init.normal((width,), dtype=dtype), eps))
    module.register_forward_pre_hook(hook)
    return module


def remove_spectral_norm(module: Module, name: str = "weight") -> Module:
    """Make ``module.<name>`` a plain Parameter again, holding ``<name>_orig / sigma`` from the stored vectors."""
    for key, hook in _hooks_of(module).items():
        if hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"spectral_norm of '{name}' not found in {module}")


__all__ = ["SpectralNorm", "remove_spectral_norm", "spectral_norm"]
