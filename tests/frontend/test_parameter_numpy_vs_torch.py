"""``.numpy()`` of a parameter's detached tensor, gradient or state_dict entry is a plain NumPy array sharing the
memory, as torch 2.13's: kiln gave the ``TorchArray`` behind ``p.data``, whose no-argument ``std()`` is PyTorch's
unbiased one and whose ``max()`` / ``mean()`` are kiln tensors, so ``w.detach().numpy().std()`` (a weight statistic
logged while training) silently differed from torch's."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

WEIGHT = np.arange(12.0).reshape(3, 4) / 7


def arrays(name):
    """A Linear's ``weight.detach().numpy()``, ``weight.grad.numpy()`` and ``state_dict()["weight"].numpy()``."""
    torch, nn, F = libraries(name)
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(WEIGHT))
    (layer(torch.ones(2, 4)) ** 2).sum().backward()
    return layer, [layer.weight.detach().numpy(), layer.weight.grad.numpy(), layer.state_dict()["weight"].numpy()]


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_numpy_of_a_parameter_is_a_plain_array_with_numpys_methods(name):
    _, values = arrays(name)
    for array in values:
        assert type(array) is np.ndarray
        assert array.std() == np.std(np.asarray(array)) and array.std() != np.std(np.asarray(array), ddof=1)
        assert isinstance(array.max(), np.floating) and isinstance(array.mean(), np.floating)


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_it_shares_the_parameters_memory(name):
    layer, (weight, _, entry) = arrays(name)
    weight[0, 0] = 5.0
    assert layer.weight[0, 0].item() == 5.0 and entry[0, 0] == 5.0
