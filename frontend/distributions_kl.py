"""``kl_divergence(p, q)``: ``KL(p || q)`` by a table of closed forms keyed by the pair of distribution types, as
``torch.distributions.kl``; ``register_kl(P, Q)`` adds a row. The rows are PyTorch's formulas for the pairs among
kiln's families that PyTorch registers (an infinite divergence where ``q``'s support does not cover ``p``'s):

```
Normal || Normal              (s_p/s_q)^2 + ((m_p - m_q)/s_q)^2 - 1 - log (s_p/s_q)^2, halved
Bernoulli || Bernoulli        p (softplus(-l_q) - softplus(-l_p)) + (1 - p)(softplus(l_q) - softplus(l_p))
Categorical || Categorical    sum p (log p - log q)
Uniform || Uniform            log((h_q - l_q) / (h_p - l_p)), inf unless [l_p, h_p] inside [l_q, h_q]
Laplace || Laplace            -log r + |m_p - m_q| / s_q + r exp(-|m_p - m_q| / s_p) - 1,  r = s_p / s_q
Exponential || Exponential    -log r + r - 1,  r = rate_q / rate_p
Independent || Independent    the base pair's, summed over the reinterpreted dims
```
plus Exponential/Laplace/Uniform || Normal, Normal || Laplace, Uniform || Exponential, and the infinite pairs.
"""

from __future__ import annotations

import math
from typing import Callable

from kiln.frontend.distributions import Distribution, broadcast, constant, sum_rightmost
from kiln.frontend.distributions_continuous import Exponential, Laplace, Normal, Uniform
from kiln.frontend.distributions_discrete import Bernoulli, Categorical
from kiln.frontend.distributions_independent import Independent
from kiln.frontend.distributions_multivariate import MultivariateNormal, half_log_det, mahalanobis
from kiln.frontend.functional_activation import softplus
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.torch_functions import where as torch_where

KLRule = Callable[[Distribution, Distribution], Tensor]
_KL: dict[tuple[type, type], KLRule] = {}


def register_kl(type_p: type, type_q: type) -> Callable[[KLRule], KLRule]:
    """Decorator: ``@register_kl(Normal, Normal) def _kl(p, q): ...`` adds (or replaces) the rule for that pair."""
    if not (issubclass(type_p, Distribution) and issubclass(type_q, Distribution)):
        raise TypeError(f"register_kl takes two kiln.distributions classes, got {type_p!r} and {type_q!r}")

    def decorator(rule: KLRule) -> KLRule:
        _KL[(type_p, type_q)] = rule
        return rule

    return decorator


def _rule(type_p: type, type_q: type) -> KLRule | None:
    """The registered rule for the most specific pair of base classes (nearest in each MRO, ``p``'s first)."""
    matches = [(type_p.__mro__.index(p) + type_q.__mro__.index(q), type_p.__mro__.index(p), rule)
               for (p, q), rule in _KL.items() if issubclass(type_p, p) and issubclass(type_q, q)]
    return min(matches, key=lambda match: match[:2])[2] if matches else None


def kl_divergence(p: Distribution, q: Distribution) -> Tensor:
    """``KL(p || q)``, shaped as the broadcast of their batch shapes; raises ``NotImplementedError`` for a pair with
    no rule, naming the registered ones."""
    rule = _rule(type(p), type(q))
    if rule is None:
        pairs = ", ".join(sorted(f"({a.__name__}, {b.__name__})" for a, b in _KL))
        raise NotImplementedError(
            f"kl_divergence({type(p).__name__}, {type(q).__name__}) has no closed form registered; registered pairs: "
            f"{pairs}. Register one with @kiln.distributions.register_kl({type(p).__name__}, {type(q).__name__}), or "
            "estimate it by Monte Carlo: (p.log_prob(x) - q.log_prob(x)).mean(0) with x = p.rsample((n,))")
    return rule(p, q)


def infinite_like(p: Distribution) -> Tensor:
    p._context("kl_divergence")
    return broadcast(constant(math.inf, p.dtype), p.batch_shape)


def where(condition: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """``a`` where ``condition``, else ``b``; two Python numbers give the default float dtype (``kiln.where``'s)."""
    return torch_where(condition, a, b)


# Same family ------------------------------------------------------------------------------------------------------


@register_kl(Normal, Normal)
def _kl_normal_normal(p: Normal, q: Normal) -> Tensor:
    var_ratio = (p.scale / q.scale).pow(2)
    t1 = ((p.loc - q.loc) / q.scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p: Bernoulli, q: Bernoulli) -> Tensor:
    t1 = p.probs * (softplus(-q.logits) - softplus(-p.logits))
    t1 = where(p.probs.eq(0), 0.0, where(q.probs.eq(0), math.inf, t1))
    t2 = (1 - p.probs) * (softplus(q.logits) - softplus(p.logits))
    t2 = where(p.probs.eq(1), 0.0, where(q.probs.eq(1), math.inf, t2))
    return t1 + t2


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p: Categorical, q: Categorical) -> Tensor:
    t = p.probs * (p.logits - q.logits)
    t = where(p.probs.eq(0), 0.0, where(q.probs.eq(0), math.inf, t))
    return t.sum(-1)


