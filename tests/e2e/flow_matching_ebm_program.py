"""Conditional flow matching as atong01/conditional-flow-matching (``torchcfm``) writes it, and energy-based models as
JEM (wgrathwohl/JEM), rosinality's IGEBM port of Du & Mordatch and ermongroup's score-matching losses write them, for
``torch`` being torch or kiln: the program of ``test_porting_probes_flow_matching_ebm.py``, whose docstring says what it
covers. Argument checks and docstrings are shortened; POT's ``ot.emd`` is replaced by an exhaustive search over
permutations (the exact plan of two uniform minibatches of one size is a permutation)."""

from __future__ import annotations

import itertools
import math

import numpy as np


def emd(a, b, M):
    """``ot.emd(a, b, M)`` for uniform ``a`` and ``b`` of one small size: the permutation of least total cost, as a
    plan whose rows sum to ``a``."""
    n = M.shape[0]
    perms = np.array(list(itertools.permutations(range(n))))
    best = perms[np.argmin(M[np.arange(n), perms].sum(1))]
    p = np.zeros(M.shape)
    p[np.arange(n), best] = a
    return p


def torchcfm(torch):
    """``torchcfm.conditional_flow_matching``'s flow matchers and ``torchcfm.optimal_transport.OTPlanSampler`` (exact
    method), as a namespace dict."""

    def pad_t_like_x(t, x):
        if isinstance(t, (float, int)):
            return t
        return t.reshape(-1, *([1] * (x.dim() - 1)))

    class OTPlanSampler:
        def __init__(self, method, reg=0.05, reg_m=1.0, normalize_cost=False, warn=True):
            if method == "exact":
                self.ot_fn = emd
            else:
                raise ValueError(f"Unknown method: {method}")
            self.reg = reg
            self.reg_m = reg_m
            self.normalize_cost = normalize_cost
            self.warn = warn

        def get_map(self, x0, x1):
            a, b = np.ones(x0.shape[0]) / x0.shape[0], np.ones(x1.shape[0]) / x1.shape[0]  # pot.unif
            if x0.dim() > 2:
                x0 = x0.reshape(x0.shape[0], -1)
            if x1.dim() > 2:
                x1 = x1.reshape(x1.shape[0], -1)
            x1 = x1.reshape(x1.shape[0], -1)
            M = torch.cdist(x0, x1) ** 2
            if self.normalize_cost:
                M = M / M.max()
            p = self.ot_fn(a, b, M.detach().cpu().numpy())
            if not np.all(np.isfinite(p)):
                print("ERROR: p is not finite")
            if np.abs(p.sum()) < 1e-8:
                p = np.ones_like(p) / p.size
            return p

        def sample_map(self, pi, batch_size, replace=True):
            p = pi.flatten()
            p = p / p.sum()
            choices = np.random.choice(pi.shape[0] * pi.shape[1], p=p, size=batch_size, replace=replace)
            return np.divmod(choices, pi.shape[1])

        def sample_plan(self, x0, x1, replace=True):
            pi = self.get_map(x0, x1)
            i, j = self.sample_map(pi, x0.shape[0], replace=replace)
            return x0[i], x1[j]

    class ConditionalFlowMatcher:
        def __init__(self, sigma=0.0):
            self.sigma = sigma

        def compute_mu_t(self, x0, x1, t):
            t = pad_t_like_x(t, x0)
            return t * x1 + (1 - t) * x0

        def compute_sigma_t(self, t):
            del t
            return self.sigma

        def sample_xt(self, x0, x1, t, epsilon):
            mu_t = self.compute_mu_t(x0, x1, t)
            sigma_t = self.compute_sigma_t(t)
            sigma_t = pad_t_like_x(sigma_t, x0)
            return mu_t + sigma_t * epsilon

        def compute_conditional_flow(self, x0, x1, t, xt):
            del t, xt
            return x1 - x0

        def sample_noise_like(self, x):
            return torch.randn_like(x)

        def sample_location_and_conditional_flow(self, x0, x1, t=None, return_noise=False):
            if t is None:
                t = torch.rand(x0.shape[0]).type_as(x0)
            assert len(t) == x0.shape[0], "t has to have batch size dimension"

            eps = self.sample_noise_like(x0)
            xt = self.sample_xt(x0, x1, t, eps)
            ut = self.compute_conditional_flow(x0, x1, t, xt)
            if return_noise:
                return t, xt, ut, eps
            else:
                return t, xt, ut

        def compute_lambda(self, t):
            sigma_t = self.compute_sigma_t(t)
            return 2 * sigma_t / (self.sigma**2 + 1e-8)

    class ExactOptimalTransportConditionalFlowMatcher(ConditionalFlowMatcher):
        def __init__(self, sigma=0.0):
            super().__init__(sigma)
            self.ot_sampler = OTPlanSampler(method="exact")

        def sample_location_and_conditional_flow(self, x0, x1, t=None, return_noise=False):
            x0, x1 = self.ot_sampler.sample_plan(x0, x1)
            return super().sample_location_and_conditional_flow(x0, x1, t, return_noise)

    class TargetConditionalFlowMatcher(ConditionalFlowMatcher):
        def compute_mu_t(self, x0, x1, t):
            del x0
            t = pad_t_like_x(t, x1)
            return t * x1

        def compute_sigma_t(self, t):
            return 1 - (1 - self.sigma) * t

        def compute_conditional_flow(self, x0, x1, t, xt):
            del x0
            t = pad_t_like_x(t, x1)
            return (x1 - (1 - self.sigma) * xt) / (1 - (1 - self.sigma) * t)

    class SchrodingerBridgeConditionalFlowMatcher(ConditionalFlowMatcher):
        def __init__(self, sigma=1.0, ot_method="exact"):
            super().__init__(sigma)
            self.ot_method = ot_method
            self.ot_sampler = OTPlanSampler(method=ot_method, reg=2 * self.sigma**2)

        def compute_sigma_t(self, t):
            return self.sigma * torch.sqrt(t * (1 - t))

        def compute_conditional_flow(self, x0, x1, t, xt):
            t = pad_t_like_x(t, x0)
            mu_t = self.compute_mu_t(x0, x1, t)
            sigma_t_prime_over_sigma_t = (1 - 2 * t) / (2 * t * (1 - t) + 1e-8)
            ut = sigma_t_prime_over_sigma_t * (xt - mu_t) + x1 - x0
            return ut

        def sample_location_and_conditional_flow(self, x0, x1, t=None, return_noise=False):
            x0, x1 = self.ot_sampler.sample_plan(x0, x1)
            return super().sample_location_and_conditional_flow(x0, x1, t, return_noise)

    class VariancePreservingConditionalFlowMatcher(ConditionalFlowMatcher):
        def compute_mu_t(self, x0, x1, t):
            t = pad_t_like_x(t, x0)
            return torch.cos(math.pi / 2 * t) * x0 + torch.sin(math.pi / 2 * t) * x1

        def compute_conditional_flow(self, x0, x1, t, xt):
            del xt
            t = pad_t_like_x(t, x0)
            return math.pi / 2 * (torch.cos(math.pi / 2 * t) * x1 - torch.sin(math.pi / 2 * t) * x0)

    return dict(pad_t_like_x=pad_t_like_x, OTPlanSampler=OTPlanSampler, ConditionalFlowMatcher=ConditionalFlowMatcher,
                ExactOptimalTransportConditionalFlowMatcher=ExactOptimalTransportConditionalFlowMatcher,
                TargetConditionalFlowMatcher=TargetConditionalFlowMatcher,
                SchrodingerBridgeConditionalFlowMatcher=SchrodingerBridgeConditionalFlowMatcher,
                VariancePreservingConditionalFlowMatcher=VariancePreservingConditionalFlowMatcher)


