"""``LKJCholesky(dim, concentration)``: torch's LKJ distribution over Cholesky factors ``L`` of ``dim x dim``
correlation matrices, ``p(L L^T) ~ det(L L^T)^(eta - 1)`` (Lewandowski, Kurowicka and Joe 2009), with
``torch.distributions``' formulas (values and gradients agree with torch's):

```
log_prob(L)   sum_{i=2..D} (2 (eta - 1) + D - i) log L_ii  -  ((D - 1) log(pi) / 2 + mvlgamma(a - 1/2, D - 1)
                                                                 - (D - 1) lgamma(a)),   a = eta + (D - 1) / 2
              (the correlation matrix's density det^(eta - 1) times the Jacobian prod L_ii^(D - i) of L -> L L^T)
sample        the onion method over rows: y_i ~ Beta(b_i, eta + (D - 2) / 2 - c_i / 2) with b = (1/2, 1/2, 3/2, ...),
              c = (0, 0, 1, ..., D - 2); row i below the diagonal is sqrt(y_i) u_i, u_i uniform on the unit sphere
              (normalized N(0, I) draws, the first row all 0), the diagonal sqrt(1 - |row|^2) (clamped at tiny)
```

As torch's it has no ``rsample`` (its draws pass through ``sample``'s ``no_grad``); the Beta and normal draws come
from the step's seed (``Beta``'s traced Gamma sampler), so ``sample`` works inside a traced function as eagerly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.distributions import Distribution, constant, positive
from kiln.frontend.distributions_gamma import Beta
from kiln.frontend.distributions_transforms_cholesky import corr_cholesky
from kiln.frontend.grad_mode import no_grad
from kiln.frontend.tensor import Tensor


class LKJCholesky(Distribution):
    """LKJ over ``dim x dim`` correlation Cholesky factors with concentration ``eta`` (module docstring)."""

    arg_constraints = {"concentration": positive}
    support = corr_cholesky

    def __init__(self, dim: int, concentration: Any = 1.0, validate_args: bool | None = None):
        if dim < 2:
            raise ValueError(f"Expected dim to be an integer greater than or equal to 2. Found dim={dim}.")
        self.dim = int(dim)
        self._set_parameters(validate_args, concentration=concentration)
        self._event_shape = (self.dim, self.dim)

    concentration = property(lambda self: self._parameter("concentration"))

    def _onion_beta(self) -> Beta:
        """The row radii's Beta: ``Beta(offset + 1/2, eta + (D - 2) / 2 - offset / 2)``, ``offset = (0, 0, 1, ...)``."""
        offset = np.concatenate([[0.0], np.arange(self.dim - 1, dtype=np.float64)])
        concentration0 = (self.concentration + 0.5 * (self.dim - 2)).unsqueeze(-1) - constant(0.5 * offset, self.dtype)
        return Beta(constant(offset + 0.5, self.dtype), concentration0, validate_args=False)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """Draws shaped ``sample_shape + batch_shape + (dim, dim)`` by the onion method, with no gradient."""
        with no_grad():
            shape = self._extended_shape(sample_shape)
            radius = self._onion_beta().sample(sample_shape).unsqueeze(-1)
            normal = self._standard_normal(shape).tril(-1)
            tiny = float(np.finfo(self.dtype.numpy).tiny)
            direction = normal / normal.norm(dim=-1, keepdim=True).clamp(min=tiny)  # the first row: 0 / tiny = 0
            below = radius.sqrt() * direction
            diagonal = (1 - below.pow(2).sum(-1)).clamp(min=tiny).sqrt()
            return (below + diagonal.diag_embed()).detach()

    def log_prob(self, value: Any) -> Tensor:
        value, eta, size = self._value(value), self.concentration, self.dim
        diagonal = value.diagonal(dim1=-1, dim2=-2)[..., 1:]
        order = 2 * (eta - 1).unsqueeze(-1) + constant(size - np.arange(2, size + 1, dtype=np.float64), self.dtype)
        unnormalized = (order * diagonal.log()).sum(-1)
        return unnormalized - self._log_normalizer(eta)

    def _log_normalizer(self, eta: Tensor) -> Tensor:
        """``(D - 1) log(pi) / 2 + mvlgamma(a - 1/2, D - 1) - (D - 1) lgamma(a)``, ``a = eta + (D - 1) / 2`` (page
        1999 of Lewandowski et al.; mvlgamma's own pi term is ``(D - 1)(D - 2) / 4 log pi``)."""
        dm1 = self.dim - 1
        alpha = eta + 0.5 * dm1
        return 0.5 * dm1 * math.log(math.pi) + (alpha - 0.5).mvlgamma(dm1) - alpha.lgamma() * dm1


__all__ = ["LKJCholesky"]
