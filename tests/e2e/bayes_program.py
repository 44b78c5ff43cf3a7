"""Bayesian deep learning written once for either library (``torch`` is torch or kiln), for
``tests/e2e/test_porting_probes_bayes.py``:

- Bayes by Backprop as the common tutorial writes it (Blundell et al.; Nitarshan's "Weight Uncertainty in Neural
  Networks"): ``Gaussian`` (mu, rho, ``sigma = torch.log1p(torch.exp(rho))``, ``Normal(0, 1).sample`` noise),
  ``ScaleMixtureGaussian`` prior, ``BayesianLinear`` / ``BayesianNetwork`` and ``sample_elbo`` (samples written into
  ``torch.zeros`` buffers by index, ``F.nll_loss(..., size_average=False)``), the ensemble test loop.
- The analytic-KL variant: reparameterised ``Normal(mu, sigma).rsample()`` weights and
  ``torch.distributions.kl_divergence(q, prior)`` against a ``Normal`` prior.
- MC dropout: a dropout MLP, and the evaluation loop that keeps dropout on at test time (``model.eval()`` then the
  ``enable_dropout`` idiom, or ``model.train()``), ``torch.stack`` of softmax predictions, their mean, variance and
  predictive entropy.
"""

from __future__ import annotations

import math

import numpy as np

IN_FEATURES, HIDDEN, CLASSES = 6, 8, 3


def bayes_by_backprop(torch, nn, F, samples=2, pi=0.5):
    """The tutorial's ``BayesianNetwork`` (``samples`` Monte Carlo samples per ELBO), on ``IN_FEATURES`` inputs."""
    SIGMA_1 = torch.FloatTensor([math.exp(-0)])
    SIGMA_2 = torch.FloatTensor([math.exp(-6)])

    class Gaussian(object):
        def __init__(self, mu, rho):
            super().__init__()
            self.mu = mu
            self.rho = rho
            self.normal = torch.distributions.Normal(0, 1)

        @property
        def sigma(self):
            return torch.log1p(torch.exp(self.rho))

        def sample(self):
            epsilon = self.normal.sample(self.rho.size()).to("cpu")
            return self.mu + self.sigma * epsilon

        def log_prob(self, input):
            return (-math.log(math.sqrt(2 * math.pi))
                    - torch.log(self.sigma)
                    - ((input - self.mu) ** 2) / (2 * self.sigma ** 2)).sum()

    class ScaleMixtureGaussian(object):
        def __init__(self, pi, sigma1, sigma2):
            super().__init__()
            self.pi = pi
            self.sigma1 = sigma1
            self.sigma2 = sigma2
            self.gaussian1 = torch.distributions.Normal(0, sigma1)
            self.gaussian2 = torch.distributions.Normal(0, sigma2)

        def log_prob(self, input):
            prob1 = torch.exp(self.gaussian1.log_prob(input))
            prob2 = torch.exp(self.gaussian2.log_prob(input))
            return (torch.log(self.pi * prob1 + (1 - self.pi) * prob2)).sum()

    class BayesianLinear(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.in_features = in_features
            self.out_features = out_features
            # Weight parameters
            self.weight_mu = nn.Parameter(torch.Tensor(out_features, in_features).uniform_(-0.2, 0.2))
            self.weight_rho = nn.Parameter(torch.Tensor(out_features, in_features).uniform_(-5, -4))
            self.weight = Gaussian(self.weight_mu, self.weight_rho)
            # Bias parameters
            self.bias_mu = nn.Parameter(torch.Tensor(out_features).uniform_(-0.2, 0.2))
            self.bias_rho = nn.Parameter(torch.Tensor(out_features).uniform_(-5, -4))
            self.bias = Gaussian(self.bias_mu, self.bias_rho)
            # Prior distributions
            self.weight_prior = ScaleMixtureGaussian(pi, SIGMA_1, SIGMA_2)
            self.bias_prior = ScaleMixtureGaussian(pi, SIGMA_1, SIGMA_2)
            self.log_prior = 0
            self.log_variational_posterior = 0

        def forward(self, input, sample=False, calculate_log_probs=False):
            if self.training or sample:
                weight = self.weight.sample()
                bias = self.bias.sample()
            else:
                weight = self.weight.mu
                bias = self.bias.mu
            if self.training or calculate_log_probs:
                self.log_prior = self.weight_prior.log_prob(weight) + self.bias_prior.log_prob(bias)
                self.log_variational_posterior = self.weight.log_prob(weight) + self.bias.log_prob(bias)
            else:
                self.log_prior, self.log_variational_posterior = 0, 0

            return F.linear(input, weight, bias)

    class BayesianNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = BayesianLinear(IN_FEATURES, HIDDEN)
            self.l2 = BayesianLinear(HIDDEN, CLASSES)

        def forward(self, x, sample=False):
            x = x.view(-1, IN_FEATURES)
            x = F.relu(self.l1(x, sample))
            x = F.log_softmax(self.l2(x, sample), dim=1)
            return x

        def log_prior(self):
            return self.l1.log_prior + self.l2.log_prior

        def log_variational_posterior(self):
            return self.l1.log_variational_posterior + self.l2.log_variational_posterior

        def sample_elbo(self, input, target, kl_weight, samples=samples):
            outputs = torch.zeros(samples, input.shape[0], CLASSES).to("cpu")
            log_priors = torch.zeros(samples).to("cpu")
            log_variational_posteriors = torch.zeros(samples).to("cpu")
            for i in range(samples):
                outputs[i] = self(input, sample=True)
                log_priors[i] = self.log_prior()
                log_variational_posteriors[i] = self.log_variational_posterior()
            log_prior = log_priors.mean()
            log_variational_posterior = log_variational_posteriors.mean()
            negative_log_likelihood = F.nll_loss(outputs.mean(0), target, size_average=False)
            loss = (log_variational_posterior - log_prior) * kl_weight + negative_log_likelihood
            return loss, log_prior, log_variational_posterior, negative_log_likelihood

    return BayesianNetwork()


def blundell_kl_weight(batch_idx, num_batches):
    """Blundell et al.'s minibatch weighting ``pi_i = 2^(M - i) / (2^M - 1)`` (i from 1): the KL term weighs most on
    the first minibatches of an epoch, and the weights sum to 1."""
    return 2 ** (num_batches - batch_idx - 1) / (2 ** num_batches - 1)


def analytic_kl_network(torch, nn, F, prior_sigma=1.0):
    """Mean-field Gaussian layers with ``rsample`` weights and the closed-form KL to a ``Normal(0, prior_sigma)``
    prior by ``torch.distributions.kl_divergence``."""
    from_distributions = torch.distributions

    class BayesLinear(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).normal_(0, 0.1))
            self.weight_rho = nn.Parameter(torch.full((out_features, in_features), -3.0))
            self.bias_mu = nn.Parameter(torch.zeros(out_features))
            self.bias_rho = nn.Parameter(torch.full((out_features,), -3.0))

        def posterior(self):
            weight_sigma = F.softplus(self.weight_rho)
            bias_sigma = torch.log1p(torch.exp(self.bias_rho))
            return from_distributions.Normal(self.weight_mu, weight_sigma), from_distributions.Normal(self.bias_mu, bias_sigma)

        def forward(self, x):
            q_weight, q_bias = self.posterior()
            return F.linear(x, q_weight.rsample(), q_bias.rsample())

        def kl(self):
            prior = from_distributions.Normal(torch.zeros(1), prior_sigma * torch.ones(1))
            return sum(from_distributions.kl_divergence(q, prior).sum() for q in self.posterior())

    class BayesMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = BayesLinear(IN_FEATURES, HIDDEN)
            self.fc2 = BayesLinear(HIDDEN, CLASSES)

        def forward(self, x):
            return self.fc2(torch.tanh(self.fc1(x)))

        def kl(self):
            return sum(m.kl() for m in self.modules() if isinstance(m, BayesLinear))

    return BayesMLP()


