"""Porting probe: entropic optimal transport as jeanfeydy/geomloss and PythonOT/POT write it
(``e2e/sinkhorn_program.py``, written once, ``torch`` being torch or kiln), compared with torch in float64 to 1e-10:
losses, gradients with respect to the points, the trained state, transport plans and dual potentials.

- geomloss' ``SamplesLoss("sinkhorn", p, blur, scaling)``, tensorized backend: uniform weights by
  ``torch.ones(N).type_as(x) / N``, ``log_weights`` (``a.log()`` then ``a_log[a <= 0] = -100000``), the cost
  matrices ``cost(x, y.detach())`` by ``squared_distances`` (``D_xx - 2 * torch.matmul(x, y.permute(0, 2, 1)) +
  D_yy``, halved) or ``distances`` (``torch.sqrt(torch.clamp_min(..., 1e-8))``, p=1), or by ``torch.cdist(x, y) ** 2``
  (POT's ``ot.dist``) or ``((x[:, :, None] - y[:, None]) ** 2).sum(-1)`` as a ``cost=`` callable; ``max_diameter``
  (``torch.stack((x.min(dim=0)[0], ...)).min(dim=0)[0]``, ``.norm().item()``) and the epsilon-scaling schedule by
  ``np.arange`` of logs; ``sinkhorn_loop``: ``torch.is_grad_enabled()``, ``torch.set_grad_enabled(False)``, the
  symmetrized log-domain updates by ``softmin_tensorized`` (``-eps * (h_y.view(B, 1, -1) - C_xy / eps)
  .logsumexp(2).view(B, -1)``) for the four potentials (debiased), grad mode restored, and the last extrapolation
  through ``(...).detach()`` inputs, which carries the gradient; ``sinkhorn_cost`` (the debiased divergence by
  ``scal``: ``(a.reshape(B, -1) * f.reshape(B, -1)).sum(1)``); ``potentials=True``; batched ``(B, N, D)`` inputs with
  given weights (zeros among them).
- The gradient-flow tutorial: ``x_i.requires_grad = True``, ``[g] = torch.autograd.grad(L, [x_i])``, ``x_i.data -=
  lr * len(x_i) * g``; eagerly and with the step one ``kiln.compile(fullgraph=True)`` graph.
- A generator MLP (``nn.Sequential`` of ``nn.Linear``/``nn.Tanh``) trained with the divergence as its loss (Adam):
  eagerly, and with the step one ``kiln.compile(fullgraph=True)`` graph for each cost.
- POT's ``sinkhorn_log`` (``-M / reg``, ``torch.logsumexp(Mr + u[:, None], 0)``, the marginal error every tenth
  iteration by ``torch.sqrt(torch.sum((tmp2 - b) ** 2))`` and ``if err < stopThr: break``, ``log=True``) and
  ``sinkhorn2`` (``torch.sum(M * G)``, differentiated through all the iterations) on ``ot.dist``'s ``torch.cdist(x, y)
  ** 2``, the gradient reaching the points.

Compiled: ``max_diameter``'s ``.item()`` of a value computed from the weights cannot be traced (torch.compile's
fullgraph refuses ``.item()`` as well); the fullgraph steps pass geomloss' own ``diameter=`` argument, and the step
without it runs eagerly under ``kiln.compile`` (warned once), as torch.compile falls back. The geomloss gradient does
not show the ``no_grad`` loop (its last extrapolation detaches every potential, so the gradient is the same with the
loop differentiated: measured 0.0 apart in torch), so ``test_geomloss_loop_runs_without_a_graph`` checks the grad mode
itself. What broke: nothing; everything agreed as first written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot
from e2e.sinkhorn_program import geomloss, pot, two_clouds
from oracles import libraries

SOURCES, TARGETS = two_clouds()
NOISE = np.random.default_rng(3).standard_normal((32, 2))
COSTS = [None, "cdist", "broadcast"]
COST_IDS = ["squared_distances", "torch.cdist", "broadcast difference"]
FLOW_STEPS, LR = 4, 0.05


@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_geomloss_gradient_flow_as_torch(float64_default, cost):
    """The tutorial's ``gradient_flow`` for a few steps: the losses and the points' positions."""
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        loss = geomloss(torch, nn)("sinkhorn", p=2, blur=0.05, scaling=0.5, cost=cost)
        x_i, y_j = torch.tensor(SOURCES), torch.tensor(TARGETS)
        x_i.requires_grad = True
        record = {"losses": []}
        for _ in range(FLOW_STEPS):
            L_ab = loss(x_i, y_j)
            [g] = torch.autograd.grad(L_ab, [x_i])
            record.setdefault("first gradient", array(g))
            x_i.data -= LR * len(x_i) * g
            record["losses"].append(L_ab.item())
        records.append({**record, "positions": array(x_i), "requires_grad": x_i.requires_grad})
    assert_same_records(records[0], records[1])
    assert records[1]["losses"][-1] < records[1]["losses"][0]


def test_geomloss_gradient_flow_compiled_step_as_torch(float64_default):
    """The flow's step (``autograd.grad`` and the ``.data`` write to the points it closes over) one
    ``kiln.compile(fullgraph=True)`` graph, ``diameter`` given."""
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        loss = geomloss(torch, nn)("sinkhorn", p=2, blur=0.05, scaling=0.5, diameter=2.0)
        x_i, y_j = torch.tensor(SOURCES), torch.tensor(TARGETS)
        x_i.requires_grad = True

        def step():
            L_ab = loss(x_i, y_j)
            [g] = torch.autograd.grad(L_ab, [x_i])
            x_i.data -= LR * len(x_i) * g
            return L_ab

        run = kiln.compile(step, fullgraph=True) if torch is kiln else step
        records.append({"losses": [run().item() for _ in range(FLOW_STEPS)], "positions": array(x_i)})
    assert_same_records(records[0], records[1])


def generator(torch, nn, F):
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))


def train_generator(torch, nn, F, model, steps=3):
    """The generator matched to the targets by Adam on the divergence (the diameter from the data: ``.item()``)."""
    loss_fn = geomloss(torch, nn)("sinkhorn", p=2, blur=0.05, scaling=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    z, y = torch.tensor(NOISE), torch.tensor(TARGETS)
    record = {"losses": []}
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model(z), y)
        loss.backward()
        record.setdefault("grads", gradients(model))
        optimizer.step()
        record["losses"].append(loss.item())
    record["state"] = snapshot(model)
    return record


def test_geomloss_generator_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(generator, train_generator)
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def generator_batch(lib):
    return lib.tensor(NOISE), lib.tensor(TARGETS)


def adam(torch, model):
    return torch.optim.Adam(model.parameters(), lr=1e-2)


def divergence_with(cost):
    def loss_of(torch, nn, F, model, z, y):
        return geomloss(torch, nn)("sinkhorn", p=2, blur=0.05, scaling=0.5, diameter=2.0, cost=cost)(model(z), y)

    return loss_of


@pytest.mark.parametrize("cost", COSTS, ids=COST_IDS)
def test_geomloss_generator_compiled_step_as_torch(float64_default, cost):
    ours, theirs = run_in_lockstep(generator, compiled_step_training(generator_batch, adam, divergence_with(cost)))
    assert_same_records(ours, theirs)


def train_generator_compiled(torch, nn, F, model):
    """``train_generator``'s step under ``kiln.compile`` (no fullgraph), the diameter read by ``.item()``."""
    loss_fn = geomloss(torch, nn)("sinkhorn", p=2, blur=0.05, scaling=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step(z, y):
        optimizer.zero_grad()
        loss = loss_fn(model(z), y)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step) if torch is kiln else step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [run(*generator_batch(torch)).item() for _ in range(3)]
    return {"losses": losses, "state": snapshot(model), "warnings": [str(w.message) for w in caught]}


