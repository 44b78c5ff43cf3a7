"""``LowRankMultivariateNormal(loc, cov_factor, cov_diag)``, as ``torch.distributions``': the Gaussian with covariance
``W W^T + D`` (``W = cov_factor``, ``(..., n, r)``; ``D = diag(cov_diag)``), scored through the ``r x r`` capacitance
matrix (Woodbury and the matrix determinant lemma), never an ``n x n`` factor:

```
capacitance C     I + W^T D^-1 W = Lc Lc^T                       (Lc: its Cholesky factor)
log_prob(x)       -(n log 2pi + log det + mahalanobis) / 2
  log det         2 sum log diag Lc + sum log D
  mahalanobis     sum d^2 / D - |Lc^-1 W^T D^-1 d|^2,  d = x - loc
rsample           loc + W e_r + sqrt(D) e_n,  e ~ N(0, I)
entropy           (n (1 + log 2pi) + log det) / 2
precision         D^-1 - A^T A,  A = Lc^-1 W^T D^-1
scale_tril        sqrt(D) cholesky(I + D^-1/2 W W^T D^-1/2)
```

The sizes ``n`` and ``r`` must be static; batch dims broadcast as torch's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.distributions import Constraint, Distribution, real_vector, shape_of
from kiln.frontend.distributions_kl import register_kl
from kiln.frontend.distributions_multivariate import MultivariateNormal, half_log_det, mahalanobis
from kiln.frontend.tensor import Tensor

real_matrix = Constraint("a matrix of real numbers (not NaN)", lambda x: np.all(x == x, axis=(-2, -1)), event_dim=2)
positive_vector = Constraint("a vector of positive numbers (> 0)", lambda x: np.all(x > 0, axis=-1), event_dim=1)


class LowRankMultivariateNormal(Distribution):
    """The Gaussian over vectors of ``loc``'s last dim with covariance ``cov_factor cov_factor^T + diag(cov_diag)``."""

    arg_constraints = {"loc": real_vector, "cov_factor": real_matrix, "cov_diag": positive_vector}
    support = real_vector
    has_rsample = True
    event_dims = {"loc": 1, "cov_factor": 2, "cov_diag": 1}

    def __init__(self, loc: Any, cov_factor: Any, cov_diag: Any, validate_args: bool | None = None):
        if len(np.shape(loc)) < 1:
            raise ValueError("loc must be at least one-dimensional.")
        if len(np.shape(cov_factor)) < 2:
            raise ValueError("cov_factor must be at least two-dimensional, with optional leading batch dimensions")
        self._set_parameters(validate_args, loc=loc, cov_factor=cov_factor, cov_diag=cov_diag)
        size = shape_of(self._raw["loc"])[-1]
        if shape_of(self._raw["cov_factor"])[-2] != size:
            raise ValueError(f"cov_factor must be a batch of matrices with shape {size} x m (got shape "
                             f"{tuple(shape_of(self._raw['cov_factor']))})")
        if shape_of(self._raw["cov_diag"])[-1] != size:
            raise ValueError(f"cov_diag must be a batch of vectors with shape ({size},) (got shape "
                             f"{tuple(shape_of(self._raw['cov_diag']))})")
        self._event_shape = (size,)

    loc = property(lambda self: self._parameter("loc"))
    cov_factor = property(lambda self: self._parameter("cov_factor"))
    cov_diag = property(lambda self: self._parameter("cov_diag"))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)

    @property
    def variance(self) -> Tensor:
        return self.cov_factor.pow(2).sum(-1) + self.cov_diag

    @property
    def _capacitance_tril(self) -> Tensor:
        return self._traced("capacitance_tril", self._capacitance)

    def _capacitance(self) -> Tensor:
        """``cholesky(I + W^T D^-1 W)``."""
        from kiln import eye, linalg

        factor = self.cov_factor
        rank = shape_of(factor)[-1]
        return linalg.cholesky(self._transposed_over_diagonal() @ factor + eye(rank, dtype=self.dtype))

    def _transposed_over_diagonal(self) -> Tensor:
        """``W^T D^-1``."""
        return self.cov_factor.transpose(-1, -2) / self.cov_diag.unsqueeze(-2)

    @property
    def covariance_matrix(self) -> Tensor:
        factor = self.cov_factor
        return factor @ factor.transpose(-1, -2) + self.cov_diag.diag_embed()

    @property
    def precision_matrix(self) -> Tensor:
        from kiln import linalg

        solved = linalg.solve_triangular(self._capacitance_tril, self._transposed_over_diagonal(), upper=False)
        return self.cov_diag.reciprocal().diag_embed() - solved.transpose(-1, -2) @ solved

    @property
    def scale_tril(self) -> Tensor:
        from kiln import eye, linalg

        root = self.cov_diag.sqrt().unsqueeze(-1)
        whitened = self.cov_factor / root
        inner = whitened @ whitened.transpose(-1, -2) + eye(self._event_shape[0], dtype=self.dtype)
        return root * linalg.cholesky(inner)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        factor_noise = self._standard_normal(shape[:-1] + (shape_of(self._raw["cov_factor"])[-1],))
        diagonal_noise = self._standard_normal(shape)
        low_rank = (self.cov_factor @ factor_noise.unsqueeze(-1)).squeeze(-1)
        return self.loc + low_rank + self.cov_diag.sqrt() * diagonal_noise

    def _log_det(self) -> Tensor:
        """``log det(W W^T + D)`` by the matrix determinant lemma."""
        capacitance = self._capacitance_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return 2 * capacitance + self.cov_diag.log().sum(-1)

    def _mahalanobis(self, difference: Tensor) -> Tensor:
        """``d^T (W W^T + D)^-1 d`` by Woodbury: ``sum d^2 / D - |Lc^-1 W^T D^-1 d|^2``."""
        projected = (self._transposed_over_diagonal() @ difference.unsqueeze(-1)).squeeze(-1)
        return (difference.pow(2) / self.cov_diag).sum(-1) - mahalanobis(self._capacitance_tril, projected)

    def log_prob(self, value: Any) -> Tensor:
        distance = self._mahalanobis(self._value(value) - self.loc)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + self._log_det() + distance)

    def entropy(self) -> Tensor:
        entropy = 0.5 * (self._event_shape[0] * (1.0 + math.log(2 * math.pi)) + self._log_det())
        return entropy.broadcast_to(self._batch_shape) if self._batch_shape else entropy