def cfm_models(torch):
    """``torchcfm.models.MLP`` (SELU, time as an extra input feature) and ``torchcfm.utils.torch_wrapper`` (the
    ``(t, x)`` signature of an ODE solver, ``t.repeat(x.shape[0])[:, None]``)."""

    class MLP(torch.nn.Module):
        def __init__(self, dim, out_dim=None, w=64, time_varying=False):
            super().__init__()
            self.time_varying = time_varying
            if out_dim is None:
                out_dim = dim
            self.net = torch.nn.Sequential(
                torch.nn.Linear(dim + (1 if time_varying else 0), w),
                torch.nn.SELU(),
                torch.nn.Linear(w, w),
                torch.nn.SELU(),
                torch.nn.Linear(w, w),
                torch.nn.SELU(),
                torch.nn.Linear(w, out_dim),
            )

        def forward(self, x):
            return self.net(x)

    class torch_wrapper(torch.nn.Module):
        """Wraps model to torchdyn compatible format."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, t, x, *args, **kwargs):
            return self.model(torch.cat([x, t.repeat(x.shape[0])[:, None]], 1))

    return MLP, torch_wrapper


def eight_normal_sample(torch, n, dim, scale=1, var=1):
    """``torchcfm.utils.eight_normal_sample``: a ``MultivariateNormal`` draw, ``torch.multinomial`` centre choices and a
    Python loop of ``centers[multi[i]] + noise[i]`` stacked."""
    m = torch.distributions.multivariate_normal.MultivariateNormal(
        torch.zeros(dim), math.sqrt(var) * torch.eye(dim)
    )
    centers = [
        (1, 0),
        (-1, 0),
        (0, 1),
        (0, -1),
        (1.0 / np.sqrt(2), 1.0 / np.sqrt(2)),
        (1.0 / np.sqrt(2), -1.0 / np.sqrt(2)),
        (-1.0 / np.sqrt(2), 1.0 / np.sqrt(2)),
        (-1.0 / np.sqrt(2), -1.0 / np.sqrt(2)),
    ]
    centers = torch.tensor(centers) * scale
    noise = m.sample((n,))
    multi = torch.multinomial(torch.ones(8), n, replacement=True)
    data = []
    for i in range(n):
        data.append(centers[multi[i]] + noise[i])
    data = torch.stack(data)
    return data


def sample_8gaussians(torch, n):
    return eight_normal_sample(torch, n, 2, scale=5, var=0.1).float()


def make_moons(n_samples, noise=0.2, seed=0):
    """sklearn's ``datasets.make_moons`` (shuffled, Gaussian noise) in NumPy: the points and their moon labels."""
    rng = np.random.default_rng(seed)
    n_out, n_in = n_samples // 2, n_samples - n_samples // 2
    outer = np.stack([np.cos(np.linspace(0, np.pi, n_out)), np.sin(np.linspace(0, np.pi, n_out))], 1)
    inner = np.stack([1 - np.cos(np.linspace(0, np.pi, n_in)), 1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5], 1)
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((n_samples, 2))
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    order = rng.permutation(n_samples)
    return x[order], y[order]


