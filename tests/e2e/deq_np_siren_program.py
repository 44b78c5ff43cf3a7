"""The programs of ``test_porting_probes_deq_np_siren.py``, each written once as its reference writes it, as a
function of ``(torch, nn, F)`` (``torch`` is ``torch`` or ``kiln``):

- ``deq``: the implicit-layers tutorial's chapter 4 (``anderson``, ``ResNetLayer``, ``DEQFixedPoint`` with its
  ``register_hook`` implicit backward), a tiny image classifier around it; ``deq_jacobian_regularized``:
  locuslab/deq's forward (a self-removing hook, the Jacobian regularizer by ``create_graph=True``).
- the neural processes are in ``neural_process_program.py``.
- ``mdn`` and ``mdn_loss``: a mixture density network, hand-written and through ``MixtureSameFamily``.
- ``siren`` and ``gradient``/``divergence``/``laplace``: vsitzmann/siren's ``modules.py`` and ``diff_operators.py``.
- ``hypernetwork`` and ``film_cnn``: a hypernetwork emitting a target MLP's weights (``bmm`` per sample, ``F.linear``
  per task), FiLM conditioning in a small CNN; ``functional_hypernetwork``: the target applied by
  ``torch.func.functional_call`` (in a loop or under ``torch.func.vmap``).
"""

from __future__ import annotations

import math

import numpy as np

import kiln

# --- DEQ: implicit-layers tutorial, chapter 4 ------------------------------------------------------------------------


def anderson_solver(torch):
    def anderson(f, x0, m=5, lam=1e-4, max_iter=50, tol=1e-2, beta=1.0):
        """ Anderson acceleration for fixed point iteration. """
        bsz, d, H, W = x0.shape
        X = torch.zeros(bsz, m, d * H * W, dtype=x0.dtype, device=x0.device)
        F = torch.zeros(bsz, m, d * H * W, dtype=x0.dtype, device=x0.device)
        X[:, 0], F[:, 0] = x0.view(bsz, -1), f(x0).view(bsz, -1)
        X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0].view_as(x0)).view(bsz, -1)

        H = torch.zeros(bsz, m + 1, m + 1, dtype=x0.dtype, device=x0.device)
        H[:, 0, 1:] = H[:, 1:, 0] = 1
        y = torch.zeros(bsz, m + 1, 1, dtype=x0.dtype, device=x0.device)
        y[:, 0] = 1

        res = []
        for k in range(2, max_iter):
            n = min(k, m)
            G = F[:, :n] - X[:, :n]
            H[:, 1:n + 1, 1:n + 1] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(
                n, dtype=x0.dtype, device=x0.device)[None]
            alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]  # (bsz x n)

            X[:, k % m] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
            F[:, k % m] = f(X[:, k % m].view_as(x0)).view(bsz, -1)
            res.append((F[:, k % m] - X[:, k % m]).norm().item() / (1e-5 + F[:, k % m].norm().item()))
            if res[-1] < tol:
                break
        return X[:, k % m].view_as(x0), res

    return anderson


