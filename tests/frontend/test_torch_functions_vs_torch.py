"""``kiln.*`` as ``torch.*`` (``frontend/torch_functions.py``): creation functions outside a trace (NumPy arrays with
PyTorch's values and dtypes) and inside one (constants, symbolic sizes); the functional forms of the methods; PyTorch's
promotion of integer and bool tensors by Python numbers; random draws from the step's seed (uniform in [0, 1), and a
standard normal by a Kolmogorov-Smirnov distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from oracles import require
from tensor_parity import _check, assert_fills_a_symbolic_batch

RNG = np.random.default_rng(11)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))

CREATIONS = {
    "zeros": lambda lib: lib.zeros(2, 3),
    "zeros_tuple": lambda lib: lib.zeros((2, 3)),
    "ones_f64": lambda lib: lib.ones(4, dtype=lib.float64),
    "full_int": lambda lib: lib.full((2,), 3),
    "full_float": lambda lib: lib.full((2, 2), 1.5),
    "full_bool": lambda lib: lib.full((3,), True),
    "arange": lambda lib: lib.arange(5),
    "arange_float_step": lambda lib: lib.arange(1, 2, 0.25),
    "arange_float_dtype": lambda lib: lib.arange(3, dtype=lib.float32),
    "linspace": lambda lib: lib.linspace(-1, 1, 5),
    "eye": lambda lib: lib.eye(3),
    "eye_rectangular": lambda lib: lib.eye(2, 3),
    "tensor_ints": lambda lib: lib.tensor([1, 2]),
    "tensor_floats": lambda lib: lib.tensor([1.5, 2.0]),
    "tensor_f64_array": lambda lib: lib.tensor(np.ones(2)),
    "tensor_bools": lambda lib: lib.tensor([True, False]),
    "zeros_like": lambda lib: lib.zeros_like(lib.ones(2, dtype=lib.float64)),
    "full_like_int": lambda lib: lib.full_like(lib.arange(3), 7),
}


def _numpy(value):
    return value if isinstance(value, np.ndarray) else value.numpy()


@pytest.mark.parametrize("name", CREATIONS)
def test_creation_outside_a_trace_gives_torchs_values_and_dtype(name):
    torch = require("torch")
    ours, theirs = _numpy(CREATIONS[name](kiln)), CREATIONS[name](torch).numpy()
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


def _traced_body(lib, x, y):
    positions = lib.arange(4) * 1.0
    mask = lib.tril(lib.ones(3, 4)) > 0
    z = lib.where(mask, x, lib.zeros(3, 4)) + positions + lib.eye(3, 4) * y
    z = lib.cat([z, lib.stack([x[0], y[0]])], 0) + lib.full((1, 4), 0.5)
    return lib.exp(lib.tanh(z)) + lib.maximum(z, lib.zeros_like(z)) + lib.sum(z, 0) + lib.clamp(z, -0.5, 0.5)


def test_creation_and_functions_inside_a_trace_match_torch():
    torch = require("torch")
    _check(lambda x, y: _traced_body(kiln, x, y), lambda x, y: _traced_body(torch, x, y), X, Y)


def test_creation_takes_a_symbolic_batch_size():
    assert_fills_a_symbolic_batch(lambda x: x + kiln.zeros(x.shape[0], 4) + kiln.full((x.shape[0], 1), 2.0), 4, 2.0)


def _promotions(lib, x):
    counts = (x > 0).long()
    mask = x > 0
    return (counts * 0.5, counts >= 0.5, counts / 2, counts / counts.clamp(1, 5), mask * 2, lib.where(mask, counts, 0.5),
            mask + True, counts ** 2.0, counts - 0.25, mask < 0.5)


def test_python_numbers_promote_integer_and_bool_tensors_as_in_torch():
    _check(lambda x: _promotions(kiln, x), lambda x: _promotions(require("torch"), x), X, grad=False)


def _draws(kind, shape=(400, 500), seed=3):
    graph = kiln.trace(lambda x: getattr(kiln, kind)(x), kiln.TensorSpec(shape, "float64"))
    assert [value.name_hint for value in graph.inputs][-1] == "rng_seed"
    return NumpyBackend().compile(graph)(np.zeros(shape), np.int64(seed))[0]


def test_rand_like_is_uniform_and_randn_like_is_standard_normal():
    uniform = _draws("rand_like")
    assert uniform.min() >= 0 and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.005
    normal = np.sort(_draws("randn_like").ravel())
    cdf = 0.5 * (1 + np.vectorize(math.erf)(normal / math.sqrt(2)))
    ks = np.max(np.abs(cdf - np.arange(1, normal.size + 1) / normal.size))
    assert ks < 3 / math.sqrt(normal.size), ks  # far below: p < 1e-7 for a true normal
    assert not np.array_equal(_draws("randn_like", seed=4), _draws("randn_like", seed=3))


def test_random_draws_outside_a_trace_run_eagerly_from_kilns_generator():
    kiln.manual_seed(3)
    first, second = kiln.randn(1000).numpy(), kiln.randn(1000).numpy()
    kiln.manual_seed(3)
    assert np.array_equal(kiln.randn(1000).numpy(), first) and not np.array_equal(first, second)
    assert abs(first.mean()) < 0.15 and abs(first.std() - 1) < 0.1


def test_cdist_is_torchs():
    torch = require("torch")
    x1, x2 = RNG.standard_normal((2, 5, 3)), RNG.standard_normal((2, 4, 3))
    _check(lambda a, b: kiln.cdist(a, b), lambda a, b: torch.cdist(a, b), x1, x2)


def test_the_functional_forms_are_the_methods():
    for name in ("exp", "sum", "amax", "softmax", "transpose", "roll", "gather", "cumsum", "sin", "floor"):
        assert getattr(kiln, name).__name__ == name and name in kiln.__all__
    with pytest.raises(AttributeError):
        kiln.exp(np.ones(2))  # a NumPy array has no .exp: the functional forms are for traced tensors