def sample_moons(n, seed=0):
    """``torchcfm.utils.sample_moons`` (``x0 * 3 - 1``) as NumPy."""
    x0, _ = make_moons(n, noise=0.2, seed=seed)
    return x0 * 3 - 1


def cfm_training(torch, FM, model, batches, lr=1e-3):
    """torchcfm's 2-D notebooks' loop: ``FM.sample_location_and_conditional_flow(x0, x1)``,
    ``vt = model(torch.cat([xt, t[:, None]], dim=-1))``, ``torch.mean((vt - ut) ** 2)``, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, first = [], None
    for x0, x1 in batches:
        optimizer.zero_grad()
        t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1))
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        if first is None:
            first = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    return losses, first


def rk4_trajectory(torch, node, x, n_steps):
    """The fixed-step solve torchdyn's ``NeuralODE(..., solver="rk4")`` runs, ``t_span = torch.linspace(0, 1, n)``,
    under ``torch.no_grad()``: the trajectory stacked."""
    t_span = torch.linspace(0, 1, n_steps + 1)
    traj = [x]
    with torch.no_grad():
        for i in range(n_steps):
            t, dt = t_span[i], t_span[i + 1] - t_span[i]
            k1 = node(t, x)
            k2 = node(t + dt / 2, x + dt * k1 / 2)
            k3 = node(t + dt / 2, x + dt * k2 / 2)
            k4 = node(t + dt, x + dt * k3)
            x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            traj.append(x)
    return torch.stack(traj)


def euler_trajectory(torch, node, x, n_steps):
    """Euler steps of ``dx = v(t, x) dt`` under ``torch.no_grad()``."""
    traj = [x]
    with torch.no_grad():
        for i in range(n_steps):
            t = torch.tensor(i / n_steps)
            x = x + node(t, x) / n_steps
            traj.append(x)
    return torch.stack(traj)


def divergence_approx(torch, f, y, e=None):
    """FFJORD's Hutchinson estimator: ``e^T (df/dy) e`` by ``autograd.grad(f, y, e, create_graph=True)``."""
    e_dzdx = torch.autograd.grad(f, y, e, create_graph=True)[0]
    e_dzdx_e = e_dzdx * e
    approx_tr_dzdx = e_dzdx_e.view(y.shape[0], -1).sum(dim=1)
    return approx_tr_dzdx


