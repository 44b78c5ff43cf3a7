"""The VAE example trains: its negative ELBO falls and its held-out reconstructions beat the mean image's."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import vae_digits  # noqa: E402


def test_vae_learns_a_latent_that_reconstructs_held_out_digits():
    result = vae_digits.train(epochs=12, verbose=False)
    assert result["final_loss"] < result["first_loss"] - 5.0
    assert result["held_out_bce"] < 0.9 * result["mean_image_bce"]
