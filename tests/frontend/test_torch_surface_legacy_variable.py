"""The pre-0.4 idioms NVIDIA's Tacotron 2 writes, against PyTorch 2.13: ``torch.autograd.Variable(data,
requires_grad=False)`` (``data.detach()``, a tensor; ``isinstance(t, Variable)`` for every tensor;
``frontend/legacy_variable.py``) and ``Tensor.new`` (``memory.data.new(B, n).zero_()``: sizes give zeros, data a copy,
in the tensor's dtype; ``frontend/tensor_more.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.arange(6.0).reshape(2, 3)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_variable_is_a_detached_tensor(name, float64_default):
    lib, _, _ = libraries(name)
    Variable = lib.autograd.Variable
    x = lib.tensor(X, requires_grad=True)
    y = x * 2
    state, leaf = Variable(y), Variable(lib.zeros(3), requires_grad=True)
    assert isinstance(y, Variable) and isinstance(state, lib.Tensor) and isinstance(lib.ones(1), Variable)
    assert (state.requires_grad, state.grad_fn, leaf.requires_grad, leaf.is_leaf) == (False, None, True, True)
    np.testing.assert_array_equal(state.numpy(), 2 * X)
    assert tuple(Variable().shape) == (0,)
    with pytest.raises(TypeError, match="Variable data has to be a tensor, but got list"):
        Variable([1.0, 2.0])


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_new_gives_sizes_zeros_and_data_copies_in_the_tensors_dtype(name):
    lib, _, _ = libraries(name)
    memory = lib.tensor(X)
    zeros = memory.data.new(2, 4).zero_()
    assert zeros.dtype == memory.dtype and tuple(zeros.shape) == (2, 4) and not zeros.numpy().any()
    assert tuple(memory.new(lib.Size([3])).shape) == (3,) and tuple(memory.new().shape) == (0,)
    copied = memory.new((2, 3))  # a tuple is data, as a list: PyTorch's rule
    assert copied.dtype == memory.dtype and copied.numpy().tolist() == [2.0, 3.0]
    assert memory.long().new([1.5, 2.5]).numpy().tolist() == [1, 2]


def test_tacotron_go_frame_in_a_compiled_function_as_torch(float64_default):
    """``Variable(memory.data.new(B, n).zero_())`` inside ``kiln.compile``: zeros of the traced memory's dtype."""
    torch = float64_default

    def go_frame(lib, memory):
        return lib.cat((lib.autograd.Variable(memory.data.new(memory.size(0), 2).zero_()), memory), dim=1)

    ours = kiln.compile(lambda memory: go_frame(kiln, memory), fullgraph=True)(kiln.tensor(X))
    np.testing.assert_array_equal(ours.numpy(), go_frame(torch, torch.tensor(X)).numpy())
