"""A dynamic batch dim traced as torch traces a SymInt: ``x.size(0) * n`` is the product dim (kiln's was a plain
``str``, so Python repeated the string: ``'batchbatch...'``), ``torch.arange(batch_size)`` of a symbolic length
traces, and integer indexing of a symbolic leading dim (``x.view(B * N, -1)[idx, :]``, negative indices too) traces.
DGCNN's ``get_graph_feature`` does all three; with ``kiln.onnx.export(..., dynamic_axes=...)`` it was refused and
``kiln.compile`` fell back to one graph per batch size. Checked against torch 2.13 on several batch sizes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from kiln.frontend.symbolic_dims import SymbolicDim
from oracles import libraries, require, require_torch


def graph_feature(torch, x, idx):
    """get_graph_feature's gather: the batch's flat index base by arange, rows of the flattened points."""
    batch_size, num_points, k = idx.size(0), x.size(2), idx.size(2)
    idx_base = torch.arange(0, batch_size).view(-1, 1, 1) * num_points
    idx = (idx + idx_base).view(-1)
    x = x.transpose(2, 1).contiguous()
    feature = x.view(batch_size * num_points, -1)[idx, :]
    return feature.view(batch_size, num_points, k, x.size(2)) - torch.arange(batch_size).view(-1, 1, 1, 1)


def last_rows(torch, x, idx):
    """Negative computed indices into a symbolic leading dim: ``x.view(B * C, -1)[idx - 6]``."""
    rows = x.view(x.size(0) * x.size(1), -1)
    return rows[idx[:, 0, 0] - 6]


def batches(seed, sizes=(2, 5)):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(b, 3, 6)).astype(np.float32), rng.integers(0, 6, (b, 6, 2))) for b in sizes]


def test_products_of_symbolic_dims():
    n = SymbolicDim("N")
    assert n * 3 == 3 * n == "3*N" and isinstance(n * 3, SymbolicDim)
    assert 2 * (n * 4) == "8*N" and n * SymbolicDim("T") == "N*T"
    with pytest.raises(TypeError):
        n + 1


def test_floor_division_of_a_symbolic_dim_where_it_divides_exactly():
    """ldm's ``b_h // h`` after heads were merged into the batch: ``'2*N' // 2`` is ``'N'``; a division that would
    need the value (``'N' // 2``) stays a TypeError, as before."""
    n = SymbolicDim("N")
    assert (n * 2) // 2 == "N" and isinstance((n * 2) // 2, SymbolicDim)
    assert (n * 6) // 3 == "2*N" and (n * n * 4) // (n * 2) == "2*N"
    for impossible in (lambda: n // 2, lambda: (n * 3) // 2, lambda: n // SymbolicDim("T")):
        with pytest.raises(TypeError):
            impossible()


def test_graph_feature_exported_with_a_dynamic_batch_as_torch(tmp_path):
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    _, nn, _ = libraries("kiln")

    class GraphFeature(nn.Module):
        def forward(self, x, idx):
            return graph_feature(kiln, x, idx)

    (x, idx), *_ = batches(0)
    path = str(tmp_path / "graph_feature.onnx")
    kiln.onnx.export(GraphFeature(), (kiln.tensor(x), kiln.tensor(idx)), path, input_names=["x", "idx"],
                     dynamic_axes={"x": {0: "batch"}, "idx": {0: "batch"}})
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for x, idx in batches(1, sizes=(3, 1, 4)):
        (ours,) = session.run(None, {"x": x, "idx": idx})
        np.testing.assert_allclose(ours, graph_feature(torch, torch.tensor(x), torch.tensor(idx)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("function", [graph_feature, last_rows], ids=["graph feature", "negative indices"])
def test_compiled_with_a_symbolic_batch_traces_once_as_torch(function):
    """One graph serves every batch size (the symbolic trace succeeds: no static variant per size)."""
    torch = require_torch()
    compiled = kiln.compile(lambda x, idx: function(kiln, x, idx))
    for x, idx in batches(2, sizes=(2, 5, 3)):
        ours = compiled(kiln.tensor(x), kiln.tensor(idx))
        np.testing.assert_allclose(ours.numpy(), function(torch, torch.tensor(x), torch.tensor(idx)).numpy(), rtol=1e-6)
    assert len(compiled.variants) == 1


def test_known_indices_into_a_symbolic_dim_compile_static_with_torchs_error():
    """A constant index list is checked against the size at trace time (torch's IndexError words), which a symbolic
    dim does not have: ``kiln.compile`` traces that function with static shapes, per size."""
    require_torch()
    compiled = kiln.compile(lambda x: x[[0, 5]])
    np.testing.assert_array_equal(compiled(kiln.ones(6, 2)).numpy(), np.ones((2, 2)))
    with pytest.raises(IndexError, match="index 5 is out of bounds for dimension 0 with size 3"):
        compiled(kiln.ones(3, 2))


def test_arange_of_a_symbolic_length_from_another_start_says_what_traces():
    with pytest.raises(TraceError, match=r"a range over a symbolic dim traces only from 0 by 1"):
        kiln.trace(lambda x: kiln.arange(1, x.size(0)), kiln.frontend.trace.TensorSpec(("N", 2)))
