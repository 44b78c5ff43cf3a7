"""yang-song/score_sde_pytorch's pieces, small (for ``test_porting_probes_score_sde.py``), written once as that code
writes them: ``torch`` is torch or kiln."""

from __future__ import annotations

import numpy as np


class VPSDE:
    """``sde_lib.VPSDE``: ``beta(t)`` linear, ``marginal_prob``, ``sde``, ``prior_sampling``, ``discretize``."""

    def __init__(self, torch, beta_min=0.1, beta_max=20, N=1000):
        self.torch = torch
        self.beta_0 = beta_min
        self.beta_1 = beta_max
        self.N = N
        self.discrete_betas = torch.linspace(beta_min / N, beta_max / N, N)
        self.alphas = 1. - self.discrete_betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_alphas_cumprod = torch.sqrt(self.alphas_cumprod)
        self.sqrt_1m_alphas_cumprod = torch.sqrt(1. - self.alphas_cumprod)

    @property
    def T(self):
        return 1

    def sde(self, x, t):
        beta_t = self.beta_0 + t * (self.beta_1 - self.beta_0)
        drift = -0.5 * beta_t[:, None] * x
        diffusion = self.torch.sqrt(beta_t)
        return drift, diffusion

    def marginal_prob(self, x, t):
        torch = self.torch
        log_mean_coeff = -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0
        mean = torch.exp(log_mean_coeff[:, None]) * x
        std = torch.sqrt(1. - torch.exp(2. * log_mean_coeff))
        return mean, std

    def prior_logp(self, z):
        torch = self.torch
        shape = z.shape
        N = np.prod(shape[1:])
        logps = -N / 2. * np.log(2 * np.pi) - torch.sum(z ** 2, dim=(1,)) / 2.
        return logps

    def reverse_drift(self, score_fn, x, t, probability_flow=False):
        """``reverse().sde``: ``drift - diffusion ** 2 * score * (0.5 if probability_flow else 1.)``."""
        drift, diffusion = self.sde(x, t)
        score = score_fn(x, t)
        drift = drift - diffusion[:, None] ** 2 * score * (0.5 if probability_flow else 1.)
        diffusion = 0. if probability_flow else diffusion
        return drift, diffusion


def score_model(torch, nn, F, dim=2, hidden=16):
    """A small time-conditional score network: Gaussian Fourier features of ``t`` (``W`` a frozen parameter drawn by
    ``torch.randn(embedding_size) * scale``), concatenated to ``x``, an MLP with SiLU; the output divided by the
    marginal std (score_sde's ``scale_by_sigma``), as ``get_score_fn`` does for VP SDEs with a continuous model."""

    class GaussianFourierProjection(nn.Module):
        def __init__(self, embedding_size=4, scale=1.0):
            super().__init__()
            self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

        def forward(self, x):
            x_proj = x[:, None] * self.W[None, :] * 2 * np.pi
            return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)

    class ScoreNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = GaussianFourierProjection(scale=1.0 / 999)  # the labels are t * 999
            self.net = nn.Sequential(nn.Linear(dim + 8, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, dim))

        def forward(self, x, t):
            return self.net(torch.cat([x, self.embed(t)], dim=-1))

    return ScoreNet()


def get_score_fn(torch, sde, model):
    """``models/utils.get_score_fn`` for a VP SDE with a continuous model: ``score = -model(x, t * 999) / std``."""

    def score_fn(x, t):
        labels = t * 999
        score = model(x, labels)
        std = sde.marginal_prob(torch.zeros_like(x), t)[1]
        score = -score / std[:, None]
        return score

    return score_fn


def sde_loss(torch, sde, model, batch, t, z, reduce_mean=True, likelihood_weighting=False):
    """``losses.get_sde_loss_fn``'s ``loss_fn`` with its draws (``t``, ``z``) given."""
    reduce_op = torch.mean if reduce_mean else lambda *args, **kwargs: 0.5 * torch.sum(*args, **kwargs)
    score_fn = get_score_fn(torch, sde, model)
    mean, std = sde.marginal_prob(batch, t)
    perturbed_data = mean + std[:, None] * z
    score = score_fn(perturbed_data, t)
    if not likelihood_weighting:
        losses = torch.square(score * std[:, None] + z)
        losses = reduce_op(losses.reshape(losses.shape[0], -1), dim=-1)
    else:
        g2 = sde.sde(torch.zeros_like(batch), t)[1] ** 2
        losses = torch.square(score + z / std[:, None])
        losses = reduce_op(losses.reshape(losses.shape[0], -1), dim=-1) * g2
    loss = torch.mean(losses)
    return loss


