"""PyTorch's ``torch.nn.utils.parametrizations``: ``weight_norm``, ``spectral_norm`` and ``orthogonal`` on kiln modules.

Each is a parametrization module (``frontend/parametrize.py``) with PyTorch's arithmetic, originals and buffers, so
``state_dict`` keys and values move between kiln and PyTorch as they are:

- ``weight_norm``: ``parametrizations.weight.original0`` is ``g`` (the norms), ``original1`` is ``v`` (the direction);
  ``weight = v * g / norm_except_dim(v)``.
- ``spectral_norm``: ``original`` is the weight, ``parametrizations.weight.0._u`` and ``._v`` the power iteration's
  vectors. Each read of the weight in training mode runs ``n_power_iterations`` (without gradient) and keeps the new
  vectors, which a compiled training step writes back each step, as BatchNorm's running statistics; in eval mode the
  stored vectors are used as they are. Registration runs 15 iterations from random vectors, then one more (PyTorch's
  registration evaluates the weight once in training mode).
- ``orthogonal``: ``"matrix_exp"`` and ``"cayley"`` maps with the dynamic trivialization (``...0.base``) or without; kiln
  has no matrix exponential or linear solve op, so both are composed from matmuls here (scaling and squaring of a
  degree-18 Taylor polynomial; Gauss-Jordan elimination without pivoting, stable since ``I - A/2`` with ``A``
  skew-symmetric has the identity as its symmetric part). ``"householder"`` (PyTorch's default for a non-square
  weight) is ``kiln.linalg.householder_product`` of the reflectors below the diagonal, ``tau = 2 / (1 + |v|^2)``, the
  columns' signs from the diagonal; without the trivialization, assigning takes LAPACK's ``geqrf`` reflectors.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.module import ArrayLeaf, Module
from kiln.frontend.parametrize import ParametrizationError, on_arrays, register_parametrization


class DimensionError(KilnError, IndexError):
    """A ``dim`` outside the tensor's dimensions (an ``IndexError``, as PyTorch raises)."""


def _tensor_named(module: Module, name: str) -> Any:
    """The value of ``module.<name>`` (a Parameter, a Buffer, or an array read from a parametrized tensor)."""
    value = getattr(module, name, None)
    if isinstance(value, ArrayLeaf):
        return value.data
    if isinstance(value, np.ndarray):
        return value
    raise ParametrizationError(f"Module '{type(module).__name__}' has no parameter or buffer with name '{name}'")


# Weight normalization ---------------------------------------------------------------------------------------------


def norm_except_dim(v: Any, dim: int) -> Any:
    """The 2-norm of ``v`` over every dim but ``dim``, kept as size-1 dims (PyTorch's ``norm_except_dim``); ``dim=-1``
    is the norm of the whole tensor, a scalar."""
    if dim == -1:
        return (v * v).sum().sqrt()
    axes = tuple(axis for axis in range(v.ndim) if axis != dim % v.ndim)
    return (v * v).sum(axes, keepdim=True).sqrt()


class _WeightNorm(Module):
    """``weight = v * (g / norm_except_dim(v, dim))`` from ``(g, v)``: ``torch._weight_norm``."""

    def __init__(self, dim: int | None = 0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g: Any, weight_v: Any) -> Any:
        return weight_v * (weight_g / norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: Any) -> tuple[Any, Any]:
        return norm_except_dim(weight, self.dim), weight


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """Weight normalization on ``module.<name>`` (``torch.nn.utils.parametrizations.weight_norm``): ``g`` in
    ``parametrizations.<name>.original0``, ``v`` in ``original1``. ``dim=None`` normalizes the whole tensor."""
    weight = _tensor_named(module, name)
    if dim is not None and not -weight.ndim <= dim < weight.ndim:
        raise DimensionError(f"weight_norm: dim {dim} is out of range for {name!r} of shape {weight.shape} "
                             f"(expected in [-{weight.ndim}, {weight.ndim - 1}], or None for the whole tensor)")
    return register_parametrization(module, name, _WeightNorm(dim), unsafe=True)


