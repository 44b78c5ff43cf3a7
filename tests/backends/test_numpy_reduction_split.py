"""A float sum over the leading axes and later ones (a convolution's bias gradient: ``(0, 2, 3)``) runs as two NumPy
reductions, the leading run of axes first (``_PlannedEmitter.leading_axes_split``): ``np.sum``'s value in float64,
with and without keepdims, negative axes; sums it does not apply to keep one reduction."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.parser import parse


def _graph(axes: tuple[int, ...], keepdims: bool, dtype: str) -> str:
    shape, rank = (5, 3, 4, 6), 4
    kept = tuple(1 if a in [x % rank for x in axes] else d for a, d in enumerate(shape))
    result = kept if keepdims else tuple(d for a, d in enumerate(shape) if a not in [x % rank for x in axes])
    t = lambda dims: "tensor<" + "".join(f"{d}x" for d in dims) + f"{dtype}>"  # noqa: E731
    return f"""func @sums(%x: {t(shape)}) {{
  %e = "tensor.exp"(%x) : ({t(shape)}) -> {t(shape)}
  %s = "tensor.reduce_sum"(%e) {{axes = [{', '.join(map(str, axes))}], keepdims = {str(keepdims).lower()}}} : ({t(shape)}) -> {t(result)}
  %n = "tensor.neg"(%s) : ({t(result)}) -> {t(result)}
  return %n : {t(result)}
}}
"""


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("keepdims", [True, False])
@pytest.mark.parametrize("axes, split", [((0, 2, 3), True), ((0, 1, 3), True), ((-4, -1), True), ((0, 2), True),
                                         ((1, 2), False), ((0, 1), False), ((0, 1, 2, 3), False)])
def test_sums_over_leading_and_later_axes_are_numpys_sum(axes, split, keepdims, dtype):
    executable = NumpyBackend().compile(parse(_graph(axes, keepdims, dtype)))
    x = np.random.default_rng(len(axes)).standard_normal((5, 3, 4, 6)).astype("float32" if dtype == "f32" else "float64")
    (got,) = executable(x)
    expected = -np.sum(np.exp(x.astype(np.float64)), axis=axes, keepdims=keepdims)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == "f32" else 1e-13)
    assert ("np.add.reduce(np.add.reduce(" in executable.source) == split


def test_integer_sums_keep_one_reduction():
    text = _graph((0, 2), False, "i32").replace('"tensor.exp"', '"tensor.neg"')
    executable = NumpyBackend().compile(parse(text))
    x = np.arange(5 * 3 * 4 * 6, dtype=np.int32).reshape(5, 3, 4, 6)
    np.testing.assert_array_equal(executable(x)[0], np.sum(x, axis=(0, 2)))
    assert "np.add.reduce(np.add.reduce(" not in executable.source
