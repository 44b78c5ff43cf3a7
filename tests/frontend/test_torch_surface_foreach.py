"""``kiln._foreach_*`` as ``torch._foreach_*`` (porting probe DDPM: an EMA by ``_foreach_mul_``/``_foreach_add_``/
``_foreach_lerp_``): each name against torch 2.13 in float64, in place (the list's tensors change; the list is returned) and
out of place (a new list), with gradients through the out-of-place forms."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

RNG = np.random.default_rng(0)
VALUES = [RNG.uniform(0.5, 2.0, (2, 3)), RNG.uniform(0.5, 2.0, (4,))]
OTHERS = [RNG.uniform(0.5, 2.0, (2, 3)), RNG.uniform(0.5, 2.0, (4,))]

CALLS = {
    "add": lambda lib, xs, ys: lib._foreach_add(xs, ys, alpha=0.5),
    "add_": lambda lib, xs, ys: lib._foreach_add_(xs, ys, alpha=0.5),
    "sub": lambda lib, xs, ys: lib._foreach_sub(xs, 0.25),
    "sub_": lambda lib, xs, ys: lib._foreach_sub_(xs, 0.25),
    "mul": lambda lib, xs, ys: lib._foreach_mul(xs, [2.0, 3.0]),
    "mul_": lambda lib, xs, ys: lib._foreach_mul_(xs, [2.0, 3.0]),
    "div": lambda lib, xs, ys: lib._foreach_div(xs, ys),
    "div_": lambda lib, xs, ys: lib._foreach_div_(xs, ys),
    "lerp": lambda lib, xs, ys: lib._foreach_lerp(xs, ys, 0.3),
    "lerp_": lambda lib, xs, ys: lib._foreach_lerp_(xs, ys, 0.3),
    "addcmul": lambda lib, xs, ys: lib._foreach_addcmul(xs, ys, ys, value=0.5),
    "addcmul_": lambda lib, xs, ys: lib._foreach_addcmul_(xs, ys, ys, value=0.5),
    "addcdiv": lambda lib, xs, ys: lib._foreach_addcdiv(xs, ys, ys, value=2.0),
    "addcdiv_": lambda lib, xs, ys: lib._foreach_addcdiv_(xs, ys, ys, value=2.0),
    "pow": lambda lib, xs, ys: lib._foreach_pow(xs, 1.5),
    "pow_": lambda lib, xs, ys: lib._foreach_pow_(xs, 1.5),
    "maximum": lambda lib, xs, ys: lib._foreach_maximum(xs, ys),
    "maximum_": lambda lib, xs, ys: lib._foreach_maximum_(xs, ys),
    "minimum": lambda lib, xs, ys: lib._foreach_minimum(xs, ys),
    "minimum_": lambda lib, xs, ys: lib._foreach_minimum_(xs, ys),
    "clamp_min": lambda lib, xs, ys: lib._foreach_clamp_min(xs, 1.0),
    "clamp_min_": lambda lib, xs, ys: lib._foreach_clamp_min_(xs, 1.0),
    "clamp_max": lambda lib, xs, ys: lib._foreach_clamp_max(xs, 1.0),
    "clamp_max_": lambda lib, xs, ys: lib._foreach_clamp_max_(xs, 1.0),
    "neg": lambda lib, xs, ys: lib._foreach_neg(xs),
    "neg_": lambda lib, xs, ys: lib._foreach_neg_(xs),
    "abs": lambda lib, xs, ys: lib._foreach_abs(xs),
    "abs_": lambda lib, xs, ys: lib._foreach_abs_(xs),
    "exp": lambda lib, xs, ys: lib._foreach_exp(xs),
    "exp_": lambda lib, xs, ys: lib._foreach_exp_(xs),
    "log": lambda lib, xs, ys: lib._foreach_log(xs),
    "log_": lambda lib, xs, ys: lib._foreach_log_(xs),
    "sqrt": lambda lib, xs, ys: lib._foreach_sqrt(xs),
    "sqrt_": lambda lib, xs, ys: lib._foreach_sqrt_(xs),
    "sign": lambda lib, xs, ys: lib._foreach_sign(xs),
    "sign_": lambda lib, xs, ys: lib._foreach_sign_(xs),
    "sigmoid": lambda lib, xs, ys: lib._foreach_sigmoid(xs),
    "sigmoid_": lambda lib, xs, ys: lib._foreach_sigmoid_(xs),
    "reciprocal": lambda lib, xs, ys: lib._foreach_reciprocal(xs),
    "reciprocal_": lambda lib, xs, ys: lib._foreach_reciprocal_(xs),
    "sin": lambda lib, xs, ys: lib._foreach_sin(xs),
    "sin_": lambda lib, xs, ys: lib._foreach_sin_(xs),
    "cos": lambda lib, xs, ys: lib._foreach_cos(xs),
    "cos_": lambda lib, xs, ys: lib._foreach_cos_(xs),
    "tanh": lambda lib, xs, ys: lib._foreach_tanh(xs),
    "tanh_": lambda lib, xs, ys: lib._foreach_tanh_(xs),
    "norm": lambda lib, xs, ys: lib._foreach_norm(xs),
    "max": lambda lib, xs, ys: lib._foreach_max(xs),
    "zero_": lambda lib, xs, ys: lib._foreach_zero_(xs),
    "copy_": lambda lib, xs, ys: lib._foreach_copy_(xs, ys),
}


def _run(name, library):
    lib = libraries(library)[0]
    xs = [lib.tensor(v.copy()) for v in VALUES]
    ys = [lib.tensor(v.copy()) for v in OTHERS]
    result = CALLS[name](lib, xs, ys)
    if name.endswith("_"):
        assert result is xs and all(a is b for a, b in zip(result, xs))
    return result, [np.asarray(x.numpy()) for x in xs]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_foreach_as_torch(name):
    require_torch()
    (ours, our_inputs), (theirs, their_inputs) = _run(name, "kiln"), _run(name, "torch")
    if not name.endswith("_"):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(np.asarray(a.numpy()), b.numpy(), rtol=1e-14, atol=1e-15)
    for a, b in zip(our_inputs, their_inputs):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_foreach_is_differentiable_as_torch():
    grads = []
    for library in ("kiln", "torch"):
        lib = libraries(library)[0]
        xs = [lib.tensor(v.copy(), requires_grad=True) for v in VALUES]
        ys = [lib.tensor(v.copy()) for v in OTHERS]
        out = lib._foreach_addcmul(lib._foreach_mul(xs, 0.9), xs, ys, value=0.1)
        sum(o.sin().sum() for o in out).backward()
        grads.append([np.asarray(x.grad) for x in xs])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-13)


def test_a_list_of_the_wrong_length_says_so():
    xs = [kiln.ones(2), kiln.ones(3)]
    with pytest.raises(ValueError, match="one entry per tensor"):
        kiln._foreach_mul_(xs, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="list or tuple of tensors"):
        kiln._foreach_mul_(kiln.ones(2), 2.0)
