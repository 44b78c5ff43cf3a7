"""``Tensor.apply_(callable)`` (``frontend/tensor_apply.py``) and the callable ``size`` of a parameter's ``.data``
(``frontend/torch_array.py``) against PyTorch 2.13: pytorch-ntm binarizes its outputs by
``y_out.clone().data.apply_(lambda x: 0 if x < 0.5 else 1)`` and counts its parameters by
``p.data.view(-1).size(0)``."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import libraries


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_apply_binarizes_in_place_as_torch(name):
    torch, nn, F = libraries(name)
    y_out = torch.tensor([[0.2, 0.7], [0.5, 0.49]], dtype=torch.float64)
    binarized = y_out.clone().data
    returned = binarized.apply_(lambda x: 0 if x < 0.5 else 1)
    assert returned is binarized and binarized.dtype == torch.float64
    np.testing.assert_array_equal(binarized.numpy(), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(y_out.numpy(), [[0.2, 0.7], [0.5, 0.49]])


def _applied_in_both(make, function):
    results = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        tensor, shown = make(torch)
        tensor.apply_(function)
        results.append((shown.numpy(), str(shown.dtype).split(".")[-1]))
    return results


@pytest.mark.parametrize("make, function", [
    (lambda torch: (lambda t: (t, t))(torch.tensor([1, 2, 3])), lambda v: v * 2.7),  # int64: truncated as torch's cast
    (lambda torch: (lambda t: (t[1:3], t))(torch.zeros(4)), lambda v: 5),  # through a view: the base changes
    (lambda torch: (lambda t: (t.t(), t))(torch.arange(6.0).reshape(2, 3)), lambda v: -v),  # a transposed view
    (lambda torch: (lambda t: (t, t))(torch.tensor(2.5)), lambda v: v + 1),  # a 0-d tensor
], ids=["int64", "slice view", "transposed view", "0-d"])
def test_apply_values_dtype_and_views_as_torch(make, function):
    (ours, our_dtype), (theirs, their_dtype) = _applied_in_both(make, function)
    np.testing.assert_array_equal(ours, theirs)
    assert our_dtype == their_dtype


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_apply_refuses_a_tensor_that_requires_grad_as_torch(name):
    torch, nn, F = libraries(name)
    leaf = torch.tensor([1.0, 2.0], requires_grad=True)
    for tensor in (leaf, leaf * 2):
        with pytest.raises(RuntimeError, match=r"Can't call apply_\(\) on Variable that requires grad"):
            tensor.apply_(lambda v: v)
    with pytest.raises(TypeError, match="callable"):
        leaf.detach().apply_(3)


def test_apply_inside_a_compiled_function_says_where_and_what_to_do():
    def binarize(y):
        return y.clone().apply_(lambda x: 0 if x < 0.5 else 1)

    with pytest.raises(TraceError, match="return the tensor and call apply_ on the result outside") as error:
        kiln.compile(binarize, fullgraph=True)(kiln.tensor([0.2, 0.7]))
    assert "test_torch_surface_apply.py" in str(error.value)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_parameter_data_size_called_as_torch(name):
    """pytorch-ntm's ``calculate_num_params``: ``p.data.view(-1).size(0)``; ``size()`` and ``size(-1)`` of ``.data``."""
    torch, nn, F = libraries(name)
    layer = nn.Linear(3, 4)
    assert sum(p.data.view(-1).size(0) for p in layer.parameters()) == 16
    assert tuple(layer.weight.data.size()) == (4, 3) and layer.weight.data.size(-1) == 3
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        layer.weight.data.size(2)


def test_parameter_data_size_is_still_numpys_element_count():
    data = kiln.nn.Linear(3, 4).weight.data
    assert data.size == 12 and data.size + 1 == 13 and np.zeros(data.size).shape == (12,)
    assert isinstance(data.size(), kiln.Size)
