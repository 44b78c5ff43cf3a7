"""``TransformedDistribution(base, transforms)`` and ``LogNormal``, as ``torch.distributions``' (``cdf``/``icdf``, ``expand``).

```python
squashed = TransformedDistribution(Normal(mu, std), [TanhTransform(cache_size=1)])
a = squashed.rsample(); logp = squashed.log_prob(a)        # SAC: log N(u) - log(1 - tanh(u)^2), u from the cache
flow = TransformedDistribution(Independent(Normal(zeros, ones), 1), [AffineTransform(shift, scale, event_dim=1)])
```

A draw is the base's pushed through the transforms; ``log_prob(y)`` walks them backwards, subtracting each
``log |dy/dx|`` summed over the dims of one event, then adds the base's ``log_prob`` (PyTorch's algorithm, shapes
and event-dim bookkeeping), so a normalizing flow written against ``torch.distributions`` scores the same.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import Distribution, invalid_parameter, sum_rightmost
from kiln.frontend.distributions_continuous import Normal
from kiln.frontend.distributions_independent import Independent
from kiln.frontend.distributions_kl import kl_divergence, register_kl
from kiln.frontend.distributions_transforms import ComposeTransform, ExpTransform, Transform, real
from kiln.frontend.eager_values import eager_array
from kiln.frontend.tensor import Tensor


class TransformedDistribution(Distribution):
    """``base_distribution`` pushed through ``transforms`` (one ``Transform`` or a list, applied in order)."""

    def __init__(self, base_distribution: Distribution, transforms: Transform | Sequence[Transform], validate_args: bool | None = None):
        self.transforms = [transforms] if isinstance(transforms, Transform) else list(transforms)
        if not all(isinstance(t, Transform) for t in self.transforms):
            raise ValueError(f"TransformedDistribution: transforms must be a Transform or a list of them, got {transforms!r}")
        composed = ComposeTransform(self.transforms)
        base_shape = tuple(base_distribution.batch_shape) + tuple(base_distribution.event_shape)
        base_event_dim = len(base_distribution.event_shape)
        domain_event_dim = composed.domain.event_dim
        if len(base_shape) < domain_event_dim:
            raise invalid_parameter(f"TransformedDistribution: base_distribution needs at least {domain_event_dim} dims "
                                    f"but has shape {base_shape}")
        forward_shape = composed.forward_shape(base_shape)
        expanded = composed.inverse_shape(forward_shape)
        if expanded != base_shape:
            base_distribution = base_distribution.expand(expanded[: len(expanded) - base_event_dim])
        if domain_event_dim > base_event_dim:
            base_distribution = Independent(base_distribution, domain_event_dim - base_event_dim)
        self.base_dist = base_distribution
        change = composed.codomain.event_dim - composed.domain.event_dim
        event_dim = max(composed.codomain.event_dim, base_event_dim + change)
        cut = len(forward_shape) - event_dim
        super().__init__(forward_shape[:cut], forward_shape[cut:],
                         base_distribution._validate_args if validate_args is None else validate_args)
        self._dtype = base_distribution.dtype

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @property
    def support(self) -> Any:  # type: ignore[override]
        return self.transforms[-1].codomain if self.transforms else self.base_dist.support

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        x = self.base_dist.rsample(sample_shape)
        for transform in self.transforms:
            x = transform(x)
        return x

    def sample(self, sample_shape: Any = ()) -> Tensor:
        x = self.base_dist.sample(sample_shape)
        for transform in self.transforms:
            x = transform(x)
        return x.detach()

    def log_prob(self, value: Any) -> Tensor:
        y = self._value(value, "log_prob", self.support if self.support is not None and self.support.event_dim == 0 else None)
        event_dim, log_prob = len(self.event_shape), None
        for transform in reversed(self.transforms):
            x = transform.inv(y)
            event_dim += transform.domain.event_dim - transform.codomain.event_dim
            term = sum_rightmost(transform.log_abs_det_jacobian(x, y), event_dim - transform.domain.event_dim)
            log_prob = -term if log_prob is None else log_prob - term
            y = x
        base = sum_rightmost(self.base_dist.log_prob(y), event_dim - len(self.base_dist.event_shape))
        return base if log_prob is None else log_prob + base

    def cdf(self, value: Any) -> Tensor:
        """The base's ``cdf`` of ``value`` pulled back through the transforms, flipped where they decrease, as torch's
        (the base must have a ``cdf``: ``Independent`` has none, so neither has a flow over it)."""
        value = self._value(value, "cdf", real)
        for transform in reversed(self.transforms):
            value = transform.inv(value)
        self._check_base_value(value, "cdf")
        return self._monotonize_cdf(self.base_dist.cdf(value))

    def icdf(self, value: Any) -> Tensor:
        """The base's ``icdf`` (of ``1 - value`` where the transforms decrease) pushed through the transforms."""
        value = self.base_dist.icdf(self._monotonize_cdf(self._probability(value)))
        for transform in self.transforms:
            value = transform(value)
        return value

    def _monotonize_cdf(self, value: Tensor) -> Tensor:
        """``value`` as is where the transforms' signs multiply to +1, else ``sign * (value - 0.5) + 0.5`` (torch's)."""
        sign: Any = 1
        for transform in self.transforms:
            sign = sign * transform.sign
        return value if isinstance(sign, int) and sign == 1 else sign * (value - 0.5) + 0.5

    def _check_base_value(self, value: Tensor, method: str) -> None:
        """With ``validate_args``, the value the inverse transforms give the base is checked against its support (when
        it has values now), as torch's ``base_dist._validate_sample``."""
        array = eager_array(value)
        if self._validate_args and array is not None and self.base_dist.support is not None:
            self.base_dist._check(f"the value {method} gives it (after the inverse transforms)", self.base_dist.support, array)

    def expand(self, batch_shape: Sequence[Dim], _instance: Any = None) -> "TransformedDistribution":
        """The same transforms over the base expanded to the batch shape they pull ``batch_shape`` back to, as torch's
        (a ``LogNormal`` stays one)."""
        batch_shape = tuple(batch_shape)
        shape = batch_shape + tuple(self.event_shape)
        for transform in reversed(self.transforms):
            shape = transform.inverse_shape(shape)
        new = copy.copy(self)
        new.base_dist = self.base_dist.expand(shape[: len(shape) - len(self.base_dist.event_shape)])
        new._batch_shape = batch_shape
        return new

    def __repr__(self) -> str:
        return f"TransformedDistribution({self.base_dist!r}, {self.transforms!r})"