@register_kl(Uniform, Uniform)
def _kl_uniform_uniform(p: Uniform, q: Uniform) -> Tensor:
    result = ((q.high - q.low) / (p.high - p.low)).log()
    return where((q.low > p.low) | (q.high < p.high), math.inf, result)


@register_kl(Laplace, Laplace)
def _kl_laplace_laplace(p: Laplace, q: Laplace) -> Tensor:
    scale_ratio = p.scale / q.scale
    loc_abs_diff = (p.loc - q.loc).abs()
    return -scale_ratio.log() + loc_abs_diff / q.scale + scale_ratio * (-loc_abs_diff / p.scale).exp() - 1


@register_kl(Exponential, Exponential)
def _kl_exponential_exponential(p: Exponential, q: Exponential) -> Tensor:
    rate_ratio = q.rate / p.rate
    return -rate_ratio.log() + rate_ratio - 1


@register_kl(Independent, Independent)
def _kl_independent_independent(p: Independent, q: Independent) -> Tensor:
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError(
            f"kl_divergence(Independent, Independent) needs the same reinterpreted_batch_ndims, got "
            f"{p.reinterpreted_batch_ndims} and {q.reinterpreted_batch_ndims} (as in PyTorch)")
    return sum_rightmost(kl_divergence(p.base_dist, q.base_dist), p.reinterpreted_batch_ndims)


# Across families --------------------------------------------------------------------------------------------------


@register_kl(Exponential, Normal)
def _kl_exponential_normal(p: Exponential, q: Normal) -> Tensor:
    var_normal, rate_sqr = q.scale.pow(2), p.rate.pow(2)
    t1 = 0.5 * (rate_sqr * var_normal * 2 * math.pi).log()
    return t1 - 1 + (rate_sqr.reciprocal() - q.loc / p.rate + q.loc.pow(2) * 0.5) / var_normal


@register_kl(Laplace, Normal)
def _kl_laplace_normal(p: Laplace, q: Normal) -> Tensor:
    var_normal = q.scale.pow(2)
    scale_sqr_var_ratio = p.scale.pow(2) / var_normal
    t1 = 0.5 * (2 * scale_sqr_var_ratio / math.pi).log()
    return -t1 + scale_sqr_var_ratio + (0.5 * p.loc.pow(2) - p.loc * q.loc + 0.5 * q.loc.pow(2)) / var_normal - 1


@register_kl(Normal, Laplace)
def _kl_normal_laplace(p: Normal, q: Laplace) -> Tensor:
    loc_diff = p.loc - q.loc
    scale_ratio = p.scale / q.scale
    loc_diff_scale_ratio = loc_diff / p.scale
    t2 = math.sqrt(2 / math.pi) * p.scale * (-0.5 * loc_diff_scale_ratio.pow(2)).exp()
    t3 = loc_diff * (math.sqrt(0.5) * loc_diff_scale_ratio).erf()
    return -scale_ratio.log() + (t2 + t3) / q.scale - (0.5 * (1 + math.log(0.5 * math.pi)))


@register_kl(Uniform, Normal)
def _kl_uniform_normal(p: Uniform, q: Normal) -> Tensor:
    common_term = p.high - p.low
    t1 = (math.sqrt(math.pi * 2) * q.scale / common_term).log()
    t2 = common_term.pow(2) / 12
    t3 = ((p.high + p.low - 2 * q.loc) / 2).pow(2)
    return t1 + 0.5 * (t2 + t3) / q.scale.pow(2)


@register_kl(Uniform, Exponential)
def _kl_uniform_exponential(p: Uniform, q: Exponential) -> Tensor:
    result = q.rate * (p.high + p.low) / 2 - ((p.high - p.low) * q.rate).log()
    return where(p.low < 0, math.inf, result)


def kl_infinity(p: Distribution, q: Distribution) -> Tensor:
    """``q``'s support is bounded where ``p``'s is not (PyTorch's ``infinite_like(p's parameter)``)."""
    return infinite_like(p)


def register_infinite(*pairs: tuple[type, type]) -> None:
    """``kl_infinity`` as the rule of each ``(type_p, type_q)`` pair."""
    for type_p, type_q in pairs:
        register_kl(type_p, type_q)(kl_infinity)


register_infinite((Exponential, Uniform), (Laplace, Exponential), (Laplace, Uniform), (Normal, Exponential), (Normal, Uniform))


@register_kl(MultivariateNormal, MultivariateNormal)
def _kl_multivariate_normal(p: MultivariateNormal, q: MultivariateNormal) -> Tensor:
    """PyTorch's: half the log-determinant difference plus ``(|Lq^-1 Lp|_F^2 + |Lq^-1 (loc_q - loc_p)|^2 - n) / 2``."""
    from kiln import linalg

    if p.event_shape != q.event_shape:
        raise ValueError("KL-divergence between two Multivariate Normals with different event shapes cannot be computed")
    trace = linalg.solve_triangular(q.scale_tril, p.scale_tril, upper=False).pow(2).sum((-2, -1))
    distance = mahalanobis(q.scale_tril, q.loc - p.loc)
    return half_log_det(q.scale_tril) - half_log_det(p.scale_tril) + 0.5 * (trace + distance - p.event_shape[0])


__all__ = ["kl_divergence", "register_kl"]

