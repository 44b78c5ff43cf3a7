"""Porting probes: a Neural ODE and SimCLR, each written once as PyTorch users write them (``torch`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights in float64: the first forward, the first gradients, the losses
and the state after a few steps agree to 1e-10, eagerly and with the whole training step in one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

- Neural ODE: an MLP vector field ``odefunc(t, y)`` (time concatenated to the state), integrated by a fixed-step RK4
  in a Python loop over ``torch.linspace`` times (0-d tensors from iterating a tensor), the trajectory ``stack``ed,
  MSE on the final state plus a kinetic-energy regulariser, backprop through the solver, Adam; and the vector field's
  Jacobian at each point by ``torch.func.vmap(torch.func.jacrev(...))`` over ``functional_call``, its trace (the
  divergence, as in FFJORD) and Frobenius norm used as a regulariser in the loss (backprop through ``jacrev``).
- Continuous normalising flow (FFJORD without the adjoint): the state ``(z, log p)``, the field's exact divergence by
  one ``torch.autograd.grad(..., create_graph=True)`` per dimension inside ``torch.enable_grad()`` after
  ``z.requires_grad_(True)``, RK4 on the tuple state from t=1 to 0, ``-log p(x)`` by the change of variables, Adam.
- SimCLR: an encoder with BatchNorm and a projection head on two fed-in augmented views; the NT-Xent loss
  (``F.normalize``, ``z @ z.T / tau``, the diagonal masked by ``fill_diagonal_(float('-inf'))`` or by
  ``masked_fill(torch.eye(n).bool(), -inf)``, ``F.cross_entropy`` with the shifted labels), or by
  ``F.cosine_similarity`` of every broadcast pair, or sthalles/SimCLR's ``info_nce_loss`` (positives and negatives
  picked by boolean masks), or HobbitLong's ``SupConLoss`` (``torch.scatter`` mask, max-subtracted logits); SGD with
  momentum and nesterov, weight decay on the weights only (two param groups), ``SequentialLR`` of a ``LinearLR``
  warmup and ``CosineAnnealingLR``, stepped outside the compiled step.

What broke: sthalles' ``similarity_matrix[~mask].view(2 * n, -1)`` (``mask = torch.eye(2 * n, dtype=torch.bool)``)
refused to trace (a boolean mask's count is data-dependent), so its compiled step raised under ``fullgraph=True`` (ran
eagerly without); a mask built from constants only is now known while tracing and gathers fixed positions
(``frontend/trace_known_values.py``, ``tests/frontend/test_known_mask_indexing_traced_vs_torch.py``). Under
``fullgraph=True`` the error shown was the symbolic-batch one (``tensor.concat cannot join along a symbolic dim``, with
advice to use static shapes), not the static retry's real one. Not compared: the CNF's ``self.nfe += 1`` counter in a
compiled step counts the trace's calls of the field (8), not each step's (24, as eager kiln and torch count):
a trace runs the Python once, where ``torch.compile`` replays such attribute writes at every call.
Everything else agreed to 1e-10 as first written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

# --- Neural ODE ------------------------------------------------------------------------------------------------------

STATE, POINTS, TIMES = 2, 5, 5


def ode_func(torch, nn, F, width=12):
    class ODEFunc(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(STATE + 1, width), nn.Tanh(), nn.Linear(width, STATE))

        def forward(self, t, y):
            t_column = torch.ones_like(y[..., :1]) * t
            return self.net(torch.cat([y, t_column], dim=-1))

    return ODEFunc()


def rk4_odeint(torch, func, y0, t):
    """Fixed-step classical Runge-Kutta over the times ``t``; the states at each time, stacked."""
    ys, y = [y0], y0
    for t0, t1 in zip(t[:-1], t[1:]):
        h = t1 - t0
        k1 = func(t0, y)
        k2 = func(t0 + h / 2, y + h * k1 / 2)
        k3 = func(t0 + h / 2, y + h * k2 / 2)
        k4 = func(t1, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ys.append(y)
    return torch.stack(ys)


def jacobian_terms(torch, func, t, ys):
    """The vector field's Jacobian at each state of ``ys`` (vmap of jacrev over a functional_call), its trace and
    squared Frobenius norm."""
    params = dict(func.named_parameters())

    def field(y):
        return torch.func.functional_call(func, params, (t, y))

    jacobians = torch.func.vmap(torch.func.jacrev(field))(ys)  # (points, state, state)
    return jacobians, torch.diagonal(jacobians, dim1=-2, dim2=-1).sum(-1), jacobians.pow(2).sum((-2, -1))


def _ode_data():
    rng = np.random.default_rng(0)
    y0 = rng.standard_normal((POINTS, STATE))
    rotation = np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]])
    return y0, y0 @ rotation.T * 0.8


def ode_loss(torch, F, func, y0, target, jacobian_weight):
    t = torch.linspace(0.0, 1.0, TIMES)
    trajectory = rk4_odeint(torch, func, y0, t)
    kinetic = torch.stack([func(ti, yi).pow(2).sum(-1).mean() for ti, yi in zip(t, trajectory)]).mean()
    loss = F.mse_loss(trajectory[-1], target) + 0.01 * kinetic
    if jacobian_weight:
        _, divergence, frobenius = jacobian_terms(torch, func, t[-1], trajectory[-1])
        loss = loss + jacobian_weight * frobenius.mean() + 1e-3 * divergence.abs().mean()
    return loss, trajectory


def train_ode(jacobian_weight, steps=3):
    y0_values, target_values = _ode_data()

    def train(torch, nn, F, func):
        optimizer = torch.optim.Adam(func.parameters(), lr=1e-2)
        y0, target = torch.tensor(y0_values), torch.tensor(target_values)
        record = {"losses": []}
        jacobians, divergence, _ = jacobian_terms(torch, func, torch.tensor(0.5), y0)
        record["jacobians"], record["divergence"] = array(jacobians), array(divergence)
        for _ in range(steps):
            loss, trajectory = ode_loss(torch, F, func, y0, target, jacobian_weight)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("trajectory", array(trajectory))
            record.setdefault("grads", gradients(func))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(func)
        return record

    return train


@pytest.mark.parametrize("jacobian_weight", [0.0, 0.05], ids=["plain", "jacobian-regularised"])
def test_neural_ode_trains_as_torch(jacobian_weight, float64_default):
    ours, theirs = run_in_lockstep(ode_func, train_ode(jacobian_weight))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("jacobian_weight", [0.0, 0.05], ids=["plain", "jacobian-regularised"])
def test_neural_ode_compiled_step_as_torch(jacobian_weight, float64_default):
    y0_values, target_values = _ode_data()

    def train(torch, nn, F, func):
        optimizer = torch.optim.Adam(func.parameters(), lr=1e-2)

        def train_step(y0, target):
            optimizer.zero_grad()
            loss, _ = ode_loss(torch, F, func, y0, target, jacobian_weight)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        batch = torch.tensor(y0_values), torch.tensor(target_values)
        return {"losses": [run(*batch).item() for _ in range(3)], "state": snapshot(func)}

    ours, theirs = run_in_lockstep(ode_func, train)
    assert_same_records(ours, theirs)


# --- Continuous normalising flow (FFJORD's exact divergence) --------------------------------------------------------


def cnf(torch, nn, F, width=8):
    class CNF(nn.Module):
        """The state is ``(z, log p)``; the divergence of the field, exactly, by one ``autograd.grad`` per dimension
        with ``create_graph=True`` (FFJORD's ``divergence_bf``), so training backpropagates through it."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(STATE + 1, width), nn.Tanh(), nn.Linear(width, STATE))
            self.nfe = 0

        def forward(self, t, states):
            z, _ = states
            self.nfe += 1
            with torch.enable_grad():
                z.requires_grad_(True)
                dz_dt = self.net(torch.cat([z, t * torch.ones_like(z[:, :1])], 1))
                divergence = 0.0
                for i in range(z.shape[1]):
                    divergence += torch.autograd.grad(dz_dt[:, i].sum(), z, create_graph=True)[0][:, i]
            return dz_dt, -divergence.view(-1, 1)

    return CNF()


def rk4_tuple_odeint(func, y0, t):
    """RK4 on a tuple state (torchdiffeq's ``odeint`` takes tuples); the final state."""
    y = y0
    for t0, t1 in zip(t[:-1], t[1:]):
        h = t1 - t0
        k1 = func(t0, y)
        k2 = func(t0 + h / 2, tuple(a + h / 2 * b for a, b in zip(y, k1)))
        k3 = func(t0 + h / 2, tuple(a + h / 2 * b for a, b in zip(y, k2)))
        k4 = func(t1, tuple(a + h * b for a, b in zip(y, k3)))
        y = tuple(a + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4) for a, b1, b2, b3, b4 in zip(y, k1, k2, k3, k4))
    return y


