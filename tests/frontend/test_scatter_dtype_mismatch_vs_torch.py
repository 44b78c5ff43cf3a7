"""The scatter family refuses a source tensor of another dtype than the tensor written, as PyTorch's
(``RuntimeError``: "must have the same scalar type"): GNN code that sums float32 messages into float64 zeros by
``index_add_`` raised in torch and silently cast in kiln. A Python number (``scatter_(1, index, 1)``) still writes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

CASES = {
    "index_add": lambda t, x, src: x.index_add(0, t.tensor([0, 2]), src),
    "index_add_": lambda t, x, src: x.index_add_(0, t.tensor([0, 2]), src),
    "scatter_add": lambda t, x, src: x.scatter_add(0, t.tensor([[0, 1, 2], [2, 2, 0]]), src),
    "scatter_add_": lambda t, x, src: x.scatter_add_(0, t.tensor([[0, 1, 2], [2, 2, 0]]), src),
    "scatter": lambda t, x, src: x.scatter(0, t.tensor([[0, 1, 2], [2, 0, 1]]), src),
    "scatter_reduce": lambda t, x, src: x.scatter_reduce(0, t.tensor([[0, 1, 2], [2, 2, 0]]), src, "amax", include_self=False),
    "index_reduce": lambda t, x, src: x.index_reduce(0, t.tensor([0, 2]), src, "mean"),
    "masked_scatter": lambda t, x, src: x.masked_scatter(t.tensor([[True, False, True]]), src),
}


def run(name, case, source_dtype):
    torch, _, _ = libraries(name)
    x = torch.zeros(3, 3, dtype=torch.float64)
    src = torch.tensor(np.arange(1.0, 7.0).reshape(2, 3), dtype=getattr(torch, source_dtype))
    return CASES[case](torch, x, src)


@pytest.mark.parametrize("case", list(CASES))
def test_a_source_of_another_dtype_is_refused_as_torch(case):
    with pytest.raises(RuntimeError):
        run("torch", case, "float32")
    with pytest.raises(RuntimeError, match=r"self \(kiln.float64\) and source \(kiln.float32\) must have the same "
                                           r"scalar type.*source.to\(kiln.float64\)"):
        run("kiln", case, "float32")


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_dtype_writes_as_torch(case):
    np.testing.assert_allclose(run("kiln", case, "float64").numpy(), run("torch", case, "float64").numpy(), rtol=1e-15)


def test_numbers_still_write_and_a_trace_refuses_too():
    torch, _, _ = libraries("torch")
    index = np.array([[0], [2]])
    ours = kiln.zeros(2, 3, dtype=kiln.float64).scatter_(1, kiln.tensor(index), 1)
    np.testing.assert_array_equal(ours.numpy(), torch.zeros(2, 3, dtype=torch.float64).scatter_(1, torch.tensor(index), 1))
    step = kiln.compile(lambda x, src: x.index_add(0, kiln.tensor([0, 2]), src), fullgraph=True)
    with pytest.raises(RuntimeError, match=r"index_add\(\): self \(kiln.float64\) and source \(kiln.float32\)"):
        step(kiln.zeros(3, 3, dtype=kiln.float64), kiln.ones(2, 3))
