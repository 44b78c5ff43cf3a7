"""``torch.optim.SparseAdam`` and the sparse paths of ``SGD`` and ``Adagrad`` on ``nn.Embedding(sparse=True)``'s
sparse ``.grad``, vs torch 2.13: parameters and state after a few steps (float64, and float32 once), each step
looking up different rows (rows absent from a step keep their moments undecayed), and torch's refusals."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

TABLE = np.random.default_rng(0).standard_normal((10, 4))  # row 9 never looked up
BATCHES = [[[1, 2, 2], [4, 1, 3]], [[0, 0, 5], [2, 7, 7]], [[1, 8, 3], [3, 3, 6]], [[4, 4, 4], [2, 5, 1]]]
MIX = np.linspace(-1.0, 2.0, 4)


def _train(lib, make_optimizer, dtype=np.float64, steps=4):
    table = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE.astype(dtype)), freeze=False, sparse=True)
    optimizer = make_optimizer(lib, table.parameters())
    for batch in BATCHES[:steps]:
        optimizer.zero_grad()
        (table(lib.tensor(batch)).sin() * lib.tensor(MIX.astype(dtype))).sum().backward()
        optimizer.step()
    return table.weight.detach().numpy().copy(), optimizer


OPTIMIZERS = {
    "SparseAdam": lambda lib, params: lib.optim.SparseAdam(params, lr=0.1),
    "SparseAdam maximize": lambda lib, params: lib.optim.SparseAdam(list(params), lr=0.05, betas=(0.8, 0.99), eps=1e-6, maximize=True),
    "SGD": lambda lib, params: lib.optim.SGD(params, lr=0.1),
    "SGD nesterov": lambda lib, params: lib.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
    "SGD dampening maximize": lambda lib, params: lib.optim.SGD(params, lr=0.1, momentum=0.5, dampening=0.3, maximize=True),
    "Adagrad": lambda lib, params: lib.optim.Adagrad(params, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_sparse_updates_as_torchs(name, float64_default):
    torch = float64_default
    (ours, _), (theirs, _) = (_train(lib, OPTIMIZERS[name]) for lib in (kiln, torch))
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(ours[9], TABLE[9])
    assert not np.allclose(ours[:9], TABLE[:9])


def test_sparse_adam_state_and_untouched_rows_as_torchs(float64_default):
    torch = float64_default
    (ours, our_opt), (theirs, their_opt) = (_train(lib, OPTIMIZERS["SparseAdam"]) for lib in (kiln, torch))
    our_param, their_param = our_opt.param_groups[0]["params"][0], their_opt.param_groups[0]["params"][0]
    our_state, their_state = our_opt.kiln_state_dict()["state"], their_opt.state[their_param]
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(our_state["0"][name], their_state[name].numpy(), rtol=1e-13, atol=1e-15)
    assert our_opt.step_count == their_state["step"] == 4
    np.testing.assert_array_equal(ours[9], TABLE[9])  # never looked up: no move, no moments
    np.testing.assert_array_equal(our_state["0"]["exp_avg"][9], 0.0)


def test_sparse_adam_in_float32_as_torchs():
    torch = require_torch()
    (ours, _), (theirs, _) = (_train(lib, OPTIMIZERS["SparseAdam"], np.float32) for lib in (kiln, torch))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


REFUSING = {
    "Adam": ("Adam does not support sparse gradients, please consider SparseAdam instead", {}),
    "AdamW": ("Adam does not support sparse gradients, please consider SparseAdam instead", {}),
    "RMSprop": ("RMSprop does not support sparse gradients", {}),
    "Adamax": ("Adamax does not support sparse gradients", {}),
    "NAdam": ("NAdam does not support sparse gradients", {}),
    "RAdam": ("RAdam does not support sparse gradients", {}),
    "Adadelta": ("Adadelta does not support sparse gradients", {}),
    "Rprop": ("Rprop does not support sparse gradients", {}),
    "ASGD": ("ASGD does not support sparse gradients", {}),
    "SGD": (r"add\(sparse, dense\) is not supported. Use add\(dense, sparse\) instead.", {"weight_decay": 0.1}),
    "Adagrad": ("weight_decay option is not compatible with sparse gradients", {"weight_decay": 0.1}),
}


@pytest.mark.parametrize("name", sorted(REFUSING))
def test_optimizers_refuse_sparse_gradients_as_torchs(name, float64_default):
    torch = float64_default
    message, options = REFUSING[name]
    for lib in (torch, kiln):
        with pytest.raises(RuntimeError, match=message):
            _train(lib, lambda lib, params: getattr(lib.optim, name)(params, lr=0.1, **options), steps=1)


def test_sparse_adam_refuses_dense_gradients_and_bad_options_as_torchs(float64_default):
    torch = float64_default
    for lib in (torch, kiln):
        layer = lib.nn.Embedding(5, 2)
        optimizer = lib.optim.SparseAdam(list(layer.parameters()))
        layer(lib.tensor([0, 1])).sum().backward()
        with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients, please consider Adam instead"):
            optimizer.step()
        for options, message in [({"lr": 0.0}, "Invalid learning rate: 0.0"), ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
                                 ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0")]:
            with pytest.raises(ValueError, match=message):
                lib.optim.SparseAdam(list(layer.parameters()), **options)
        assert lib.optim.SparseAdam(list(layer.parameters())).defaults == \
            {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "maximize": False}


def test_sparse_adam_state_resumes_across_libraries():
    torch = require_torch()  # float32 default dtype: a step saved as a float32 tensor would skew torch's bias correction
    (_, ours), (_, theirs) = (_train(lib, OPTIMIZERS["SparseAdam"], steps=2) for lib in (kiln, torch))
    saved = ours.torch_state_dict()
    assert saved["state"][0]["step"] == theirs.state_dict()["state"][0]["step"] == 2
    as_torch = {**saved, "state": {0: {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in saved["state"][0].items()}}}
    resumed = []
    for lib, state in ((torch, as_torch), (kiln, theirs.state_dict())):
        table = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE), freeze=False, sparse=True)
        optimizer = lib.optim.SparseAdam(list(table.parameters()), lr=0.1)
        optimizer.load_state_dict(state)
        (table(lib.tensor(BATCHES[2])).sin() * lib.tensor(MIX)).sum().backward()
        optimizer.step()
        resumed.append(table.weight.detach().numpy().copy())
    np.testing.assert_allclose(resumed[0], resumed[1], rtol=1e-13, atol=1e-15)


def test_lbfgs_densifies_a_sparse_grad_as_torchs(float64_default):
    torch = float64_default

    def train(lib):
        table = lib.nn.Embedding.from_pretrained(lib.tensor(TABLE), freeze=False, sparse=True)
        optimizer = lib.optim.LBFGS(table.parameters(), lr=0.5, max_iter=5)

        def closure():
            optimizer.zero_grad()
            loss = (table(lib.tensor(BATCHES[0])).sin() * lib.tensor(MIX)).sum().square()
            loss.backward()
            return loss

        optimizer.step(closure)
        return table.weight.detach().numpy().copy()

    np.testing.assert_allclose(train(kiln), train(torch), rtol=1e-11, atol=1e-13)


def test_sparse_adam_refuses_a_dense_gradient_with_torchs_words():
    # (a kiln.compile'd model's sparse lookup runs eagerly, its gradient sparse: tests/runtime/test_compiled_forward_sparse_embedding.py)
    plain = kiln.nn.Embedding(6, 2)
    plain(kiln.tensor([0, 3])).sum().backward()
    with pytest.raises(RuntimeError, match=r"please consider Adam instead$"):  # torch's words alone otherwise
        kiln.optim.SparseAdam(list(plain.parameters())).step()
