"""Porting probe: three latent-variable families (tiny, a few Adam updates), written once as their references write
them (``gumbel_vae_iwae_program.py``; ``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial weights:
the first forward, the first gradients, the losses and the state after the steps agree to 1e-10 in float64, eagerly
and with the whole step (zero_grad, forward, loss, backward, Adam) one ``kiln.compile(fullgraph=True)`` graph against
torch's eager loop, the annealed attributes changing between the calls; the float32 loop (the temperature passed to
the compiled step as an argument, generation from NumPy one-hot codes) at float32's level, and the model exported by
``kiln.onnx.export`` run by onnxruntime as torch's.

What is in it: YongfeiYan/Gumbel_Softmax_VAE's ``VAE_gumbel`` (ericjang's sampler: ``sample_gumbel`` as
``-torch.log(-torch.log(U + eps) + eps)`` with ``U`` fed, ``gumbel_softmax_sample``, the straight-through hard sample
``y_hard = torch.zeros_like(y).view(-1, shape[-1]); y_hard.scatter_(1, ind.view(-1, 1), 1); (y_hard - y).detach() + y``,
``F.binary_cross_entropy(..., size_average=False)``, the KL to the uniform prior ``qy * torch.log(qy * K + 1e-20)``)
with the temperature on the model, annealed between steps by ``model.temp = np.maximum(temp * np.exp(-ANNEAL_RATE *
batch_idx), temp_min)`` (a NumPy float64); ``F.gumbel_softmax(logits, tau, hard=True)`` in kiln's own statistics
(one-hot, category frequencies, the straight-through gradient equal to the soft sample's). The IWAE bound (``k``
samples by ``unsqueeze(0).expand`` and by ``repeat``, ``Normal`` encoder with its ``rsample`` noise fed,
``Bernoulli(logits=...).log_prob``, ``torch.logsumexp(log_w, 0) - math.log(k)``), its compiled inference following
``model.k``; ``Normal.rsample`` in kiln's statistics. 1Konny's Beta-VAE ``Solver`` (a plain object whose
``global_iter += 1`` at each step drives the capacity ``C = min(C_max, C_max * global_iter / C_stop_iter)``,
``gamma * torch.abs(kld - C)``) plus beta-TCVAE's minibatch-weighted total correlation (``Normal.log_prob`` of
``[B, 1, D]`` against ``[1, B, D]``, ``torch.logsumexp(..., dim=1)``) weighted by the model's annealed ``self.beta``,
the solver's bound method compiled whole.

What broke: the NumPy float64 temperature ``np.maximum`` leaves on the model was not guarded by the compiled step
(``runtime/attribute_writes.guardable`` took Python numbers only), so the trace baked in the temperature it saw: once
the temperature stopped changing the compiled step reused a variant traced with an older one, silently (losses 1e-5
off torch's from the 4th step). NumPy number scalars are now guarded as Python numbers are, on modules and plain
objects alike (8128e80; tests in ``tests/runtime/test_compiled_module_attribute_reads.py`` and
``test_compiled_plain_object_attribute_reads.py``). A temperature annealed at every step instead (a new value each
call) traces until ``recompile_limit``, where the fullgraph error said ``it sets  at every call``, naming nothing: it
now names the attribute read and says to keep such a value in a tensor (e942507). Everything else agreed to 1e-10 as
first written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e import gumbel_vae_iwae_program as program
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require, require_torch

STEPS = 5
RNG = np.random.default_rng(0)
IMAGES = (RNG.random((STEPS, program.BATCH, program.PIXELS)) > 0.5).astype(np.float64)
UNIFORMS = RNG.random((STEPS, program.BATCH, program.LATENT, program.CATEGORIES))
IWAE_NOISE = RNG.standard_normal((STEPS, program.SAMPLES, program.BATCH, program.Z_DIM))
BETA_NOISE = RNG.standard_normal((STEPS, program.BATCH, program.Z_DIM))


def _adam(lib, model):
    return lib.optim.Adam(model.parameters(), lr=1e-2)


def _first_forward_and_gradients(model, loss):
    """The record's first forward (the loss) and first gradients, taken before the optimizer starts."""
    loss.backward()
    record = {"first loss": loss.item(), "first grads": gradients(model)}
    model.zero_grad()
    return record


