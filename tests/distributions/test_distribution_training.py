"""kiln.distributions in training steps: a tiny VAE (encoder -> Normal.rsample -> decoder, reconstruction + closed-form
KL to a standard-normal prior) trains with kiln.compile_train_step, and a REINFORCE policy loss
``-(Categorical(logits).log_prob(actions) * returns).mean()`` follows PyTorch step by step under SGD in float64."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
from kiln.distributions import Categorical, Independent, Normal, kl_divergence
from oracles import require


class VAE(nn.Module):
    def __init__(self, features: int = 8, latent: int = 2, hidden: int = 16):
        super().__init__()
        self.encoder = nn.Linear(features, hidden)
        self.mu, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, features))
        self.prior = Normal(0.0, 1.0)  # built outside any trace: its constants are made in each step's graph

    def forward(self, x):
        h = self.encoder(x).tanh()
        posterior = Normal(self.mu(h), (0.5 * self.logvar(h)).exp())
        return self.decoder(posterior.rsample()), kl_divergence(posterior, self.prior).sum(-1)


def vae_loss(output, x):
    reconstruction, kl = output
    return ((reconstruction - x) ** 2).sum(-1).mean() + kl.mean()


def test_a_tiny_vae_trains_and_its_loss_falls():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((256, 2))
    data = 3 * (np.tanh(codes @ rng.standard_normal((2, 8))) + 0.05 * rng.standard_normal((256, 8))).astype(np.float32)
    kiln.manual_seed(0)
    model = VAE()
    step = kiln.compile_train_step(model, vae_loss, kiln.optim.Adam(model.parameters(), lr=0.01), seed=1)
    losses = [float(step(data, data)) for _ in range(300)]
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.3 * first, (first, last)
    # a decoder that ignored z could do no better than the data's total variance: the latent carries the codes
    assert last < 0.25 * data.var(0).sum(), (last, data.var(0).sum())
    assert "tensor.random_uniform" in {op.name for op in step.graph.ops}  # rsample draws in the compiled step


def test_the_vae_elbo_matches_a_monte_carlo_kl():
    """The closed-form KL the VAE uses equals log q(z) - log p(z) averaged over q's own draws (within 5 standard errors)."""
    from kiln.backends.numpy import NumpyBackend

    def estimate(mu, sigma):
        posterior, prior = Independent(Normal(mu, sigma), 1), Independent(Normal(0.0, 1.0).expand((3,)), 1)
        z = posterior.sample((20000,))
        return kl_divergence(posterior, prior), posterior.log_prob(z) - prior.log_prob(z)

    graph = kiln.trace(estimate, kiln.TensorSpec((3,), "float64"), kiln.TensorSpec((3,), "float64"))
    exact, samples = NumpyBackend().compile(graph)(np.array([0.5, -1.0, 0.2]), np.array([0.8, 1.5, 0.3]), np.int64(4))
    assert abs(samples.mean() - exact) < 5 * samples.std() / np.sqrt(samples.size)


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, states, actions):
        return self.fc(states), actions


def reinforce(distributions):
    return lambda output, returns: -(distributions.Categorical(logits=output[0]).log_prob(output[1]) * returns).mean()


def test_a_reinforce_policy_loss_follows_torch_under_sgd():
    torch = require("torch")
    policy = Policy().double()
    twin = torch.nn.Linear(4, 3).double()
    twin.load_state_dict({name.removeprefix("fc."): torch.tensor(np.array(value)) for name, value in policy.state_dict().items()})
    step = kiln.compile_train_step(policy, reinforce(kiln.distributions), kiln.optim.SGD(policy.parameters(), lr=0.5))
    optimizer, theirs = torch.optim.SGD(twin.parameters(), lr=0.5), reinforce(torch.distributions)
    rng = np.random.default_rng(3)
    for _ in range(5):
        states, actions, returns = rng.standard_normal((16, 4)), rng.integers(0, 3, 16), rng.standard_normal(16)
        loss = float(step(states, actions, returns))
        optimizer.zero_grad()
        expected = theirs((twin(torch.tensor(states)), torch.tensor(actions)), torch.tensor(returns))
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
    np.testing.assert_allclose(policy.fc.weight.data, twin.weight.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(policy.fc.bias.data, twin.bias.detach().numpy(), rtol=1e-10)
    assert isinstance(Categorical(logits=np.zeros(3)), kiln.distributions.Distribution)
