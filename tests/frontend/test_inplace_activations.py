"""``inplace=True`` writes into the input, as PyTorch's: ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``,
``F.relu_``, the dropouts. Code that reads the input afterwards sees the activation (values and gradients against
PyTorch in float64)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from tensor_parity import _check

FLOAT32_SLOPES = {"celu": 1e-7, "hardsigmoid": 1e-7, "Hardsigmoid": 1e-7}
"""PyTorch's float64 gradients with a float32 constant: ``hardsigmoid``'s slope is ``float32(1/6)``, ``celu_``'s
in-place backward scales by ``1 / float32(alpha)``; kiln's are exact, so these compare at float32's precision."""

X = np.array([[-2.5, -1.0, -0.0, 0.3, 1.7, 7.0], [3.2, -0.4, 0.9, -6.5, 2.0, -3.0]])

ACTIVATIONS = [
    ("relu", ()), ("silu", ()), ("mish", ()), ("elu", (0.7,)), ("celu", (1.3,)), ("selu", ()), ("leaky_relu", (0.2,)),
    ("hardtanh", (-0.5, 1.5)), ("relu6", ()), ("hardswish", ()), ("hardsigmoid", ()), ("threshold", (0.5, -2.0)),
    ("rrelu", (0.1, 0.3)),
]


@pytest.mark.parametrize("name, args", ACTIVATIONS, ids=[name for name, _ in ACTIVATIONS])
def test_functional_inplace_rewrites_the_input_as_torch(name, args):
    def program(F):
        def fn(x):
            h = x * 1.5                          # an intermediate (PyTorch refuses in-place writes to a leaf)
            y = getattr(F, name)(h, *args, inplace=True)
            return h * 2 + y                     # h is y now
        return fn

    import torch

    _check(program(F), program(torch.nn.functional), X, grad_rtol=FLOAT32_SLOPES.get(name, 1e-10))


VARIANTS = ["relu_", "elu_", "celu_", "selu_", "leaky_relu_", "hardtanh_", "rrelu_"]


@pytest.mark.parametrize("name", VARIANTS)
def test_functional_underscore_variants_write_their_input(name):
    import torch

    def program(F):
        def fn(x):
            h = x - 0.25
            out = getattr(F, name)(h)
            return out * h                        # the same tensor twice: y * y
        return fn

    _check(program(F), program(torch.nn.functional), X)


def test_threshold_underscore_takes_torchs_arguments():
    import torch

    def program(F):
        return lambda x: (lambda h: F.threshold_(h, 0.1, 5.0) + h)(x * 1.0)

    _check(program(F), program(torch.nn.functional), X)


MODULES = [("ReLU", ()), ("LeakyReLU", (0.3,)), ("ELU", ()), ("CELU", ()), ("SELU", ()), ("SiLU", ()), ("Mish", ()),
           ("ReLU6", ()), ("Hardswish", ()), ("Hardsigmoid", ()), ("Hardtanh", ()), ("Threshold", (0.2, 1.0)), ("RReLU", ())]


@pytest.mark.parametrize("name, args", MODULES, ids=[name for name, _ in MODULES])
def test_modules_with_inplace_true_write_their_input(name, args):
    import torch

    ours, theirs = getattr(nn, name)(*args, inplace=True).eval(), getattr(torch.nn, name)(*args, inplace=True).eval()

    def program(module):
        def fn(x):
            h = x + 0.5
            y = module(h)
            return y + 3 * h
        return fn

    _check(program(ours), program(theirs), X, grad_rtol=FLOAT32_SLOPES.get(name, 1e-10))


def test_inplace_false_leaves_the_input_alone():
    import torch

    def program(F):
        return lambda x: (lambda h: F.leaky_relu(h, 0.1) + h)(x * 2.0)

    _check(program(F), program(torch.nn.functional), X)


DROPOUTS = {"Dropout": (2, 6), "Dropout1d": (2, 6, 3), "Dropout2d": (2, 6, 3, 2), "Dropout3d": (2, 6, 3, 2, 2), "AlphaDropout": (2, 6)}


@pytest.mark.parametrize("name", DROPOUTS)
def test_training_dropout_in_place_is_read_back_from_its_input(name):
    """While training, ``h`` after ``dropout(h, inplace=True)`` is the dropped tensor: ``y - h`` is exactly zero."""
    module = getattr(nn, name)(0.5, inplace=True).train()

    def fn(x):
        h = x * 1.0
        y = module(h)
        return y - h, y

    shape = DROPOUTS[name]
    run = NumpyBackend().compile(kiln.trace(fn, kiln.TensorSpec(shape, "float64")))
    difference, dropped = run(np.random.default_rng(0).standard_normal(shape) + 10.0, np.int64(3))
    np.testing.assert_array_equal(difference, 0.0)
    assert len(np.unique(dropped)) < dropped.size  # some were dropped (to 0, or AlphaDropout's a * alpha' + b)


def test_an_inplace_activation_of_a_parameter_in_a_trace_is_refused():
    layer = nn.Linear(3, 2)

    def fn(x):
        return layer(x) + F.relu(layer.weight, inplace=True).sum()

    with pytest.raises(kiln.TraceError, match=r"relu\(inplace=True\): a leaf Variable that requires grad is being used in an in-place operation"):
        kiln.compile(fn)(np.ones((1, 3), np.float32))


def test_inplace_outside_a_trace_on_arrays_computes_out_of_place():
    x = np.array([-1.0, 2.0])
    np.testing.assert_array_equal(kiln.compile(lambda t: F.relu(t, inplace=True))(x), [0.0, 2.0])