def cnf_negative_log_likelihood(torch, func, x):
    """Integrate the data from t=1 back to the standard normal at t=0; ``-log p(x)`` by the change of variables."""
    z0, delta_logp = rk4_tuple_odeint(func, (x, torch.zeros(x.shape[0], 1)), torch.tensor([1.0, 0.5, 0.0]))
    logp_z0 = -0.5 * (z0 ** 2).sum(1, keepdim=True) - math.log(2 * math.pi)
    return -(logp_z0 - delta_logp).mean()


def _cnf_data():
    return np.random.default_rng(2).standard_normal((POINTS, STATE)) * 0.5 + 1.0


def train_cnf(steps=3):
    def train(torch, nn, F, func):
        optimizer = torch.optim.Adam(func.parameters(), lr=1e-2)
        x, record = torch.tensor(_cnf_data()), {"losses": []}
        for _ in range(steps):
            loss = cnf_negative_log_likelihood(torch, func, x)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("grads", gradients(func))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"], record["nfe"] = snapshot(func), func.nfe
        return record

    return train


def test_continuous_normalizing_flow_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(cnf, train_cnf())
    assert_same_records(ours, theirs)
    assert theirs["nfe"] == 3 * 2 * 4 and theirs["losses"][-1] < theirs["losses"][0]