def _squared_norm(matrix: Tensor) -> Tensor:
    """``trace(X X^T)`` over the last two dims (PyTorch's ``_batch_trace_XXT``)."""
    return matrix.pow(2).sum((-2, -1))


def _same_events(p: Distribution, q: Distribution) -> None:
    if p.event_shape != q.event_shape:
        raise ValueError(f"KL-divergence between two {'Low Rank ' if isinstance(p, LowRankMultivariateNormal) else ''}"
                         "Multivariate Normals with different event shapes cannot be computed")


def _woodbury_factor(q: LowRankMultivariateNormal) -> Tensor:
    """``A = Lc^-1 W^T D^-1``: ``(W W^T + D)^-1 = D^-1 - A^T A``."""
    from kiln import linalg

    return linalg.solve_triangular(q._capacitance_tril, q._transposed_over_diagonal(), upper=False)


@register_kl(LowRankMultivariateNormal, LowRankMultivariateNormal)
def _kl_low_rank_low_rank(p: LowRankMultivariateNormal, q: LowRankMultivariateNormal) -> Tensor:
    """PyTorch's: ``trace(Sq^-1 Sp)`` expanded by Woodbury over ``Sp = Wp Wp^T + Dp``."""
    _same_events(p, q)
    woodbury = _woodbury_factor(q)
    trace = ((p.cov_diag / q.cov_diag).sum(-1) + _squared_norm(p.cov_factor * q.cov_diag.rsqrt().unsqueeze(-1))
             - _squared_norm(woodbury * p.cov_diag.sqrt().unsqueeze(-2)) - _squared_norm(woodbury @ p.cov_factor))
    return 0.5 * (q._log_det() - p._log_det() + trace + q._mahalanobis(q.loc - p.loc) - p.event_shape[0])


@register_kl(MultivariateNormal, LowRankMultivariateNormal)
def _kl_full_low_rank(p: MultivariateNormal, q: LowRankMultivariateNormal) -> Tensor:
    _same_events(p, q)
    trace = (_squared_norm(p.scale_tril * q.cov_diag.rsqrt().unsqueeze(-1))
             - _squared_norm(_woodbury_factor(q) @ p.scale_tril))
    log_det = q._log_det() - 2 * half_log_det(p.scale_tril)
    return 0.5 * (log_det + trace + q._mahalanobis(q.loc - p.loc) - p.event_shape[0])


@register_kl(LowRankMultivariateNormal, MultivariateNormal)
def _kl_low_rank_full(p: LowRankMultivariateNormal, q: MultivariateNormal) -> Tensor:
    from kiln import linalg

    _same_events(p, q)
    trace = (_squared_norm(linalg.solve_triangular(q.scale_tril, p.cov_factor, upper=False))
             + _squared_norm(linalg.solve_triangular(q.scale_tril, p.cov_diag.sqrt().diag_embed(), upper=False)))
    log_det = 2 * half_log_det(q.scale_tril) - p._log_det()
    return 0.5 * (log_det + trace + mahalanobis(q.scale_tril, q.loc - p.loc) - p.event_shape[0])


__all__ = ["LowRankMultivariateNormal"]
