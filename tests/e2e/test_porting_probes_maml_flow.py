"""Porting probes: MAML (second order) and a RealNVP normalizing flow, written once as PyTorch users write them (``lib``
is ``torch`` or ``kiln``), trained a few Adam steps from the same weights in float64 in both libraries: the losses, every
step's gradients and the parameters after agree to 1e-10.

MAML on sine regression (3 tasks a meta step, 2 inner steps):
- ``autograd``: the inner loop by ``torch.func.functional_call(model, params, (x,))`` and
  ``torch.autograd.grad(loss, params.values(), create_graph=True)``, ``{name: p - lr * g}``, the query loss's
  ``backward()`` through the inner updates (second order; ``first_order=True`` too), one outer Adam step.
- ``func``: ``torch.func.vmap(task_loss, in_dims=(None, 0, 0, 0, 0))`` over stacked tasks, the inner step by
  ``torch.func.grad`` of a ``functional_call`` loss, the mean query loss's ``backward()`` to the model's parameters.
RealNVP on 4-d data: affine coupling layers with alternating binary masks (buffers), ``exp(s)`` scaling with
``tanh``-bounded ``s``, summed log-determinants, a prior as ``Independent(Normal(...), 1)`` or ``MultivariateNormal``,
the exact inverse, ``prior.sample((n,))`` pushed back through the inverses under ``no_grad``; a Gaussian-mixture prior
by ``logsumexp`` of ``Normal`` log_probs plus ``log_softmax`` weights; and the same flow as
``TransformedDistribution(base, [AffineTransform(..., event_dim=1), ...])``. The flow's NLL compiled as one
``kiln.compile_train_step`` gives torch's eager losses and parameters too.

What broke: ``torch.autograd.grad(loss, params.values())`` (any iterable of inputs) was refused
(``tests/runtime/test_autograd_grad_iterables.py``); ``torch.func`` transforms on tensors that need gradients gave
results without a chain, so the vmapped MAML's ``backward()`` found nothing to differentiate
(``tests/runtime/test_eager_transform_chain.py``); ``torch.distributions.TransformedDistribution`` and its transforms
were missing (``tests/distributions/test_transformed_distribution_vs_torch.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

TIGHT = dict(rtol=1e-10, atol=1e-12)


def maml_program(torch, nn, F):
    func = torch.func

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x):
            return self.net(x)

    def inner_adapt(model, x, y, steps, inner_lr, first_order=False):
        params = dict(model.named_parameters())
        for _ in range(steps):
            loss = F.mse_loss(func.functional_call(model, params, (x,)), y)
            grads = torch.autograd.grad(loss, params.values(), create_graph=not first_order)
            params = {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}
        return params

    def meta_step(model, meta_opt, tasks, first_order, inner_steps=2, inner_lr=0.1):
        meta_opt.zero_grad()
        total = 0.0
        for xs, ys, xq, yq in tasks:
            adapted = inner_adapt(model, xs, ys, inner_steps, inner_lr, first_order)
            query_loss = F.mse_loss(func.functional_call(model, adapted, xq), yq)
            (query_loss / len(tasks)).backward()
            total += query_loss.item()
        meta_opt.step()
        return total / len(tasks)

    def vmapped_meta_step(model, meta_opt, xs, ys, xq, yq, inner_lr=0.1):
        params = {k: v for k, v in model.named_parameters()}

        def task_loss(params, xs, ys, xq, yq):
            def support_loss(p):
                return F.mse_loss(func.functional_call(model, p, (xs,)), ys)
            g = func.grad(support_loss)(params)
            fast = {k: params[k] - inner_lr * g[k] for k in params}
            return F.mse_loss(func.functional_call(model, fast, (xq,)), yq)

        meta_opt.zero_grad()
        loss = func.vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean()
        loss.backward()
        meta_opt.step()
        return loss.item()

    return Net, meta_step, vmapped_meta_step


def _sine_tasks(rng, n_tasks=3, k=5):
    tasks = []
    for _ in range(n_tasks):
        amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
        xs, xq = rng.uniform(-5, 5, (k, 1)), rng.uniform(-5, 5, (k, 1))
        tasks.append((xs, amplitude * np.sin(xs + phase), xq, amplitude * np.sin(xq + phase)))
    return tasks


def _train_maml(name, style, meta_steps=3):
    lib, nn, F = libraries(name)
    Net, meta_step, vmapped_meta_step = maml_program(lib, nn, F)
    rng = np.random.default_rng(0)
    model = Net()
    for p in model.parameters():
        p.data = lib.tensor(rng.standard_normal(tuple(p.shape)) * 0.5)
    optimizer = lib.optim.Adam(model.parameters(), lr=1e-3)
    losses, grads = [], []
    for _ in range(meta_steps):
        tasks = _sine_tasks(rng)
        if style == "func vmap":
            stacked = [lib.tensor(np.stack([task[i] for task in tasks])) for i in range(4)]
            losses.append(vmapped_meta_step(model, optimizer, *stacked))
        else:
            tasks = [tuple(lib.tensor(a) for a in task) for task in tasks]
            losses.append(meta_step(model, optimizer, tasks, first_order=style == "autograd first order"))
        grads.append([np.array(p.grad) for p in model.parameters()])
    return losses, grads, [np.array(p.detach().numpy()) for p in model.parameters()]


@pytest.mark.parametrize("style", ["autograd second order", "autograd first order", "func vmap"])
def test_maml_meta_trains_as_torch(style, float64_default):
    require_torch()
    ours, theirs = (_train_maml(name, style) for name in ("kiln", "torch"))
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-11)
    for our_step, their_step in zip(ours[1], theirs[1]):
        for a, b in zip(our_step, their_step):
            np.testing.assert_allclose(a, b, **TIGHT)
    for a, b in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(a, b, **TIGHT)


# --- RealNVP -------------------------------------------------------------------------------------------------------


def flow_program(torch, nn, F):
    D = torch.distributions

    class AffineCoupling(nn.Module):
        def __init__(self, dim, hidden, mask):
            super().__init__()
            self.register_buffer("mask", mask)
            self.s = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, dim), nn.Tanh())
            self.t = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, dim))
            self.scale = nn.Parameter(torch.ones(1, dim))

        def forward(self, x):
            x_masked = x * self.mask
            s = self.s(x_masked) * self.scale * (1 - self.mask)
            t = self.t(x_masked) * (1 - self.mask)
            return x_masked + (1 - self.mask) * (x * torch.exp(s) + t), s.sum(dim=1)

        def inverse(self, y):
            y_masked = y * self.mask
            s = self.s(y_masked) * self.scale * (1 - self.mask)
            t = self.t(y_masked) * (1 - self.mask)
            return y_masked + (1 - self.mask) * ((y - t) * torch.exp(-s)), -s.sum(dim=1)

    class RealNVP(nn.Module):
        def __init__(self, prior, dim=4, hidden=8, n_layers=4):
            super().__init__()
            masks = [torch.tensor([(i + j) % 2 for i in range(dim)], dtype=torch.get_default_dtype()) for j in range(n_layers)]
            self.layers = nn.ModuleList([AffineCoupling(dim, hidden, m) for m in masks])
            self.register_buffer("loc", torch.zeros(dim))
            self.register_buffer("cov", torch.eye(dim))
            self.prior_kind = prior

        @property
        def prior(self):
            if self.prior_kind == "normal":
                return D.Independent(D.Normal(self.loc, torch.ones_like(self.loc)), 1)
            return D.MultivariateNormal(self.loc, covariance_matrix=self.cov)

        def forward(self, x):
            log_det = torch.zeros(x.shape[0], device=x.device)
            for layer in self.layers:
                x, ld = layer(x)
                log_det = log_det + ld
            return x, log_det

        def log_prob(self, x):
            z, log_det = self(x)
            return self.prior.log_prob(z) + log_det

        def sample(self, n):
            z = self.prior.sample((n,))
            for layer in reversed(self.layers):
                z, _ = layer.inverse(z)
            return z

    class MixturePrior(nn.Module):
        def __init__(self, k=3, dim=4):
            super().__init__()
            self.logits = nn.Parameter(torch.zeros(k))
            self.means = nn.Parameter(torch.randn(k, dim))
            self.log_scales = nn.Parameter(torch.zeros(k, dim))

        def log_prob(self, z):
            components = D.Normal(self.means, self.log_scales.exp()).log_prob(z.unsqueeze(1)).sum(-1)
            return torch.logsumexp(components + F.log_softmax(self.logits, dim=0), dim=1)

    class AffineFlow(nn.Module):
        """A flow as a TransformedDistribution: a learned affine map over vectors, then a fixed squash into (-8, 8)."""
        def __init__(self, dim=4):
            super().__init__()
            self.shift = nn.Parameter(torch.zeros(dim))
            self.log_scale = nn.Parameter(torch.zeros(dim))

        def distribution(self):
            base = D.Independent(D.Normal(torch.zeros(4), torch.ones(4)), 1)
            T = D.transforms
            return D.TransformedDistribution(base, [T.AffineTransform(self.shift, self.log_scale.exp(), event_dim=1),
                                                    T.ComposeTransform([T.AffineTransform(0.0, 0.25), T.TanhTransform(), T.AffineTransform(0.0, 8.0)])])

    return RealNVP, MixturePrior, AffineFlow


def _train_flow(name, prior, steps=3):
    lib, nn, F = libraries(name)
    RealNVP, MixturePrior, AffineFlow = flow_program(lib, nn, F)
    rng = np.random.default_rng(0)
    flow, mixture, affine = RealNVP(prior), MixturePrior(), AffineFlow()
    params = [p for m in (flow, mixture, affine) for p in m.parameters()]
    for p in params:
        p.data = lib.tensor(rng.standard_normal(tuple(p.shape)) * 0.3)
    optimizer = lib.optim.Adam(params, lr=1e-2)
    x = lib.tensor(rng.standard_normal((16, 4)) * np.array([1, 2, 0.5, 1]))
    losses, grads = [], []
    for _ in range(steps):
        z, log_det = flow(x)
        loss = -flow.log_prob(x).mean() - (mixture.log_prob(z) + log_det).mean() - affine.distribution().log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        grads.append([np.array(p.grad) for p in params])
        optimizer.step()
        losses.append(loss.item())
    back, _ = flow(x)
    for layer in reversed(flow.layers):
        back, _ = layer.inverse(back)
    with lib.no_grad():
        shapes = (tuple(flow.sample(7).shape), tuple(affine.distribution().sample((5,)).shape))
    return losses, grads, [np.array(p.detach().numpy()) for p in params], back.detach().numpy(), x.numpy(), shapes


@pytest.mark.parametrize("prior", ["normal", "multivariate normal"])
def test_real_nvp_trains_as_torch_and_inverts(prior, float64_default):
    require_torch()
    ours, theirs = (_train_flow(name, "normal" if prior == "normal" else "mvn") for name in ("kiln", "torch"))
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for our_step, their_step in zip(ours[1], theirs[1]):
        for a, b in zip(our_step, their_step):
            np.testing.assert_allclose(a, b, **TIGHT)
    for a, b in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(a, b, **TIGHT)
    np.testing.assert_allclose(ours[3], ours[4], rtol=1e-12, atol=1e-13)  # the inverse undoes the flow
    assert ours[5] == theirs[5] == ((7, 4), (5, 4))
    assert ours[0][-1] < ours[0][0]


def _flow_with_weights(name, prior):
    lib, nn, F = libraries(name)
    RealNVP = flow_program(lib, nn, F)[0]
    rng = np.random.default_rng(0)
    flow = RealNVP(prior)
    for p in flow.parameters():
        p.data = lib.tensor(rng.standard_normal(tuple(p.shape)) * 0.3)
    return lib, nn, flow, rng.standard_normal((16, 4)) * np.array([1, 2, 0.5, 1])


@pytest.mark.parametrize("prior", ["normal", "mvn"])
def test_real_nvp_compiled_as_a_training_step_matches_torchs_eager_loop(prior, float64_default):
    """The same flow's NLL as one ``kiln.compile_train_step`` (the prior's distribution traced into the step) gives
    torch's eager losses and parameters."""
    torch = float64_default
    lib, nn, flow, x = _flow_with_weights("kiln", prior)

    class LogLikelihood(nn.Module):
        def __init__(self, flow):
            super().__init__()
            self.flow = flow

        def forward(self, x):
            return self.flow.log_prob(x)

    step = lib.compile_train_step(LogLikelihood(flow), lambda log_prob, _: -log_prob.mean(), lib.optim.Adam(flow.parameters(), lr=1e-2))
    ours = [float(step(x, np.zeros(16))) for _ in range(3)]
    _, _, twin, _ = _flow_with_weights("torch", prior)
    optimizer, theirs = torch.optim.Adam(twin.parameters(), lr=1e-2), []
    for _ in range(3):
        loss = -twin.log_prob(torch.tensor(x)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    for p, q in zip(flow.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), **TIGHT)