def broyden_solver(torch):
    """locuslab/deq's ``lib/solvers.py`` ``broyden`` (without its Armijo line search: ``ls=False``, the default),
    with ``rmatvec``/``matvec`` by ``einsum`` on zero-width slices at the first step, NaN entries zeroed by
    ``vT[vT != vT] = 0`` and the low-rank factors written by ``Us[:,:,:,nstep-1] = u``."""

    def line_search(update, x0, g0, g, nstep=0, on=True):
        s = 1.0  # (not on): the full step
        x_est = x0 + s * update
        g0_new = g(x_est)
        return x_est, g0_new, x_est - x0, g0_new - g0, 0

    def rmatvec(part_Us, part_VTs, x):
        # Compute x^T(-I + UV^T)
        if part_Us.nelement() == 0:
            return -x
        xTU = torch.einsum('bij, bijd -> bd', x, part_Us)  # (N, threshold)
        return -x + torch.einsum('bd, bdij -> bij', xTU, part_VTs)  # (N, 2d, L'), but should really be (N, 1, (2d*L'))

    def matvec(part_Us, part_VTs, x):
        # Compute (-I + UV^T)x
        if part_Us.nelement() == 0:
            return -x
        VTx = torch.einsum('bdij, bij -> bd', part_VTs, x)  # (N, threshold)
        return -x + torch.einsum('bijd, bd -> bij', part_Us, VTx)  # (N, 2d, L'), but should really be (N, (2d*L'), 1)

    def broyden(f, x0, threshold, eps=1e-3, stop_mode="rel", ls=False, name="unknown"):
        bsz, total_hsize, seq_len = x0.size()
        g = lambda y: f(y) - y  # noqa: E731 (as solvers.py writes it)
        dev = x0.device
        alternative_mode = 'rel' if stop_mode == 'abs' else 'abs'

        x_est = x0           # (bsz, 2d, L')
        gx = g(x_est)        # (bsz, 2d, L')
        nstep = 0
        tnstep = 0

        # For fast calculation of inv_jacobian (approximately)
        Us = torch.zeros(bsz, total_hsize, seq_len, threshold).to(dev)
        VTs = torch.zeros(bsz, threshold, total_hsize, seq_len).to(dev)
        update = -matvec(Us[:, :, :, :nstep], VTs[:, :nstep], gx)  # Formally should be -torch.matmul(inv_jacobian (-I), gx)
        prot_break = False

        # To be used in protective breaks
        protect_thres = (1e6 if stop_mode == "abs" else 1e3) * seq_len
        new_objective = 1e8

        trace_dict = {'abs': [], 'rel': []}
        lowest_dict = {'abs': 1e8, 'rel': 1e8}
        lowest_step_dict = {'abs': 0, 'rel': 0}
        nstep, lowest_xest, lowest_gx = 0, x_est, gx

        while nstep < threshold:
            x_est, gx, delta_x, delta_gx, ite = line_search(update, x_est, gx, g, nstep=nstep, on=ls)
            nstep += 1
            tnstep += (ite + 1)
            abs_diff = torch.norm(gx).item()
            rel_diff = abs_diff / (1e-5 + torch.norm(gx + x_est).item())
            diff_dict = {'abs': abs_diff, 'rel': rel_diff}
            trace_dict['abs'].append(abs_diff)
            trace_dict['rel'].append(rel_diff)
            for mode in ['rel', 'abs']:
                if diff_dict[mode] < lowest_dict[mode]:
                    if mode == stop_mode:
                        lowest_xest, lowest_gx = x_est.clone().detach(), gx.clone().detach()
                    lowest_dict[mode] = diff_dict[mode]
                    lowest_step_dict[mode] = nstep

            new_objective = diff_dict[stop_mode]
            if new_objective < eps:
                break
            if new_objective < 3 * eps and nstep > 30 and np.max(trace_dict[stop_mode][-30:]) / np.min(
                    trace_dict[stop_mode][-30:]) < 1.3:
                # if there's hardly been any progress in the last 30 steps
                break
            if new_objective > trace_dict[stop_mode][0] * protect_thres:
                prot_break = True
                break

            part_Us, part_VTs = Us[:, :, :, :nstep - 1], VTs[:, :nstep - 1]
            vT = rmatvec(part_Us, part_VTs, delta_x)
            u = (delta_x - matvec(part_Us, part_VTs, delta_gx)) / torch.einsum('bij, bij -> b', vT, delta_gx)[:, None, None]
            vT[vT != vT] = 0
            u[u != u] = 0
            VTs[:, nstep - 1] = vT
            Us[:, :, :, nstep - 1] = u
            update = -matvec(Us[:, :, :, :nstep], VTs[:, :nstep], gx)

        del lowest_gx  # (solvers.py keeps it unused)
        # Fill everything up to the threshold length
        for _ in range(threshold + 1 - len(trace_dict[stop_mode])):
            trace_dict[stop_mode].append(lowest_dict[stop_mode])
            trace_dict[alternative_mode].append(lowest_dict[alternative_mode])

        return {"result": lowest_xest,
                "lowest": lowest_dict[stop_mode],
                "nstep": lowest_step_dict[stop_mode],
                "prot_break": prot_break,
                "abs_trace": trace_dict['abs'],
                "rel_trace": trace_dict['rel'],
                "eps": eps,
                "threshold": threshold}

    return broyden