def divergence_bf(torch, dx, y):
    """FFJORD's brute-force trace: one ``autograd.grad`` per dimension."""
    sum_diag = 0.0
    for i in range(y.shape[1]):
        sum_diag += torch.autograd.grad(dx[:, i].sum(), y, create_graph=True)[0].contiguous()[:, i].contiguous()
    return sum_diag.contiguous()


def cnf_log_likelihood(torch, node, x1, e, n_steps, divergence="approx"):
    """``log p_1(x_1)`` of the flow: Euler steps of the augmented ODE backwards from t = 1 (``dx = v``, ``dlogp =
    -div v``) with ``torch.set_grad_enabled(True)`` and ``x.requires_grad_(True)`` inside the dynamics; ``divergence``:
    ``"approx"`` (``autograd.grad`` of ``f`` by ``grad_outputs=e``), ``"sum"`` (``autograd.grad((f * e).sum(), x)``),
    ``"bf"`` (exact), ``"jvp"`` (``torch.autograd.functional.jvp``) or ``"func.jvp"`` (``torch.func.jvp``). The
    log-likelihood stays differentiable in the parameters (``create_graph=True``)."""

    def dynamics(t, x):
        with torch.set_grad_enabled(True):
            x = x.requires_grad_(True) if not x.requires_grad else x
            if divergence == "jvp":
                dx, jvp = torch.autograd.functional.jvp(lambda x: node(t, x), x, e, create_graph=True)
                return dx, (jvp * e).sum(1)
            if divergence == "func.jvp":
                dx, jvp = torch.func.jvp(lambda x: node(t, x), (x,), (e,))
                return dx, (jvp * e).sum(1)
            dx = node(t, x)
            if divergence == "approx":
                div = divergence_approx(torch, dx, x, e=e)
            elif divergence == "sum":
                f_eps_sum = (dx * e).sum()
                div = (torch.autograd.grad(f_eps_sum, x, create_graph=True)[0] * e).sum(1)
            else:
                div = divergence_bf(torch, dx, x)
            return dx, div

    x, delta_logp = x1, torch.zeros(x1.shape[0], dtype=x1.dtype)
    for i in range(n_steps, 0, -1):
        t = torch.tensor(i / n_steps, dtype=x1.dtype)
        dx, div = dynamics(t, x)
        x = x - dx / n_steps
        delta_logp = delta_logp + div / n_steps
    logp0 = -0.5 * (x ** 2).sum(1) - x.shape[1] / 2 * math.log(2 * math.pi)
    return logp0 - delta_logp, x


def jem_models(torch, nn, F, in_dim=2, width=16, n_classes=2, spectral_norm=None):
    """JEM's ``F`` (energy head) and ``CCF`` (``logits.logsumexp(1)`` as the negative energy, ``t.gather(logits, 1,
    y[:, None])`` given labels) over a small feature MLP standing in for the Wide-ResNet, its layers under
    ``nn.utils.spectral_norm`` as the EBM papers regularise them (or ``spectral_norm``:
    ``nn.utils.parametrizations.spectral_norm``)."""
    t = torch
    spectral_norm = spectral_norm or nn.utils.spectral_norm

    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(
                spectral_norm(nn.Linear(in_dim, width)), nn.SiLU(),
                spectral_norm(nn.Linear(width, width)), nn.SiLU())
            self.last_dim = width

        def forward(self, x):
            return self.layers(x)

    class F_(nn.Module):
        def __init__(self, n_classes=n_classes):
            super(F_, self).__init__()
            self.f = Features()
            self.energy_output = nn.Linear(self.f.last_dim, 1)
            self.class_output = nn.Linear(self.f.last_dim, n_classes)

        def forward(self, x, y=None):
            penult_z = self.f(x)
            return self.energy_output(penult_z).squeeze()

        def classify(self, x):
            penult_z = self.f(x)
            return self.class_output(penult_z).squeeze()

    class CCF(F_):
        def __init__(self, n_classes=n_classes):
            super(CCF, self).__init__(n_classes=n_classes)

        def forward(self, x, y=None):
            logits = self.classify(x)
            if y is None:
                return logits.logsumexp(1)
            else:
                return t.gather(logits, 1, y[:, None])

    return F_, CCF