def analytic_elbo_loss(torch, F, model, x, y, kl_weight, n_samples=2):
    """The negative ELBO: the cross-entropy averaged over ``n_samples`` weight draws plus the weighted KL."""
    nll = sum(F.cross_entropy(model(x), y) for _ in range(n_samples)) / n_samples
    return nll + kl_weight * model.kl() / x.shape[0]


def dropout_mlp(torch, nn, F, p=0.3):
    class MCDropoutNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(IN_FEATURES, HIDDEN)
            self.bn = nn.BatchNorm1d(HIDDEN)
            self.drop1 = nn.Dropout(p)
            self.fc2 = nn.Linear(HIDDEN, HIDDEN)
            self.drop2 = nn.Dropout(p)
            self.fc3 = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            x = self.drop1(F.relu(self.bn(self.fc1(x))))
            x = self.drop2(F.relu(self.fc2(x)))
            return self.fc3(x)

    return MCDropoutNet()


def enable_dropout(model):
    """Function to enable the dropout layers during test-time."""
    for m in model.modules():
        if m.__class__.__name__.startswith('Dropout'):
            m.train()


def mc_dropout_predict(torch, F, model, x, forward_passes=5, keep_batchnorm_eval=True):
    """MC dropout at test time: ``model.eval()`` + ``enable_dropout`` (BatchNorm stays in eval), or ``model.train()``
    as many tutorials write it; the stacked softmax predictions' mean, variance and predictive entropy."""
    if keep_batchnorm_eval:
        model.eval()
        enable_dropout(model)
    else:
        model.train()
    with torch.no_grad():
        predictions = torch.stack([F.softmax(model(x), dim=1) for _ in range(forward_passes)])
    mean = predictions.mean(dim=0)
    variance = predictions.var(dim=0)
    epsilon = np.finfo(np.float32).eps
    entropy = -torch.sum(mean * torch.log(mean + epsilon), dim=-1)
    return predictions, mean, variance, entropy
