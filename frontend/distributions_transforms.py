"""``kiln.distributions.transforms``: ``torch.distributions.transforms``' bijections, with their log-determinants.

```python
squash = TransformedDistribution(Normal(mu, std), [TanhTransform(cache_size=1)])   # SAC's tanh-squashed Gaussian
action = squash.rsample(); logp = squash.log_prob(action)                        # the cached pre-tanh draw is used
flow = ComposeTransform([AffineTransform(loc, scale), SigmoidTransform()])
y = flow(x); flow.inv(y); flow.log_abs_det_jacobian(x, y)
```

Each transform maps ``x`` in its ``domain`` to ``y = t(x)`` in its ``codomain`` (``Constraint``s with an
``event_dim``: how many rightmost dims one event spans); ``t.inv`` is the inverse, and ``log_abs_det_jacobian(x, y)``
is ``log |dy/dx|``, summed over the transform's own event dims. The formulas are PyTorch's (``TanhTransform``'s
``2 (log 2 - x - softplus(-2x))``, the clipped sigmoid), so values and gradients agree with ``torch.distributions``.
With ``cache_size=1`` a transform remembers its last pair, so ``t.inv(t(x))`` is ``x`` itself (no ``atanh`` of a
rounded ``tanh``), as PyTorch's.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from kiln.compiler.ir.types import Dim, broadcast_shapes
from kiln.frontend.distributions import Constraint, positive, real, sum_rightmost, unit_interval
from kiln.frontend.tensor import Tensor

open_unit_ball = Constraint("a number in (-1, 1)", lambda x: (x > -1) & (x < 1), kind="interval",
                           params={"lower_bound": -1.0, "upper_bound": 1.0})


def independent(constraint: Constraint, dims: int) -> Constraint:
    """``constraint`` over events of ``dims`` more rightmost dims (PyTorch's ``constraints.independent``)."""
    if dims == 0:
        return constraint
    check = lambda x: np.all(constraint.check(x), axis=tuple(range(-dims, 0)))  # noqa: E731
    return Constraint(constraint.describe, check, constraint.event_dim + dims)


def _softplus(x: Tensor) -> Tensor:
    from kiln.frontend.functional import softplus

    return softplus(x)


def _finfo(x: Tensor) -> Any:
    from kiln.frontend.torch_dtypes import finfo

    return finfo.of(x.dtype)


class Transform:
    """``torch.distributions.transforms.Transform``: an invertible map with ``log |dy/dx|``."""

    domain: Constraint = real
    codomain: Constraint = real
    bijective = True
    sign: int = 1

    def __init__(self, cache_size: int = 0):
        if cache_size not in (0, 1):
            raise ValueError(f"{type(self).__name__}: cache_size must be 0 or 1, got {cache_size!r}")
        self._cache_size, self._cached = cache_size, None

    def with_cache(self, cache_size: int = 1) -> "Transform":
        if cache_size == self._cache_size:
            return self
        raise NotImplementedError(f"{type(self).__name__}.with_cache is not implemented; build it with cache_size=")

    @property
    def event_dim(self) -> int:
        return self.domain.event_dim if self.domain.event_dim == self.codomain.event_dim else \
            _unequal_event_dims(self)

    @property
    def inv(self) -> "Transform":
        return _InverseTransform(self)

    def __call__(self, x: Tensor) -> Tensor:
        if self._cached is not None and x is self._cached[0]:
            return self._cached[1]
        y = self._call(x)
        if self._cache_size:
            self._cached = (x, y)
        return y

    def _inv_call(self, y: Tensor) -> Tensor:
        if self._cached is not None and y is self._cached[1]:
            return self._cached[0]
        x = self._inverse(y)
        if self._cache_size:
            self._cached = (x, y)
        return x

    def _call(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def _inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no log_abs_det_jacobian")

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return tuple(shape)

    def __eq__(self, other: object) -> bool:
        """Parameterless transforms are equal to any of their class (PyTorch's ``ExpTransform() == ExpTransform()``)."""
        return type(self) is type(other) and self._parameters() == other._parameters()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(type(self))

    def _parameters(self) -> tuple[Any, ...]:
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _unequal_event_dims(transform: Transform) -> int:
    raise ValueError(f"{type(transform).__name__}: domain and codomain event dims differ; read domain.event_dim or "
                     "codomain.event_dim")


class _InverseTransform(Transform):
    """``t.inv``: ``t`` run backwards (its cache shared)."""

    def __init__(self, transform: Transform):
        super().__init__(transform._cache_size)
        self._inv = transform

    domain = property(lambda self: self._inv.codomain)  # type: ignore[assignment]
    codomain = property(lambda self: self._inv.domain)  # type: ignore[assignment]
    sign = property(lambda self: self._inv.sign)  # type: ignore[assignment]
    bijective = property(lambda self: self._inv.bijective)  # type: ignore[assignment]
    inv = property(lambda self: self._inv)  # type: ignore[assignment]

    def __call__(self, x: Tensor) -> Tensor:
        return self._inv._inv_call(x)

    def _parameters(self) -> tuple[Any, ...]:
        return (self._inv,)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -self._inv.log_abs_det_jacobian(y, x)

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return self._inv.inverse_shape(shape)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return self._inv.forward_shape(shape)


class ComposeTransform(Transform):
    """``parts`` applied in order; the log-determinant sums theirs, each summed up to the composition's event dims."""

    def __init__(self, parts: Sequence[Transform], cache_size: int = 0):
        super().__init__(cache_size)
        self.parts = list(parts)

    @property
    def domain(self) -> Constraint:  # type: ignore[override]
        if not self.parts:
            return real
        event_dim = self.parts[-1].codomain.event_dim
        for part in reversed(self.parts):
            event_dim = max(event_dim - part.codomain.event_dim, 0) + part.domain.event_dim
        domain = self.parts[0].domain
        return independent(domain, event_dim - domain.event_dim) if event_dim > domain.event_dim else domain

    @property
    def codomain(self) -> Constraint:  # type: ignore[override]
        if not self.parts:
            return real
        event_dim = self.parts[0].domain.event_dim
        for part in self.parts:
            event_dim = max(event_dim - part.domain.event_dim, 0) + part.codomain.event_dim
        codomain = self.parts[-1].codomain
        return independent(codomain, event_dim - codomain.event_dim) if event_dim > codomain.event_dim else codomain

    @property
    def sign(self) -> Any:  # type: ignore[override]
        """The parts' signs multiplied (a tensor where one is: an ``AffineTransform`` with a tensor scale), as torch's."""
        sign: Any = 1
        for part in self.parts:
            sign = sign * part.sign
        return sign

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return all(part.bijective for part in self.parts)

    @property
    def inv(self) -> Transform:
        """The parts' inverses in reverse order, made once; its ``inv`` is this composition again, as torch's."""
        inverse = self.__dict__.get("_inverse")
        if inverse is None:
            inverse = ComposeTransform([part.inv for part in reversed(self.parts)])
            inverse._inverse, self._inverse = self, inverse
        return inverse

    def _parameters(self) -> tuple[Any, ...]:
        return tuple(self.parts)

    def _call(self, x: Tensor) -> Tensor:
        for part in self.parts:
            x = part(x)
        return x

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inv(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        if not self.parts:
            return x * 0
        xs = [x]
        for part in self.parts[:-1]:
            xs.append(part(xs[-1]))
        xs.append(y)
        total, event_dim = None, self.domain.event_dim
        for part, before, after in zip(self.parts, xs[:-1], xs[1:]):
            term = sum_rightmost(part.log_abs_det_jacobian(before, after), event_dim - part.domain.event_dim)
            total = term if total is None else total + term
            event_dim += part.codomain.event_dim - part.domain.event_dim
        return total

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        for part in self.parts:
            shape = part.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return tuple(shape)

    def __repr__(self) -> str:
        return f"ComposeTransform({', '.join(map(repr, self.parts))})"


class ExpTransform(Transform):
    """``y = exp(x)``; ``log |dy/dx| = x``."""

    codomain = positive

    def _call(self, x: Tensor) -> Tensor:
        return x.exp()

    def _inverse(self, y: Tensor) -> Tensor:
        return y.log()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x


class PowerTransform(Transform):
    """``y = x ** exponent`` on positive numbers; ``log |dy/dx| = log |exponent y / x|``."""

    domain = positive
    codomain = positive

    def __init__(self, exponent: Any, cache_size: int = 0):
        super().__init__(cache_size)
        self.exponent = exponent

    def _parameters(self) -> tuple[Any, ...]:
        return (_same_value(self.exponent),)

    def _call(self, x: Tensor) -> Tensor:
        return x.pow(self.exponent)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.pow(1 / self.exponent)

    @property
    def sign(self) -> Any:  # type: ignore[override]
        """-1 where the exponent is negative (the map decreases), as torch's ``exponent.sign()``."""
        return int(np.sign(self.exponent)) if isinstance(self.exponent, (int, float)) else self.exponent.sign()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return (self.exponent * y / x).abs().log()

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return broadcast_shapes(tuple(shape), tuple(getattr(self.exponent, "shape", ())))

    inverse_shape = forward_shape


class SigmoidTransform(Transform):
    """``y = sigmoid(x)``, clipped into ``[tiny, 1 - eps]`` as PyTorch's; ``log |dy/dx| = -softplus(-x) - softplus(x)``."""

    codomain = unit_interval

    def _call(self, x: Tensor) -> Tensor:
        info = _finfo(x)
        return x.sigmoid().clamp(min=info.tiny, max=1.0 - info.eps)

    def _inverse(self, y: Tensor) -> Tensor:
        info = _finfo(y)
        y = y.clamp(min=info.tiny, max=1.0 - info.eps)
        return y.log() - (-y).log1p()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -_softplus(-x) - _softplus(x)


class TanhTransform(Transform):
    """``y = tanh(x)``; ``log |dy/dx| = 2 (log 2 - x - softplus(-2x))`` (stable where ``1 - tanh^2`` underflows)."""

    codomain = open_unit_ball

    def _call(self, x: Tensor) -> Tensor:
        return x.tanh()

    def _inverse(self, y: Tensor) -> Tensor:
        return y.atanh()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return 2.0 * (math.log(2.0) - x - _softplus(-2.0 * x))


class SoftplusTransform(Transform):
    """``y = softplus(x) = log(1 + exp(x))``; ``log |dy/dx| = -softplus(-x)``."""

    codomain = positive

    def _call(self, x: Tensor) -> Tensor:
        return _softplus(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return (-y).expm1().neg().log() + y

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -_softplus(-x)


class AffineTransform(Transform):
    """``y = loc + scale x`` (``loc``, ``scale`` numbers or tensors), over events of ``event_dim`` rightmost dims."""

    def __init__(self, loc: Any, scale: Any, event_dim: int = 0, cache_size: int = 0):
        super().__init__(cache_size)
        self.loc, self.scale, self._event_dim = _operand(loc), _operand(scale), event_dim

    domain = property(lambda self: independent(real, self._event_dim))  # type: ignore[assignment]
    codomain = property(lambda self: independent(real, self._event_dim))  # type: ignore[assignment]

    @property
    def sign(self) -> Any:  # type: ignore[override]
        return int(np.sign(self.scale)) if isinstance(self.scale, (int, float)) else self.scale.sign()

    def _parameters(self) -> tuple[Any, ...]:
        return (_same_value(self.loc), _same_value(self.scale), self._event_dim)

    def _call(self, x: Tensor) -> Tensor:
        return self.loc + self.scale * x

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        shape = tuple(x.shape)
        if isinstance(self.scale, (int, float)):
            result = x * 0 + math.log(abs(self.scale))
        else:
            result = self.scale.abs().log()
        if self._event_dim:
            result = result.reshape(tuple(result.shape[: -self._event_dim]) + (-1,)).sum(-1)
            shape = shape[: -self._event_dim]
        return result.expand(shape)

    def forward_shape(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        return broadcast_shapes(tuple(shape), tuple(getattr(self.loc, "shape", ())), tuple(getattr(self.scale, "shape", ())))

    inverse_shape = forward_shape


def _same_value(value: Any) -> Any:
    """What equality compares of a parameter: a number's value, a tensor's identity (its values may be traced)."""
    return value if isinstance(value, (int, float)) else id(value)


def _operand(value: Any) -> Any:
    """A number stays a Python number (PyTorch's ``numbers.Real`` branches); an array becomes a tensor."""
    if isinstance(value, (Tensor, int, float)):
        return value
    from kiln.frontend.torch_functions import tensor

    return tensor(np.asarray(value))


identity_transform = ComposeTransform([])

__all__ = ["AffineTransform", "ComposeTransform", "ExpTransform", "PowerTransform", "SigmoidTransform", "SoftplusTransform",
           "TanhTransform", "Transform", "identity_transform", "independent"]
