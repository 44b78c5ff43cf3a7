"""``kiln.compile`` of a model that samples (vae/main.py's ``reparameterize``) without a seed: the error names the line of
the first draw, and ``seed=`` makes it run."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn


class Reparameterized(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def reparameterize(self, mu, logvar):
        std = kiln.exp(0.5 * logvar)
        eps = kiln.randn_like(std)
        return mu + eps * std

    def forward(self, x):
        mu, logvar = self.fc(x).chunk(2, dim=1)
        return self.reparameterize(mu, logvar)


def test_the_error_names_the_first_draws_line():
    model = Reparameterized().eval()  # eval mode does not stop a sample, in PyTorch either
    x = np.ones((2, 3), np.float32)
    with pytest.raises(kiln.KilnError, match=r"the first at test_port_generative_compile_errors\.py:\d+ in reparameterize; call "):
        kiln.compile(model)(x)
    assert kiln.compile(model, seed=0)(x).shape == (2, 2)