def jem_get_sample_q(torch, buffer_dim, batch_size, n_steps, sgld_lr=1.0, sgld_std=1e-2, reinit_freq=0.05,
                     FloatTensor=None, n_classes=2):
    """JEM's ``get_sample_q``: ``init_random`` (``t.FloatTensor(bs, ...).uniform_(-1, 1)``; ``FloatTensor`` is the
    default dtype's tensor type in float64 runs), ``sample_p_0`` (``t.randint`` buffer indices, ``t.rand(bs) <
    reinit_freq``), ``sample_q`` (``f.eval()``, ``t.autograd.Variable(init_sample, requires_grad=True)``,
    ``x_k.data += sgld_lr * f_prime + sgld_std * t.randn_like(x_k)``, ``replay_buffer[buffer_inds] = ...``); given
    ``y``, the buffer's class slice (``inds = y.cpu() * buffer_size + inds``) and ``f(x_k, y=y)``'s gathered logit."""
    t = torch
    FloatTensor = FloatTensor or t.FloatTensor

    def init_random(bs):
        return FloatTensor(bs, buffer_dim).uniform_(-1, 1)

    def sample_p_0(replay_buffer, bs, y=None):
        if len(replay_buffer) == 0:
            return init_random(bs), []
        buffer_size = len(replay_buffer) if y is None else len(replay_buffer) // n_classes
        inds = t.randint(0, buffer_size, (bs,))
        # if cond, convert inds to class conditional inds
        if y is not None:
            inds = y.cpu() * buffer_size + inds
        buffer_samples = replay_buffer[inds]
        random_samples = init_random(bs)
        choose_random = (t.rand(bs) < reinit_freq).float()[:, None]
        samples = choose_random * random_samples + (1 - choose_random) * buffer_samples
        return samples, inds

    def sample_q(f, replay_buffer, y=None, n_steps=n_steps):
        f.eval()
        bs = batch_size if y is None else y.size(0)
        init_sample, buffer_inds = sample_p_0(replay_buffer, bs=bs, y=y)
        x_k = t.autograd.Variable(init_sample, requires_grad=True)
        for k in range(n_steps):
            f_prime = t.autograd.grad(f(x_k, y=y).sum(), [x_k], retain_graph=True)[0]
            x_k.data += sgld_lr * f_prime + sgld_std * t.randn_like(x_k)
        f.train()
        final_samples = x_k.detach()
        if len(replay_buffer) > 0:
            replay_buffer[buffer_inds] = final_samples.cpu()
        return final_samples

    return init_random, sample_q


def jem_training(torch, nn, f, sample_q, replay_buffer, batches, lr=1e-2, warmup_iters=2, p_x_weight=1.0,
                 p_y_given_x_weight=1.0, class_cond_p_x_sample=False, n_classes=2):
    """JEM's ``train_wrn_ebm.py`` iteration: the warmup written into ``param_group['lr']``, Adam with ``betas=[.9,
    .999]``, class-conditional samples (``y_q = t.randint(...)``, ``sample_q(f, replay_buffer, y=y_q)``) or not,
    ``L = 0.`` then ``L += p_x_weight * l_p_x`` (``l_p_x = -(fp - fq)``) and the cross-entropy of ``f.classify``,
    accuracy by ``logits.max(1)[1]``, the divergence check ``L.abs().item() > 1e8``."""
    t = torch
    optim = t.optim.Adam(f.parameters(), lr=lr, betas=[.9, .999], weight_decay=0.0)
    record = {"losses": [], "acc": [], "l_p_x": []}
    for cur_iter, (x_p_d, x_lab, y_lab) in enumerate(batches, 1):
        if cur_iter <= warmup_iters:
            lr_now = lr * cur_iter / float(warmup_iters)
            for param_group in optim.param_groups:
                param_group['lr'] = lr_now
        L = 0.
        if p_x_weight > 0:
            if class_cond_p_x_sample:
                y_q = t.randint(0, n_classes, (x_p_d.size(0),))
                x_q = sample_q(f, replay_buffer, y=y_q)
            else:
                x_q = sample_q(f, replay_buffer)
            fp_all = f(x_p_d)
            fq_all = f(x_q)
            fp = fp_all.mean()
            fq = fq_all.mean()
            l_p_x = -(fp - fq)
            record["l_p_x"].append(l_p_x.item())
            L += p_x_weight * l_p_x
        if p_y_given_x_weight > 0:
            logits = f.classify(x_lab)
            l_p_y_given_x = nn.CrossEntropyLoss()(logits, y_lab)
            acc = (logits.max(1)[1] == y_lab).float().mean()
            record["acc"].append(acc.item())
            L += p_y_given_x_weight * l_p_y_given_x
        if L.abs().item() > 1e8:
            raise RuntimeError("BAD BOIIIIIIIII")
        optim.zero_grad()
        L.backward()
        optim.step()
        record["losses"].append(L.item())
    return record