def deprecated_weight_norm_keys(model: Module, state: dict[str, Any], own: Any) -> dict[str, Any]:
    """``state`` with a deprecated ``nn.utils.weight_norm`` checkpoint's ``<prefix><name>_g`` / ``<name>_v`` renamed
    to ``parametrizations.<name>.original0`` / ``original1`` where ``model`` has a ``weight_norm`` parametrization
    there (an old WaveNet/HiFi-GAN checkpoint loads into new code), as PyTorch's load hook renames them."""
    renamed = dict(state)
    for key in own:
        head, marker, tail = key.rpartition("parametrizations.")
        name = tail.removesuffix(".original0")
        g, v = f"{head}{name}_g", f"{head}{name}_v"
        if marker and name != tail and key not in renamed and g in renamed and v in renamed \
                and _is_weight_norm(model.get_submodule(head.rstrip(".")), name):
            renamed[key], renamed[f"{head}parametrizations.{name}.original1"] = renamed.pop(g), renamed.pop(v)
    return renamed


def _is_weight_norm(module: Module, name: str) -> bool:
    return any(isinstance(p, _WeightNorm) for p in getattr(module.parametrizations, name, ()))


# Spectral normalization -------------------------------------------------------------------------------------------


def _normalized(x: np.ndarray, eps: float) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), eps)


class _SpectralNorm(Module):
    """``weight / sigma`` with ``sigma = u . (W v)`` estimated by power iteration (``torch``'s ``_SpectralNorm``); a 1-D
    weight is normalized to unit norm instead."""

    def __init__(self, weight: np.ndarray, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise DimensionError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ParametrizationError(f"Expected n_power_iterations to be positive, but got n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            weight_mat = np.moveaxis(weight, self.dim, 0).reshape(weight.shape[self.dim], -1)
            height, width = weight_mat.shape
            u = _normalized(init.normal((height,), dtype=str(weight.dtype)), eps)
            v = _normalized(init.normal((width,), dtype=str(weight.dtype)), eps)
            u, v = power_iterations(weight_mat, u, v, 15, eps)
            self.register_buffer("_u", u)
            self.register_buffer("_v", v)

    def _reshape_weight_to_matrix(self, weight: Any) -> Any:
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.ndim) if d != self.dim))
        return weight.flatten(1)

    def _power_method(self, weight_mat: Any, n_power_iterations: int) -> None:
        """``n_power_iterations`` steps from the stored vectors, kept as their new values; constants to the gradient."""
        with no_grad():
            for _ in range(n_power_iterations):
                self._u.copy_(F.normalize(weight_mat @ self._v, dim=0, eps=self.eps))
                self._v.copy_(F.normalize(weight_mat.mT @ self._u, dim=0, eps=self.eps))

    def forward(self, weight: Any) -> Any:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()  # this graph's own: the next forward's iteration writes the buffers
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def right_inverse(self, value: Any) -> Any:
        return value

    def extra_repr(self) -> str:
        return ""


