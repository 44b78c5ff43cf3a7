"""``Tensor.data_ptr()`` and ``untyped_storage()`` answer torch's sharing questions: tied parameters share an address,
a view's address is its base's plus the storage offset, distinct live tensors differ; a traced tensor refuses."""

from __future__ import annotations

import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import libraries


def _answers(name):
    lib, nn, _ = libraries(name)
    embedding, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight
    x, y = lib.zeros(4, 6), lib.zeros(4, 6)
    view = x[1:, 2:]
    return (head.weight.data_ptr() == embedding.weight.data_ptr(), view.data_ptr() - x.data_ptr(),
            x.t().data_ptr() == x.data_ptr(), x[2].data_ptr() - x.data_ptr(), x.data_ptr() != y.data_ptr(),
            view.untyped_storage().data_ptr() == x.untyped_storage().data_ptr(), x.untyped_storage().nbytes(),
            embedding.weight.untyped_storage().nbytes(), head.weight[1].data_ptr() - head.weight.data_ptr())


def test_sharing_answers_are_torchs():
    assert _answers("kiln") == _answers("torch")


def test_a_traced_tensor_has_no_address():
    with pytest.raises(TraceError, match="has no memory until the compiled function runs"):
        kiln.compile(lambda x: x * x.data_ptr(), fullgraph=True)(kiln.ones(2))
