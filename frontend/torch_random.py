"""``torch``'s samplers over kiln's uniform draws (``tensor.random_uniform`` from the traced step's seed, as
``kiln.rand_like`` and dropout draw): ``randint_like``, ``randperm``, ``normal``, ``bernoulli``, ``multinomial``.

```python
kiln.randperm(n)                          # argsort of n uniforms: every permutation equally likely
kiln.normal(mean, std)                    # mean + std * randn; no gradient, as torch's
kiln.bernoulli(p)                         # 1 where a uniform falls below p
kiln.multinomial(probs, 3)                # without replacement: the top 3 of log p + Gumbel noise
kiln.multinomial(probs, 8, replacement=True)   # inverse CDF: the count of cumulative probabilities below a uniform
```

The numbers are kiln's, not PyTorch's (their distributions are PyTorch's); like every draw they need a trace, whose
step feeds the seed. ``poisson`` draws eagerly only (NumPy's sampler): its count comes from a loop as long as the
draw needs, which a trace cannot hold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_functions import rand_like, randint, randn_like, zeros
from kiln.frontend.torch_generator import drawing_from
from kiln.frontend.torch_rng_state import get_rng_state, initial_seed, seed, set_rng_state
from kiln.frontend.trace import located_error


def randint_like(input: Tensor, low: int = 0, high: int | None = None, *, dtype: Any = None) -> Tensor:
    """Integers uniform in ``[low, high)`` shaped as ``input`` (``randint_like(x, high)`` too), in its dtype."""
    if high is None:
        low, high = 0, low
    return randint(low, high, tuple(input.shape), dtype=input.dtype if dtype is None else dtype)


def randperm(n: int, *, generator: Any = None, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A random permutation of ``0 .. n-1``: the order that sorts ``n`` uniform draws (ties have probability ~0)."""
    with drawing_from(generator):  # a kiln.Generator's eager draws (frontend/torch_generator.py)
        return rand_like(zeros(n, dtype="float64")).argsort().to(DType.of("int64" if dtype is None else dtype))


def normal(mean: Any = 0.0, std: Any = 1.0, size: Any = None, *, generator: Any = None, dtype: Any = None) -> Tensor:
    """``mean + std * N(0, 1)`` shaped as ``mean`` and ``std`` broadcast (or ``size`` for two numbers); constant to
    the gradient, as torch's."""
    if size is not None:
        base = zeros(*tuple(size), dtype=dtype)
    elif isinstance(mean, Tensor) or isinstance(std, Tensor):
        shapes = [t for t in (mean, std) if isinstance(t, Tensor)]
        base = shapes[0] * 0.0 if len(shapes) == 1 else (mean * 0.0 + std * 0.0)
    else:
        raise located_error("normal of two numbers needs a size: kiln.normal(0.0, 1.0, size=(3, 4))")
    with drawing_from(generator):
        return (mean + std * randn_like(base.detach())).detach()


def bernoulli(input: Tensor, p: float | None = None, *, generator: Any = None) -> Tensor:
    """1 with probability ``input`` (or ``p``) elementwise, else 0, in ``input``'s dtype."""
    probability = input if p is None else p
    with drawing_from(generator):
        return (rand_like(input, dtype=input.dtype) < probability).to(input.dtype).detach()


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *, generator: Any = None) -> Tensor:
    """``num_samples`` category indices per row of non-negative weights (normalised here), int64."""
    if input.ndim not in (1, 2):
        raise located_error(f"multinomial takes a vector or a matrix of weights, got {input.type}")
    _check_distribution(input, num_samples)
    with drawing_from(generator):
        return _multinomial(input.detach(), num_samples, replacement)


def _check_distribution(input: Tensor, num_samples: int) -> None:
    """torch's refusals (its words, a RuntimeError at the user's line): no samples asked, and, where the weights'
    values are known (eagerly), a NaN, infinite or negative weight, or a row of zeros (word2vec's ``unigram ** 0.75``
    of an empty vocabulary)."""
    from kiln.frontend.eager_values import eager_array  # lazily: the eager values build on the tensor

    if num_samples <= 0:
        raise located_error("cannot sample n_sample <= 0 samples")
    weights = eager_array(input)
    if weights is None:
        return
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise located_error("probability tensor contains either `inf`, `nan` or element < 0")
    if (weights.sum(axis=-1) <= 0).any():
        raise located_error("invalid multinomial distribution (sum of probabilities <= 0)")


def _multinomial(weights: Tensor, num_samples: int, replacement: bool) -> Tensor:
    if replacement:
        return _inverse_cdf(weights, num_samples)
    categories = weights.shape[-1]
    if isinstance(categories, int) and num_samples > categories:
        raise located_error(f"cannot sample n_sample > prob_dist.size(-1) samples without replacement (multinomial: "
                            f"{num_samples} samples of {categories} categories)")
    noise = -(-(1.0 - rand_like(weights)).log()).log()  # Gumbel(0, 1)
    keys = apply("tensor.where", weights > 0, weights.clamp(min=1e-300 if weights.dtype is DType.f64 else 1e-38).log(), -math.inf)
    return (keys + noise).topk(num_samples, -1).indices


def _inverse_cdf(weights: Tensor, num_samples: int) -> Tensor:
    """Category ``k`` where a uniform falls between the cumulative sums ``c_(k-1)`` and ``c_k`` (normalised)."""
    cumulative = weights.cumsum(-1)
    cumulative = cumulative / cumulative.narrow(-1, cumulative.shape[-1] - 1, 1)
    shape = tuple(weights.shape[:-1]) + (num_samples,)
    draws = rand_like(zeros(*shape, dtype=weights.dtype) if all(isinstance(d, int) for d in shape) else weights.narrow(-1, 0, 1).expand(shape))
    below = cumulative.unsqueeze(-2) <= draws.unsqueeze(-1)
    return below.long().sum(-1).clamp(max=weights.shape[-1] - 1)


def poisson(input: Tensor, generator: Any = None) -> Tensor:
    """Counts with rates ``input`` (``input``'s dtype), drawn eagerly by NumPy's Poisson sampler seeded from kiln's
    generator (or ``generator``), as ``kiln.distributions.Poisson(rate).sample()``."""
    from kiln.frontend.init import draw_seed  # lazily: kiln's generator
    from kiln.frontend.trace import TraceContext

    if not TraceContext.current().eager:
        raise located_error("kiln.poisson inside a traced function: a Poisson count comes from a loop as long as the "
                            "draw needs, which a traced program cannot hold; draw it outside the compiled function "
                            "and pass it in, or for large rates use kiln.normal(rate, rate.sqrt()).round().clamp(min=0)")
    with drawing_from(generator):
        rng = np.random.default_rng(int(draw_seed()))
    rates = input.numpy()
    if not np.all(rates >= 0):
        raise RuntimeError("invalid Poisson rate, expected rate to be non-negative (kiln.poisson: a negative or NaN "
                           "rate)")
    return apply("tensor.constant", value=rng.poisson(rates).astype(rates.dtype))


__all__ = ["bernoulli", "multinomial", "normal", "poisson", "randint_like", "randperm",
           "get_rng_state", "initial_seed", "seed", "set_rng_state"]  # frontend/torch_rng_state.py (fork_rng: kiln.random)
