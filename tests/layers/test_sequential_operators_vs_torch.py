"""``Sequential`` + ``Sequential``, ``* n``, ``n *``, ``+=`` and ``*=`` as torch's: new containers of the same (shared)
layers, numbered ``0``, ``1``, ...; a non-Sequential or a non-positive count refused with torch's exception types."""

from __future__ import annotations

import pytest

from oracles import require_torch


def _shapes(lib):
    nn = lib.nn
    a, b = nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Sequential(nn.Tanh())
    added, repeated, left = a + b, a * 2, 3 * b
    grown = nn.Sequential(nn.ReLU())
    grown += b
    grown *= 2
    return {
        "added": [type(m).__name__ for m in added], "shares": added[0] is a[0] and repeated[2] is a[0],
        "repeated": list(repeated._modules), "left": len(left), "grown": [type(m).__name__ for m in grown],
        "params": len(list(repeated.parameters())),
    }


def test_sequential_operators_as_torch():
    import kiln

    assert _shapes(kiln) == _shapes(require_torch())


@pytest.mark.parametrize("expression, error", [("s * 0", ValueError), ("s * 1.5", TypeError), ("s + 1", ValueError)])
def test_refusals_as_torch(expression, error):
    import kiln

    torch = require_torch()
    for lib in (kiln, torch):
        with pytest.raises(error):
            eval(expression, {"s": lib.nn.Sequential(lib.nn.ReLU())})
