"""Complex tensors' ``log``, ``sqrt``, ``**`` (any exponent), ``reciprocal``, ``sin``, ``cos``, ``sgn``, ``==``/``!=``
(elementwise), ``cumsum``, ``masked_fill``, ``chunk``/``split``/``unbind`` and the movement methods ``tril``,
``triu``, ``repeat_interleave``, ``gather``, ``index_select``, ``diag_embed``, ``torch.where`` with a complex
operand, vector norms and ``F.pad`` (``frontend/complex_tensor.py``, ``frontend/torch_functions.py``,
``frontend/functional.py``, ``frontend/functional_movement.py``), as torch 2.13's in float64: values, and gradients
of a real loss to a complex leaf. Each refused before (``z == w`` gave one Python bool, torch an elementwise
tensor)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(3)
Z = RNG.uniform(0.2, 2.0, (3, 4)) * np.exp(1j * RNG.uniform(-2.5, 2.5, (3, 4)))  # away from the branch cut

DIFFERENTIABLE = {
    "log": lambda lib, z: z.log(),
    "sqrt": lambda lib, z: lib.sqrt(z),
    "pow 0.5": lambda lib, z: z ** 0.5,
    "pow -1.5": lambda lib, z: z ** -1.5,
    "pow complex": lambda lib, z: z ** (0.5 + 1j),
    "reciprocal": lambda lib, z: lib.reciprocal(z),
    "sin": lambda lib, z: lib.sin(z),
    "cos": lambda lib, z: z.cos(),
    "sgn": lambda lib, z: lib.sgn(z),
    "cumsum": lambda lib, z: lib.cumsum(z, 1),
    "masked_fill": lambda lib, z: z.masked_fill(lib.tensor(np.eye(3, 4) > 0), 1 - 2j),
    "where number": lambda lib, z: lib.where(lib.tensor(np.eye(3, 4) > 0), z, 0.5j),
    "where real input": lambda lib, z: lib.where(lib.tensor(np.eye(3, 4) > 0), lib.tensor(Z.real), z),
    "where method": lambda lib, z: z.where(lib.tensor(np.eye(3, 4) > 0), z * 2),
    "tril": lambda lib, z: lib.tril(z),
    "triu": lambda lib, z: z.triu(1),
    "repeat_interleave": lambda lib, z: z.repeat_interleave(2, dim=0),
    "gather": lambda lib, z: z.gather(1, lib.tensor([[0, 3]] * 3)),
    "index_select": lambda lib, z: z.index_select(1, lib.tensor([0, 2])),
    "diag_embed": lambda lib, z: lib.diag_embed(z),
    "chunk": lambda lib, z: z.chunk(2, dim=1)[1],
    "split": lambda lib, z: z.split([1, 3], dim=1)[1],
    "unbind": lambda lib, z: z.unbind(0)[2],
    "pad constant": lambda lib, z: lib.nn.functional.pad(z, (1, 2), value=0.5),
    "pad reflect": lambda lib, z: lib.nn.functional.pad(z[None], (2, 1), mode="reflect")[0],
    "norm": lambda lib, z: z.norm() * (1 + 0j),
    "linalg.vector_norm": lambda lib, z: lib.linalg.vector_norm(z, ord=3, dim=1) * (1 + 0j),
    "linalg.norm fro": lambda lib, z: lib.linalg.norm(z) * (1 + 0j),
}


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_complex_functions_and_their_gradients_match_torch(name):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        z = lib.tensor(Z, requires_grad=True)
        out = DIFFERENTIABLE[name](lib, z)
        (out.real * 0.7 + out.imag * out.imag).sum().backward()
        results.append((np.asarray(out.detach()), np.asarray(z.grad)))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-11, atol=1e-12)


def test_equality_is_elementwise_and_tensors_stay_hashable():
    torch = require_torch()
    w = Z.copy()
    w[1, 2] += 1j
    for lib in (kiln, torch):
        z = lib.tensor(Z)
        equal, differ = z == lib.tensor(w), z != lib.tensor(w)
        assert tuple(equal.shape) == (3, 4) and np.asarray(equal).sum() == 11 and np.asarray(differ)[1, 2]
        assert z in {z}
    assert np.asarray(kiln.tensor(np.array([2 + 0j])) == 2).all()
