"""Porting probe: yang-song/score_sde_pytorch, small (``score_sde_program.py``; ``torch`` is torch or kiln), in
lockstep with torch 2.13 from kiln's initial weights, float64 to 1e-10.

- ``VPSDE`` (``torch.linspace`` betas, ``torch.cumprod``, ``marginal_prob``, ``sde``, the reverse SDE's drift), a
  time-conditional score network with Gaussian Fourier features (a frozen ``nn.Parameter(..., requires_grad=False)``),
  ``get_score_fn``'s ``-model(x, t * 999) / std``.
- ``get_sde_loss_fn``'s loss (``reduce_op`` a ``torch.mean`` or a lambda around ``torch.sum``, likelihood weighting),
  trained with Adam eagerly and as one ``kiln.compile(fullgraph=True)`` step; the draws ``t`` and ``z`` are kiln's,
  replayed in torch.
- The predictor-corrector sampler (Langevin corrector with ``snr``, Euler-Maruyama predictor) under
  ``torch.no_grad()``, with the model through ``kiln.compile`` in the compiled run.
- ``get_likelihood_fn``: the probability-flow ODE's drift and the Hutchinson-Skilling divergence (``get_div_fn``:
  ``torch.enable_grad()`` inside ``no_grad``, ``x.requires_grad_(True)``, ``torch.autograd.grad``,
  ``x.requires_grad_(False)``) integrated by SciPy's ``solve_ivp`` over ``to_flattened_numpy``/``torch.from_numpy``
  states; bits per dim. The reference casts the states by ``.type(torch.float32)``; the float64 runs cast to float64.
  The Fourier features' scale is ``1 / 999`` (the labels are ``t * 999``): with scale 1 the ODE is stiff and the
  solver takes thousands of steps.

What broke: nothing.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.pinn_score_program import Draws
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.score_sde_program import VPSDE, euler_maruyama_pc, get_likelihood_fn, score_model, sde_loss

DATA = np.random.default_rng(3).standard_normal((6, 2)) * 0.5 + np.array([0.5, -0.25])


def train_score_sde(compiled, likelihood_weighting=False, steps=3, eps=1e-5):
    draws = Draws()

    def train(torch, nn, F, model):
        draws.begin(torch)
        sde = VPSDE(torch, N=50)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
        batch = torch.tensor(DATA)

        def step_fn(batch, t, z):
            model.train()
            optimizer.zero_grad()
            loss = sde_loss(torch, sde, model, batch, t, z, reduce_mean=not likelihood_weighting,
                            likelihood_weighting=likelihood_weighting)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step_fn, fullgraph=True) if compiled and torch is kiln else step_fn
        record = {"losses": []}
        for index in range(steps):
            t = draws.draw(lambda: torch.rand(batch.shape[0]) * (sde.T - eps) + eps)
            z = draws.randn_like(batch)
            record["losses"].append(run(batch, t, z).item())
            if index == 0 and not compiled:
                record["first_gradients"] = gradients(model)
        model.eval()
        sampler_model = kiln.compile(model, fullgraph=True) if compiled and torch is kiln else model
        noises = [(draws.randn_like(batch), draws.randn_like(batch)) for _ in range(4)]
        prior = draws.randn_like(batch)
        record["samples"] = array(euler_maruyama_pc(torch, sde, sampler_model, prior, noises))
        if not compiled:
            epsilon = draws.randn_like(batch)
            bpd, z, nfe = get_likelihood_fn(torch, sde, epsilon, rtol=1e-7, atol=1e-7, eps=1e-3)(model, batch)
            assert not batch.requires_grad
            record |= {"bpd": array(bpd), "z": array(z), "nfe": nfe}
        return record | {"state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
@pytest.mark.parametrize("likelihood_weighting", [False, True], ids=["mean", "likelihood-weighted"])
def test_score_sde_trains_samples_and_evaluates_likelihood_as_torch(likelihood_weighting, compiled, float64_default):
    ours, theirs = run_in_lockstep(score_model, train_score_sde(compiled, likelihood_weighting))
    assert compiled or theirs["nfe"] > 20
    assert_same_records(ours, theirs, looser={"bpd": dict(rtol=1e-7, atol=1e-8), "/z": dict(rtol=1e-7, atol=1e-8)})
