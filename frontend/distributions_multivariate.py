"""``MultivariateNormal(loc, covariance_matrix | precision_matrix | scale_tril)``, as ``torch.distributions``', over
``kiln.linalg``'s Cholesky factor and triangular solves.

```
scale_tril L      given, or cholesky(covariance), or cholesky(inverse(precision))
log_prob(x)       -(n log 2pi + |L^-1 (x - loc)|^2) / 2 - sum log diag L
rsample           loc + L e,  e ~ N(0, I) (Box-Muller over the step's seed)
entropy           n (1 + log 2pi) / 2 + sum log diag L
KL(p || q)        sum log diag Lq - sum log diag Lp + (|Lq^-1 Lp|_F^2 + |Lq^-1 (loc_q - loc_p)|^2 - n) / 2
```

The matrix size ``n`` must be static; batch dims may be symbolic. Concrete covariance and precision matrices are
checked positive definite, a concrete ``scale_tril`` lower triangular with a positive diagonal, when
``validate_args``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.distributions import Constraint, Distribution, real_vector, shape_of
from kiln.frontend.tensor import Tensor


def _positive_definite(x: np.ndarray) -> np.ndarray:
    symmetric = np.all(np.isclose(x, np.swapaxes(x, -1, -2), rtol=1e-6, atol=1e-8), axis=(-2, -1))
    eigenvalues = np.linalg.eigvalsh(np.where(np.isfinite(x), x, 0.0))
    return symmetric & np.all(eigenvalues > 0, axis=-1)


def _lower_cholesky(x: np.ndarray) -> np.ndarray:
    lower = np.all(np.triu(x, 1) == 0, axis=(-2, -1))
    return lower & np.all(np.diagonal(x, axis1=-2, axis2=-1) > 0, axis=-1)


positive_definite = Constraint("a positive-definite matrix", _positive_definite, event_dim=2, kind="positive_definite")
lower_cholesky = Constraint("lower triangular with a positive diagonal", _lower_cholesky, event_dim=2,
                            kind="lower_cholesky")

MATRICES = ("covariance_matrix", "precision_matrix", "scale_tril")


class MultivariateNormal(Distribution):
    """The Gaussian over vectors of ``loc``'s last dim, with one of the three matrix parameters (module docstring)."""

    arg_constraints = {"loc": real_vector, "covariance_matrix": positive_definite, "precision_matrix": positive_definite,
                       "scale_tril": lower_cholesky}
    support = real_vector
    has_rsample = True
    event_dims = {"loc": 1, "covariance_matrix": 2, "precision_matrix": 2, "scale_tril": 2}

    def __init__(self, loc: Any, covariance_matrix: Any = None, precision_matrix: Any = None, scale_tril: Any = None,
                 validate_args: bool | None = None):
        given = {name: value for name, value in zip(MATRICES, (covariance_matrix, precision_matrix, scale_tril)) if value is not None}
        if len(given) != 1:
            raise ValueError("Exactly one of covariance_matrix or precision_matrix or scale_tril may be specified.")
        (self._matrix,) = given
        self._set_parameters(validate_args, loc=loc, **given)
        size = shape_of(self._raw["loc"])[-1]
        if shape_of(self._raw[self._matrix])[-2:] != (size, size):
            raise self._invalid(f"{self._matrix} must be ({size}, {size}) matrices for loc's last dim {size}, got shape "
                                f"{shape_of(self._raw[self._matrix])}")
        self._event_shape = (size,)

    loc = property(lambda self: self._parameter("loc"))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)

    @property
    def scale_tril(self) -> Tensor:
        return self._traced("scale_tril", self._scale_tril)

    def _scale_tril(self) -> Tensor:
        from kiln import linalg

        matrix = self._parameter(self._matrix)
        if self._matrix == "scale_tril":
            return matrix
        return linalg.cholesky(matrix if self._matrix == "covariance_matrix" else linalg.inv(matrix))

    @property
    def covariance_matrix(self) -> Tensor:
        if self._matrix == "covariance_matrix":
            return self._parameter("covariance_matrix")
        scale = self.scale_tril
        return scale @ scale.transpose(-1, -2)

    @property
    def precision_matrix(self) -> Tensor:
        """``L^-T L^-1`` (PyTorch's ``cholesky_inverse``), so its gradient reaches a covariance through the Cholesky
        factor, symmetric, as PyTorch's does."""
        from kiln import eye, linalg

        if self._matrix == "precision_matrix":
            return self._parameter("precision_matrix")
        inverse = linalg.solve_triangular(self.scale_tril, eye(self._event_shape[0], dtype=self.dtype), upper=False)
        return inverse.transpose(-1, -2) @ inverse

    @property
    def variance(self) -> Tensor:
        return self.scale_tril.pow(2).sum(-1)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        noise = self._standard_normal(self._extended_shape(sample_shape))
        return self.loc + (self.scale_tril @ noise.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: Any) -> Tensor:
        size = self._event_shape[0]
        distance = mahalanobis(self.scale_tril, self._value(value) - self.loc)
        return -0.5 * (size * math.log(2 * math.pi) + distance) - half_log_det(self.scale_tril)

    def entropy(self) -> Tensor:
        size = self._event_shape[0]
        return 0.5 * size * (1.0 + math.log(2 * math.pi)) + half_log_det(self.scale_tril)


def mahalanobis(scale_tril: Tensor, difference: Tensor) -> Tensor:
    """``|L^-1 d|^2`` over the last dim, batch dims broadcast (PyTorch's ``_batch_mahalanobis``)."""
    from kiln import linalg

    solved = linalg.solve_triangular(scale_tril, difference.unsqueeze(-1), upper=False).squeeze(-1)
    return solved.pow(2).sum(-1)


def half_log_det(scale_tril: Tensor) -> Tensor:
    """``log det(L L^T) / 2 = sum log diag L``."""
    return scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)


__all__ = ["MultivariateNormal"]
