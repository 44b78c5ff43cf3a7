"""``nn.init.dirac_`` and ``sparse_`` as torch's (dirac's exact weights; sparse's zero count per column and scale),
their deprecated aliases, and ``torch.nn.modules.utils``' normalizers (``_pair``...) as torch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require


def _weights(lib, parameter):
    return parameter.detach().numpy() if lib.__name__ == "torch" else np.asarray(parameter.data)


@pytest.mark.parametrize("shape, groups", [((6, 4, 3), 1), ((6, 4, 3, 3), 2), ((4, 4, 3, 3, 3), 1), ((3, 5, 2, 2), 1)])
def test_dirac_weights_are_torchs(shape, groups):
    results = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        weight = nn.Parameter(lib.ones(*shape))
        nn.init.dirac_(weight, groups)
        results.append(_weights(lib, weight))
    np.testing.assert_array_equal(results[0], results[1])


def test_dirac_refuses_as_torch():
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        with pytest.raises(ValueError, match="Only tensors with 3, 4, or 5 dimensions are supported"):
            nn.init.dirac_(nn.Parameter(lib.ones(3, 3)))
        with pytest.raises(ValueError, match="dim 0 must be divisible by groups"):
            nn.init.dirac_(nn.Parameter(lib.ones(5, 2, 3)), 2)


def test_sparse_zeroes_the_same_count_per_column_as_torch():
    counts = []
    for name in ("kiln", "torch"):
        lib, nn, _ = libraries(name)
        weight = nn.Parameter(lib.ones(200, 7))
        nn.init.sparse_(weight, 0.3, std=0.5)
        values = _weights(lib, weight)
        counts.append((values == 0).sum(0).tolist())
        assert 0.4 < values[values != 0].std() < 0.6
    assert counts[0] == counts[1] == [60] * 7
    with pytest.raises(ValueError, match="Only tensors with 2 dimensions are supported"):
        kiln.nn.init.sparse_(kiln.nn.Parameter(kiln.ones(2, 3, 4)), 0.1)


def test_deprecated_aliases_warn_and_write():
    weight = kiln.nn.Parameter(kiln.ones(2, 2, 3))
    with pytest.warns(FutureWarning):
        kiln.nn.init.dirac(weight)
    assert np.asarray(weight.data).sum() == 2


def test_module_utils_normalizers_are_torchs():
    ours, theirs = __import__("kiln.nn.modules.utils", fromlist=["_"]), require("torch.nn.modules.utils")
    for name, argument in [("_single", 3), ("_pair", 3), ("_pair", (1, 2)), ("_triple", 2), ("_quadruple", [1, 2, 3, 4])]:
        assert getattr(ours, name)(argument) == getattr(theirs, name)(argument)
    assert ours._reverse_repeat_tuple((1, 2, 3), 2) == theirs._reverse_repeat_tuple((1, 2, 3), 2)
    assert ours._list_with_default([None, 4], (2, 3, 5, 6)) == theirs._list_with_default([None, 4], (2, 3, 5, 6))
    assert ours._ntuple(2)(5) == theirs._ntuple(2)(5)
