"""The normalisation and distance functions given a parameter's ``.data`` (kiln's ``TorchArray``, PyTorch's tensor) as
PyTorch's take it: word2vec's nearest neighbours (``F.cosine_similarity(vectors[word].unsqueeze(0), vectors)`` with
``vectors = emb.weight.data``), ``F.normalize(emb.weight.data, dim=1)`` before a similarity matrix, ``torch.norm`` /
``torch.std`` of a table. kiln read the NumPy dtype's ``is_float`` and raised ``AttributeError``; now the array is read
as the tensor it stands for (``frontend/torch_array.tensor_operand``), eagerly and in a ``kiln.compile``'d function
(the parameter's value at each call)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

TABLE = np.array([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [3.0, 1.0, -1.0], [0.0, 0.0, 0.0]])

CALLS = {
    "F.normalize": lambda lib, F, w: F.normalize(w, dim=1),
    "F.normalize p=1": lambda lib, F, w: F.normalize(w, p=1, dim=0),
    "F.cosine_similarity of a row": lambda lib, F, w: F.cosine_similarity(w[1].unsqueeze(0), w, dim=1),
    "F.cosine_similarity of a slice": lambda lib, F, w: F.cosine_similarity(w[1:2], w),
    "F.pairwise_distance": lambda lib, F, w: F.pairwise_distance(w, w[2:3]),
    "torch.norm": lambda lib, F, w: lib.norm(w, dim=1),
    "torch.std": lambda lib, F, w: lib.std(w, dim=0),
    "torch.var": lambda lib, F, w: lib.var(w),
    "torch.cosine_similarity": lambda lib, F, w: lib.cosine_similarity(w, w[0:1]),
}


def computed(name: str, call) -> np.ndarray:
    lib, nn, F = libraries(name)
    table = nn.Embedding(*TABLE.shape)
    table.weight.data.copy_(lib.tensor(TABLE))
    return np.array(call(lib, F, table.weight.data).detach().numpy())


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_parameters_data_is_taken_as_torch_takes_it(call):
    require_torch()
    np.testing.assert_allclose(computed("kiln", call), computed("torch", call), rtol=1e-6, atol=1e-7)


def test_nearest_neighbours_of_data_in_a_compiled_function_read_the_current_table():
    torch = require_torch()
    tables = []
    for lib in (kiln, torch):
        table = lib.nn.Embedding(*TABLE.shape)
        table.weight.data.copy_(lib.tensor(TABLE))
        tables.append(table)
    ours, theirs = tables

    def nearest(table):
        similarity = kiln.nn.functional.cosine_similarity(table.weight.data[0].unsqueeze(0), table.weight.data)
        return kiln.nn.functional.normalize(table.weight.data, dim=1) @ kiln.nn.functional.normalize(table.weight.data, dim=1).T, similarity

    compiled = kiln.compile(lambda: nearest(ours), fullgraph=True)
    for _ in range(2):
        for got, want in zip(compiled(), (torch.nn.functional.normalize(theirs.weight.data, dim=1) @
                                          torch.nn.functional.normalize(theirs.weight.data, dim=1).T,
                                          torch.nn.functional.cosine_similarity(theirs.weight.data[0].unsqueeze(0), theirs.weight.data))):
            np.testing.assert_allclose(np.array(got), want.numpy(), rtol=1e-6, atol=1e-7)
        ours.weight.data.mul_(-2.0).add_(0.5)  # the second call sees the table written in place
        theirs.weight.data.mul_(-2.0).add_(0.5)