def test_continuous_normalizing_flow_compiled_step_as_torch(float64_default):
    """The ``autograd.grad(create_graph=True)`` in the field and the backward through it, in one compiled graph.
    ``func.nfe`` is not compared: the trace runs the field's Python (its ``self.nfe += 1``) once, not at every call
    (see the module docstring)."""

    def train(torch, nn, F, func):
        optimizer = torch.optim.Adam(func.parameters(), lr=1e-2)

        def train_step(x):
            optimizer.zero_grad()
            loss = cnf_negative_log_likelihood(torch, func, x)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        return {"losses": [run(torch.tensor(_cnf_data())).item() for _ in range(3)], "state": snapshot(func)}

    ours, theirs = run_in_lockstep(cnf, train)
    assert_same_records(ours, theirs)


# --- SimCLR ----------------------------------------------------------------------------------------------------------

FEATURES, HIDDEN, PROJECTION, PAIRS = 10, 16, 8, 6


def simclr(torch, nn, F):
    class SimCLR(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(inplace=True),
                                         nn.Linear(HIDDEN, HIDDEN))
            self.projector = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, PROJECTION))

        def forward(self, x):
            return self.projector(self.encoder(x))

    return SimCLR()


def nt_xent(torch, F, z1, z2, temperature, masking):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.T / temperature
    if masking == "fill_diagonal_":
        sim.fill_diagonal_(float("-inf"))
    else:
        sim = sim.masked_fill(torch.eye(2 * n, device=sim.device).bool(), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim.device)
    return F.cross_entropy(sim, labels)


def info_nce_sthalles(torch, F, features, batch_size, temperature):
    """sthalles/SimCLR's info_nce_loss: positives and negatives picked by boolean masks, the positive first."""
    labels = torch.cat([torch.arange(batch_size) for _ in range(2)], dim=0)
    labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    features = F.normalize(features, dim=1)
    similarity_matrix = torch.matmul(features, features.T)
    mask = torch.eye(labels.shape[0], dtype=torch.bool)
    labels = labels[~mask].view(labels.shape[0], -1)
    similarity_matrix = similarity_matrix[~mask].view(similarity_matrix.shape[0], -1)
    positives = similarity_matrix[labels.bool()].view(labels.shape[0], -1)
    negatives = similarity_matrix[~labels.bool()].view(similarity_matrix.shape[0], -1)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


