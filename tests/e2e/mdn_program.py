"""Mixture density networks: tonyduan/mdn's ``mdn/models.py`` (``NoiseType``, ``MixtureDensityNetwork``) and its
``examples/ex_1d.py`` data, and the same density as a ``torch.distributions.MixtureSameFamily``, written once for
``torch`` being torch or kiln: the program of ``test_porting_probes_mdn.py``, whose docstring says what it covers."""

from __future__ import annotations

from enum import Enum, auto

import numpy as np


class NoiseType(Enum):
    DIAGONAL = auto()
    ISOTROPIC = auto()
    ISOTROPIC_ACROSS_CLUSTERS = auto()
    FIXED = auto()


def mixture_density_network(torch, nn, F):
    """models.py's ``MixtureDensityNetwork`` as written (``nn.GELU`` hidden layers, ``torch.log_softmax``, the sigma
    channels by noise type, ``torch.einsum`` z-scores, ``torch.logsumexp``; ``sample`` by ``torch.cumsum``,
    ``torch.rand``, ``torch.searchsorted``, ``torch.randn_like`` and ``torch.take_along_dim``)."""

    class MixtureDensityNetwork(nn.Module):
        """
        Mixture density network.

        [ Bishop, 1994 ]

        Parameters
        ----------
        dim_in: int; dimensionality of the covariates
        dim_out: int; dimensionality of the response variable
        n_components: int; number of components in the mixture model
        """
        def __init__(self, dim_in, dim_out, n_components, hidden_dim, noise_type=NoiseType.DIAGONAL,
                     fixed_noise_level=None):
            super().__init__()
            assert (fixed_noise_level is not None) == (noise_type is NoiseType.FIXED)
            num_sigma_channels = {
                NoiseType.DIAGONAL: dim_out * n_components,
                NoiseType.ISOTROPIC: n_components,
                NoiseType.ISOTROPIC_ACROSS_CLUSTERS: 1,
                NoiseType.FIXED: 0,
            }[noise_type]
            self.dim_in, self.dim_out, self.n_components = dim_in, dim_out, n_components
            self.noise_type, self.fixed_noise_level = noise_type, fixed_noise_level
            self.pi_network = nn.Sequential(
                nn.Linear(dim_in, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, n_components),
            )
            self.normal_network = nn.Sequential(
                nn.Linear(dim_in, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, dim_out * n_components + num_sigma_channels)
            )

        def forward(self, x, eps=1e-6):
            #
            # Returns
            # -------
            # log_pi: (bsz, n_components)
            # mu: (bsz, n_components, dim_out)
            # sigma: (bsz, n_components, dim_out)
            #
            log_pi = torch.log_softmax(self.pi_network(x), dim=-1)
            normal_params = self.normal_network(x)
            mu = normal_params[..., :self.dim_out * self.n_components]
            sigma = normal_params[..., self.dim_out * self.n_components:]
            if self.noise_type is NoiseType.DIAGONAL:
                sigma = torch.exp(sigma + eps)
            if self.noise_type is NoiseType.ISOTROPIC:
                sigma = torch.exp(sigma + eps).repeat(1, self.dim_out)
            if self.noise_type is NoiseType.ISOTROPIC_ACROSS_CLUSTERS:
                sigma = torch.exp(sigma + eps).repeat(1, self.n_components * self.dim_out)
            if self.noise_type is NoiseType.FIXED:
                sigma = torch.full_like(mu, fill_value=self.fixed_noise_level)
            mu = mu.reshape(-1, self.n_components, self.dim_out)
            sigma = sigma.reshape(-1, self.n_components, self.dim_out)
            return log_pi, mu, sigma

        def loss(self, x, y):
            log_pi, mu, sigma = self.forward(x)
            z_score = (y.unsqueeze(1) - mu) / sigma
            normal_loglik = (
                -0.5 * torch.einsum("bij,bij->bi", z_score, z_score)
                -torch.sum(torch.log(sigma), dim=-1)
            )
            loglik = torch.logsumexp(log_pi + normal_loglik, dim=-1)
            return -loglik

        def sample(self, x):
            log_pi, mu, sigma = self.forward(x)
            cum_pi = torch.cumsum(torch.exp(log_pi), dim=-1)
            rvs = torch.rand(len(x), 1).to(x)
            rand_pi = torch.searchsorted(cum_pi, rvs)
            rand_normal = torch.randn_like(mu) * sigma + mu
            samples = torch.take_along_dim(rand_normal, indices=rand_pi.unsqueeze(-1), dim=1).squeeze(dim=1)
            return samples

    return MixtureDensityNetwork


def mixture_of(torch, log_pi, mu, sigma):
    """The network's density as torch.distributions writes it: ``MixtureSameFamily(Categorical(logits=log_pi),
    Independent(Normal(mu, sigma), 1))``."""
    D = torch.distributions
    return D.MixtureSameFamily(D.Categorical(logits=log_pi), D.Independent(D.Normal(mu, sigma), 1))


def gen_data(n=512, seed=0):
    """examples/ex_1d.py's ``gen_data`` (its ``np.random.randn`` from a seeded generator): the inverse of a noisy sine,
    a one-to-many map."""
    y = np.linspace(-1, 1, n)
    x = 7 * np.sin(5 * y) + 0.5 * y + 0.5 * np.random.default_rng(seed).standard_normal(y.shape)
    return x[:,np.newaxis], y[:,np.newaxis]


def gen_data_2d(n=64, seed=1):
    """A two-dimensional response for the noise types that differ from the diagonal one only there: a ring around
    the covariate, two branches."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1))
    angle = rng.uniform(0, 2 * np.pi, n)
    branch = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    y = np.stack([np.cos(angle) + x[:, 0], branch * np.sin(angle) * 0.5], axis=1) + 0.05 * rng.standard_normal((n, 2))
    return x, y
