"""kiln.distributions on the onnxruntime backend: the same graph (erf-based icdf, gathers, closed-form KL) gives the
NumPy reference's values, so the distributions export to a stock ONNX model."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.distributions as kd
from oracles import require


def test_onnxruntime_computes_what_numpy_computes():
    require("onnxruntime")

    def scores(m, s, p, k):
        return (kd.Normal(m, s).icdf(p), kd.Normal(m, s).log_prob(m + s), kd.Categorical(logits=m).log_prob(k),
                kd.Bernoulli(logits=m).entropy(), kd.kl_divergence(kd.Laplace(m, s), kd.Normal(0.0, s)))

    rng = np.random.default_rng(0)
    args = (rng.standard_normal((3, 4)).astype(np.float32), rng.uniform(0.5, 2, (3, 4)).astype(np.float32),
            rng.uniform(0.01, 0.99, (3, 4)).astype(np.float32), np.array([0, 1, 3]))
    ours = kiln.compile(scores, backend="onnxruntime", batch_dim=None)(*args)
    reference = kiln.compile(scores, batch_dim=None)(*args)
    for got, expected in zip(ours, reference):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def test_a_vae_step_with_rsample_trains_alike_on_onnxruntime():
    """The training step with ``rsample`` inside draws the same numbers on both backends (one counter-based generator)."""
    require("onnxruntime")
    from test_distribution_training import VAE, vae_loss

    rng = np.random.default_rng(0)
    data = 3 * np.tanh(rng.standard_normal((64, 2)) @ rng.standard_normal((2, 8))).astype(np.float32)
    losses = {}
    for backend in ("numpy", "onnxruntime"):
        kiln.manual_seed(0)
        model = VAE()
        step = kiln.compile_train_step(model, vae_loss, kiln.optim.SGD(model.parameters(), lr=0.01), backend=backend, seed=1)
        losses[backend] = [float(step(data, data)) for _ in range(4)]
    np.testing.assert_allclose(losses["onnxruntime"], losses["numpy"], rtol=1e-5)
    assert losses["numpy"][-1] < losses["numpy"][0]
