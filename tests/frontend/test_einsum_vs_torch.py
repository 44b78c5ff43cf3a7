"""``kiln.einsum`` against ``torch.einsum`` in float64: values and the gradient of every operand to rtol 1e-10, over
batched and plain contractions, outer products, sums, transposes, ellipses (broadcast too) and three operands; one
matmul for attention's scores; a symbolic batch; and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import TraceError
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(5)

CASES = [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij->j", [(3, 4)]),
    ("...ij,...jk", [(2, 3, 4), (4, 5)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("ijk,ikl->jl", [(2, 3, 4), (2, 4, 5)]),
    ("i,i->", [(4,), (4,)]),
    ("ab,cd->abcd", [(2, 3), (4, 5)]),
    ("bij,bkj->bik", [(1, 3, 4), (2, 5, 4)]),
    ("ijkl,jlm->ikm", [(2, 3, 4, 5), (3, 5, 6)]),
    ("b i d, b j d -> b i j", [(2, 3, 4), (2, 5, 4)]),
    ("ab,ab->ab", [(3, 4), (3, 4)]),
]


@pytest.mark.parametrize(("equation", "shapes"), CASES, ids=[equation for equation, _ in CASES])
def test_einsum_matches_torch(equation, shapes):
    torch = require("torch")
    arrays = [RNG.standard_normal(shape) for shape in shapes]
    _check(lambda *xs: kiln.einsum(equation, *xs), lambda *xs: torch.einsum(equation, *xs), *arrays)


def test_attention_scores_are_one_matmul_and_take_a_symbolic_batch():
    graph = kiln.trace(lambda q, k: kiln.einsum("bhqd,bhkd->bhqk", q, k), kiln.TensorSpec(("N", 2, 3, 4)), kiln.TensorSpec(("N", 2, 5, 4)))
    names = [op.name for op in graph.ops]
    assert names.count("tensor.matmul") == 1 and "tensor.reduce_sum" not in names
    run = NumpyBackend().compile(graph)
    for batch in (1, 3):
        q, k = RNG.standard_normal((batch, 2, 3, 4)).astype(np.float32), RNG.standard_normal((batch, 2, 5, 4)).astype(np.float32)
        np.testing.assert_allclose(run(q, k)[0], q @ k.transpose(0, 1, 3, 2), rtol=1e-5)


@pytest.mark.parametrize(("equation", "shapes", "message"), [
    ("ii->i", [(3, 2)], "subscript i is repeated for operand 0 but the sizes don't match, 2 != 3"),
    ("ij,jk->ik", [(3, 4)], "names 2 operands, got 1"),
    ("ijk->i", [(3, 4)], "name 3 dims"),
    ("ij->iz", [(3, 4)], "distinct letters of the operands"),
])
def test_einsum_errors_say_what_is_wrong(equation, shapes, message):
    with pytest.raises(TraceError, match=message):
        kiln.trace(lambda *xs: kiln.einsum(equation, *xs), *[kiln.TensorSpec(shape) for shape in shapes])
