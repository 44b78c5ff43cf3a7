"""``torch.distributions.transforms``' maps onto matrices: Cholesky factors, correlation Cholesky factors and
positive-definite matrices, with torch's formulas (values and gradients agree with ``torch.distributions``).

```
transform                   y = t(x)                                              log |det dy/dx|
LowerCholeskyTransform      tril(x, -1) + diag(exp(diag x))                       (none: not bijective)
PositiveDefiniteTransform   L L^T,  L = LowerCholeskyTransform(x)                  (none: not bijective)
CorrCholeskyTransform       r = tanh(x) (clamped to 1 - eps) as a strictly lower  1/2 sum log(1 - cumsum(y^2))
                            triangle in row order, y = (r + I) * shifted            (below the first subdiagonal)
                            cumprod(sqrt(1 - r^2)): rows of unit norm                 - 2 sum (x + softplus(-2x) - log 2)
```

``CorrCholeskyTransform`` maps ``D (D - 1) / 2`` reals to a ``D x D`` factor (a signed stick-breaking of each row,
Stan's construction); the vector and the triangle trade places by gathering with constant indices (torch's
``vec_to_tril_matrix`` and ``tril_matrix_to_vec``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import Constraint, constant, real, real_vector
from kiln.frontend.distributions_multivariate import lower_cholesky, positive_definite
from kiln.frontend.distributions_transforms import Transform, independent
from kiln.frontend.distributions_transforms_more import no_sign, too_few_dims
from kiln.frontend.functional_activation import softplus
from kiln.frontend.functional_movement import pad
from kiln.frontend.tensor import Tensor
from kiln.frontend.tensor_linalg import cholesky
from kiln.frontend.torch_dtypes import finfo


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """torch's ``corr_cholesky`` check: lower Cholesky with rows of unit norm (to ``10 eps D``)."""
    tolerance = np.finfo(np.float64).eps * x.shape[-1] * 10
    return lower_cholesky.check(x) & np.all(np.abs(np.linalg.norm(x, axis=-1) - 1) <= tolerance, axis=-1)


corr_cholesky = Constraint("the Cholesky factor of a correlation matrix (lower triangular, positive diagonal, rows of "
                           "unit norm)", _unit_rows, event_dim=2, kind="corr_cholesky")


def _tril_positions(size: int, diag: int) -> np.ndarray:
    """Flat indices of a ``size x size`` matrix's entries on or below diagonal ``diag``, in row order."""
    rows, columns = np.indices((size, size))
    return np.flatnonzero(columns < rows + (diag + 1))


def tril_matrix_to_vec(matrix: Tensor, diag: int = 0) -> Tensor:
    """torch's ``tril_matrix_to_vec``: the entries on or below ``diag`` in row order."""
    size = matrix.shape[-1]
    flat = matrix.reshape(tuple(matrix.shape[:-2]) + (size * size,))
    return flat[..., _tril_positions(size, diag)]


def vec_to_tril_matrix(vector: Tensor, size: int, diag: int = 0) -> Tensor:
    """torch's ``vec_to_tril_matrix``: ``vector`` placed on and below ``diag`` of a ``size x size`` zero matrix."""
    positions = _tril_positions(size, diag)
    source = np.full(size * size, len(positions))  # every other entry reads the appended 0
    source[positions] = np.arange(len(positions))
    padded = pad(vector, [0, 1], value=0.0)
    return padded[..., source].reshape(tuple(vector.shape[:-1]) + (size, size))


class LowerCholeskyTransform(Transform):
    """Square matrices onto lower-triangular ones with a positive diagonal (``exp`` of it): a Cholesky factor from
    unconstrained numbers. Not bijective (the upper triangle is dropped), so no log-determinant, as torch's."""

    domain = independent(real, 2)
    codomain = lower_cholesky
    bijective = False
    sign = property(no_sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "LowerCholeskyTransform":
        return self if cache_size == self._cache_size else LowerCholeskyTransform(cache_size)

    def _call(self, x: Tensor) -> Tensor:
        return x.tril(-1) + x.diagonal(dim1=-2, dim2=-1).exp().diag_embed()

    def _inverse(self, y: Tensor) -> Tensor:
        return y.tril(-1) + y.diagonal(dim1=-2, dim2=-1).log().diag_embed()


class PositiveDefiniteTransform(Transform):
    """Square matrices onto positive-definite ones: ``L L^T`` of ``LowerCholeskyTransform``'s factor; the inverse is
    the Cholesky factor's preimage. Not bijective, no log-determinant, as torch's."""

    domain = independent(real, 2)
    codomain = positive_definite
    bijective = False
    sign = property(no_sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "PositiveDefiniteTransform":
        return self if cache_size == self._cache_size else PositiveDefiniteTransform(cache_size)

    def _call(self, x: Tensor) -> Tensor:
        factor = LowerCholeskyTransform()(x)
        return factor @ factor.mT

    def _inverse(self, y: Tensor) -> Tensor:
        return LowerCholeskyTransform().inv(cholesky(y))


class CorrCholeskyTransform(Transform):
    """``D (D - 1) / 2`` reals onto the Cholesky factor of a ``D x D`` correlation matrix (module docstring)."""

    domain = real_vector
    codomain = corr_cholesky
    bijective = True
    sign = property(no_sign)  # type: ignore[assignment]

    def with_cache(self, cache_size: int = 1) -> "CorrCholeskyTransform":
        return self if cache_size == self._cache_size else CorrCholeskyTransform(cache_size)

    def _call(self, x: Tensor) -> Tensor:
        eps = finfo.of(x.dtype).eps
        size = self.forward_shape(tuple(x.shape))[-1]
        r = vec_to_tril_matrix(x.tanh().clamp(min=-1 + eps, max=1 - eps), size, diag=-1)
        remaining = (1 - r.pow(2)).sqrt().cumprod(-1)  # y = sign(r) sqrt(z (1 - z) cumprod) = r sqrt(cumprod)
        identity = constant(np.eye(size), x.dtype)
        return (r + identity) * pad(remaining.narrow(-1, 0, size - 1), [1, 0], value=1.0)

    def _inverse(self, y: Tensor) -> Tensor:
        size = y.shape[-1]
        left = 1 - (y * y).cumsum(-1)
        shifted = pad(left.narrow(-1, 0, size - 1), [1, 0], value=1.0)
        t = tril_matrix_to_vec(y, diag=-1) / tril_matrix_to_vec(shifted, diag=-1).sqrt()
        return (t.log1p() - (-t).log1p()) / 2  # atanh

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """Of ``x`` and ``y``'s strict lower triangle (the spaces' dimensions differ), as torch's."""
        left = 1 - (y * y).cumsum(-1)
        stick_breaking = 0.5 * tril_matrix_to_vec(left, diag=-2).log().sum(-1)  # diag -2: no shift needed
        return stick_breaking - 2 * (x + softplus(-2 * x) - math.log(2.0)).sum(-1)

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        too_few_dims(shape, 1)
        length = shape[-1]
        size = round((0.25 + 2 * length) ** 0.5 + 0.5)
        if size * (size - 1) // 2 != length:
            raise ValueError("Input is not a flattened lower-diagonal number")
        return tuple(shape[:-1]) + (size, size)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        too_few_dims(shape, 2)
        if shape[-2] != shape[-1]:
            raise ValueError("Input is not square")
        return tuple(shape[:-2]) + (shape[-1] * (shape[-1] - 1) // 2,)


__all__ = ["CorrCholeskyTransform", "LowerCholeskyTransform", "PositiveDefiniteTransform", "corr_cholesky",
           "tril_matrix_to_vec", "vec_to_tril_matrix"]
