"""Common mistakes refused as torch refuses them, in its words and exception types, naming the user's line: a (C, L)
input to ``conv2d`` (kiln blamed 8 channels), BCE given logits (kiln returned a NaN loss), an optimizer given a
used-up ``model.parameters()`` generator (kiln talked of building a Keras model)."""

from __future__ import annotations

import pytest

from oracles import require_torch


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


def _grad_of_another_shape(lib):
    lib.nn.Parameter(lib.ones(2)).grad = lib.ones(1, 2)


def _grad_of_another_dtype(lib):
    lib.nn.Parameter(lib.ones(2)).grad = lib.ones(2, dtype=lib.float64)


def _gather_by_floats(lib):
    return lib.ones(2, 3).gather(1, lib.tensor([[0.0]]))


def _empty_randint_range(lib):
    return lib.randint(3, 3, (2,))


def _arange_against_its_step(lib):
    return lib.arange(0, 5, -1)


@pytest.mark.parametrize("mistake, words", [
    (_grad_of_another_shape, "attempting to assign a gradient of size '[1, 2]' to a tensor of size '[2]'"),
    (_grad_of_another_dtype, "attempting to assign a gradient with dtype"),
    (_gather_by_floats, "Expected dtype int32/int64 for index"),
    (_empty_randint_range, "random_ expects 'from' to be less than 'to', but got from=3 >= to=3"),
    (_arange_against_its_step, "upper bound and lower bound inconsistent with step sign"),
])
def test_silently_accepted_before_now_refused_as_torch(mistake, words):
    """kiln stored the mismatched ``.grad`` (a later step broke or broadcast it), truncated float indices, drew from an
    empty range and returned an empty ``arange``."""
    import kiln

    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(RuntimeError) as caught:
            mistake(lib)
        assert words in str(caught.value)


@pytest.mark.parametrize("options", [dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(eps=-1e-8), dict(weight_decay=-0.1)])
def test_invalid_optimizer_options_are_value_errors_as_torch(options):
    """torch raises ValueError for an option out of range; kiln's was a KilnError that ``except ValueError`` missed."""
    import kiln

    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(ValueError):
            lib.optim.Adam([lib.nn.Parameter(lib.ones(1))], **options)