def get_div_fn(torch, fn):
    """``likelihood.get_div_fn``: the Hutchinson-Skilling divergence estimator, ``torch.enable_grad()`` inside the
    caller's ``no_grad``, ``x.requires_grad_(True)`` then ``x.requires_grad_(False)``."""

    def div_fn(x, t, eps):
        with torch.enable_grad():
            x.requires_grad_(True)
            fn_eps = torch.sum(fn(x, t) * eps)
            grad_fn_eps = torch.autograd.grad(fn_eps, x)[0]
        x.requires_grad_(False)
        return torch.sum(grad_fn_eps * eps, dim=tuple(range(1, len(x.shape))))

    return div_fn


def get_likelihood_fn(torch, sde, epsilon, rtol=1e-5, atol=1e-5, eps=1e-5):
    """``likelihood.get_likelihood_fn``: the probability-flow ODE with the divergence, integrated by SciPy's
    ``solve_ivp`` over flattened NumPy states (``to_flattened_numpy``/``from_flattened_numpy``), bits per dim."""
    from scipy import integrate

    def to_flattened_numpy(x):
        return x.detach().cpu().numpy().reshape((-1,))

    def from_flattened_numpy(x, shape):
        return torch.from_numpy(x.reshape(shape))

    def drift_fn(model, x, t):
        score_fn = get_score_fn(torch, sde, model)
        return sde.reverse_drift(score_fn, x, t, probability_flow=True)[0]

    def div_fn(model, x, t, noise):
        return get_div_fn(torch, lambda xx, tt: drift_fn(model, xx, tt))(x, t, noise)

    def likelihood_fn(model, data):
        with torch.no_grad():
            shape = data.shape

            def ode_func(t, x):
                sample = from_flattened_numpy(x[:-shape[0]], shape).type(torch.float64)
                vec_t = torch.ones(sample.shape[0], device=sample.device) * t
                drift = to_flattened_numpy(drift_fn(model, sample, vec_t))
                logp_grad = to_flattened_numpy(div_fn(model, sample, vec_t, epsilon))
                return np.concatenate([drift, logp_grad], axis=0)

            init = np.concatenate([to_flattened_numpy(data), np.zeros((shape[0],))], axis=0)
            solution = integrate.solve_ivp(ode_func, (eps, sde.T), init, rtol=rtol, atol=atol, method='RK45')
            nfe = solution.nfev
            zp = solution.y[:, -1]
            z = from_flattened_numpy(zp[:-shape[0]], shape).type(torch.float64)
            delta_logp = from_flattened_numpy(zp[-shape[0]:], (shape[0],)).type(torch.float64)
            prior_logp = sde.prior_logp(z)
            bpd = -(prior_logp + delta_logp) / np.log(2)
            N = np.prod(shape[1:])
            bpd = bpd / N
            return bpd, z, nfe

    return likelihood_fn


def euler_maruyama_pc(torch, sde, model, x, noises, snr=0.16, n_corrector=1, eps=1e-3):
    """``sampling``'s predictor-corrector sampler under ``torch.no_grad()``: a Langevin corrector (``grad_norm`` by
    ``torch.norm(grad.reshape(...), dim=-1).mean()``, the step size from ``snr``) then the Euler-Maruyama predictor, over
    ``torch.linspace(sde.T, eps, steps)``; the noises drawn by the caller."""
    score_fn = get_score_fn(torch, sde, model)
    steps = len(noises)
    with torch.no_grad():
        timesteps = torch.linspace(sde.T, eps, steps)
        for i in range(steps):
            t = timesteps[i]
            vec_t = torch.ones(x.shape[0], device=t.device) * t
            corrector_noise, predictor_noise = noises[i]
            for _ in range(n_corrector):
                grad = score_fn(x, vec_t)
                noise = corrector_noise
                grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
                noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1).mean()
                alpha = torch.ones_like(vec_t)
                step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
                x_mean = x + step_size[:, None] * grad
                x = x_mean + torch.sqrt(step_size * 2)[:, None] * noise
            dt = -1. / steps
            drift, diffusion = sde.reverse_drift(score_fn, x, vec_t)
            x_mean = x + drift * dt
            x = x_mean + diffusion[:, None] * np.sqrt(-dt) * predictor_noise
        return x_mean
