"""Tensors where PyTorch reads the values on the host: ``quantile``'s ``q`` and ``tensor_split``'s indices or
sections (a 0-d tensor: sections; 1-d: indices) as torch's, eagerly and in a ``kiln.compile``d function; kiln refused
any tensor there, an eager one too. A ``q`` computed from trained weights, whose values exist only when the graph
runs, is still refused, naming the line."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.arange(24.0).reshape(4, 6) ** 1.5


def _reads(lib, compiled=False):
    def fn(x):
        return (lib.quantile(x, lib.tensor([0.25, 0.9]), dim=1, interpolation="midpoint"),
                x.quantile(lib.tensor(0.5)), *lib.tensor_split(x, lib.tensor([1, 4]), dim=1),
                *x.tensor_split(lib.tensor(3), dim=0))

    run = kiln.compile(fn, fullgraph=True) if compiled else fn
    return [np.asarray(t.numpy()) for t in run(lib.tensor(X))]


@pytest.mark.parametrize("compiled", [False, True])
def test_tensor_arguments_as_torch(float64_default, compiled):
    torch, _, _ = libraries("torch")
    for mine, theirs in zip(_reads(kiln, compiled), _reads(torch), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_a_q_from_trained_weights_is_refused(float64_default):
    weight = kiln.nn.Parameter(kiln.tensor([0.5]))
    with pytest.raises(kiln.TraceError, match=r"(?s)test_host_read_tensor_arguments_vs_torch.py:\d+.*quantile: q is a "
                                              r"tensor whose values exist only when the graph runs"):
        kiln.compile(lambda x: x.quantile(weight * 1.0), fullgraph=True)(kiln.tensor(X))
