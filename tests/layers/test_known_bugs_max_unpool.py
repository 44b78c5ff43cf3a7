"""``F.max_unpool1d/2d/3d`` with an index outside the output plane: PyTorch raises, and so does kiln when the indices
are known (eagerly), naming the index, where it is and the plane; in a compiled program, where the indices are data
of the step, such an index writes nothing (there is no run-time check op to raise)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError
from oracles import require

_CASES = {  # function, input shape, kernel, the plane's size
    "max_unpool1d": ((1, 2, 3), 2, 6),
    "max_unpool2d": ((1, 1, 2, 2), 2, 16),
    "max_unpool3d": ((1, 1, 1, 2, 2), 2, 32),
}


@pytest.mark.parametrize("bad", ["past_the_end", "negative"])
@pytest.mark.parametrize("function", sorted(_CASES))
def test_an_eager_index_outside_the_output_raises_as_torch(function, bad):
    torch = require("torch")
    shape, kernel, plane = _CASES[function]
    indices = np.zeros(shape, dtype=np.int64)
    indices.flat[-1] = plane if bad == "past_the_end" else -1
    values = np.ones(shape)
    with pytest.raises(RuntimeError, match="invalid max index"):
        getattr(torch.nn.functional, function)(torch.tensor(values), torch.tensor(indices), kernel)
    position = tuple(int(i) - 1 for i in shape)
    with pytest.raises(TraceError, match=rf"(?s)test_known_bugs_max_unpool.py:\d+.*{function}: index {indices.flat[-1]} "
                                         rf"at \({', '.join(map(str, position))}\) is outside the output plane .*\[0, {plane}\)"):
        getattr(F, function)(kiln.tensor(values), kiln.tensor(indices), kernel)


def test_the_layer_raises_too_and_indices_in_range_still_match_torch():
    torch = require("torch")
    values = np.arange(8.0).reshape(1, 2, 4)
    indices = np.array([[[0, 3, 5, 7], [1, 2, 4, 8]]], dtype=np.int64)
    with pytest.raises(TraceError, match=r"max_unpool1d: index 8 at \(0, 1, 3\)"):
        nn.MaxUnpool1d(2)(kiln.tensor(values), kiln.tensor(indices))
    indices[0, 1, 3] = 6
    expected = torch.nn.MaxUnpool1d(2)(torch.tensor(values), torch.tensor(indices))
    np.testing.assert_array_equal(nn.MaxUnpool1d(2)(kiln.tensor(values), kiln.tensor(indices)).numpy(), expected.numpy())


def test_a_compiled_unpool_writes_nothing_for_an_index_outside_the_plane():
    unpool = kiln.compile(lambda values, indices: F.max_unpool1d(values, indices, 2), batch_dim=None)
    out = np.asarray(unpool(np.array([[[1.0, 2.0]]]), np.array([[[1, 9]]], dtype=np.int64)))
    np.testing.assert_array_equal(out, [[[0.0, 1.0, 0.0, 0.0]]])
