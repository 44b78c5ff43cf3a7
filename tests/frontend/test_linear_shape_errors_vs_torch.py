"""``F.linear`` / ``nn.Linear`` given an input whose last dim is not the weight's in_features raises torch's
RuntimeError with its words (``frontend/linear_shape_checks.py``; it was kiln's 'tensor.matmul: contraction dims
differ: (2, 8, 9) @ (4, 4)', the transposed weight's layout). Checked against torch 2.13, eagerly and compiled."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

SHAPES = {"2-D": ((2, 9), (4, 4)), "3-D": ((2, 8, 9), (4, 4)), "1-D": ((9,), (4, 4)), "empty rows": ((2, 0, 9), (4, 4)),
          "wide": ((3, 5), (7, 6))}


def _message(lib, case, bias):
    x, w = SHAPES[case]
    with pytest.raises(RuntimeError) as raised:
        lib.nn.functional.linear(lib.zeros(*x), lib.zeros(*w), lib.zeros(w[0]) if bias else None)
    return str(raised.value).splitlines()[-1].strip()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("case", SHAPES)
def test_mismatched_linear_raises_torchs_error(case, bias):
    torch = require_torch()
    assert _message(kiln, case, bias) == _message(torch, case, bias)


def test_a_compiled_linear_names_the_symbolic_rows_and_the_users_line():
    layer = kiln.nn.Linear(4, 3)
    with warnings.catch_warnings(), pytest.raises(RuntimeError) as raised:
        warnings.simplefilter("ignore")  # the compiled call's eager retry says it runs eagerly, then raises the same
        kiln.compile(lambda x: layer(x))(kiln.zeros(2, 5, 9))
    assert "test_linear_shape_errors_vs_torch.py" in str(raised.value)
    assert "mat1 and mat2 shapes cannot be multiplied (" in str(raised.value) and "x9 and 4x3)" in str(raised.value)


def test_fitting_shapes_still_multiply_as_torch():
    torch = require_torch()
    x, w, b = (np.random.default_rng(i).standard_normal(s) for i, s in enumerate([(2, 8, 4), (3, 4), (3,)]))
    ours = kiln.nn.functional.linear(*(kiln.tensor(a) for a in (x, w, b)))
    np.testing.assert_allclose(ours.numpy(), torch.nn.functional.linear(*(torch.tensor(a) for a in (x, w, b))).numpy(),
                               rtol=1e-12)
