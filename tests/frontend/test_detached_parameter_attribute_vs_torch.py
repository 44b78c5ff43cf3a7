"""A parameter's ``detach()`` assigned to a module attribute (``self.ref = lin.weight.detach()``: a frozen reference
kept for a regulariser or a teacher) is a plain attribute, as torch 2.13's: kiln registered it as a parameter, so
``parameters()`` and ``state_dict()`` gained it and a torch checkpoint no longer loaded (an unexpected key). It still
shares the parameter's memory and prints as a tensor, not ``Parameter containing:``."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries


def model(name):
    torch, nn, _ = libraries(name)

    class WithReference(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.ref = self.lin.weight.detach()

    net = WithReference()
    with torch.no_grad():
        net.lin.weight.copy_(torch.tensor(np.arange(4.0).reshape(2, 2), dtype=torch.float32))
    return torch, net


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_the_detached_reference_is_not_registered(name):
    _, net = model(name)
    assert [key for key, _ in net.named_parameters()] == ["lin.weight", "lin.bias"]
    assert list(net.state_dict()) == ["lin.weight", "lin.bias"]
    assert not net.ref.requires_grad


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_it_shares_the_parameters_memory_and_prints_as_a_tensor(name):
    torch, net = model(name)
    with torch.no_grad():
        net.lin.weight.mul_(2)
    np.testing.assert_array_equal(net.ref.numpy(), [[0, 2], [4, 6]])
    assert repr(net.ref) == "tensor([[0., 2.],\n        [4., 6.]])"


def test_a_kiln_model_loads_torchs_state_dict_strictly():
    _, reference = model("torch")
    _, net = model("kiln")
    net.load_state_dict({key: value.numpy() for key, value in reference.state_dict().items()}, strict=True)
