"""Common mistakes refused as torch refuses them, in its words and exception types, naming the user's line: a (C, L)
input to ``conv2d`` (kiln blamed 8 channels), BCE given logits (kiln returned a NaN loss), an optimizer given a
used-up ``model.parameters()`` generator (kiln talked of building a Keras model)."""

from __future__ import annotations

import pytest

from tests.oracles import require_torch


def _conv2d_of_a_matrix(lib):
    return lib.nn.functional.conv2d(lib.ones(3, 8), lib.ones(4, 3, 3, 3))


def _conv1d_of_a_vector(lib):
    return lib.nn.functional.conv1d(lib.ones(3), lib.ones(2, 3, 1))


def _bce_of_logits(lib):
    return lib.nn.functional.binary_cross_entropy(lib.tensor([1.5, 0.2]), lib.tensor([1.0, 0.0]))


def _bce_of_nan(lib):
    return lib.nn.functional.binary_cross_entropy(lib.tensor([float("nan")]), lib.tensor([1.0]))


def _used_up_parameters(lib):
    parameters = lib.nn.Linear(2, 2).parameters()
    list(parameters)
    return lib.optim.SGD(parameters, lr=0.1)


@pytest.mark.parametrize("mistake, error, words", [
    (_conv2d_of_a_matrix, RuntimeError, "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [3, 8]"),
    (_conv1d_of_a_vector, RuntimeError, "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: [3]"),
    (_bce_of_logits, RuntimeError, "all elements of input should be between 0 and 1"),
    (_bce_of_nan, RuntimeError, "all elements of input should be between 0 and 1"),
    (_used_up_parameters, ValueError, "optimizer got an empty parameter list"),
])
def test_refused_as_torch(mistake, error, words):
    import kiln

    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(error) as caught:
            mistake(lib)
        assert words in str(caught.value)
        if lib is kiln and error is RuntimeError:
            assert "test_common_mistakes_refused_vs_torch.py:" in str(caught.value)  # the user's line


def test_bce_of_probabilities_and_traced_inputs_still_compute():
    import kiln

    F = kiln.nn.functional
    assert F.binary_cross_entropy(kiln.tensor([0.0, 1.0, 0.5]), kiln.tensor([0.0, 1.0, 1.0])).item() > 0
    compiled = kiln.compile(lambda x, t: F.binary_cross_entropy(x.sigmoid(), t))
    assert compiled(kiln.tensor([3.0, -2.0]), kiln.tensor([1.0, 0.0])).item() > 0
