"""``einsum`` with a subscript of different sizes in two operands raises torch's RuntimeError with its words (it
failed deep in the lowering: 'tensor.matmul: contraction dims differ'); a size of 1 still broadcasts, as torch's.
Checked against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

MISMATCHES = {
    "contracted": ("b h n d, h m n -> b h m d", [(2, 1, 8, 3), (1, 6, 6)]),
    "batch": ("bij,bjk->bik", [(2, 3, 4), (5, 4, 2)]),
    "kept in the output": ("ij,ij->ij", [(2, 3), (2, 4)]),
    "third operand": ("ij,jk,kl->il", [(2, 3), (3, 4), (5, 2)]),
}


def _message(lib, case):
    equation, shapes = MISMATCHES[case]
    with pytest.raises(RuntimeError) as raised:
        lib.einsum(equation, *(lib.ones(*shape) for shape in shapes))
    return str(raised.value).splitlines()[-1].strip()


@pytest.mark.parametrize("case", MISMATCHES)
def test_mismatched_subscript_sizes_raise_torchs_error(case):
    torch = require_torch()
    assert _message(kiln, case) == _message(torch, case)


BROADCASTS = {"batch of 1": ("bij,bjk->bik", [(1, 3, 4), (5, 4, 2)]),
              "kept of 1": ("ij,ij->ij", [(2, 1), (2, 4)])}


@pytest.mark.parametrize("case", BROADCASTS)
def test_a_subscript_of_size_one_broadcasts_as_torchs(case):
    torch = require_torch()
    equation, shapes = BROADCASTS[case]
    arrays = [np.random.default_rng(i).standard_normal(shape) for i, shape in enumerate(shapes)]
    ours = kiln.einsum(equation, *(kiln.tensor(a) for a in arrays))
    theirs = torch.einsum(equation, *(torch.tensor(a) for a in arrays))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
