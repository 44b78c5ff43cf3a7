"""A variational autoencoder on the bundled 8x8 digits, with ``kiln.distributions`` and one compiled training step.

    python examples/vae_digits.py          # a few seconds; prints the held-out loss against the mean image's

The encoder maps an image to the mean and log-variance of a Gaussian over a 2-D latent; ``Normal(mu, std).rsample()``
draws from it with the reparameterization trick (from the step's seed, as dropout draws, so every step gets fresh
noise and the gradient reaches ``mu`` and ``logvar``); the decoder gives one logit per pixel. The loss is the
negative ELBO: the pixels' binary cross-entropy plus ``kl_divergence(posterior, Normal(0, 1))``, per image.
"""

from __future__ import annotations

import argparse

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.distributions import Normal, kl_divergence
from kiln.runtime.data import load_digits, train_test_split

PIXELS = 64


class VAE(nn.Module):
    def __init__(self, latent: int = 2, hidden: int = 128):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, PIXELS))

    def posterior(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return Normal(mu, (0.5 * logvar).exp())

    def forward(self, x):
        posterior = self.posterior(x)
        return self.decoder(posterior.rsample()), posterior

    def reconstruct(self, x):
        """The decoder's pixel probabilities at the posterior mean (no sampling: ``kiln.compile`` takes no random ops)."""
        posterior = self.posterior(x)
        return self.decoder(posterior.mean).sigmoid(), posterior


def negative_elbo(output, images):
    """Per image: the pixels' binary cross-entropy (nats) plus the KL of the posterior to the standard normal."""
    logits, posterior = output
    reconstruction = F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum(-1).mean()
    prior = Normal(kiln.zeros_like(posterior.mean), kiln.ones_like(posterior.mean))
    return reconstruction + kl_divergence(posterior, prior).sum(-1).mean()


def held_out_bce(model: VAE, x: np.ndarray) -> float:
    """The held-out pixels' mean binary cross-entropy of the reconstructions (at the posterior mean)."""
    probabilities = kiln.compile(lambda images: model.reconstruct(images)[0])(x)
    return bernoulli_bce(probabilities, x)


def bernoulli_bce(probabilities: np.ndarray, x: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-(x * np.log(p) + (1 - x) * np.log(1 - p)).mean())


def train(epochs: int = 30, batch_size: int = 64, lr: float = 3e-3, latent: int = 2, seed: int = 0, verbose: bool = True) -> dict[str, float]:
    """Train with Adam; returns the first and last epoch's mean loss and the held-out reconstruction against the
    mean training image's."""
    kiln.manual_seed(seed)
    images, _ = load_digits()
    x_train, _, x_test, _ = train_test_split(images, np.zeros(len(images), np.int64), test_fraction=0.2, seed=seed)
    model = VAE(latent)
    step = kiln.compile_train_step(model, negative_elbo, kiln.optim.Adam(model.parameters(), lr=lr))
    rng, epoch_losses = np.random.default_rng(seed), []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        losses = [step(x_train[batch], x_train[batch]) for batch in np.array_split(order, max(1, len(order) // batch_size))]
        epoch_losses.append(float(np.mean(losses)))
        if verbose and (epoch % 10 == 9 or epoch == epochs - 1):
            print(f"epoch {epoch + 1:3d}  negative ELBO {epoch_losses[-1]:.2f} nats per image")
    result = {"first_loss": epoch_losses[0], "final_loss": epoch_losses[-1], "held_out_bce": held_out_bce(model, x_test),
              "mean_image_bce": bernoulli_bce(np.broadcast_to(x_train.mean(0), x_test.shape), x_test)}
    if verbose:
        print(f"held-out pixel cross-entropy {result['held_out_bce']:.4f} (the mean training image: {result['mean_image_bce']:.4f})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent", type=int, default=2)
    arguments = parser.parse_args()
    train(epochs=arguments.epochs, latent=arguments.latent)