class LogNormal(TransformedDistribution):
    """``LogNormal(loc, scale)``: ``exp`` of ``Normal(loc, scale)``."""

    has_rsample = True

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None):
        super().__init__(Normal(loc, scale, validate_args=validate_args), ExpTransform(), validate_args)

    loc = property(lambda self: self.base_dist.loc)
    scale = property(lambda self: self.base_dist.scale)
    mean = property(lambda self: (self.loc + self.scale.pow(2) / 2).exp())
    mode = property(lambda self: (self.loc - self.scale.pow(2)).exp())
    variance = property(lambda self: self.scale.pow(2).expm1() * (2 * self.loc + self.scale.pow(2)).exp())

    def entropy(self) -> Tensor:
        return self.base_dist.entropy() + self.loc


@register_kl(TransformedDistribution, TransformedDistribution)
def _kl_transformed_transformed(p: TransformedDistribution, q: TransformedDistribution) -> Tensor:
    """The bases' KL when both push them through equal transforms (a bijection leaves KL unchanged), as PyTorch's."""
    if p.transforms != q.transforms or tuple(p.event_shape) != tuple(q.event_shape):
        raise NotImplementedError("kl_divergence of two TransformedDistributions needs equal transforms and event shapes "
                                  f"(got {p.transforms} and {q.transforms}), as in torch.distributions")
    return kl_divergence(p.base_dist, q.base_dist)


__all__ = ["LogNormal", "TransformedDistribution"]
