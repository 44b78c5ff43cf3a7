"""``Wishart(df, covariance_matrix | precision_matrix | scale_tril)``: torch's distribution of ``p x p``
positive-definite matrices ``X = sum_k x_k x_k^T`` (``x_k ~ N(0, V)``, ``df`` of them when an integer), with
``torch.distributions``' formulas (values and gradients agree with torch's):

```
scale_tril L   given, or cholesky(V), or cholesky(inverse(precision)) (MultivariateNormal's)
log_prob(X)    -nu (p log 2 / 2 + sum log diag L) - mvlgamma(nu / 2, p) + (nu - p - 1) / 2 log|det X|
                 - tr(V^-1 X) / 2                                         (V^-1 X: cholesky_solve(X, L))
entropy        (p + 1)(p log 2 / 2 + sum log diag L) + mvlgamma(nu / 2, p) - (nu - p - 1) / 2 mvdigamma(nu / 2, p)
                 + nu p / 2,      mvdigamma(x, p) = sum_{i<p} digamma(x - i / 2)
mean, mode     nu V,  (nu - p - 1) V (NaN where nu <= p + 1)
variance       nu (V_ij^2 + V_ii V_jj)
rsample        Bartlett: A lower, A_ii = sqrt(Chi2(nu - i)) (clamped at eps), A_ij ~ N(0, 1) below; (L A)(L A)^T
natural        theta = (-V^-1 / 2, (nu - p - 1) / 2), F = (y + (p + 1) / 2)(p log 2 - log|det(-2 x)|)
                 + mvlgamma(y + (p + 1) / 2, p)       (an ExponentialFamily, as torch's: KL by Bregman)
```

``rsample`` draws once: torch redraws singular samples (its ``max_try_correction`` loop, up to 10 tries, with data
dependent control flow) which a traced step cannot express; a singular draw (likely only for ``p - 1 < nu < p``, as
torch warns) stays, and ``log_prob`` gives ``-inf`` or NaN there. Its gradient reaches ``df`` through the Chi2 draws'
implicit reparameterization and the scale through ``L``. ``df`` must exceed ``p - 1`` (torch's ``ValueError``, raised
for a concrete ``df`` whatever ``validate_args`` says, as torch's).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from kiln.frontend.distributions import Constraint, InvalidParameterError, concrete_values, constant, shape_of
from kiln.frontend.distributions_exp_family import ExponentialFamily
from kiln.frontend.distributions_gamma import Chi2
from kiln.frontend.distributions_multivariate import MATRICES, MultivariateNormal, lower_cholesky, positive_definite
from kiln.frontend.distributions_transforms_cholesky import vec_to_tril_matrix
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_functions import where

_LOG_2 = math.log(2.0)


def mvdigamma(x: Tensor, p: int) -> Tensor:
    """torch's ``_mvdigamma``: ``sum_{i<p} digamma(x - i / 2)`` (x must exceed ``(p - 1) / 2``)."""
    total = x.digamma()
    for i in range(1, p):
        total = total + (x - i / 2).digamma()
    return total


def _greater_than(bound: float) -> Constraint:
    return Constraint(f"greater than {bound}", lambda x: x > bound, kind="greater_than", params={"lower_bound": bound})


