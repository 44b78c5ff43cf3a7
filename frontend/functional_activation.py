"""PyTorch's activation functions (``F.silu``, ``F.leaky_relu``, ``F.elu``, ``F.softplus``...), built from traced primitives.

Each one matches ``torch.nn.functional`` in value and in gradient, including PyTorch's choice at the kinks, which a
``where`` makes explicit: the branch that owns the kink point is the branch whose derivative PyTorch reports there.

```
leaky_relu, elu, celu, selu   x > 0 ? x : negative branch           (at 0: the negative branch's slope)
hardtanh, relu6               clamp; slope 0 on and outside the bounds
hardswish                     x <= -3 ? x * 0 : x >= 3 ? x : x (x + 3) / 6
softplus                      beta x > threshold ? x : log(1 + exp(beta x)) / beta
prelu(x, w)                   x > 0 ? x : w x                          (at 0: slope w; w per channel, dim 1)
threshold(x, t, v)            x > t ? x : v                            (at t: slope 0)
softshrink(x, l)              |x| > l ? x - l sign(x) : x * 0          (at +-l: slope 0)
hardshrink(x, l)              |x| > l ? x : x * 0                      (at +-l: slope 0)
rrelu(x, lo, hi)              x > 0 ? x : a x, a ~ U(lo, hi) while training (kiln's draws), (lo + hi) / 2 in eval
```

Two rules keep values and gradients finite and accurate for any finite input, in float32 and float64 alike:

- ``exp`` only ever sees non-positive arguments (``exp(-|x|)``, ``exp(min(x, 0))``), so no branch overflows. A
  ``where`` sends a zero cotangent to its untaken branch, and ``0 * inf`` would make the gradient NaN.
- ``log(1 + u)`` and ``exp(x) - 1`` cancel near 0 (``elu(-1e-8)`` would lose half its digits), and kiln has no
  ``log1p`` or ``expm1`` op, so ``_log1p`` and ``_expm1`` below compute them from ``log``, ``exp`` and ``tanh`` to a few
  ulps, with gradients as accurate. (``tensor.sigmoid`` itself is accurate in both tails on every backend.)

``inplace=True`` writes the result into the input as PyTorch's does (``tensor_inplace.honors_inplace``: the input is
rebound, so code that reads it afterwards sees the activation); the traced graph stays pure, and the memory planner
reuses buffers in place on its own. ``F.relu_``, ``F.elu_``, ``F.leaky_relu_``... are the ``inplace=True`` forms.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.functional_nn import abs
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.trace import TraceContext, located_error
from kiln.frontend.tensor_inplace import honors_inplace, in_place_variant
from kiln.frontend.autocast import autocasts
from kiln.frontend.functional_half import in_opmath

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# Accurate building blocks -------------------------------------------------------


def _where(condition: Tensor, input: Tensor | float, other: Tensor | float) -> Tensor:
    """``F.where`` (numbers take the tensor branch's dtype), without importing ``functional``, which imports this."""
    return apply("tensor.where", condition, input, other)


def _negative_magnitude(input: Tensor) -> Tensor:
    """``-|x|`` with slope +1 at 0 (``tensor.abs`` has slope 0 there, which would zero softplus's gradient at 0)."""
    return _where(input > 0, -input, input)


def _log1p(input: Tensor) -> Tensor:
    """``log(1 + u)`` to a few ulps for every ``u``: ``log(w) + (u - (w - 1)) / w`` with ``w = 1 + u`` rounded, the
    second term being ``w``'s rounding error relative to it (``u`` itself where ``w`` rounds to 1). It matters only for
    ``|u| < 1`` and is computed only there (0 elsewhere: no ``inf - inf``, so ``log1p(inf)`` is inf with slope 0).
    The slope is ``1 / w`` corrected alike: ``1 / (1 + u)``, as PyTorch's, also where ``u < -1`` makes the value NaN."""
    near = _where(abs(input) < 1.0, input, 0.0)
    rounded = near + 1.0
    return (input + 1.0).log() + (near - (rounded - 1.0)) / rounded


def _expm1(input: Tensor) -> Tensor:
    """``exp(x) - 1`` without cancellation: ``2 t / (1 - t)`` with ``t = tanh(x / 2)`` for ``|x| < 1`` (the identity
    ``exp(x) = (1 + t) / (1 - t)``; ``1 - t`` is in (0.5, 1.5) there), ``exp(x) - 1`` beyond, where nothing cancels and
    the gradient ``exp(x)`` keeps its relative accuracy as it underflows. ``tanh`` sees 0 outside ``|x| < 1``."""
    small = abs(input) < 1.0
    t = (_where(small, input, 0.0) * 0.5).tanh()
    return _where(small, 2.0 * t / (1.0 - t), input.exp() - 1.0)


def _softplus(input: Tensor) -> Tensor:
    """``log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``: no overflow, full accuracy in both tails, and slope
    ``sigmoid(x)`` everywhere (1/2 at 0)."""
    return _where(input > 0, input, 0.0) + _log1p(_negative_magnitude(input).exp())


# Smooth activations -----------------------------------------------------------------


@honors_inplace
def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """``x sigmoid(x)`` (swish); a half input in float32, rounded once, as torch's kernel (and so its gradient)."""
    return in_opmath(lambda x: x * apply("tensor.sigmoid", x), input)


@honors_inplace
def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x tanh(softplus(x))``. A half input computes in float32 and rounds once, as torch's kernel, here and in
    softplus, logsigmoid, the ELUs and hardswish (rounding each op put 5-30% of values an ulp or more off)."""
    return in_opmath(lambda x: x * _softplus(x).tanh(), input)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold`` (slope exactly 1 there), as
    PyTorch; computed stably, so very negative ``x`` gives a tiny positive value, not 0 * inf."""
    return in_opmath(lambda x: _where(x * beta > threshold, x, _softplus(x * beta) / beta), input)


def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(x)) = -softplus(-x)``, stable for large ``|x|``."""
    return in_opmath(lambda x: -_softplus(-x), input)


def softsign(input: Tensor) -> Tensor:
    """``x / (1 + |x|)``; from ``|x| = 1`` on as ``sign(x) (1 - 1 / (1 + |x|))``, whose slope ``1 / (1 + |x|)^2`` is
    then one product, not the difference of two close terms (38 ulps off at 90 in float32; PyTorch's 89)."""
    magnitude = _where(input < 0, -input, input)  # |x|, slope NaN at NaN (tensor.abs's is 0 there)
    inner = magnitude < 1.0
    near = _where(inner, input, 0.0)
    return _where(inner, near / (abs(near) + 1.0), input.sign() * (1.0 - 1.0 / (magnitude + 1.0)))


# Exponential linear units -----------------------------------------------------------


@honors_inplace
def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise; slope ``alpha`` at 0, as PyTorch."""
    return in_opmath(lambda x: _where(x > 0, x, alpha * _expm1(_where(x > 0, 0.0, x))), input)


@honors_inplace
def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` for ``x > 0``, ``alpha (exp(x / alpha) - 1)`` otherwise; slope 1 at 0, as PyTorch."""
    if alpha == 0:
        raise ValueError("celu: alpha cannot be 0 (it divides x), as in PyTorch")
    return in_opmath(lambda x: _where(x > 0, x, alpha * _expm1(_where(x > 0, 0.0, x) / alpha)), input)


@honors_inplace
def selu(input: Tensor, inplace: bool = False) -> Tensor:
    """``scale * elu(x, alpha)`` with the self-normalizing constants of Klambauer et al. (2017)."""
    return in_opmath(lambda x: SELU_SCALE * elu(x, SELU_ALPHA), input)


# Piecewise-linear activations --------------------------------------------------------


@honors_inplace
def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``x`` for ``x > 0``, ``negative_slope x`` otherwise; slope ``negative_slope`` at 0, as PyTorch."""
    return _where(input > 0, input, input * negative_slope)


@honors_inplace
def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` clamped to ``[min_val, max_val]``; slope 0 on the bounds, as PyTorch (``F.clamp`` passes the gradient
    there, so this is its own ``where``)."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    return _where(input <= min_val, min_val, _where(input >= max_val, max_val, input))


@honors_inplace
def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """``min(max(x, 0), 6)`` = ``hardtanh(x, 0, 6)``; slope 0 at 0 and at 6, as PyTorch."""
    return hardtanh(input, 0.0, 6.0)


@honors_inplace
def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x relu6(x + 3) / 6``: 0 for ``x <= -3`` (``x * 0``: NaN at -inf, as PyTorch's), ``x (x + 3) / 6`` for
    ``-3 < x < 3`` (and NaN, slope NaN), ``x`` from 3 on; PyTorch's slopes at the kinks (0 at -3, 1 at 3) are those
    of the outer pieces."""
    return in_opmath(_hardswish, input)


def _hardswish(x: Tensor) -> Tensor:
    middle = _where(abs(x) >= 3.0, 0.0, x)  # the quadratic never sees +-inf (its slope there: 0 * inf)
    return _where(x <= -3.0, x * 0.0, _where(x >= 3.0, x, middle * (middle + 3.0) / 6.0))


@autocasts("prelu")
def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``x > 0 ? x : weight x`` with one ``weight`` for all, or one per channel (dim 1), as PyTorch's ``prelu``."""
    if weight.ndim > 1:
        raise located_error(f"prelu: weight must be a scalar or 1-D, got {weight.type}")
    count = weight.shape[0] if weight.ndim == 1 else 1
    if count != 1:
        channels = input.shape[1] if input.ndim > 1 else 1
        if input.ndim == 0 or channels != count:
            raise located_error(f"prelu: weight has {count} parameters but {input.type} has {channels} channels (dim 1); "
                                f"give one parameter per channel, or one for all (PReLU(num_parameters=1))")
    if input.ndim != weight.ndim:
        shape = [1] * input.ndim
        if input.ndim > 1:
            shape[1] = count
        weight = weight.reshape(tuple(shape))
    return _where(input > 0, input, weight * input)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Tensor:
    """``softmax(-x, dim)``. PyTorch's ``dim=None`` guesses the axis from the rank and is deprecated; kiln asks for it
    (as ``nn.LogSoftmax``). ``dtype`` casts the input first, as PyTorch."""
    if dim is None:
        raise located_error("softmin needs dim, the axis to normalize (e.g. F.softmin(x, dim=-1)); "
                            "PyTorch's implicit choice for dim=None is deprecated")
    if dtype is not None:
        input = input.to(dtype)
    return apply("nn.softmax", -input, axis=dim)


@honors_inplace
def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """``x > threshold ? x : value``; slope 0 at ``threshold``, as PyTorch."""
    return _where(input > threshold, input, value)


def tanhshrink(input: Tensor) -> Tensor:
    """``x - tanh(x)``."""
    return input - input.tanh()


def softshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, 0 between (slope 0 at the bounds; ``x * 0``: NaN
    with slope 0 at NaN), as PyTorch."""
    if lambd < 0:
        raise located_error(f"softshrink: lambd must be at least 0, got {lambd} (as PyTorch)")
    return _where(abs(input) > lambd, input - lambd * input.sign(), input * 0.0)


def hardshrink(input: Tensor, lambd: float = 0.5) -> Tensor:
    """``x`` outside ``[-lambd, lambd]``, 0 on it (slope 0 at the bounds; ``x * 0``: NaN with slope 0 at NaN), as
    PyTorch."""
    return _where(abs(input) > lambd, input, input * 0.0)


@honors_inplace
def rrelu(input: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False, inplace: bool = False) -> Tensor:
    """Randomized leaky ReLU (Xu et al., 2015): ``x > 0 ? x : a x``. While training each element draws its own slope
    ``a ~ U(lower, upper)`` from the traced graph's ``rng_seed`` (as dropout does; the numbers are kiln's, not
    PyTorch's); in eval ``a = (lower + upper) / 2``, ``leaky_relu``, as PyTorch."""
    if lower > upper:
        raise located_error(f"rrelu: lower ({lower}) must not exceed upper ({upper}), as in PyTorch")
    if not training:
        return leaky_relu(input, (lower + upper) / 2)
    if not input.dtype.is_float:
        raise located_error(f"rrelu needs a floating-point input, got {input.type}")
    seed, stream = TraceContext.current().random_seed()
    draw = apply("tensor.random_uniform", Tensor(seed), input, dtype=input.dtype, stream=stream)
    return _where(input > 0, input, input * (draw * (upper - lower) + lower))


elu_, celu_, selu_, leaky_relu_, hardtanh_, threshold_, rrelu_ = map(in_place_variant, (elu, celu, selu, leaky_relu, hardtanh, threshold, rrelu))

__all__ = [
    "celu", "celu_", "elu", "elu_", "hardtanh_", "leaky_relu_", "rrelu_", "selu_", "threshold_", "hardshrink", "hardswish", "hardtanh", "leaky_relu", "logsigmoid", "mish", "prelu", "relu6", "rrelu", "selu", "silu",
    "softmin", "softplus", "softshrink", "softsign", "tanhshrink", "threshold",
]
