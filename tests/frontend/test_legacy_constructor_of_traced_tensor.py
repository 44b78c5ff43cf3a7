"""``torch.LongTensor(t)`` (and the other typed legacy constructors) of a traced tensor, as SASRec's
``predict`` writes ``self.item_emb(torch.LongTensor(item_indices))`` when exported to ONNX or compiled: torch gives an
alias of ``t`` where the dtype is the constructor's; kiln read the traced values through NumPy and raised
``np.asarray() of a traced tensor``. Now the tensor itself (a view), or ``t`` cast to the constructor's dtype (as kiln's
eager constructor casts data; torch raises a TypeError there)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require, require_torch

ITEMS = np.array([[1, 4, 2], [0, 3, 3]])


def lookup(torch, table, items):
    return table(torch.LongTensor(items).to("cpu")).sum(-1)


def test_compiled_lookup_through_long_tensor_as_torch():
    torch = require_torch()
    kiln.manual_seed(0)
    table = kiln.nn.Embedding(5, 3)
    twin = torch.nn.Embedding(5, 3)
    twin.weight.data = torch.tensor(np.array(table.weight.data))
    ours = kiln.compile(lambda items: lookup(kiln, table, items), fullgraph=True)(kiln.tensor(ITEMS))
    np.testing.assert_allclose(np.array(ours), lookup(torch, twin, torch.tensor(ITEMS)).detach().numpy(), rtol=1e-6)


def test_exported_lookup_through_long_tensor_runs_in_onnxruntime(tmp_path):
    ort = require("onnxruntime")
    require("onnx")

    class Scorer(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = kiln.nn.Embedding(5, 3)

        def forward(self, items):
            return lookup(kiln, self.table, items)

    model = Scorer().eval()
    path = str(tmp_path / "scorer.onnx")
    kiln.onnx.export(model, (kiln.tensor(ITEMS),), path, input_names=["items"])
    scores = ort.InferenceSession(path).run(None, {"items": ITEMS})[0]
    np.testing.assert_allclose(scores, model(kiln.tensor(ITEMS)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("constructor, dtype", [("LongTensor", "int64"), ("FloatTensor", "float32"), ("DoubleTensor", "float64")])
def test_a_traced_tensor_is_itself_or_cast(constructor, dtype):
    x = kiln.tensor(np.array([1.0, 2.0, 3.0], np.float32), requires_grad=True)

    def f(x):
        y = getattr(kiln, constructor)(x)
        return y, (y.float() * 2).sum() if dtype == "int64" else (y * 2).sum()

    made, total = kiln.compile(f, fullgraph=True)(x)
    assert str(np.asarray(made).dtype) == dtype
    np.testing.assert_allclose(np.asarray(made), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(float(total), 12.0)
