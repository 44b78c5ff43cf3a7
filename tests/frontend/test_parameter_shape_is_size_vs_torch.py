"""A parameter's and a ``requires_grad=True`` leaf's ``.shape`` and ``.size()`` are ``Size``s, as torch's: they
print as ``torch.Size([2, 1])`` does (a plain tuple printed ``(2, 1)``) and compare equal to tuples."""

from __future__ import annotations

import pytest

from oracles import libraries


@pytest.mark.parametrize("make", [lambda torch: torch.nn.Parameter(torch.ones(2, 1)),
                                  lambda torch: torch.ones(2, 1, requires_grad=True),
                                  lambda torch: torch.nn.Linear(1, 2).weight],
                         ids=["Parameter", "requires_grad leaf", "a layer's weight"])
def test_shape_and_size_are_sizes_as_torch(make):
    printed = {}
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        tensor = make(torch)
        assert isinstance(tensor.shape, torch.Size) and isinstance(tensor.size(), torch.Size)
        assert tensor.shape == (2, 1) and tensor.size(0) == 2
        printed[name] = [str(tensor.shape).replace(name, "lib"), repr(tensor.size()).replace(name, "lib")]
    assert printed["kiln"] == printed["torch"]
