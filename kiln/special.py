"""``kiln.special``: PyTorch's ``torch.special``, eager and traced, differentiable through kiln's autodiff.

```python
import kiln.special as special
special.expit(x); special.logit(p, eps=1e-6); special.xlogy(x, y); special.xlog1py(x, y); special.entr(p)
special.erf(x); special.erfc(x); special.erfcx(x); special.erfinv(y)
special.ndtr(x); special.log_ndtr(x); special.ndtri(p)           # the standard normal CDF, its log, its inverse
special.gammaln(x); special.digamma(x); special.polygamma(2, x); special.multigammaln(x, 3)
special.gammainc(a, x); special.gammaincc(a, x); special.zeta(s, q)
special.i0(x); special.i0e(x); special.i1(x); special.i1e(x)
special.softmax(x, dim=-1); special.log_softmax(x, 1); special.logsumexp(x, dim=0)
```

Most are kiln's existing tensor functions under torch.special's names; the rest are in
``frontend/torch_special_namespace.py``. ``bessel_j0``/``j1``/``y0``/``y1``, ``modified_bessel_k0``/``k1`` (and their
scaled forms) and ``airy_ai`` raise an error that says what to do instead. The orthogonal polynomials
(``chebyshev_polynomial_t``, ``hermite_polynomial_h``, ``legendre_polynomial_p``...) take an int degree.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend import torch_special_namespace as _kernels
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.torch_special_namespace import (chebyshev_polynomial_t, chebyshev_polynomial_u, entr, erfcx, hermite_polynomial_h,
                                                   hermite_polynomial_he, i0e, i1, i1e, laguerre_polynomial_l,
                                                   legendre_polynomial_p, log_ndtr, ndtr, ndtri, spherical_bessel_j0, xlog1py,
                                                   zeta)


def erf(input: Any) -> Any:
    return _operand(input).erf()


def erfc(input: Any) -> Any:
    return _operand(input).erfc()


def erfinv(input: Any) -> Any:
    return _operand(input).erfinv()


def expit(input: Any) -> Any:
    """The logistic sigmoid ``1 / (1 + exp(-x))``."""
    return _operand(input).sigmoid()


def logit(input: Any, eps: float | None = None) -> Any:
    return _operand(input).logit(eps)


def exp2(input: Any) -> Any:
    return _operand(input).exp2()


def expm1(input: Any) -> Any:
    return _operand(input).expm1()


def log1p(input: Any) -> Any:
    return _operand(input).log1p()


def gammaln(input: Any) -> Any:
    """``log |Gamma(x)|``."""
    return _operand(input).lgamma()


def digamma(input: Any) -> Any:
    return _operand(input).digamma()


psi = digamma


def polygamma(n: int, input: Any) -> Any:
    return _operand(input).polygamma(n)


def multigammaln(input: Any, p: int) -> Any:
    return _operand(input).mvlgamma(p)


def gammainc(input: Any, other: Any) -> Any:
    """The regularized lower incomplete gamma ``P(a, x)``, ``a`` being ``input``."""
    return _operand(input).igamma(_operand(other))


def gammaincc(input: Any, other: Any) -> Any:
    """The regularized upper incomplete gamma ``Q(a, x) = 1 - P(a, x)``."""
    return _operand(input).igammac(_operand(other))


def i0(input: Any) -> Any:
    return _operand(input).i0()


modified_bessel_i0 = i0
modified_bessel_i1 = i1


def sinc(input: Any) -> Any:
    """The normalized ``sin(pi x) / (pi x)``."""
    return _operand(input).sinc()


def xlogy(input: Any, other: Any) -> Any:
    """``x * log(y)``, 0 where ``x`` is 0; ``x`` may be a number."""
    return _operand(input if hasattr(input, "xlogy") else other.new_tensor(input)).xlogy(_operand(other))


def round(input: Any, decimals: int = 0) -> Any:  # noqa: A001  (torch.special.round)
    return _operand(input).round(decimals=decimals)


def softmax(input: Any, dim: int, *, dtype: Any = None) -> Any:
    return _operand(input).softmax(dim, dtype=dtype)


def log_softmax(input: Any, dim: int, *, dtype: Any = None) -> Any:
    return _operand(input).log_softmax(dim, dtype=dtype)


def logsumexp(input: Any, dim: Any, keepdim: bool = False) -> Any:
    return _operand(input).logsumexp(dim, keepdim=keepdim)


def _operand(input: Any) -> Any:
    """A Parameter (``kiln.tensor(a, requires_grad=True)``) compares by identity outside a trace, so that it can key
    dicts; the reused kernels' ``x == 0`` would see a bool. They get a view of it instead (on the autograd tape)."""
    return input.view_as(input) if isinstance(input, ArrayLeaf) else input


globals().update(_kernels.MISSING)

__all__ = ["digamma", "entr", "erf", "erfc", "erfcx", "erfinv", "exp2", "expit", "expm1", "gammainc", "gammaincc", "gammaln", "i0",
           "i0e", "i1", "i1e", "log1p", "log_ndtr", "log_softmax", "logit", "logsumexp", "modified_bessel_i0", "modified_bessel_i1",
           "multigammaln", "ndtr", "ndtri", "polygamma", "psi", "round", "sinc", "softmax", "spherical_bessel_j0", "xlog1py",
           "xlogy", "zeta", "chebyshev_polynomial_t", "chebyshev_polynomial_u", "hermite_polynomial_h", "hermite_polynomial_he",
           "laguerre_polynomial_l", "legendre_polynomial_p", *_kernels.MISSING]
