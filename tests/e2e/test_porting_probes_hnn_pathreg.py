"""Porting probe: three more kinds of code that differentiate more than once, written once as their references write them
(``hnn_pathreg_program.py``; ``torch`` is torch or kiln) and run in lockstep with torch 2.13 from kiln's initial
weights, float64 to 1e-10.

- Hamiltonian neural networks (greydanus/hamiltonian-nn): ``MLP`` with ``torch.nn.init.orthogonal_`` and a bias-free
  last layer; ``HNN.forward``'s ``y.split(1, 1)``; ``time_derivative``'s ``torch.autograd.grad(F2.sum(), x,
  create_graph=True)[0] @ self.M.t()`` (and the conservative field, ``dF1 @ torch.eye(*self.M.shape)``); the
  permutation tensor, canonical (``torch.cat([M[n//2:], -M[:n//2]])``) or Levi-Civita (``M *= 1 - torch.eye(n)``,
  ``M[::2] *= -1``, ``M[:, ::2] *= -1``, ``M[i, j] *= -1``); ``rk4_time_derivative``; training as train.py's loop
  (``x = torch.tensor(data['x'], requires_grad=True)``, ``L2_loss``, ``loss.backward(); optim.step();
  optim.zero_grad()``, Adam with ``weight_decay=1e-4``), then ``integrate_model`` by SciPy's ``solve_ivp`` on
  ``model.time_derivative(torch.tensor(np_x, requires_grad=True).view(1, 2)).data.numpy().reshape(-1)``.
- StyleGAN2's path length regularisation (rosinality/stylegan2-pytorch ``train.py``): ``generator(noise,
  return_latents=True)``, ``g_path_regularize`` (``autograd.grad((fake_img * noise).sum(), latents,
  create_graph=True)``, ``path_lengths``, the running ``mean_path_length`` carried from step to step as a tensor),
  ``weighted_path_loss = args.path_regularize * args.g_reg_every * path_loss`` plus ``0 * fake_img[0, 0, 0, 0]``, Adam
  with the lazy-regularisation ratio.

- A contractive autoencoder, its penalty in closed form (``Variable(model.state_dict()['fc1.weight'])``,
  ``contractive_loss.mul_(lam)``) and from the encoder's input gradient (``h.backward(torch.ones(h.size()),
  retain_graph=True)``, ``x.grad`` in the loss, ``x.grad.data.zero_()``, ``loss.backward()`` filling ``x.grad`` again).

Each trains eagerly and with its step one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

What broke: ``Variable(model.state_dict()['fc1.weight'])`` was refused (kiln's state_dict entries are NumPy-backed
``TorchArray``s); ``Variable`` now takes the tensor they stand for (``frontend/legacy_variable.py``,
``tests/frontend/test_legacy_variable_of_data_vs_torch.py``). Otherwise nothing new here (the compiled HNN step reads ``x``, a leaf that requires grad, from a closure, as train.py
keeps it outside its loop; given as an argument, its gradient would be refused: see
``tests/runtime/test_compiled_step_autograd_grad_by_argument_vs_torch.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.hnn_pathreg_program import (L2_loss, cae_steps, contractive_autoencoder, g_path_regularize, hnn_model,
                                     path_length_generator, spring_data)
from e2e.pinn_score_program import Draws
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

HNN_VARIANTS = {
    "solenoidal": dict(field_type="solenoidal"),
    "both-levi-civita": dict(field_type="both", assume_canonical_coords=False),
    "baseline": dict(baseline=True),
}


def train_hnn(compiled, use_rk4=False, steps=4):
    def train(torch, nn, F, model):
        from scipy.integrate import solve_ivp

        data_x, data_dx = spring_data()
        optim = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-4)
        x = torch.tensor(data_x, requires_grad=True)
        dxdt = torch.Tensor(data_dx)

        def train_step():
            dxdt_hat = model.rk4_time_derivative(x, 0.1) if use_rk4 else model.time_derivative(x)
            loss = L2_loss(dxdt, dxdt_hat)
            loss.backward()
            optim.step()
            optim.zero_grad()
            return loss

        record = {"M": array(model.M)}
        run = kiln.compile(train_step, fullgraph=True) if compiled and torch is kiln else train_step
        record["losses"] = [run().item() for _ in range(steps)]
        record["x.grad"] = array(x.grad) if x.grad is not None else np.zeros(0)

        def fun(t, np_x):
            x = torch.tensor(np_x, requires_grad=True).view(1, 2)
            dx = model.time_derivative(x).data.numpy().reshape(-1)
            return dx

        path = solve_ivp(fun=fun, t_span=[0, 1.0], y0=np.array([0.6, 0.0]), t_eval=np.linspace(0, 1.0, 5),
                         rtol=1e-10, atol=1e-10)
        return record | {"state": snapshot(model), "trajectory": path["y"], "evaluations": path["nfev"]}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
@pytest.mark.parametrize("variant", sorted(HNN_VARIANTS))
def test_hamiltonian_nn_trains_and_integrates_as_torch(variant, compiled, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: hnn_model(torch, nn, F, **HNN_VARIANTS[variant]),
                                   train_hnn(compiled))
    assert theirs["evaluations"] == ours["evaluations"] > 10
    assert_same_records(ours, theirs, looser={"trajectory": dict(rtol=1e-8, atol=1e-9)})


def test_hamiltonian_nn_with_rk4_time_derivative_as_torch(float64_default):
    ours, theirs = run_in_lockstep(hnn_model, train_hnn(compiled=True, use_rk4=True))
    assert_same_records(ours, theirs, looser={"trajectory": dict(rtol=1e-8, atol=1e-9)})


def train_path_length(compiled, iterations=4, g_reg_every=2, path_regularize=2.0, batch=3):
    """rosinality's generator loop: the non-saturating step every iteration (a fixed critic score stands in for the
    discriminator), the path length step every ``g_reg_every``; ``mean_path_length`` starts at 0 and becomes the
    step's tensor."""
    draws = Draws()

    def train(torch, nn, F, generator):
        draws.begin(torch)
        g_reg_ratio = g_reg_every / (g_reg_every + 1)
        g_optim = torch.optim.Adam(generator.parameters(), lr=2e-3 * g_reg_ratio,
                                   betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
        critic = torch.tensor(np.linspace(-1, 1, 2 * 4 * 4).reshape(1, 2, 4, 4))

        def g_step(noise):
            fake_img, _ = generator([noise])
            g_loss = F.softplus(-(fake_img * critic).sum((1, 2, 3))).mean()
            generator.zero_grad()
            g_loss.backward()
            g_optim.step()
            return g_loss

        def g_reg_step(noise, image_noise, mean_path_length):
            fake_img, latents = generator([noise], return_latents=True)
            path_loss, mean_path_length, path_lengths = g_path_regularize(torch, fake_img, latents, mean_path_length,
                                                                          noise=image_noise)
            generator.zero_grad()
            weighted_path_loss = path_regularize * g_reg_every * path_loss
            weighted_path_loss += 0 * fake_img[0, 0, 0, 0]
            weighted_path_loss.backward()
            g_optim.step()
            return path_loss, mean_path_length, path_lengths

        if compiled and torch is kiln:
            g_step, g_reg_step = kiln.compile(g_step, fullgraph=True), kiln.compile(g_reg_step, fullgraph=True)
        mean_path_length = torch.tensor(0.0)
        record = {"g_loss": [], "path_loss": [], "mean_path_length": [], "path_lengths": []}
        for i in range(iterations):
            record["g_loss"].append(g_step(draws.randn_like(torch.zeros(batch, 4))).item())
            if i % g_reg_every == 0:
                noise, image_noise = draws.randn_like(torch.zeros(batch, 4)), draws.randn_like(torch.zeros(batch, 2, 4, 4))
                path_loss, mean_path_length, path_lengths = g_reg_step(noise, image_noise, mean_path_length)
                record["path_loss"].append(path_loss.item())
                record["mean_path_length"].append(mean_path_length.item())
                record["path_lengths"].append(array(path_lengths))
            if i == 0:
                record["first_gradients"] = gradients(generator)
        return record | {"state": snapshot(generator)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-steps"])
def test_stylegan2_path_length_regularization_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(path_length_generator, train_path_length(compiled))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-steps"])
def test_contractive_autoencoder_trains_as_torch(compiled, float64_default):
    data = np.random.default_rng(5).uniform(0, 1, (4, 3, 6))

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        closed_form_step, input_gradient_step = cae_steps(torch, nn, F, model, optimizer)
        if compiled and torch is kiln:
            closed_form_step = kiln.compile(closed_form_step, fullgraph=True)
            input_gradient_step = kiln.compile(input_gradient_step, fullgraph=True)
        record = {"closed_form": [closed_form_step(torch.tensor(batch)).item() for batch in data[:2]]}
        outputs = [input_gradient_step(torch.tensor(batch)) for batch in data[2:]]
        record |= {"input_gradient": [loss.item() for loss, _ in outputs], "x.grad": [array(g) for _, g in outputs]}
        return record | {"state": snapshot(model)}

    ours, theirs = run_in_lockstep(contractive_autoencoder, train)
    assert_same_records(ours, theirs)
