"""Porting probes, GNN and checkpoint: ``torch.sparse.mm`` of a COO adjacency (``kiln.sparse``, dense inside) with
torch's values and gradients, and ``load_state_dict`` returning torch's ``(missing_keys, unexpected_keys)``
(``strict=False`` loading a backbone into a bigger model)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

EDGES = np.random.default_rng(3).integers(0, 6, (2, 10))
FEATURES = np.random.default_rng(4).standard_normal((6, 5))


def _graph_convolution(name):
    lib = libraries(name)[0]
    x = lib.tensor(FEATURES.copy(), requires_grad=True)
    edges = lib.cat([lib.tensor(EDGES), lib.tensor(EDGES).flip(0)], dim=1)
    adjacency = lib.sparse_coo_tensor(edges, lib.ones(edges.shape[1], dtype=lib.float64), (6, 6))
    hidden = lib.sparse.mm(adjacency, x)
    mixed = lib.sparse.addmm(x, adjacency, hidden, beta=0.5, alpha=0.25)
    total = lib.sparse.sum(adjacency)
    loss = (mixed.sin().sum() + hidden.pow(2).sum()) / total
    loss.backward()
    rows = lib.sparse.sum(adjacency, dim=1)
    rows = rows.to_dense() if rows.is_sparse else rows
    return [np.asarray(t.detach().numpy()) for t in (hidden, mixed, total, rows, x.grad)]


def test_sparse_mm_addmm_sum_as_torch():
    require_torch()
    for ours, theirs in zip(_graph_convolution("kiln"), _graph_convolution("torch")):
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)


def test_sparse_softmax_is_refused_with_what_to_do():
    adjacency = kiln.sparse_coo_tensor(kiln.tensor(EDGES), kiln.ones(10), (6, 6))
    with pytest.raises(Exception, match="masked_fill"):
        kiln.sparse.softmax(adjacency, 1)


def _load(name, strict):
    lib, nn, _ = libraries(name)
    backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bigger = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    state = dict(backbone.state_dict(), extra=lib.zeros(1))
    return bigger.load_state_dict(state, strict=strict), backbone.load_state_dict(backbone.state_dict()), bigger, backbone


def test_load_state_dict_returns_the_incompatible_keys_as_torch():
    require_torch()
    (ours, our_full, bigger, backbone), (theirs, their_full, _, _) = _load("kiln", False), _load("torch", False)
    assert ours.missing_keys == theirs.missing_keys == ["2.weight", "2.bias"]
    assert ours.unexpected_keys == theirs.unexpected_keys == ["extra"]
    assert tuple(ours) == (ours.missing_keys, ours.unexpected_keys)
    assert repr(our_full) == repr(their_full) == "<All keys matched successfully>"
    np.testing.assert_array_equal(np.asarray(bigger[0].weight.detach().numpy()), np.asarray(backbone[0].weight.detach().numpy()))
    with pytest.raises(Exception, match="missing keys"):
        _load("kiln", True)
