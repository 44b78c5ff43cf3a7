"""``p.data.view(shape)`` as PyTorch's: the parameter's memory reshaped, so an in-place init through it writes the
parameter (DiT's ``nn.init.xavier_uniform_(w.view([w.shape[0], -1]))``), with torch's errors for a size that does
not fit or a layout no view can have; ``view(dtype)`` stays a reinterpretation, as both libraries have it. A
parameter's ``.data`` is a NumPy-backed ``TorchArray``, whose ``view`` took NumPy's dtype only (a shape raised
'Field elements must be 2- or 3-tuples')."""

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _conv(lib):
    conv = lib.nn.Conv2d(2, 4, 2)
    with lib.no_grad():
        conv.weight.copy_(lib.tensor(np.arange(32.0).reshape(4, 2, 2, 2), dtype=lib.float32))
    return conv


@pytest.mark.parametrize("shape", [([4, -1],), (4, 8), ((32,),), (-1,), (2, 2, 8)], ids=str)
def test_a_view_of_data_shares_the_parameters_memory(shape):
    results = []
    for lib in (torch, kiln):
        conv = _conv(lib)
        view = conv.weight.data.view(*shape)
        view.mul_(2) if lib is torch else view.mul_(2)
        results.append((tuple(view.shape), conv.weight.detach().numpy().copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[1][1], results[0][1])


def test_xavier_init_through_a_view_writes_the_parameter():
    conv = _conv(kiln)
    w = conv.weight.data
    kiln.nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
    bound = np.sqrt(6.0 / (4 + 8))  # fans of the (4, 8) view, as torch's
    values = conv.weight.detach().numpy()
    assert np.abs(values).max() <= bound and values.std() > bound / 3


@pytest.mark.parametrize("case", ["size", "two -1", "transposed"])
def test_views_torch_refuses_are_refused_with_its_words(case):
    for lib in (torch, kiln):
        w = _conv(lib).weight.data
        call = {"size": lambda: w.view(3, -1), "two -1": lambda: w.view(-1, -1),
                "transposed": lambda: (w.transpose(0, 1) if lib is torch else w.transpose(1, 0, 2, 3)).view(-1)}[case]
        with pytest.raises(RuntimeError) as error:
            call()
        if case != "two -1":
            assert ("is invalid for input of size" if case == "size" else "Use .reshape(...) instead") in str(error.value)


def test_a_dtype_view_reinterprets_as_before():
    w = _conv(kiln).weight.data
    assert w.view(np.int32).dtype == np.int32 and w.view(np.int32).shape == (4, 2, 2, 2)
