"""Porting probe: influence functions as nimarb/pytorch_influence_functions writes them (``torch`` is torch or kiln),
in lockstep with torch 2.13 from kiln's initial weights, float64 to 1e-10.

``grad_z`` (``list(grad(loss, params, create_graph=True))`` with ``model.eval()``), ``hvp`` (Pearlmutter's trick:
``grad(y, w, retain_graph=True, create_graph=True)``, ``elemwise_products += torch.sum(grad_elem * v_elem)`` from a
Python ``0``, ``grad(elemwise_products, w, create_graph=True)``), ``s_test``'s LiSSA recursion (``v.copy()`` of a list,
``h_estimate = [_v + (1 - damp) * _h_e - _hv / scale ...]`` over a data loader, ``break`` after one batch), and the
influence of each training point, ``-sum(torch.sum(k * j) for k, j in zip(grad_z_vec, s_test_vec)) / n``, with
``calc_loss`` as ``F.nll_loss(F.log_softmax(y), t)``. Eagerly, and with ``s_test`` one ``kiln.compile(fullgraph=True)``
function (a Python loop of double backwards).

What broke: nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep, snapshot

RNG = np.random.default_rng(12)
TRAIN_X, TRAIN_T = RNG.standard_normal((8, 4)), RNG.integers(0, 3, 8)
TEST_X, TEST_T = RNG.standard_normal((1, 4)), RNG.integers(0, 3, 1)


def influence_program(torch, F):
    grad = torch.autograd.grad

    def calc_loss(y, t):
        y = F.log_softmax(y, dim=-1)
        loss = F.nll_loss(y, t, weight=None, reduction='mean')
        return loss

    def grad_z(z, t, model):
        model.eval()
        y = model(z)
        loss = calc_loss(y, t)
        params = [p for p in model.parameters() if p.requires_grad]
        return list(grad(loss, params, create_graph=True))

    def hvp(y, w, v):
        if len(w) != len(v):
            raise(ValueError("w and v must have the same length."))
        first_grads = grad(y, w, retain_graph=True, create_graph=True)
        elemwise_products = 0
        for grad_elem, v_elem in zip(first_grads, v):
            elemwise_products += torch.sum(grad_elem * v_elem)
        return_grads = grad(elemwise_products, w, create_graph=True)
        return return_grads

    def s_test(z_test, t_test, model, z_loader, damp=0.01, scale=25.0, recursion_depth=4):
        v = grad_z(z_test, t_test, model)
        h_estimate = v.copy()
        for i in range(recursion_depth):
            for x, t in z_loader:
                y = model(x)
                loss = calc_loss(y, t)
                params = [p for p in model.parameters() if p.requires_grad]
                hv = hvp(loss, params, h_estimate)
                h_estimate = [
                    _v + (1 - damp) * _h_e - _hv / scale
                    for _v, _h_e, _hv in zip(v, h_estimate, hv)]
                break
        return h_estimate

    return grad_z, s_test


def influences(compiled):
    def train(torch, nn, F, model):
        grad_z, s_test = influence_program(torch, F)
        loader = [(torch.tensor(TRAIN_X[i:i + 4]), torch.tensor(TRAIN_T[i:i + 4])) for i in (4, 0)]

        def s_test_of(z_test, t_test):
            return [h.detach() for h in s_test(z_test, t_test, model, loader)]

        run = kiln.compile(s_test_of, fullgraph=True) if compiled and torch is kiln else s_test_of
        s_test_vec = run(torch.tensor(TEST_X), torch.tensor(TEST_T))
        scores = []
        for i in range(len(TRAIN_X)):
            grad_z_vec = grad_z(torch.tensor(TRAIN_X[i:i + 1]), torch.tensor(TRAIN_T[i:i + 1]), model)
            tmp_influence = -sum(
                [torch.sum(k * j).data for k, j in zip(grad_z_vec, s_test_vec)]) / len(TRAIN_X)
            scores.append(float(tmp_influence))
        return {"s_test": {str(k): array(h) for k, h in enumerate(s_test_vec)}, "influence": scores,
                "helpful": list(np.argsort(scores)), "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-s_test"])
def test_influence_functions_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)),
                                   influences(compiled))
    assert_same_records(ours, theirs)