class Wishart(ExponentialFamily):
    """Wishart over ``p x p`` positive-definite matrices with ``df`` degrees of freedom (module docstring)."""

    support = positive_definite
    has_rsample = True
    event_dims = {"df": 0, "covariance_matrix": 2, "precision_matrix": 2, "scale_tril": 2}
    _mean_carrier_measure = 0

    def __init__(self, df: Any, covariance_matrix: Any = None, precision_matrix: Any = None, scale_tril: Any = None,
                 validate_args: bool | None = None):
        given = {name: value for name, value in zip(MATRICES, (covariance_matrix, precision_matrix, scale_tril))
                 if value is not None}
        if len(given) != 1:
            raise AssertionError("Exactly one of covariance_matrix or precision_matrix or scale_tril may be specified.")
        ((self._matrix, matrix),) = given.items()
        if len(np.shape(matrix) if not isinstance(matrix, Tensor) else matrix.shape) < 2:
            raise ValueError("scale_tril must be at least two-dimensional, with optional leading batch dimensions")
        self._size = int((matrix.shape if isinstance(matrix, Tensor) else np.shape(matrix))[-1])
        _check_df(df, self._size)
        self._set_parameters(validate_args, df=df, **given)
        self._event_shape = tuple(shape_of(self._raw[self._matrix])[-2:])

    @property
    def arg_constraints(self) -> dict[str, Constraint]:  # type: ignore[override]
        return {"covariance_matrix": positive_definite, "precision_matrix": positive_definite,
                "scale_tril": lower_cholesky, "df": _greater_than(self._size - 1)}

    df = property(lambda self: self._parameter("df"))
    # MultivariateNormal's: the given matrix itself, else from L (torch's Wishart sets the given one as its attribute)
    scale_tril = MultivariateNormal.scale_tril
    _scale_tril = MultivariateNormal._scale_tril
    covariance_matrix = MultivariateNormal.covariance_matrix
    precision_matrix = MultivariateNormal.precision_matrix

    def _half_log_det_scaled(self) -> Tensor:
        """``p log 2 / 2 + sum log diag L``: half the log-determinant of ``2 V``."""
        return self._size * _LOG_2 / 2 + self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.df.unsqueeze(-1).unsqueeze(-1) * self.covariance_matrix

    @property
    def mode(self) -> Tensor:
        factor = self.df - self._size - 1
        factor = where(factor <= 0, math.nan, factor)
        return factor.unsqueeze(-1).unsqueeze(-1) * self.covariance_matrix

    @property
    def variance(self) -> Tensor:
        covariance = self.covariance_matrix
        diagonal = covariance.diagonal(dim1=-2, dim2=-1)
        outer = diagonal.unsqueeze(-1) * diagonal.unsqueeze(-2)
        return self.df.unsqueeze(-1).unsqueeze(-1) * (covariance.pow(2) + outer)

    def log_prob(self, value: Any) -> Tensor:
        from kiln.frontend.linalg_factor import cholesky_solve
        from kiln.frontend.tensor_linalg import slogdet

        value, nu, p = self._value(value), self.df, self._size
        trace = cholesky_solve(value, self.scale_tril).diagonal(dim1=-2, dim2=-1).sum(-1)
        return (-nu * self._half_log_det_scaled() - (nu / 2).mvlgamma(p)
                + (nu - p - 1) / 2 * slogdet(value).logabsdet - trace / 2)

    def entropy(self) -> Tensor:
        nu, p = self.df, self._size
        return ((p + 1) * self._half_log_det_scaled() + (nu / 2).mvlgamma(p)
                - (nu - p - 1) / 2 * mvdigamma(nu / 2, p) + nu * p / 2)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        """Bartlett's construction, drawn once (module docstring), shaped ``sample_shape + batch_shape + (p, p)``."""
        p = self._size
        shape = self._extended_shape(sample_shape)[:-1]  # sample + batch + (p,)
        degrees = self.df.unsqueeze(-1) - constant(np.arange(p, dtype=np.float64), self.dtype)
        eps = float(np.finfo(self.dtype.numpy).eps)
        diagonal = Chi2(degrees, validate_args=False).rsample(shape[: len(shape) - 1 - len(self.batch_shape)])
        below = self._standard_normal(shape[:-1] + (p * (p - 1) // 2,))
        bartlett = diagonal.sqrt().clamp(min=eps).diag_embed() + vec_to_tril_matrix(below, p, diag=-1)
        factor = self.scale_tril @ bartlett
        return factor @ factor.mT

    @property
    def _natural_params(self) -> tuple[Tensor, Tensor]:
        return -self.precision_matrix / 2, (self.df - self._size - 1) / 2

    def _log_normalizer(self, x: Tensor, y: Tensor) -> Tensor:
        from kiln.frontend.tensor_linalg import slogdet

        p = self._size
        return (y + (p + 1) / 2) * (-slogdet(-2 * x).logabsdet + _LOG_2 * p) + (y + (p + 1) / 2).mvlgamma(p)


def _check_df(df: Any, size: int) -> None:
    """torch's unconditional refusal of ``df <= p - 1`` (a concrete df), and its warning for ``df < p``."""
    values = concrete_values(df)
    if values is None:
        return
    if np.any(values <= size - 1):
        raise InvalidParameterError(f"Value of df={df} expected to be greater than ndim - 1 = {size - 1}.")
    if np.any(values < size):
        warnings.warn("Low df values detected. Singular samples are highly likely to occur for ndim - 1 < df < ndim.",
                      stacklevel=3)


__all__ = ["Wishart", "mvdigamma"]