def jem_compiled_iteration(torch, nn, f, optim, x_p_d, x_lab, y_lab, init_sample, noises, sgld_lr=1.0,
                           sgld_std=1e-2):
    """One JEM iteration with ``sample_q``'s SGLD inside (its draws given: the initial sample and each step's noise),
    the shape a whole compiled step takes."""
    t = torch
    f.eval()
    x_k = t.autograd.Variable(init_sample, requires_grad=True)
    for k in range(len(noises)):
        f_prime = t.autograd.grad(f(x_k).sum(), [x_k], retain_graph=True)[0]
        x_k.data += sgld_lr * f_prime + sgld_std * noises[k]
    f.train()
    x_q = x_k.detach()
    l_p_x = -(f(x_p_d).mean() - f(x_q).mean())
    L = l_p_x + nn.CrossEntropyLoss()(f.classify(x_lab), y_lab)
    optim.zero_grad()
    L.backward()
    optim.step()
    return L, x_q


def igebm_models(torch, nn, F, in_dim=2, width=16, n_class=2):
    """rosinality/igebm-pytorch's ``IGEBM`` shrunk to an MLP: residual blocks whose class embedding gives a gain and a
    bias (``self.class_embed.weight.data[:, :out] = 1`` / ``[:, out:] = 0``, ``embed.chunk(2, 1)``), spectral-normed
    linear layers, ``F.leaky_relu(..., negative_slope=0.2)``, the energy from a final linear layer."""

    class ResBlock(nn.Module):
        def __init__(self, channel, n_class):
            super().__init__()
            self.linear1 = nn.utils.spectral_norm(nn.Linear(channel, channel, bias=False))
            self.linear2 = nn.utils.spectral_norm(nn.Linear(channel, channel, bias=False))
            self.class_embed = nn.Embedding(n_class, channel * 2)
            self.class_embed.weight.data[:, :channel] = 1
            self.class_embed.weight.data[:, channel:] = 0

        def forward(self, input, class_id=None):
            out = self.linear1(input)
            embed = self.class_embed(class_id)
            weight, bias = embed.chunk(2, 1)
            out = weight * out + bias
            out = F.leaky_relu(out, negative_slope=0.2)
            out = self.linear2(out)
            out = F.leaky_relu(out, negative_slope=0.2)
            return input + out

    class IGEBM(nn.Module):
        def __init__(self, n_class=n_class):
            super().__init__()
            self.linear1 = nn.utils.spectral_norm(nn.Linear(in_dim, width))
            self.blocks = nn.ModuleList([ResBlock(width, n_class), ResBlock(width, n_class)])
            self.linear = nn.Linear(width, 1)

        def forward(self, input, class_id=None):
            out = F.leaky_relu(self.linear1(input), negative_slope=0.2)
            for block in self.blocks:
                out = block(out, class_id)
            out = self.linear(out)
            return out.squeeze(1)

    return IGEBM