def power_iterations(weight_mat: np.ndarray, u: np.ndarray, v: np.ndarray, count: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` power-iteration steps on arrays (registration's 15, as ``_SpectralNorm._power_method``)."""
    for _ in range(count):
        u = _normalized(weight_mat @ v, eps)
        v = _normalized(weight_mat.T @ u, eps)
    return u, v


def spectral_norm(module: Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None) -> Module:
    """Spectral normalization of ``module.<name>`` (``torch.nn.utils.parametrizations.spectral_norm``); ``dim`` is the
    output dim, 0 by default and 1 for the transposed convolutions."""
    weight = _tensor_named(module, name)
    if dim is None:
        from kiln.frontend.layers_conv import ConvTranspose2d
        from kiln.frontend.layers_conv3d import ConvTranspose3d
        from kiln.frontend.layers_extra import ConvTranspose1d

        dim = 1 if isinstance(module, (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)) else 0
    return register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))


# Orthogonal matrices ----------------------------------------------------------------------------------------------

EXP_MAX_SQUARINGS = 24
"""``matrix_exp`` squares at most this many times: exact to rounding for ``|A|_1`` up to ``2**24``."""


def matrix_exp(a: Any) -> Any:
    """``exp(a)`` of a (batch of) square matrices, from matmuls: ``a`` is scaled by ``2**-s`` to a 1-norm at most 1,
    a degree-18 Taylor polynomial (truncation below ``1e-17``) is evaluated by Horner's rule and squared ``s`` times.
    ``s`` is data-dependent; the graph is not, so it squares ``EXP_MAX_SQUARINGS`` times and keeps the first ``s``.
    Made for the skew-symmetric ``a`` of the orthogonal maps, whose exponentials stay orthogonal: for a general ``a``
    with a huge exponential the squarings not kept may overflow, and the gradient through them would be NaN."""
    n = a.shape[-1]
    identity = _identity(a, n)
    with no_grad():
        norm = a.abs().sum(-2).amax(-1).clamp(min=1e-300)
        squarings = norm.log2().ceil().clamp(0, EXP_MAX_SQUARINGS)[..., None, None]
    x = a * (-squarings).exp2()
    result = identity
    for k in range(18, 0, -1):
        result = identity + (x @ result) / k
    for index in range(EXP_MAX_SQUARINGS):
        result = F.where(squarings > index, result @ result, result)
    return result


def _identity(a: Any, n: int) -> Any:
    from kiln.frontend.torch_functions import eye

    return eye(n, dtype=a.dtype)


def cayley(a: Any) -> Any:
    """``solve(I - a/2, I + a/2)`` by Gauss-Jordan elimination without pivoting, unrolled over the (static) size: for a
    skew-symmetric ``a`` the symmetric part of ``I - a/2`` is ``I``, so every pivot is at least 1 in size."""
    n = a.shape[-1]
    identity = _identity(a, n)
    matrix, rhs = identity - a * 0.5, identity + a * 0.5
    for k in range(n):
        unit = _identity(a, n)[:, k : k + 1]  # the k-th unit column: row k
        pivot = matrix[..., k : k + 1, k : k + 1]
        factor = matrix[..., :, k : k + 1] * (1 - unit)
        matrix_row, rhs_row = matrix[..., k : k + 1, :] / pivot, rhs[..., k : k + 1, :] / pivot
        matrix = (matrix - factor * matrix_row) * (1 - unit) + unit * matrix_row
        rhs = (rhs - factor * rhs_row) * (1 - unit) + unit * rhs_row
    return rhs


def _householder(x: Any) -> Any:
    """PyTorch's householder map of a tall ``x``: the reflectors below its diagonal, ``tau = 2 / (1 + |v|^2)`` (each
    ``H`` then orthogonal), the columns' signs from ``x``'s diagonal (cast to int: no gradient, as PyTorch's)."""
    from kiln.frontend.linalg_factor import householder_product

    a = x.tril(-1)
    q = householder_product(a, 2.0 / (1.0 + (a * a).sum(-2)))
    return q * x.diagonal(0, -2, -1).int().unsqueeze(-2)


def _reflectors(q: np.ndarray) -> np.ndarray:
    """LAPACK's ``geqrf`` reflectors of a tall ``q`` (``np.linalg.qr``'s raw mode), the diagonal replaced by the signs
    of ``R``'s, flipped where ``tau`` is 0 (no reflection): the ``x`` whose householder map is ``q``'s Q factor."""
    raw, tau = np.linalg.qr(q, mode="raw")
    reflectors = np.swapaxes(raw, -1, -2).copy()  # raw mode gives the transposed (Fortran-order) factor
    diagonal = np.sign(np.diagonal(reflectors, axis1=-2, axis2=-1)) * np.where(tau == 0, -1.0, 1.0)
    k = diagonal.shape[-1]
    reflectors[..., np.arange(k), np.arange(k)] = diagonal
    return reflectors


def _is_orthogonal(q: np.ndarray) -> bool:
    n, k = q.shape[-2:]
    return bool(np.allclose(np.swapaxes(q, -1, -2) @ q, np.eye(k, dtype=q.dtype), atol=10.0 * n * ml_dtypes.finfo(q.dtype).eps))


def _make_orthogonal(a: np.ndarray) -> np.ndarray:
    """The Q of ``a = QR`` with ``diag(R) >= 0`` (LAPACK's Householder QR, as PyTorch's ``geqrf``)."""
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


class _Orthogonal(Module):
    """An orthogonal matrix (batch) from an unconstrained one: ``exp`` or the Cayley map of the skew-symmetric matrix
    made from its lower triangle, times ``base`` with the dynamic trivialization (``torch``'s ``_Orthogonal``)."""

    def __init__(self, weight: np.ndarray, orthogonal_map: str, use_trivialization: bool = True):
        super().__init__()
        self.shape = weight.shape
        self.orthogonal_map = orthogonal_map
        self.use_trivialization = use_trivialization

    def forward(self, x: Any) -> Any:
        n, k = x.shape[-2], x.shape[-1]
        transposed = n < k
        if transposed:
            x, n, k = x.mT, k, n
        if self.orthogonal_map == "householder":
            q = _householder(x)
        else:
            x = x.tril()
            if n != k:
                x = F.pad(x, (0, n - k))
            a = x - x.mT
            q = matrix_exp(a) if self.orthogonal_map == "matrix_exp" else cayley(a)
            if n != k:
                q = q[..., :k]
        if "base" in self._buffers:
            q = self.base @ q
        return q.mT if transposed else q

    @on_arrays
    def right_inverse(self, q: np.ndarray) -> np.ndarray:
        if q.shape != self.shape:
            raise ParametrizationError(f"Expected a matrix or batch of matrices of shape {self.shape}. Got a tensor of shape {q.shape}.")
        q_init, (n, k) = q, q.shape[-2:]
        if n < k:
            q, n, k = np.swapaxes(q, -1, -2), k, n
        if not self.use_trivialization and self.orthogonal_map == "householder":
            reflectors = _reflectors(q)
            return np.swapaxes(reflectors, -1, -2) if q_init.shape[-2] < q_init.shape[-1] else reflectors
        if not self.use_trivialization:
            raise NotImplementedError("It is not possible to assign to the matrix exponential or the Cayley "
                                      "parametrizations when use_trivialization=False.")
        if n != k:
            extra = init.normal((*q.shape[:-2], n, n - k), dtype=str(q.dtype))
            q = _make_orthogonal(np.concatenate([q, extra], axis=-1))
        else:
            q = np.array(q) if _is_orthogonal(q) else _make_orthogonal(q)
        if "base" in self._buffers and self._buffers["base"].data.shape == q.shape:
            np.copyto(self.base.data, q)
        else:
            self.register_buffer("base", q)
        negative_identity = np.zeros_like(q_init)
        diagonal = np.arange(min(q_init.shape[-2:]))
        negative_identity[..., diagonal, diagonal] = -1.0
        return negative_identity


def orthogonal(module: Module, name: str = "weight", orthogonal_map: str | None = None, *, use_trivialization: bool = True) -> Module:
    """Make ``module.<name>`` an orthogonal matrix (or batch; orthonormal columns, or rows when wide), as
    ``torch.nn.utils.parametrizations.orthogonal``, with the ``"matrix_exp"``, ``"cayley"`` or ``"householder"`` map
    (the default: ``"matrix_exp"`` for a square weight, ``"householder"`` otherwise, as PyTorch)."""
    weight = _tensor_named(module, name)
    if weight.ndim < 2:
        raise ParametrizationError(f"Expected a matrix or batch of matrices. Got a tensor of {weight.ndim} dimensions.")
    if orthogonal_map is None:
        orthogonal_map = "matrix_exp" if weight.shape[-2] == weight.shape[-1] else "householder"
    if orthogonal_map not in ("matrix_exp", "cayley", "householder"):
        raise ParametrizationError(f'orthogonal_map has to be one of "matrix_exp", "cayley", "householder". Got: {orthogonal_map}')
    return register_parametrization(module, name, _Orthogonal(weight, orthogonal_map, use_trivialization), unsafe=True)


__all__ = ["orthogonal", "spectral_norm", "weight_norm"]
