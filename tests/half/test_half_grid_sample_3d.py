"""``F.grid_sample`` on 5-D (volumetric) input in float16 and bfloat16 against PyTorch 2.13 on CPU in the same dtype,
through ``test_half_vs_torch.py``'s runner: the output and the gradients (input and grid), eagerly and compiled.
kiln computes in float32 and rounds once (the ``grid_sampler`` autocast policy), as torch's 3-D kernel does."""

from __future__ import annotations

import pytest

from half_cases import HalfCase, fn, x
from half_compare import HALF
from oracles import require_torch
from test_half_vs_torch import assert_matches, draw, kiln_compiled, kiln_eager, oracle

CASES = [
    HalfCase("grid_sample-3d-trilinear", fn("grid_sample", align_corners=False), (x(1, 2, 3, 4, 4), x(1, 2, 3, 3, 3, kind="unit"))),
    HalfCase("grid_sample-3d-trilinear-reflection", fn("grid_sample", padding_mode="reflection", align_corners=True),
             (x(2, 1, 3, 3, 4), x(2, 2, 2, 3, 3))),
    HalfCase("grid_sample-3d-nearest-border", fn("grid_sample", mode="nearest", padding_mode="border", align_corners=True),
             (x(1, 2, 4, 4, 3), x(1, 3, 2, 3, 3, kind="unit")), grad=False),
]
PARAMS = [pytest.param(case, dtype, id=f"{case.id}-{dtype}") for case in CASES for dtype in HALF]


@pytest.mark.parametrize(("case", "dtype"), PARAMS)
def test_eager_matches_torch(case: HalfCase, dtype: str):
    torch = require_torch()
    arrays = draw(case, dtype)
    assert_matches(case, dtype, kiln_eager(case, None, arrays), oracle(torch, case, None, arrays, dtype), "eager")


@pytest.mark.parametrize(("case", "dtype"), PARAMS)
def test_compiled_matches_torch(case: HalfCase, dtype: str):
    torch = require_torch()
    arrays = draw(case, dtype)
    assert_matches(case, dtype, kiln_compiled(case, None, arrays), oracle(torch, case, None, arrays, dtype), "compiled")