def supcon_loss(torch, F, features, labels, temperature):
    """HobbitLong/SupContrast's SupConLoss (contrast_mode 'all'): ``features`` (batch, views, dim), the max logit
    subtracted (detached), self-contrast removed by ``torch.scatter`` of zeros, the mean log-likelihood of positives."""
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float()
    contrast_count = features.shape[1]
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_dot_contrast = torch.div(torch.matmul(contrast_feature, contrast_feature.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(contrast_count, contrast_count)
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * contrast_count).view(-1, 1), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mask_pos_pairs = mask.sum(1)
    mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
    return -mean_log_prob_pos.view(contrast_count, batch_size).mean()


def cosine_nt_xent(torch, F, z1, z2, temperature):
    """NT-Xent by ``F.cosine_similarity`` of every pair (broadcast), the self-pairs dropped by ``-1e9 * eye``."""
    z = torch.cat([z1, z2], dim=0)
    sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2) / temperature
    sim = sim - 1e9 * torch.eye(z.shape[0])
    n = z1.shape[0]
    targets = (torch.arange(2 * n) + n) % (2 * n)
    return F.cross_entropy(sim, targets)


def simclr_loss(torch, F, model, view1, view2, masking, temperature=0.5):
    if masking == "supcon":
        features = F.normalize(torch.stack([model(view1), model(view2)], dim=1), dim=2)
        return supcon_loss(torch, F, features, torch.arange(view1.shape[0]) % 3, temperature)
    if masking == "cosine_similarity":
        return cosine_nt_xent(torch, F, model(view1), model(view2), temperature)
    if masking == "sthalles":
        return info_nce_sthalles(torch, F, model(torch.cat([view1, view2], dim=0)), view1.shape[0], temperature)
    return nt_xent(torch, F, model(view1), model(view2), temperature, masking)


def _views(steps):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((PAIRS, FEATURES))[None].repeat(steps, 0)  # one batch, augmented afresh each step
    augment = lambda: base * rng.uniform(0.8, 1.2, base.shape) + 0.1 * rng.standard_normal(base.shape)  # noqa: E731
    return augment(), augment()


def _sgd_cosine(torch, model, steps, warmup=1):
    """SGD with momentum; weight decay on the weights only (not biases, not BatchNorm), linear warmup then cosine."""
    decay = [p for name, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for name, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=0.3, momentum=0.9, nesterov=True)
    schedulers = torch.optim.lr_scheduler
    warmup_then_cosine = schedulers.SequentialLR(
        optimizer, [schedulers.LinearLR(optimizer, start_factor=0.5, total_iters=warmup),
                    schedulers.CosineAnnealingLR(optimizer, T_max=steps - warmup, eta_min=1e-3)], milestones=[warmup])
    return optimizer, warmup_then_cosine


def train_simclr(masking, steps=4):
    views1, views2 = _views(steps)

    def train(torch, nn, F, model):
        optimizer, scheduler = _sgd_cosine(torch, model, steps)
        record = {"losses": [], "lrs": []}
        model.train()
        for step in range(steps):
            loss = simclr_loss(torch, F, model, torch.tensor(views1[step]), torch.tensor(views2[step]), masking)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("grads", gradients(model))
            optimizer.step()
            scheduler.step()
            record["losses"].append(loss.item())
            record["lrs"].append(scheduler.get_last_lr()[0])
        model.eval()
        with torch.no_grad():
            record["embeddings"] = array(model.encoder(torch.tensor(views1[0])))
        record["state"] = snapshot(model)
        return record

    return train


MASKINGS = ["fill_diagonal_", "masked_fill", "sthalles", "cosine_similarity", "supcon"]


@pytest.mark.parametrize("masking", MASKINGS)
def test_simclr_trains_as_torch(masking, float64_default):
    ours, theirs = run_in_lockstep(simclr, train_simclr(masking))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("masking", MASKINGS)
def test_simclr_compiled_step_with_cosine_schedule_outside_as_torch(masking, float64_default):
    views1, views2 = _views(4)

    def train(torch, nn, F, model):
        optimizer, scheduler = _sgd_cosine(torch, model, 4)

        def train_step(view1, view2):
            optimizer.zero_grad()
            loss = simclr_loss(torch, F, model, view1, view2, masking)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        losses = []
        for step in range(4):
            losses.append(run(torch.tensor(views1[step]), torch.tensor(views2[step])).item())
            scheduler.step()
        return {"losses": losses, "state": snapshot(model), "lr": scheduler.get_last_lr()}

    ours, theirs = run_in_lockstep(simclr, train)
    assert_same_records(ours, theirs)