def test_geomloss_generator_step_with_item_falls_back_as_torch_compile_does(float64_default):
    ours, theirs = run_in_lockstep(generator, train_generator_compiled)
    warned = ours.pop("warnings")
    assert theirs.pop("warnings") == []
    assert len(warned) == 1 and "runs eagerly" in warned[0] and ".norm().item()" in warned[0]
    assert_same_records(ours, theirs)


def test_geomloss_loop_runs_without_a_graph(float64_default):
    """Inside ``sinkhorn_loop`` the potentials carry no gradient (``torch.set_grad_enabled(False)``), the grad mode is
    restored after it, and the extrapolated potentials on the sources' side carry one (those on the targets' side see
    only ``y`` and ``x.detach()``): both libraries."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        seen = []
        logsumexp = torch.Tensor.logsumexp

        def spying(self, *args, **kwargs):
            result = logsumexp(self, *args, **kwargs)
            seen.append((torch.is_grad_enabled(), result.requires_grad))
            return result

        x = torch.tensor(SOURCES, requires_grad=True)
        setattr(torch.Tensor, "logsumexp", spying)
        try:
            loss = geomloss(torch, nn)("sinkhorn", p=2, blur=0.05, scaling=0.5)(x, torch.tensor(TARGETS))
        finally:
            setattr(torch.Tensor, "logsumexp", logsumexp)
        assert torch.is_grad_enabled() and loss.requires_grad
        assert seen[:-4] == [(False, False)] * (len(seen) - 4) and len(seen) > 20, name
        assert seen[-4:] == [(True, True), (True, False)] * 2, name  # f_ba, g_ab, f_aa, g_bb: y is no leaf


@pytest.mark.parametrize("p", [1, 2])
def test_geomloss_batched_weighted_divergence_and_potentials_as_torch(float64_default, p):
    """``loss(α, x, β, y)`` on a batch of three clouds with given weights (five zeros in each α): the divergences, the
    gradients with respect to the sources, and the dual potentials (``potentials=True``)."""
    rng = np.random.default_rng(4)
    alpha = rng.uniform(0, 1, (3, len(SOURCES)))
    alpha[:, :5] = 0
    alpha /= alpha.sum(1, keepdims=True)
    beta = rng.uniform(0, 1, (3, len(TARGETS)))
    beta /= beta.sum(1, keepdims=True)
    sources = np.stack([SOURCES + 0.1 * k for k in range(3)])
    targets = np.stack([TARGETS] * 3)
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        SamplesLoss = geomloss(torch, nn)
        x = torch.tensor(sources, requires_grad=True)
        a, b, y = torch.tensor(alpha), torch.tensor(beta), torch.tensor(targets)
        values = SamplesLoss("sinkhorn", p=p, blur=0.05, scaling=0.7)(a, x, b, y)
        values.sum().backward()
        f, g = SamplesLoss("sinkhorn", p=p, blur=0.05, potentials=True)(a, x, b, y)
        records.append({"values": array(values), "grad": array(x.grad), "f": array(f), "g": array(g)})
    assert_same_records(records[0], records[1])
    assert records[0]["values"].shape == (3,) and (records[1]["values"] > 0).all()


def test_pot_sinkhorn_log_and_sinkhorn2_as_torch(float64_default):
    """POT's log-domain solver to ``stopThr`` (its early stop on the marginal error read by ``.item()``), the plan, its
    log, and ``sinkhorn2``'s cost with its gradient with respect to the sources through every iteration."""
    records = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        dist, sinkhorn_log, sinkhorn2 = pot(torch)
        a, b = torch.ones(len(SOURCES)) / len(SOURCES), torch.ones(len(TARGETS)) / len(TARGETS)
        xs, xt = torch.tensor(SOURCES, requires_grad=True), torch.tensor(TARGETS)
        M = dist(xs, xt)
        G, log = sinkhorn_log(a, b, M, 0.05, log=True)
        cost = sinkhorn2(a, b, M, 0.05)
        cost.backward()
        records.append({"plan": array(G), "log_u": array(log["log_u"]), "errors": log["err"],
                        "iterations": log["niter"], "cost": cost.item(), "grad": array(xs.grad)})
    assert_same_records(records[0], records[1])
    assert 10 < records[0]["iterations"] < 999 and records[0]["errors"][-1] < 1e-9  # stopped early
    np.testing.assert_allclose(records[0]["plan"].sum(0), 1 / len(TARGETS), rtol=1e-7)
    np.testing.assert_allclose(records[0]["plan"].sum(1), 1 / len(SOURCES), rtol=1e-12)