def igebm_training(torch, model, batches, neg_starts, noises, alpha=1, step_size=0.1, lr=1e-2):
    """rosinality's ``train``: ``neg_img.requires_grad = True``, ``requires_grad(parameters, False)``, ``model.eval()``,
    Langevin steps (``noise.normal_(0, 0.005)`` given as ``noises``, ``neg_img.data.add_(noise.data)``,
    ``neg_out.sum().backward()``, ``neg_img.grad.data.clamp_(-0.01, 0.01)``, the deprecated ``neg_img.data.add_(
    -step_size, neg_img.grad.data)``, ``neg_img.grad.detach_()``, ``.zero_()``, ``neg_img.data.clamp_``), then the
    regularised contrastive loss and ``clip_grad`` reading Adam's ``optimizer.state[p]['step']`` and ``exp_avg_sq``."""
    parameters = model.parameters()
    optimizer = torch.optim.Adam(parameters, lr=lr, betas=(0.0, 0.999))
    parameters = list(model.parameters())

    def requires_grad(parameters, flag=True):
        for p in parameters:
            p.requires_grad = flag

    def clip_grad(parameters, optimizer):
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group['params']:
                    state = optimizer.state[p]
                    if 'step' not in state or state['step'] < 1:
                        continue
                    step = state['step']
                    exp_avg_sq = state['exp_avg_sq']
                    _, beta2 = group['betas']
                    bound = 3 * torch.sqrt(exp_avg_sq / (1 - beta2 ** step)) + 0.1
                    p.grad.data.copy_(torch.max(torch.min(p.grad.data, bound), -bound))

    losses = []
    for (pos_img, pos_id), neg_start, step_noises in zip(batches, neg_starts, noises):
        neg_img, neg_id = neg_start.clone(), pos_id.flip(0)
        neg_img.requires_grad = True
        requires_grad(parameters, False)
        model.eval()
        for noise in step_noises:
            neg_img.data.add_(noise.data)
            neg_out = model(neg_img, neg_id)
            neg_out.sum().backward()
            neg_img.grad.data.clamp_(-0.01, 0.01)
            neg_img.data.add_(-step_size, neg_img.grad.data)
            neg_img.grad.detach_()
            neg_img.grad.zero_()
            neg_img.data.clamp_(-3, 3)
        neg_img = neg_img.detach()
        requires_grad(parameters, True)
        model.train()
        model.zero_grad()
        pos_out = model(pos_img, pos_id)
        neg_out = model(neg_img, neg_id)
        loss = alpha * (pos_out ** 2 + neg_out ** 2)
        loss = loss + (pos_out - neg_out)
        loss = loss.mean()
        loss.backward()
        clip_grad(parameters, optimizer)
        optimizer.step()
        losses.append(loss.item())
    return losses, neg_img


def energy_mlp(torch, nn, in_dim=2, width=16):
    """ermongroup/sliced_score_matching's toy energy network (softplus MLP, scalar energy), spectral-normed."""
    return nn.Sequential(nn.utils.spectral_norm(nn.Linear(in_dim, width)), nn.Softplus(),
                         nn.utils.spectral_norm(nn.Linear(width, width)), nn.Softplus(), nn.Linear(width, 1))


def dsm(torch, energy_net, samples, sigma=1):
    """``losses/dsm.py``'s ``dsm``: ``samples.requires_grad_(True)``, ``torch.randn_like(samples) * sigma``, ``dlogp =
    sigma ** 2 * autograd.grad(logp.sum(), perturbed_inputs, create_graph=True)[0]``, ``torch.norm(dlogp + kernel,
    dim=-1) ** 2``."""
    samples.requires_grad_(True)
    vector = torch.randn_like(samples) * sigma
    perturbed_inputs = samples + vector
    logp = -energy_net(perturbed_inputs)
    dlogp = sigma ** 2 * torch.autograd.grad(logp.sum(), perturbed_inputs, create_graph=True)[0]
    kernel = vector
    loss = torch.norm(dlogp + kernel, dim=-1) ** 2
    loss = loss.mean() / 2.
    return loss


def sliced_score_matching(torch, energy_net, samples, n_particles=1):
    """``losses/sliced_sm.py``'s ``sliced_score_matching``: duplicated samples by ``unsqueeze(0).expand(...)
    .contiguous().view``, unit projections, two ``autograd.grad(..., create_graph=True)``."""
    dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
    dup_samples.requires_grad_(True)
    vectors = torch.randn_like(dup_samples)
    vectors = vectors / torch.norm(vectors, dim=-1, keepdim=True)

    logp = -energy_net(dup_samples).sum()
    grad1 = torch.autograd.grad(logp, dup_samples, create_graph=True)[0]
    gradv = torch.sum(grad1 * vectors)
    loss1 = torch.sum(grad1 * vectors, dim=-1) ** 2 * 0.5
    grad2 = torch.autograd.grad(gradv, dup_samples, create_graph=True)[0]
    loss2 = torch.sum(vectors * grad2, dim=-1)

    loss1 = loss1.view(n_particles, -1).mean(dim=0)
    loss2 = loss2.view(n_particles, -1).mean(dim=0)
    loss = loss1 + loss2
    return loss.mean(), loss1.mean(), loss2.mean()
