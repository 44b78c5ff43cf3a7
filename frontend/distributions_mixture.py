"""``MixtureSameFamily(Categorical, component)``: a mixture whose components are one batched distribution, as
``torch.distributions``' (a mixture density network's output, a Gaussian mixture model).

The component distribution's last batch dim indexes the ``K`` components; the mixture's batch shape is the rest and
its event shape the component's. With ``log w_k`` the mixture's normalized logits and ``p_k`` its probabilities:

```
log_prob(x) = logsumexp_k(log w_k + component.log_prob(x padded to broadcast over k))
mean        = sum_k p_k mean_k
variance    = sum_k p_k var_k + sum_k p_k (mean_k - mean)^2     (the law of total variance)
cdf(x)      = sum_k p_k cdf_k(x)                                 (univariate components)
sample      = component draws gathered at the mixture's drawn index (no gradient, no rsample, as torch's)
              (a Categorical shared over the batch draws an index per batch element; torch 2.13 cannot)
```
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.distributions import Distribution, invalid_parameter
from kiln.frontend.distributions_discrete import Categorical
from kiln.frontend.tensor import Tensor


class MixtureSameFamily(Distribution):
    """The mixture of ``component_distribution``'s ``K`` distributions along its last batch dim, weighted by
    ``mixture_distribution`` (a ``Categorical`` over ``K``)."""

    has_rsample = False

    def __init__(self, mixture_distribution: Categorical, component_distribution: Distribution,
                 validate_args: bool | None = None):
        _check_parts(mixture_distribution, component_distribution)
        self._mixture_distribution, self._component_distribution = mixture_distribution, component_distribution
        self._num_component = mixture_distribution.param_shape[-1]
        self._event_ndims = len(component_distribution.event_shape)
        super().__init__(tuple(component_distribution.batch_shape[:-1]), tuple(component_distribution.event_shape),
                         validate_args)

    mixture_distribution = property(lambda self: self._mixture_distribution)
    component_distribution = property(lambda self: self._component_distribution)
    support = property(lambda self: self._component_distribution.support)
    has_enumerate_support = False

    @property
    def dtype(self) -> Any:
        return self._component_distribution.dtype

    def expand(self, batch_shape: Any, _instance: Any = None) -> "MixtureSameFamily":
        batch_shape = tuple(batch_shape)
        component = self._component_distribution.expand(batch_shape + (self._num_component,))
        mixture = self._mixture_distribution.expand(batch_shape)
        return MixtureSameFamily(mixture, component, self._validate_args)

    @property
    def mean(self) -> Tensor:
        probs = self._pad_mixture_dimensions(self._mixture_distribution.probs)
        return (probs * self._component_distribution.mean).sum(-1 - self._event_ndims)

    @property
    def variance(self) -> Tensor:
        probs = self._pad_mixture_dimensions(self._mixture_distribution.probs)
        component = self._component_distribution
        mean_cond_var = (probs * component.variance).sum(-1 - self._event_ndims)
        var_cond_mean = (probs * (component.mean - self._pad(self.mean)).pow(2.0)).sum(-1 - self._event_ndims)
        return mean_cond_var + var_cond_mean

    def log_prob(self, value: Any) -> Tensor:
        value = self._value(value, support=self._component_distribution.support, dtype=self.dtype)
        log_prob_x = self._component_distribution.log_prob(self._pad(value))  # [S, B, k]
        log_mix_prob = self._mixture_distribution.logits.log_softmax(-1)  # [B, k]
        return (log_prob_x + log_mix_prob).logsumexp(-1)  # [S, B]

    def cdf(self, value: Any) -> Tensor:
        value = self._value(value, "cdf", support=self._component_distribution.support, dtype=self.dtype)
        cdf_x = self._component_distribution.cdf(self._pad(value))
        return (cdf_x * self._mixture_distribution.probs).sum(-1)

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """Each draw is the drawn component's draw: ``gather`` of the components' samples at the mixture's index,
        drawn for each batch element. A Categorical with fewer batch elements than the components (its weights
        shared, ``logits`` of shape ``(K,)`` or ``(1, K)``) is expanded to the batch first: torch 2.13 raises there
        (``Index tensor must have the same number of dimensions``) or returns one draw for the whole batch, shaped
        ``(n, 1, ...)`` against its own ``batch_shape``."""
        mixture = self._mixture_distribution
        if tuple(mixture.batch_shape) != tuple(self.batch_shape):
            mixture = mixture.expand(self.batch_shape)
        mix_sample = mixture.sample(sample_shape)
        gather_dim = len(mix_sample.shape)
        comp_samples = self._component_distribution.sample(sample_shape)  # [n, B, k, E]
        index = mix_sample.reshape(tuple(mix_sample.shape) + (1,) * (self._event_ndims + 1))
        index = index.expand(*mix_sample.shape, 1, *self._event_shape)
        return comp_samples.gather(gather_dim, index).squeeze(gather_dim).detach()

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        raise NotImplementedError("MixtureSameFamily has no rsample (the component index is discrete), as in "
                                  "torch.distributions; use sample(), or log_prob for a likelihood")

    def _pad(self, value: Tensor) -> Tensor:
        """``value`` with a dim of 1 where the components are, so it broadcasts over them."""
        return value.unsqueeze(-1 - self._event_ndims)

    def _pad_mixture_dimensions(self, value: Tensor) -> Tensor:
        """The mixture's ``[..., k]`` weights shaped to broadcast against the components' ``[B, k, E]`` parameters."""
        batch_ndims, mixture_batch_ndims = len(self.batch_shape), len(self._mixture_distribution.batch_shape)
        pad_ndims = 0 if mixture_batch_ndims == 1 else batch_ndims - mixture_batch_ndims
        shape = tuple(value.shape)
        return value.reshape(shape[:-1] + (1,) * pad_ndims + shape[-1:] + (1,) * self._event_ndims)

    def __repr__(self) -> str:
        return (f"MixtureSameFamily(\n  {self._mixture_distribution!r},\n  {self._component_distribution!r})")


def _check_parts(mixture: Any, component: Any) -> None:
    """torch's checks of the two parts, with its ``ValueError`` wording."""
    if not isinstance(mixture, Categorical):
        raise invalid_parameter(f"The Mixture distribution needs to be an instance of torch.distributions.Categorical, "
                                f"got {mixture!r}")
    if not isinstance(component, Distribution):
        raise invalid_parameter(f"The Component distribution need to be an instance of torch.distributions.Distribution, "
                                f"got {component!r}")
    mixture_batch, component_batch = tuple(mixture.batch_shape), tuple(component.batch_shape[:-1])
    for size1, size2 in zip(reversed(mixture_batch), reversed(component_batch)):
        if size1 != 1 and size2 != 1 and size1 != size2:
            raise invalid_parameter(f"`mixture_distribution.batch_shape` ({mixture_batch}) is not compatible with "
                                f"`component_distribution.batch_shape`({component_batch})")
    km, kc = mixture.param_shape[-1], (component.batch_shape or (None,))[-1]
    if km != kc:
        raise invalid_parameter(f"`mixture_distribution component` ({km}) does not equal "
                            f"`component_distribution.batch_shape[-1]` ({kc})")


__all__ = ["MixtureSameFamily"]
