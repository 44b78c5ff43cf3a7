"""``nn.Embedding(sparse=True)`` / ``F.embedding(sparse=True)`` / ``nn.EmbeddingBag(sparse=True)`` give the weight a
sparse COO ``.grad`` as torch 2.13's: the same uncoalesced entries (one per lookup, in lookup order, ``padding_idx``
positions left out), values, coalesced form, accumulation and refusals (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

TABLE = np.random.default_rng(0).standard_normal((7, 3))
INDICES = [[0, 2, 2], [1, 5, 0]]
MIX = np.linspace(-1.0, 2.0, 3)


def _values(tensor):
    return np.array(tensor.detach().numpy())


def _entries(grad):
    """(indices, values) of a sparse gradient, uncoalesced, and of its coalesced form."""
    coalesced = grad.coalesce()
    return (_values(grad._indices()), _values(grad._values()), _values(coalesced.indices()), _values(coalesced.values()))


def _embedding_grad(lib, how, padding_idx=None):
    weight = lib.nn.Parameter(lib.tensor(TABLE))
    if how == "module":
        layer = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE), freeze=False, sparse=True, padding_idx=padding_idx)
        weight, lookup = layer.weight, lambda idx: layer(idx)
    else:
        lookup = lambda idx: lib.nn.functional.embedding(idx, weight, padding_idx=padding_idx, sparse=True)
    (lookup(lib.tensor(INDICES)).sin() * lib.tensor(MIX)).sum().backward()
    return weight.grad


@pytest.mark.parametrize("padding_idx", [None, 1, -2])
@pytest.mark.parametrize("how", ["module", "functional"])
def test_embedding_sparse_grad_entries_as_torchs(how, padding_idx, float64_default):
    torch = float64_default
    ours, theirs = _embedding_grad(kiln, how, padding_idx), _embedding_grad(torch, how, padding_idx)
    assert ours.is_sparse and ours.layout is kiln.sparse_coo and not ours.is_coalesced() and not theirs.is_coalesced()
    assert tuple(ours.shape) == tuple(theirs.shape) and ours.dtype is kiln.float64 and ours._nnz() == theirs._nnz()
    for mine, torchs in zip(_entries(ours), _entries(theirs)):
        np.testing.assert_allclose(mine, torchs, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(_values(ours.to_dense()), _values(theirs.to_dense()), rtol=1e-14, atol=1e-15)
    coalesced = ours.coalesce()
    assert coalesced.is_coalesced() and coalesced.coalesce() is coalesced


@pytest.mark.parametrize("padding_idx", [None, 2])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_embedding_bag_sparse_grad_entries_as_torchs(mode, padding_idx, float64_default):
    torch = float64_default

    def grad(lib):
        bag = lib.nn.EmbeddingBag.from_pretrained(lib.tensor(TABLE), freeze=False, mode=mode, sparse=True, padding_idx=padding_idx)
        weights = lib.tensor([0.5, -1.0, 2.0, 1.5, 3.0, 0.25]) if mode == "sum" else None
        out = bag(lib.tensor([0, 2, 2, 5, 1, 3]), lib.tensor([0, 3, 3]), per_sample_weights=weights)
        (out.cos() * lib.tensor(MIX)).sum().backward()
        return bag.weight.grad

    ours, theirs = grad(kiln), grad(torch)
    for mine, torchs in zip(_entries(ours), _entries(theirs)):
        np.testing.assert_allclose(mine, torchs, rtol=1e-14, atol=1e-15)


def test_two_backwards_concatenate_and_zero_grad_empties_as_torchs(float64_default):
    torch = float64_default

    def grads(lib):
        layer = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE), freeze=False, sparse=True)
        layer(lib.tensor([[0, 2], [2, 1]])).square().sum().backward()
        layer(lib.tensor([4, 1])).sum().backward()  # concatenated: 6 entries
        first = _entries(layer.weight.grad)
        layer.zero_grad(set_to_none=False)
        empty = layer.weight.grad
        assert empty.is_sparse and empty._nnz() == 0 and empty.is_coalesced()
        layer(lib.tensor([3, 3])).sum().backward()
        return first, _entries(layer.weight.grad), layer.weight.grad.data.is_sparse

    (our_first, our_after, our_data), (their_first, their_after, their_data) = grads(kiln), grads(torch)
    for mine, torchs in zip([*our_first, *our_after], [*their_first, *their_after]):
        np.testing.assert_allclose(mine, torchs, rtol=1e-14, atol=1e-15)
    assert our_data and their_data


def test_a_weight_also_read_densely_gets_a_dense_grad_as_torchs(float64_default):
    torch = float64_default

    def grad(lib, order):
        layer = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE), freeze=False, sparse=True)
        losses = [lambda: layer(lib.tensor([1, 3, 1])).square().sum(), lambda: (layer.weight * 2).sin().sum()]
        if order == "together":
            (losses[0]() + losses[1]()).backward()
        else:
            for loss in (losses if order == "sparse first" else losses[::-1]):
                loss().backward()
        return layer.weight.grad

    for order in ("together", "sparse first", "dense first"):
        ours, theirs = grad(kiln, order), grad(torch, order)
        assert not ours.is_sparse and not theirs.is_sparse, order
        np.testing.assert_allclose(np.asarray(ours), _values(theirs), rtol=1e-14, atol=1e-15, err_msg=order)


def test_sparse_grad_surface_as_torchs(float64_default):
    torch = float64_default
    ours, theirs = _embedding_grad(kiln, "module"), _embedding_grad(torch, "module")
    for grad in (ours, theirs):
        with pytest.raises(RuntimeError, match="Cannot get indices on an uncoalesced tensor, please call .coalesce"):
            grad.indices()
        with pytest.raises(RuntimeError, match="Cannot get values on an uncoalesced tensor"):
            grad.values()
        with pytest.raises(TypeError, match="can't convert Sparse layout tensor to numpy"):
            grad.numpy()
    assert (ours.sparse_dim(), ours.dense_dim(), ours.dim(), ours.requires_grad) == \
        (theirs.sparse_dim(), theirs.dense_dim(), theirs.dim(), theirs.requires_grad)
    assert ours.data is not ours and ours.data._nnz() == ours._nnz()
    np.testing.assert_allclose(_values(ours.norm()), _values(theirs.norm()), rtol=1e-14)
    np.testing.assert_allclose(_values((ours * 3).to_dense()), _values((theirs * 3).to_dense()), rtol=1e-14)
    assert str(kiln.zeros(2).layout) == "kiln.strided" and str(ours.layout) == "kiln.sparse_coo"


def test_sparse_lookups_torch_refuses_are_refused(float64_default):
    torch = float64_default
    for lib in (torch, kiln):
        bag = lib.nn.EmbeddingBag(5, 2, mode="max", sparse=True)
        with pytest.raises(ValueError, match="max mode does not support sparse weights"):
            bag(lib.tensor([0, 1]), lib.tensor([0]))
        layer = lib.nn.Embedding(5, 2, sparse=True, scale_grad_by_freq=True)
        with pytest.raises(RuntimeError, match="scale_grad_by_freq not supported with sparse gradients"):
            layer(lib.tensor([0, 1, 1])).sum().backward()
        layer = lib.nn.Embedding(5, 2, sparse=True)
        layer(lib.tensor([0, 1, 1])).sum().backward()
        with pytest.raises(NotImplementedError):
            lib.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)


def test_max_norm_renormalizes_and_the_grad_stays_sparse(float64_default):
    torch = float64_default

    def run(lib):
        layer = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE * 3), freeze=False, sparse=True, max_norm=1.0)
        layer(lib.tensor([[0, 4], [4, 6]])).sin().sum().backward()
        return _values(layer.weight), _entries(layer.weight.grad)

    (our_weight, ours), (their_weight, theirs) = run(kiln), run(torch)
    np.testing.assert_allclose(our_weight, their_weight, rtol=1e-14)
    for mine, torchs in zip(ours, theirs):
        np.testing.assert_allclose(mine, torchs, rtol=1e-13, atol=1e-15)


def test_distributed_data_parallel_refuses_a_sparse_grad_clearly():
    from one_rank import OneRank

    model = kiln.nn.parallel.DistributedDataParallel(kiln.nn.Embedding(5, 2, sparse=True), process_group=OneRank())
    with pytest.raises(NotImplementedError, match=r"DistributedDataParallel: a sparse .grad .* sparse=False"):
        model(kiln.tensor([0, 1])).sum().backward()


def test_grad_scaler_unscales_a_sparse_grad_as_torchs():
    torch = require_torch()

    def train(lib):
        layer = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE.astype(np.float32)), freeze=False, sparse=True)
        optimizer = lib.optim.SGD(layer.parameters(), lr=0.1)
        scaler = lib.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        for step, scale in enumerate([1.0, 1.0, float("inf")]):  # the last step's gradient overflows: skipped
            optimizer.zero_grad()
            scaler.scale((layer(lib.tensor([[0, 2], [2, 5]])).sin() * scale).sum()).backward()
            scaler.step(optimizer)
            scaler.update()
        return layer.weight.detach().numpy().copy(), scaler.get_scale()

    (ours, our_scale), (theirs, their_scale) = train(kiln), train(torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert our_scale == their_scale == 2.0 ** 9
