"""A compiled graph checks its index tensors' values when it runs, as PyTorch's kernels do: ``F.embedding``,
``index_select``, ``gather``, ``scatter``, ``F.one_hot`` and ``F.embedding_bag`` given a traced index put a
``tensor.check_index`` before it. Eager calls were checked already; in ``kiln.compile`` an out-of-range value was used
silently: ``one_hot`` gave a row of zeros, ``gather`` with -1 (or one past the end, on a tensor of several rows) read a
neighbouring row of the flattened tensor, ``Embedding`` with -1 read the last row."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import IndexValueError
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from oracles import libraries, require, require_torch

WEIGHT = np.arange(12.0).reshape(4, 3)


def lookups(lib):
    """Each lookup over a dim of size 4, given a (2, 2) index."""
    F = lib.nn.functional
    weight = lib.tensor(WEIGHT)
    return {
        "embedding": lambda index: F.embedding(index, weight),
        "index_select": lambda index: weight.index_select(0, index.reshape(-1)),
        "gather": lambda index: weight.T[:2].gather(1, index),
        "one_hot": lambda index: F.one_hot(index, 4),
        "scatter_add": lambda index: lib.zeros(2, 4, dtype=lib.float64).scatter_add(1, index, weight[:2, :2]),
        "embedding_bag": lambda index: F.embedding_bag(index, weight),
    }


NAMES = ["embedding", "index_select", "gather", "one_hot", "scatter_add", "embedding_bag"]
BAD = {"too large": [[0, 1], [4, 2]], "negative": [[0, -1], [3, 2]]}
GOOD = [[0, 1], [3, 2]]


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as error:  # noqa: BLE001 (the oracle's exception, whatever it is)
        return error
    raise AssertionError("no error")


@pytest.mark.parametrize("which", list(BAD))
@pytest.mark.parametrize("name", NAMES)
def test_a_compiled_lookup_refuses_an_index_out_of_range_as_torch(name, which):
    torch = require_torch()
    theirs = _raised(lookups(torch)[name], torch.tensor(BAD[which]))
    compiled = kiln.compile(lookups(kiln)[name], fullgraph=True)
    np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(GOOD)).numpy(), np.float64),
                               np.asarray(lookups(torch)[name](torch.tensor(GOOD)).numpy(), np.float64))
    ours = _raised(compiled, kiln.tensor(BAD[which]))
    assert isinstance(ours, IndexValueError)
    assert isinstance(ours, type(theirs)), f"torch raised {type(theirs).__name__}: {theirs}"
    value = [v for row in BAD[which] for v in row if v < 0 or v >= 4][0]
    assert str(value) in str(ours)


def test_the_checks_leave_the_callers_index_and_a_failed_steps_parameters_as_they_were():
    lib, nn, F = libraries("kiln")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Flatten(), nn.Linear(6, 2))
    optimizer = lib.optim.SGD(model.parameters(), lr=0.5)

    def step(tokens, target):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(tokens), target)
        loss.backward()
        optimizer.step()
        return loss.detach()

    compiled = kiln.compile(step, fullgraph=True)
    tokens, target = kiln.tensor([[1, 4], [0, 2]]), kiln.tensor([0, 1])
    compiled(tokens, target)
    assert tokens.tolist() == [[1, 4], [0, 2]]
    before = {name: np.array(p.detach().numpy()) for name, p in model.named_parameters()}
    with pytest.raises(IndexError, match="index out of range in self.*index 5 at flat position 3"):
        compiled(kiln.tensor([[1, 4], [0, 5]]), target)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), before[name], err_msg=name)
    compiled(tokens, target)  # still runs


def test_the_check_prints_and_parses():
    def classes(index):
        return kiln.nn.functional.one_hot(index, 4)

    graph = kiln.trace(classes, kiln.TensorSpec(("N",), "int64"))
    assert "tensor.check_index" in print_graph(graph) and "(one_hot got {value} for num_classes=4)" in print_graph(graph)
    assert print_graph(parse(print_graph(graph))) == print_graph(graph)


def test_onnx_export_passes_the_index_through():
    ort = require("onnxruntime")

    model = kiln.nn.Embedding(4, 3)
    buffer = io.BytesIO()
    kiln.onnx.export(model, (kiln.tensor([[0, 3]]),), buffer, input_names=["tokens"])
    session = ort.InferenceSession(buffer.getvalue())
    out = session.run(None, {"tokens": np.array([[2, 1]], np.int64)})[0]
    np.testing.assert_allclose(out, model.weight.detach().numpy()[[[2, 1]]], rtol=1e-6)