# --- the Gumbel-softmax VAE ----------------------------------------------------------------------------------------


def train_gumbel_vae(compiled, hard=True):
    def train(lib, nn, F, model):
        model.hard = hard
        optimizer = _adam(lib, model)
        first = lib.tensor(IMAGES[0])
        recon, qy = model(first, lib.tensor(UNIFORMS[0]))
        record = {"first recon": array(recon), "first qy": array(qy),
                  **_first_forward_and_gradients(model, program.gumbel_vae_loss(lib, F, recon, first, qy))}

        def step(data, U):
            optimizer.zero_grad()
            recon_batch, qy = model(data, U)
            loss = program.gumbel_vae_loss(lib, F, recon_batch, data, qy)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and lib is kiln else step
        losses, temperatures = [], []
        for batch_idx in range(STEPS):
            temperatures.append(model.temp)
            losses.append(run(lib.tensor(IMAGES[batch_idx]), lib.tensor(UNIFORMS[batch_idx])).item())
            program.anneal(model, batch_idx + 1)
        return {**record, "losses": losses, "temperatures": temperatures, "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("hard", [True, False], ids=["straight-through", "soft"])
def test_gumbel_vae_with_annealed_temperature_as_torch(float64_default, compiled, hard):
    ours, theirs = run_in_lockstep(program.gumbel_vae, train_gumbel_vae(compiled, hard))
    assert_same_records(ours, theirs)
    temperatures = theirs["temperatures"]
    assert type(temperatures[-1]) is np.float64 and len(set(temperatures)) == 3  # annealed, then held at temp_min
    assert temperatures[-1] == temperatures[-2] == program.TEMP_MIN


def test_f_gumbel_softmax_hard_in_kilns_statistics(float64_default):
    """``F.gumbel_softmax(logits, tau, hard=True)`` draws from kiln's generator, so it is checked for what it computes:
    one-hot rows whose categories come at softmax(logits)'s frequencies, the value ``y_hard - y_soft.detach() + y_soft``
    (the soft sample of the same draw, re-seeded) and so the soft sample's gradient; compiled, a new draw each call."""
    torch, nn, F = libraries("kiln")
    probabilities = np.array([0.1, 0.2, 0.7])
    logits = torch.tensor(np.log(np.tile(probabilities, (4000, 1))), requires_grad=True)
    weights = torch.tensor(np.random.default_rng(1).standard_normal((4000, 3)))
    samples = {}
    for hard in (True, False):
        kiln.manual_seed(3)
        samples[hard] = F.gumbel_softmax(logits, tau=0.5, hard=hard)
        (samples[hard] * weights).sum().backward()
        samples[hard, "grad"] = array(logits.grad)
        logits.grad = None
    one_hot = array(samples[True])
    assert set(np.unique(one_hot)) == {0.0, 1.0} and np.all(one_hot.sum(-1) == 1)
    np.testing.assert_allclose(one_hot.mean(0), probabilities, atol=0.03)
    np.testing.assert_array_equal(one_hot.argmax(-1), array(samples[False]).argmax(-1))
    np.testing.assert_allclose(samples[True, "grad"], samples[False, "grad"], rtol=1e-12, atol=1e-15)
    draw = kiln.compile(lambda logits: F.gumbel_softmax(logits, tau=0.5, hard=True), fullgraph=True)
    first, second = array(draw(logits.detach())), array(draw(logits.detach()))
    assert np.all(first.sum(-1) == 1) and (first != second).any()
    np.testing.assert_allclose(second.mean(0), probabilities, atol=0.03)


# --- IWAE ------------------------------------------------------------------------------------------------------------


def train_iwae(compiled):
    def train(lib, nn, F, model):
        optimizer = _adam(lib, model)
        bound = model(lib.tensor(IMAGES[0]), lib.tensor(IWAE_NOISE[0]))
        record = {"first bound": array(bound), **_first_forward_and_gradients(model, -bound.mean())}

        def step(x, eps):
            optimizer.zero_grad()
            loss = -model(x, eps).mean()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and lib is kiln else step
        losses = [run(lib.tensor(IMAGES[i]), lib.tensor(IWAE_NOISE[i])).item() for i in range(STEPS)]
        return {**record, "losses": losses, "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_iwae_bound_training_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(program.iwae, train_iwae(compiled))
    assert_same_records(ours, theirs)


def test_iwae_bounds_by_repeat_and_compiled_inference_follow_k_as_torch(float64_default):
    """The ``x.repeat(k, 1)`` bound equals the ``expand`` one; ``kiln.compile``d inference under ``no_grad`` follows
    ``model.k`` (5, 8, 5 importance samples) as torch's eager model does, and ``k = 1`` is the ELBO's value."""
    x = IMAGES[0]

    def evaluate(torch, nn, F, model):
        forward = kiln.compile(model, fullgraph=True) if torch is kiln else model
        record = {}
        with torch.no_grad():
            for index, k in enumerate((5, 8, 5, 1)):
                model.k = k
                eps = np.random.default_rng(index).standard_normal((k, program.BATCH, program.Z_DIM))
                record[f"k={k} #{index}"] = array(forward(torch.tensor(x), torch.tensor(eps)))
                record[f"repeat k={k} #{index}"] = array(program.iwae_repeat_bound(torch, model, torch.tensor(x),
                                                                                   torch.tensor(eps)))
        return record

    ours, theirs = run_in_lockstep(program.iwae, evaluate)
    assert_same_records(ours, theirs)
    for key in [key for key in theirs if key.startswith("k=")]:
        np.testing.assert_allclose(theirs[key], theirs[f"repeat {key}"], rtol=1e-12)


def test_normal_rsample_in_kilns_statistics(float64_default):
    """``Normal(mu, sigma).rsample((n,))`` draws from kiln's generator: standard moments, and the reparameterised
    gradients (``d z / d mu = 1``, ``d z / d sigma = eps``), as torch's are; the IWAE's flat bound by ``rsample``."""
    mu = kiln.tensor([0.5, -1.0], requires_grad=True)
    sigma = kiln.tensor([2.0, 0.5], requires_grad=True)
    z = kiln.distributions.Normal(mu, sigma).rsample((20000,))
    assert tuple(z.shape) == (20000, 2)
    np.testing.assert_allclose(array(z).mean(0), [0.5, -1.0], atol=0.05)
    np.testing.assert_allclose(array(z).std(0), [2.0, 0.5], rtol=0.03)
    z.sum().backward()
    np.testing.assert_allclose(array(mu.grad), [20000.0, 20000.0])
    np.testing.assert_allclose(array(sigma.grad), ((array(z) - [0.5, -1.0]) / [2.0, 0.5]).sum(0), rtol=1e-9, atol=1e-8)
    torch, nn, F = libraries("kiln")
    bound = program.iwae_repeat_bound(torch, program.iwae(torch, nn, F), torch.tensor(IMAGES[0]), None)
    assert tuple(bound.shape) == (program.BATCH,) and np.all(np.isfinite(array(bound)))


# --- beta-VAE / beta-TCVAE -------------------------------------------------------------------------------------------


def train_beta_vae(compiled):
    def train(lib, nn, F, model):
        solver = program.Solver(lib, F, model, _adam(lib, model))
        run = kiln.compile(solver.step, fullgraph=True) if compiled and lib is kiln else solver.step
        losses, betas = [], []
        for i in range(STEPS):
            model.anneal_beta(i)
            betas.append(model.beta)
            losses.append(run(lib.tensor(IMAGES[i]), lib.tensor(BETA_NOISE[i])).item())
        return {"losses": losses, "betas": betas, "global_iter": solver.global_iter, "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled solver step"])
def test_beta_tcvae_with_annealed_capacity_and_beta_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(program.beta_vae, train_beta_vae(compiled))
    assert_same_records(ours, theirs)
    assert ours["global_iter"] == STEPS and type(ours["global_iter"]) is int
    assert len(set(theirs["betas"])) == 4


def test_total_correlation_and_kld_against_a_float64_loop(float64_default):
    """beta-TCVAE's broadcast estimate (``[B, 1, D]`` against ``[1, B, D]``) equals a plain loop over the pairs, and
    ``kl_divergence``'s total equals ``distributions.kl_divergence`` to the standard normal, in both libraries."""
    rng = np.random.default_rng(4)
    z, mu, logvar = (rng.standard_normal((program.BATCH, program.Z_DIM)) for _ in range(3))
    std = np.exp(0.5 * logvar)
    log_q = -0.5 * ((z[:, None] - mu[None]) / std[None]) ** 2 - np.log(std[None]) - 0.5 * math.log(2 * math.pi)
    norm = math.log(program.BATCH * program.DATASET_SIZE)

    def logsumexp(a, axis):
        top = a.max(axis)
        return top + np.log(np.exp(a - np.expand_dims(top, axis)).sum(axis))

    expected = np.mean([logsumexp(log_q[i].sum(1), 0) - norm - sum(logsumexp(log_q[i, :, d], 0) - norm
                                                                    for d in range(program.Z_DIM))
                        for i in range(program.BATCH)])
    require_torch()
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        tc = program.total_correlation(torch, torch.tensor(z), torch.tensor(mu), torch.tensor(logvar),
                                       program.DATASET_SIZE)
        np.testing.assert_allclose(tc.item(), expected, rtol=1e-12)
        total_kld = program.kl_divergence(torch.tensor(mu), torch.tensor(logvar))[0]
        reference = torch.distributions.kl_divergence(
            torch.distributions.Normal(torch.tensor(mu), torch.tensor(std)),
            torch.distributions.Normal(torch.zeros(program.Z_DIM), torch.ones(program.Z_DIM))).sum(1).mean()
        np.testing.assert_allclose(total_kld.item(), reference.item(), rtol=1e-12)


def train_gumbel_vae_float32(lib, nn, F, model):
    """The reference's float32 loop: the temperature passed to the step as an argument (``model(data, temp, hard)``
    there; set on the model here), a NumPy float64 after the first anneal, and its generation from NumPy one-hot codes
    (``torch.from_numpy(z).float()``, ``model.decode(sample).cpu().data.numpy()``)."""
    optimizer = _adam(lib, model)

    def step(data, U, temp):
        model.temp = temp
        optimizer.zero_grad()
        recon_batch, qy = model(data, U)
        loss = program.gumbel_vae_loss(lib, F, recon_batch, data, qy)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if lib is kiln else step
    temp, losses = program.TEMP, []
    for batch_idx in range(STEPS):
        losses.append(run(lib.tensor(IMAGES[batch_idx], dtype=lib.float32),
                          lib.tensor(UNIFORMS[batch_idx], dtype=lib.float32), temp).item())
        temp = np.maximum(temp * np.exp(-program.ANNEAL_RATE * (batch_idx + 1)), program.TEMP_MIN)
    M, N, K = 4, program.LATENT, program.CATEGORIES
    ind = np.random.default_rng(5).integers(K, size=M * N)
    z = np.zeros((M * N, K))
    z[range(M * N), ind] = 1
    sample = lib.from_numpy(z.reshape(M, N * K)).float()
    with lib.no_grad():
        generated = model.decode(sample).cpu().data.numpy()
    return {"losses": losses, "state": snapshot(model), "generated": generated}


def test_gumbel_vae_float32_compiled_step_with_temperature_argument_as_torch():
    ours, theirs = run_in_lockstep(program.gumbel_vae, train_gumbel_vae_float32)
    assert ours["generated"].dtype == theirs["generated"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def test_gumbel_vae_exported_to_onnx_runs_in_onnxruntime_as_torch(tmp_path):
    """``kiln.onnx.export(model, (x, U), ...)`` of the eval-mode model (the uniform draws an input), run by
    onnxruntime on another batch: torch's eager outputs."""
    onnxruntime = require("onnxruntime")
    import kiln.onnx

    def outputs(torch, nn, F, model):
        model.eval()
        x, U = IMAGES[1].astype(np.float32), UNIFORMS[1].astype(np.float32)
        if torch is not kiln:
            with torch.no_grad():
                return dict(zip(("recon", "qy"), map(array, model(torch.tensor(x), torch.tensor(U)))))
        path = str(tmp_path / "gumbel_vae.onnx")
        example = (torch.tensor(IMAGES[0], dtype=torch.float32), torch.tensor(UNIFORMS[0], dtype=torch.float32))
        kiln.onnx.export(model, example, path, input_names=["x", "U"], output_names=["recon", "qy"])
        recon, qy = onnxruntime.InferenceSession(path).run(None, {"x": x, "U": U})
        return {"recon": recon, "qy": qy}

    ours, theirs = run_in_lockstep(program.gumbel_vae, outputs)
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)
