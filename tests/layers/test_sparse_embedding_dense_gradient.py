"""``nn.Embedding(sparse=True)`` / ``nn.EmbeddingBag(sparse=True)`` (the reference DLRM's tables; kiln refused them):
the gradient (a sparse COO ``.grad`` eagerly, ``frontend/sparse_grad.py``) and SGD, SGD with momentum and Adagrad train
as PyTorch's sparse updates do; vs torch 2.13 in float64, repeated indices included. ``SparseAdam``:
tests/optim/test_sparse_adam_vs_torch.py."""

from __future__ import annotations

import numpy as np
import pytest

import kiln

TABLE = np.random.default_rng(0).standard_normal((10, 3))
INDICES, OFFSETS = np.array([1, 2, 4, 1, 4, 3, 2, 1]), np.array([0, 2, 2, 5])  # row 1 thrice, rows 0, 5-9 never

OPTIMIZERS = {
    "SGD": lambda lib, params: lib.optim.SGD(params, lr=0.1),
    "SGD momentum": lambda lib, params: lib.optim.SGD(params, lr=0.1, momentum=0.9),
    "Adagrad": lambda lib, params: lib.optim.Adagrad(params, lr=0.1, initial_accumulator_value=0.1, lr_decay=0.01),
}


def _trained_table(lib, layer, optimizer, steps=3):
    if layer == "Embedding":
        table = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE), freeze=False, sparse=True)
        lookup = lambda: table(lib.tensor(INDICES)).sum(0)
    else:
        table = lib.nn.EmbeddingBag.from_pretrained(lib.tensor(TABLE), freeze=False, mode="sum", sparse=True)
        lookup = lambda: table(lib.tensor(INDICES), lib.tensor(OFFSETS))
    opt = OPTIMIZERS[optimizer](lib, table.parameters())
    grads = []
    for _ in range(steps):
        opt.zero_grad()
        (lookup() * lib.tensor(np.linspace(-1, 2, 3))).square().sum().backward()
        grad = table.weight.grad
        grads.append(grad.to_dense().numpy() if grad.is_sparse else grad.numpy())
        opt.step()
    return np.array(grads), table.weight.detach().numpy()


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("layer", ["Embedding", "EmbeddingBag"])
def test_sparse_tables_train_as_torchs_sparse_updates(layer, optimizer, float64_default):
    torch = float64_default
    (their_grads, theirs), (our_grads, ours) = (_trained_table(lib, layer, optimizer) for lib in (torch, kiln))
    np.testing.assert_allclose(our_grads, their_grads, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(ours[[0, 5, 6, 7, 8, 9]], TABLE[[0, 5, 6, 7, 8, 9]])  # rows never looked up stay
