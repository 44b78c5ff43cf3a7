"""A Python float past a narrow dtype's range meeting a tensor of it (``x_f32 * 1e39``, a loss scale grown past
float32's, ``x_f16 + 1e5``) rounds to inf quietly, as torch's; NumPy's cast warned "overflow encountered in cast"
(an error under ``-W error`` or pytest's ``filterwarnings = error``). Numbers just below the rounding boundary stay
finite, as torch rounds them. (torch's ``where(c, x_f32, 1e39)`` refuses the number; kiln's gives inf.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from oracles import libraries

CASES = [("float32", n) for n in (1e39, -1e39, 3.4028235e38, 3.40282356e38, 3.4028236e38, float("inf"), float("nan"))] + \
        [("float16", n) for n in (65504.0, 65519.9, 65520.0, -1e5, 100000)] + \
        [("bfloat16", n) for n in (3.39e38, 3.4e38, -1e39)]


@pytest.mark.parametrize("dtype, number", CASES)
@pytest.mark.parametrize("op", ["mul", "add"])
def test_a_number_past_the_range_rounds_to_inf_quietly_as_torch(dtype, number, op):
    results = []
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        x = torch.tensor([1.0, -2.0, 0.5], dtype=getattr(torch, dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = x * number if op == "mul" else x + number
        results.append(np.array(result.float().numpy()))
    np.testing.assert_array_equal(*results)
