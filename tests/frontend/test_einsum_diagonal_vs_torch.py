"""``kiln.einsum`` with a letter repeated within one operand (a diagonal), against ``torch.einsum`` in float64: values
and every operand's gradient. A PINN takes each point's second derivative out of ``torch.autograd.functional.hessian``
of a batch by ``torch.einsum("iaia->ia", H)``; kiln refused any repeated letter ("a diagonal, which kiln does not
trace"). Each operand is now taken along its diagonals first (``Tensor.diagonal``), and mismatched sizes raise torch's
``RuntimeError`` with its words."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.frontend.functional_einsum import EinsumDiagonalError
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(11)

CASES = [
    ("ii->i", [(3, 3)]),
    ("ii", [(4, 4)]),
    ("ii->", [(3, 3)]),
    ("iaia->ia", [(3, 2, 3, 2)]),
    ("iaib->ab", [(3, 2, 3, 4)]),
    ("iji->j", [(3, 5, 3)]),
    ("iiji->j", [(2, 2, 3, 2)]),
    ("ij,jj->i", [(3, 4), (4, 4)]),
    ("bii,bi->b", [(2, 3, 3), (2, 3)]),
    ("...ii->...i", [(2, 3, 3)]),
]


@pytest.mark.parametrize(("equation", "shapes"), CASES, ids=[equation for equation, _ in CASES])
def test_einsum_diagonal_matches_torch(equation, shapes):
    torch = require("torch")
    arrays = [RNG.standard_normal(shape) for shape in shapes]
    _check(lambda *xs: kiln.einsum(equation, *xs), lambda *xs: torch.einsum(equation, *xs), *arrays)


@pytest.mark.parametrize(("equation", "shape"), [("ii->i", (2, 3)), ("iji->j", (3, 5, 2))])
def test_mismatched_diagonal_sizes_raise_torchs_error(equation, shape):
    torch = require("torch")
    with pytest.raises(RuntimeError) as theirs:
        torch.einsum(equation, torch.zeros(shape))
    with pytest.raises(EinsumDiagonalError) as ours:
        kiln.einsum(equation, kiln.zeros(shape))
    assert isinstance(ours.value, RuntimeError) and str(theirs.value) in str(ours.value)