def deq(torch, nn, F, tol=1e-2, max_iter=25, lam=1e-4, chan=4, inner=6, solver=None):
    """The tutorial's model (``Conv2d``, ``BatchNorm2d``, ``DEQFixedPoint(ResNetLayer)``, ``BatchNorm2d``,
    ``AvgPool2d``, ``Flatten``, ``Linear``) for 8x8 one-channel images; ``lam`` is ``anderson``'s regularisation;
    ``solver`` another solver than ``anderson`` (``solver(f, x0, **kwargs) -> (z, residuals)``)."""
    autograd = torch.autograd

    class ResNetLayer(nn.Module):
        def __init__(self, n_channels, n_inner_channels, kernel_size=3, num_groups=2):
            super().__init__()
            self.conv1 = nn.Conv2d(n_channels, n_inner_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.conv2 = nn.Conv2d(n_inner_channels, n_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.norm1 = nn.GroupNorm(num_groups, n_inner_channels)
            self.norm2 = nn.GroupNorm(num_groups, n_channels)
            self.norm3 = nn.GroupNorm(num_groups, n_channels)
            self.conv1.weight.data.normal_(0, 0.01)
            self.conv2.weight.data.normal_(0, 0.01)

        def forward(self, z, x):
            y = self.norm1(F.relu(self.conv1(z)))
            return self.norm3(F.relu(z + self.norm2(x + self.conv2(y))))

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs

        def forward(self, x):
            # compute forward pass and re-engage autograd tape
            with torch.no_grad():
                z, self.forward_res = self.solver(lambda z: self.f(z, x), torch.zeros_like(x), **self.kwargs)
            z = self.f(z, x)

            # set up Jacobian vector product (without additional forward calls)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def backward_hook(grad):
                g, self.backward_res = self.solver(lambda y: autograd.grad(f0, z0, y, retain_graph=True)[0] + grad,
                                                   grad, **self.kwargs)
                return g

            self.hook = z.register_hook(backward_hook)
            return z

    f = ResNetLayer(chan, inner, kernel_size=3)
    return nn.Sequential(nn.Conv2d(1, chan, kernel_size=3, bias=True, padding=1),
                         nn.BatchNorm2d(chan),
                         DEQFixedPoint(f, anderson_solver(torch), tol=tol, max_iter=max_iter, m=5, lam=lam)
                         if solver is None else DEQFixedPoint(f, solver, max_iter=max_iter),
                         nn.BatchNorm2d(chan),
                         nn.AvgPool2d(4, 4),
                         nn.Flatten(),
                         nn.Linear(chan * 2 * 2, 10))


def deq_jacobian_regularized(torch, nn, F, width=6, x_size=3, classes=2, solver="anderson"):
    """locuslab/deq's forward (``deq_models.py``, small): the fixed point without grad, one ``new_z1 = f(z1.requires
    _grad_(), x)``, the Jacobian regularizer ``jac_loss_estimate(new_z1, z1)`` (a Hutchinson estimate of
    ``||J||_F^2`` by ``autograd.grad(..., create_graph=True)``, its probe vector fed as ``noise`` for the
    ``torch.randn`` there), and the backward hook that first removes itself (``self.hook.remove()``) then solves
    ``y = y J + grad`` with ``autograd.grad(new_z1, z1, y, retain_graph=True)``; ``solver`` "anderson" (the
    tutorial's) or "broyden" (the repository's)."""
    autograd = torch.autograd
    anderson, broyden = anderson_solver(torch), broyden_solver(torch)

    def jac_loss_estimate(f0, z0, noise, vecs=1, create_graph=True):
        result = 0
        for i in range(vecs):
            v = noise
            vJ = autograd.grad(f0, z0, v, retain_graph=True, create_graph=create_graph)[0]
            result += vJ.norm() ** 2
        return result / vecs / np.prod(z0.shape)

    class Cell(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(width, width, bias=False)
            self.injection = nn.Linear(x_size, width)
            with torch.no_grad():
                self.linear.weight.mul_(0.3)

        def forward(self, z, x):
            return torch.tanh(self.linear(z) + self.injection(x))

    class DEQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.func, self.head, self.hook = Cell(), nn.Linear(width, classes), None
            self.f_thres, self.b_thres = 30, 30
            self.nsteps = []  # broyden's steps to its lowest residual, each solve

        def solve(self, f, z0, threshold):
            """The solver on ``(bsz, width)`` states: broyden's ``(bsz, width, seq_len=1)``, anderson's images
            ``(bsz, width, 1, 1)``."""
            if solver == "broyden":
                result = broyden(lambda z: f(z.view(-1, width)).view_as(z), z0.view(-1, width, 1), threshold, eps=1e-12)
                self.nsteps.append(result["nstep"])
                return result["result"].view(-1, width)
            z, _ = anderson(lambda z: f(z.view(-1, width)).view_as(z), z0.view(-1, width, 1, 1), tol=1e-12,
                            max_iter=threshold, lam=1e-10)
            return z.view(-1, width)

        def forward(self, x, noise):
            func = lambda z: self.func(z, x)  # noqa: E731 (as deq_models.py writes it)
            with torch.no_grad():
                z1 = self.solve(func, torch.zeros(x.shape[0], width), self.f_thres)
            new_z1 = func(z1.requires_grad_())
            jac_loss = jac_loss_estimate(new_z1, z1, noise)

            def backward_hook(grad):
                if self.hook is not None:
                    self.hook.remove()
                return self.solve(lambda y: autograd.grad(new_z1, z1, y, retain_graph=True)[0] + grad,
                                  torch.zeros_like(grad), self.b_thres)

            self.hook = new_z1.register_hook(backward_hook)
            return self.head(new_z1), jac_loss

    return DEQ()


def tanh_newton_layers(torch, nn, F):
    """The implicit-layers tutorial's chapter 2 layers for ``z = tanh(W z + x)``: ``TanhNewtonLayer`` (Newton's
    method differentiated through its iterations; rows that did not converge zeroed by ``z[torch.norm(g, dim=1) >
    self.tol, :] = 0``) and ``TanhNewtonImplicitLayer`` (Newton under ``torch.no_grad()``, then the implicit gradient
    by a hook ``lambda grad: solve(J^T, grad)``). ``torch.solve(g[:,:,None], J)[0]`` of the tutorial is
    ``torch.linalg.solve(J, g[:,:,None])`` since torch 1.13 removed ``torch.solve``. Returns ``(explicit, implicit)``
    layer classes."""

    class TanhNewtonLayer(nn.Module):
        def __init__(self, out_features, tol=1e-4, max_iter=50):
            super().__init__()
            self.linear = nn.Linear(out_features, out_features, bias=False)
            self.tol = tol
            self.max_iter = max_iter

        def forward(self, x):
            # initialize output z to be zero
            z = torch.tanh(x)
            self.iterations = 0
            # iterate until convergence
            while self.iterations < self.max_iter:
                z_linear = self.linear(z) + x
                g = z - torch.tanh(z_linear)
                self.err = torch.norm(g)
                if self.err < self.tol:
                    break
                # newton step
                J = torch.eye(z.shape[1])[None, :, :] - (1 / torch.cosh(z_linear)**2)[:, :, None] * self.linear.weight[None, :, :]
                z = z - torch.linalg.solve(J, g[:, :, None])[:, :, 0]
                self.iterations += 1
            g = z - torch.tanh(self.linear(z) + x)
            z[torch.norm(g, dim=1) > self.tol, :] = 0
            return z

    class TanhNewtonImplicitLayer(nn.Module):
        def __init__(self, out_features, tol=1e-4, max_iter=50):
            super().__init__()
            self.linear = nn.Linear(out_features, out_features, bias=False)
            self.tol = tol
            self.max_iter = max_iter

        def forward(self, x):
            # Run Newton's method outside of the autograd framework
            with torch.no_grad():
                z = torch.tanh(x)
                self.iterations = 0
                while self.iterations < self.max_iter:
                    z_linear = self.linear(z) + x
                    g = z - torch.tanh(z_linear)
                    self.err = torch.norm(g)
                    if self.err < self.tol:
                        break
                    # newton step
                    J = torch.eye(z.shape[1])[None, :, :] - (1 / torch.cosh(z_linear)**2)[:, :, None] * self.linear.weight[None, :, :]
                    z = z - torch.linalg.solve(J, g[:, :, None])[:, :, 0]
                    self.iterations += 1

            # reengage autograd and add the gradient hook
            z = torch.tanh(self.linear(z) + x)
            z.register_hook(lambda grad: torch.linalg.solve(J.transpose(1, 2), grad[:, :, None])[:, :, 0])
            return z

    return TanhNewtonLayer, TanhNewtonImplicitLayer


# --- Mixture density network ------------------------------------------------------------------------------------------


def mdn(torch, nn, F, in_dim=2, out_dim=2, n_components=3, hidden=8):
    class MDN(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_components, self.out_dim = n_components, out_dim
            self.base = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh())
            self.pi = nn.Linear(hidden, n_components)
            self.sigma = nn.Linear(hidden, n_components * out_dim)
            self.mu = nn.Linear(hidden, n_components * out_dim)

        def forward(self, x):
            h = self.base(x)
            pi = F.softmax(self.pi(h), dim=1)
            sigma = torch.exp(self.sigma(h)).view(-1, self.n_components, self.out_dim)
            mu = self.mu(h).view(-1, self.n_components, self.out_dim)
            return pi, sigma, mu

        def mixture(self, x):
            """The same density as a ``MixtureSameFamily`` of diagonal Gaussians."""
            D = torch.distributions
            h = self.base(x)
            sigma = torch.exp(self.sigma(h)).view(-1, self.n_components, self.out_dim)
            mu = self.mu(h).view(-1, self.n_components, self.out_dim)
            return D.MixtureSameFamily(D.Categorical(logits=self.pi(h)), D.Independent(D.Normal(mu, sigma), 1))

    return MDN()


def mdn_loss(torch, pi, sigma, mu, y):
    """The hand-written negative log-likelihood: ``logsumexp`` over the components of ``log pi + log N(y)``."""
    log_pi = torch.log(pi)
    log_prob = torch.distributions.Normal(mu, sigma).log_prob(y.unsqueeze(1).expand_as(mu)).sum(-1)
    return -torch.logsumexp(log_pi + log_prob, dim=1).mean()


def sagelywizard_mdn(torch):
    """sagelywizard/pytorch-mdn's ``mdn.py`` functions (its original product-of-densities form):
    ``(gaussian_probability, mdn_loss, sample)``."""
    ONEOVERSQRT2PI = 1.0 / math.sqrt(2 * math.pi)

    def gaussian_probability(sigma, mu, target):
        target = target.unsqueeze(1).expand_as(sigma)
        ret = ONEOVERSQRT2PI * torch.exp(-0.5 * ((target - mu) / sigma)**2) / sigma
        return torch.prod(ret, 2)

    def mdn_loss(pi, sigma, mu, target):
        prob = pi * gaussian_probability(sigma, mu, target)
        nll = -torch.log(torch.sum(prob, dim=1))
        return torch.mean(nll)

    def sample(pi, sigma, mu):
        # Choose which gaussian we'll sample from
        pis = torch.distributions.Categorical(pi).sample().view(pi.size(0), 1, 1)
        # Choose a random sample, one randn for batch X output dims
        gaussian_noise = torch.randn((sigma.size(2), sigma.size(0)), requires_grad=False)
        variance_samples = sigma.gather(1, pis).detach().squeeze()
        mean_samples = mu.detach().gather(1, pis).squeeze()
        return (gaussian_noise * variance_samples + mean_samples).transpose(0, 1)

    return gaussian_probability, mdn_loss, sample


# --- SIREN: vsitzmann/siren modules.py and diff_operators.py ----------------------------------------------------------


def siren(torch, nn, F, in_features=2, hidden_features=8, hidden_layers=1, out_features=1, outermost_linear=True,
          first_omega_0=30, hidden_omega_0=30.):
    class SineLayer(nn.Module):
        def __init__(self, in_features, out_features, bias=True, is_first=False, omega_0=30):
            super().__init__()
            self.omega_0 = omega_0
            self.is_first = is_first
            self.in_features = in_features
            self.linear = nn.Linear(in_features, out_features, bias=bias)
            self.init_weights()

        def init_weights(self):
            with torch.no_grad():
                if self.is_first:
                    self.linear.weight.uniform_(-1 / self.in_features, 1 / self.in_features)
                else:
                    self.linear.weight.uniform_(-np.sqrt(6 / self.in_features) / self.omega_0,
                                                np.sqrt(6 / self.in_features) / self.omega_0)

        def forward(self, input):
            return torch.sin(self.omega_0 * self.linear(input))

    class Siren(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = []
            self.net.append(SineLayer(in_features, hidden_features, is_first=True, omega_0=first_omega_0))
            for i in range(hidden_layers):
                self.net.append(SineLayer(hidden_features, hidden_features, is_first=False, omega_0=hidden_omega_0))
            if outermost_linear:
                final_linear = nn.Linear(hidden_features, out_features)
                with torch.no_grad():
                    final_linear.weight.uniform_(-np.sqrt(6 / hidden_features) / hidden_omega_0,
                                                 np.sqrt(6 / hidden_features) / hidden_omega_0)
                self.net.append(final_linear)
            else:
                self.net.append(SineLayer(hidden_features, out_features, is_first=False, omega_0=hidden_omega_0))
            self.net = nn.Sequential(*self.net)

        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)  # allows to take derivative w.r.t. input
            output = self.net(coords)
            return output, coords

    return Siren()


def diff_operators(torch):
    """``(gradient, divergence, laplace)`` as diff_operators.py writes them."""
    gradient, divergence, laplace, _, _ = all_diff_operators(torch)
    return gradient, divergence, laplace


def all_diff_operators(torch):
    """diff_operators.py's ``gradient``, ``divergence``, ``laplace``, ``jacobian`` and ``hessian`` (the last two fill
    a ``torch.zeros`` by slice assignment and report NaNs by ``if torch.any(torch.isnan(...))``)."""
    grad = torch.autograd.grad

    def hessian(y, x):
        meta_batch_size, num_observations = y.shape[:2]
        grad_y = torch.ones_like(y[..., 0]).to(y.device)
        h = torch.zeros(meta_batch_size, num_observations, y.shape[-1], x.shape[-1], x.shape[-1]).to(y.device)
        for i in range(y.shape[-1]):
            # calculate dydx over batches for each feature value of y
            dydx = grad(y[..., i], x, grad_y, create_graph=True)[0]
            # calculate hessian on y for each x value
            for j in range(x.shape[-1]):
                h[..., i, j, :] = grad(dydx[..., j], x, grad_y, create_graph=True)[0][..., :]
        status = 0
        if torch.any(torch.isnan(h)):
            status = -1
        return h, status

    def laplace(y, x):
        grad = gradient(y, x)
        return divergence(grad, x)

    def divergence(y, x):
        div = 0.
        for i in range(y.shape[-1]):
            div += torch.autograd.grad(y[..., i], x, torch.ones_like(y[..., i]), create_graph=True)[0][..., i:i + 1]
        return div

    def gradient(y, x, grad_outputs=None):
        if grad_outputs is None:
            grad_outputs = torch.ones_like(y)
        grad = torch.autograd.grad(y, [x], grad_outputs=grad_outputs, create_graph=True)[0]
        return grad

    def jacobian(y, x):
        """ jacobian of y wrt x """
        meta_batch_size, num_observations = y.shape[:2]
        jac = torch.zeros(meta_batch_size, num_observations, y.shape[-1], x.shape[-1]).to(y.device)
        for i in range(y.shape[-1]):
            # calculate dydx over batches for each feature value of y
            y_flat = y[..., i].view(-1, 1)
            jac[:, :, i, :] = grad(y_flat, x, torch.ones_like(y_flat), create_graph=True)[0]
        status = 0
        if torch.any(torch.isnan(jac)):
            status = -1
        return jac, status

    return gradient, divergence, laplace, jacobian, hessian


def sdf_loss(torch, F, model_output, gt):
    """loss_functions.py's ``sdf``: the SDF on the surface, its normals, the eikonal ``|grad| = 1`` term and the
    off-surface penalty ``exp(-100 |sdf|)``."""
    gradient = diff_operators(torch)[0]
    gt_sdf = gt['sdf']
    gt_normals = gt['normals']
    coords = model_output['model_in']
    pred_sdf = model_output['model_out']
    gradient = gradient(pred_sdf, coords)
    # Wherever boundary_values is not equal to zero, we interpret it as a boundary constraint.
    sdf_constraint = torch.where(gt_sdf != -1, pred_sdf, torch.zeros_like(pred_sdf))
    inter_constraint = torch.where(gt_sdf != -1, torch.zeros_like(pred_sdf), torch.exp(-1e2 * torch.abs(pred_sdf)))
    normal_constraint = torch.where(gt_sdf != -1, 1 - F.cosine_similarity(gradient, gt_normals, dim=-1)[..., None],
                                    torch.zeros_like(gradient[..., :1]))
    grad_constraint = torch.abs(gradient.norm(dim=-1) - 1)
    return {'sdf': torch.abs(sdf_constraint).mean() * 3e3,
            'inter': inter_constraint.mean() * 1e2,
            'normal_constraint': normal_constraint.mean() * 1e2,
            'grad_constraint': grad_constraint.mean() * 5e1}


def get_mgrid(torch, sidelen, dim=2):
    """explore_siren.ipynb: a flattened grid of ``sidelen ** dim`` coordinates in [-1, 1]."""
    tensors = tuple(dim * [torch.linspace(-1, 1, steps=sidelen)])
    mgrid = torch.stack(torch.meshgrid(*tensors, indexing="ij"), dim=-1)
    mgrid = mgrid.reshape(-1, dim)
    return mgrid


# --- HyperNetwork and FiLM --------------------------------------------------------------------------------------------


def hypernetwork(torch, nn, F, z_dim=3, in_dim=2, hidden=5, out_dim=2):
    """A hypernetwork that maps a task embedding ``z`` to the weights of a two-layer target MLP."""

    class HyperNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim
            self.hyper = nn.Sequential(nn.Linear(z_dim, 16), nn.ReLU(), nn.Linear(16, hidden * in_dim))
            self.hyper_b = nn.Linear(z_dim, hidden)
            self.head = nn.Linear(z_dim, out_dim * hidden + out_dim)

        def forward(self, z, x):
            """One target network per sample: ``z`` (B, z_dim), ``x`` (B, in_dim)."""
            B = z.size(0)
            w = self.hyper(z).view(B, self.hidden, self.in_dim)
            h = torch.bmm(w, x.unsqueeze(-1)).squeeze(-1) + self.hyper_b(z)
            h = F.relu(h)
            params = self.head(z)
            w2 = params[:, :self.out_dim * self.hidden].view(B, self.out_dim, self.hidden)
            b2 = params[:, self.out_dim * self.hidden:]
            return torch.bmm(w2, h.unsqueeze(-1)).squeeze(-1) + b2

        def forward_tasks(self, z, xs):
            """One target network per task: ``z`` (T, z_dim), ``xs`` a list of (n_i, in_dim) point sets."""
            outputs = []
            for i, x in enumerate(xs):
                w1 = self.hyper(z[i]).view(self.hidden, self.in_dim)
                b1 = self.hyper_b(z[i])
                params = self.head(z[i])
                w2, b2 = params[:self.out_dim * self.hidden].view(self.out_dim, self.hidden), params[-self.out_dim:]
                outputs.append(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2))
            return torch.cat(outputs, dim=0)

    return HyperNetwork()


def functional_hypernetwork(torch, nn, F, z_dim=3, in_dim=2, hidden=4):
    """A hypernetwork emitting all of a target ``nn.Sequential``'s parameters, applied by
    ``torch.func.functional_call(self.target, params, (x,))``: per task in a loop, or ``torch.func.vmap``ped over
    the tasks."""

    class FunctionalHyperNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.target = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            self.shapes = {name: tuple(p.shape) for name, p in self.target.named_parameters()}
            num_params = sum(int(np.prod(shape)) for shape in self.shapes.values())
            self.hyper = nn.Sequential(nn.Linear(z_dim, 8), nn.ReLU(), nn.Linear(8, num_params))

        def params_of(self, flat):
            params, start = {}, 0
            for name, shape in self.shapes.items():
                size = int(np.prod(shape))
                params[name] = flat[start:start + size].view(shape)
                start += size
            return params

        def forward(self, z, xs, use_vmap=False):
            flat = self.hyper(z)
            if use_vmap:
                def one_task(task_params, x):
                    return torch.func.functional_call(self.target, self.params_of(task_params), (x,))

                return torch.func.vmap(one_task)(flat, xs)
            return torch.stack([torch.func.functional_call(self.target, self.params_of(flat[t]), (xs[t],))
                                for t in range(len(xs))])

    return FunctionalHyperNetwork()


def film_cnn(torch, nn, F, cond_dim=3, channels=4, classes=3):
    class FiLMBlock(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            self.bn = nn.BatchNorm2d(out_channels, affine=False)
            self.film = nn.Linear(cond_dim, 2 * out_channels)

        def forward(self, x, cond):
            x = self.bn(self.conv(x))
            B, C = x.shape[:2]
            gamma, beta = self.film(cond).chunk(2, dim=1)
            x = gamma.view(B, C, 1, 1) * x + beta.view(B, C, 1, 1)
            return F.relu(x)

    class FiLMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.block1 = FiLMBlock(1, channels)
            self.block2 = FiLMBlock(channels, channels)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(channels, classes)

        def forward(self, x, cond):
            x = self.block2(self.block1(x, cond), cond)
            return self.fc(torch.flatten(self.pool(x), 1))

    return FiLMNet()


# --- shared by the two probe files ------------------------------------------------------------------------------------

BIAS_BEFORE_NORM = dict(rtol=0, atol=1e-8)
"""The tolerance of an entry driven by the rounding-noise gradient of a conv bias right before a BatchNorm."""


def compiled_if(torch, compiled, step):
    """``step`` as one ``kiln.compile(fullgraph=True)`` graph in kiln's compiled runs, else as it is."""
    return kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
