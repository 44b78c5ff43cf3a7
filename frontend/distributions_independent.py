"""``Independent(base, n)``: the last ``n`` batch dims of ``base`` read as one event, as ``torch.distributions``'.

``Independent(Normal(mu, sigma), 1)`` is a diagonal Gaussian over vectors: ``log_prob`` and ``entropy`` sum the
base's over those dims, so one number scores a whole vector (a VAE's latent), and ``kl_divergence`` of two sums the
base pair's.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.distributions import Distribution, invalid_parameter, sum_rightmost
from kiln.frontend.tensor import Tensor


class Independent(Distribution):
    """``base_distribution`` with its last ``reinterpreted_batch_ndims`` batch dims moved into the event shape."""

    def __init__(self, base_distribution: Distribution, reinterpreted_batch_ndims: int, validate_args: bool | None = None):
        if not isinstance(base_distribution, Distribution):
            raise TypeError(f"Independent takes a kiln.distributions distribution, got {base_distribution!r}")
        batch_ndims = len(base_distribution.batch_shape)
        if not 0 <= reinterpreted_batch_ndims <= batch_ndims:
            raise invalid_parameter(
                f"Independent: Expected reinterpreted_batch_ndims "
                f"<= len(base_distribution.batch_shape), actual {reinterpreted_batch_ndims} vs {batch_ndims} "
                f"({base_distribution!r} has batch shape {tuple(base_distribution.batch_shape)})")
        shape = tuple(base_distribution.batch_shape) + tuple(base_distribution.event_shape)
        event_dims = reinterpreted_batch_ndims + len(base_distribution.event_shape)
        self.base_dist, self.reinterpreted_batch_ndims = base_distribution, reinterpreted_batch_ndims
        super().__init__(shape[: len(shape) - event_dims], shape[len(shape) - event_dims :],
                         base_distribution._validate_args if validate_args is None else validate_args)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base_dist.has_rsample

    @property
    def has_enumerate_support(self) -> bool:  # type: ignore[override]
        return self.reinterpreted_batch_ndims == 0 and self.base_dist.has_enumerate_support

    @property
    def dtype(self) -> Any:
        return self.base_dist.dtype

    def expand(self, batch_shape: Any, _instance: Any = None) -> "Independent":
        batch_shape = tuple(batch_shape)
        base = self.base_dist.expand(batch_shape + tuple(self.event_shape[: self.reinterpreted_batch_ndims]))
        return Independent(base, self.reinterpreted_batch_ndims, self._validate_args)

    mean = property(lambda self: self.base_dist.mean)
    mode = property(lambda self: self.base_dist.mode)
    variance = property(lambda self: self.base_dist.variance)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value: Any) -> Tensor:
        return sum_rightmost(self.base_dist.log_prob(value), self.reinterpreted_batch_ndims)

    def entropy(self) -> Tensor:
        return sum_rightmost(self.base_dist.entropy(), self.reinterpreted_batch_ndims)

    def enumerate_support(self, expand: bool = True) -> Tensor:
        if self.reinterpreted_batch_ndims > 0:
            raise NotImplementedError("Independent: enumeration over a cartesian product is not implemented (as in PyTorch)")
        return self.base_dist.enumerate_support(expand)

    def __repr__(self) -> str:
        return f"Independent({self.base_dist!r}, {self.reinterpreted_batch_ndims})"


__all__ = ["Independent"]
