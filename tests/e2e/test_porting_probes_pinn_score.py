"""Porting probe: code that differentiates more than once, written once as its references write it (``torch`` is
torch or kiln, programs in ``pinn_score_program.py``) and run in lockstep with torch 2.13 from kiln's initial weights,
float64 to 1e-10.

- Physics-informed neural networks (jayroxis/PINNs, the PyTorch port of Raissi's Burgers scripts): an ``OrderedDict``
  of Linear/Tanh layers; inputs made by ``torch.tensor(X[:, 0:1], requires_grad=True)`` then cast; the residual
  ``u_t + u u_x - nu u_xx`` from three ``torch.autograd.grad(u, t | x, grad_outputs=torch.ones_like(u),
  retain_graph=True, create_graph=True)``; ``torch.optim.LBFGS(..., line_search_fn="strong_wolfe")`` driven by its
  closure (``zero_grad``, the losses, ``backward``, ``loss.item()``); ``predict``'s ``.detach().cpu().numpy()``; the
  identification variant with the PDE's coefficients as ``nn.Parameter``s given to ``register_parameter``, Adam
  iterations then L-BFGS, its inputs leaves that require grad (their ``.grad`` accumulates, compared); a heat-equation
  variant with one input ``X.requires_grad_()`` and derivatives sliced out (``du[:, 0:1]``); a ``torch.func`` PINN
  (``functional_call`` on one point, ``grad(grad(u, argnums=2), argnums=2)``, ``vmap(residual, in_dims=(None, 0, 0))``,
  ``grad_and_value`` by a params dict, ``vmap(hessian(u, argnums=(1, 2)))``).
- Score matching: NCSN's ``anneal_dsm_score_estimation`` (``sigmas[labels].view(...)``, a conditional network with
  ``ConditionalLinear``'s ``embed.weight.data.uniform_()``) and ``anneal_Langevin_dynamics`` under ``no_grad``
  (``.long()`` labels, ``np.sqrt`` steps, ``.to('cpu')``); ermongroup's sliced score matching (unit and Gaussian
  projections, ``expand(...).contiguous().view``, ``requires_grad_(True)`` on the duplicated samples,
  ``autograd.grad(gradv, dup_samples, create_graph=True)``), and its energy form, third order in the network.
- Energy-based models: a Langevin sampler by ``autograd.grad(out.sum(), x, only_inputs=True)``; IGEBM's loop
  (``x.requires_grad_(True)`` each step, ``x = x - step * grad + noise``, ``x.detach_()``, ``x.clamp_``); JEM's
  ``sample_q`` (``autograd.Variable(..., requires_grad=True)``, ``x_k.data += ...``, a replay buffer indexed by
  ``torch.randint`` and written back by ``replay_buffer[inds] = samples.cpu()``); the UvA tutorial's
  ``generate_samples`` (frozen parameters, ``torch.set_grad_enabled``, ``noise.normal_``, ``inp_imgs.data.add_``,
  ``inp_imgs.grad.data.clamp_``, ``grad.detach_()``/``zero_()``); contrastive divergence trained with Adam; JEM's
  iteration with its SGLD inside as one compiled step.
- Gradient penalties and curvature: rosinality/stylegan2-pytorch's lazy R1 step (``real_img.requires_grad = True``,
  ``d_r1_loss``, ``(r1 / 2 * r1_loss * d_reg_every + 0 * real_pred[0]).backward()``, ``real_img.grad`` compared);
  ``torch.autograd.functional.hvp``/``vhp``/``hessian``, ``torch.func.hessian`` and ``jacfwd(jacrev(f))`` of a loss
  of the flat parameters (``torch.func.functional_call``, ``split``/``view``), Pearlmutter's double backward, a damped
  Newton step by ``torch.linalg.solve`` and ``vector_to_parameters`` (eagerly and as one compiled function);
  ``torch.func.grad(grad(f))`` (and third order),
  ``vmap(grad(grad(f)))``, ``jacfwd(jacrev(g))`` of scalar functions.

Random draws are kiln's, replayed in torch (``Draws``; the two generators differ for one seed). The whole training
steps (Adam with the PDE residual, DSM, the sliced losses, the EBM iteration with its sampler inside, the R1 step) are
also each one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop; the DSM's Langevin sampler calls the
network through ``kiln.compile``. L-BFGS's ``step(closure)`` cannot be one graph (a data-dependent number of closure
calls and branches on the losses; ``torch.compile(fullgraph=True)`` refuses it too): under ``kiln.compile`` it runs
eagerly, warned, and ``fullgraph=True`` raises naming it.

What broke:
- ``LBFGS.step(closure)`` returned the first loss as a Python float; torch returns the closure's loss tensor
  (``orig_loss``), so ``loss = optimizer.step(closure); loss.item()`` failed. And inside ``kiln.compile`` it failed
  with a ``TypeError`` from ``np.asarray`` of a traced gradient, even without ``fullgraph``; it now raises a
  ``TraceError`` at the user's line, which ``kiln.compile`` turns into its eager fallback (``frontend/optim_lbfgs.py``,
  ``tests/optim/test_lbfgs_closure_vs_torch.py``).
- A compiled whole step given an argument that requires grad (the identification problem's ``x``) traced it as not
  requiring grad, so ``autograd.grad(u, x)`` by it raised "does not require grad ... mark it with requires_grad_()";
  it now requires grad in the trace, and a loss reaching it is refused with what to do (eager fallback, warned)
  (``runtime/step_capture.py``, ``tests/runtime/test_compiled_step_autograd_grad_by_argument_vs_torch.py``). The
  compiled identification steps read their inputs from ``self``, as the reference's loop does.
- Those steps take no arguments: ``kiln.compile`` took such a call for a NumPy call, returning arrays and raising where
  torch.compile runs eagerly (the L-BFGS step); it is now PyTorch's kind (``runtime/compiled_function.py``,
  ``tests/runtime/test_compile_zero_arguments_vs_torch.py``).
- The ``torch.func`` PINN failed eagerly and compiled with ``KeyError: Value(%?: tensor<5xf64>)``: ``vmap`` given an
  eager tensor inside ``grad``'s trace (``torch.zeros_like(X0)``, the closure's ``X0``) bound its eager value, which
  belongs to no graph being built; it now takes the trace's value, as any operand (``runtime/vmap.py``,
  ``tests/runtime/test_vmap_eager_tensor_under_grad_vs_torch.py``).
- The compiled R1 step (``real_img.requires_grad = True`` on its argument) left the caller's ``real_img`` without
  ``.grad`` and not requiring grad (silently); both are now written back (``runtime/argument_writes.py``,
  ``tests/runtime/test_compiled_step_marked_argument_grad_vs_torch.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.pinn_score_program import (Draws, anneal_Langevin_dynamics, anneal_dsm_score_estimation, burgers_data,
                                    burgers_dnn, burgers_identification, burgers_pinn, contrastive_divergence_loss,
                                    energy_net, flat_parameter_loss, functional_burgers_loss, generate_samples,
                                    heat_pinn_loss, igebm_langevin, jem_sample_q, jem_training_step, pearlmutter_hvp,
                                    r1_discriminator, sample_langevin, score_net, sliced_score_estimation,
                                    sliced_score_estimation_vr, sliced_score_matching, stylegan2_d_steps)
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

NU = 0.01 / np.pi
SHORT_LBFGS = dict(lr=1.0, max_iter=12, max_eval=15, history_size=50, tolerance_grad=1e-5,
                   tolerance_change=1.0 * np.finfo(float).eps, line_search_fn="strong_wolfe")


def train_burgers(torch, nn, F, dnn):
    X_u, u, X_f, _, _ = burgers_data()
    model = burgers_pinn(torch, nn, F, dnn, X_u, u, X_f, NU, lbfgs=SHORT_LBFGS)
    first = model.loss_func()
    record = {"first_loss": first.item(), "first_gradients": gradients(dnn)}
    model.losses.clear()
    returned = model.train()
    assert type(returned) is type(first) and returned.requires_grad  # the closure's loss tensor, as torch's orig_loss
    u_pred, f_pred = model.predict(X_f[:7])
    return record | {"returned": returned.item(), "losses": model.losses, "iter": model.iter, "state": snapshot(dnn),
                     "u": u_pred, "f": f_pred, "lbfgs_state": lbfgs_counters(model.optimizer)}


def lbfgs_counters(optimizer):
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    return {"func_evals": int(state["func_evals"]), "n_iter": int(state["n_iter"]), "d": np.array(state["d"].tolist())}


def test_burgers_pinn_lbfgs_as_torch(float64_default):
    """Raissi's forward Burgers problem: the first loss and gradients (through the residual's second derivative), the
    closure's losses along the strong-Wolfe L-BFGS run, the evaluations it made, the weights and the predicted u and
    residual after it (``predict``: ``.detach().cpu().numpy()``)."""
    ours, theirs = run_in_lockstep(burgers_dnn, train_burgers)
    assert len(theirs["losses"]) == theirs["iter"] - 1 == theirs["lbfgs_state"]["func_evals"] > 10
    assert theirs["losses"][-1] < 0.6 * theirs["losses"][0]
    assert_same_records(ours, theirs)


def train_identification(compiled):
    def train(torch, nn, F, dnn):
        rng = np.random.default_rng(3)
        X = np.hstack([rng.uniform(-1, 1, (24, 1)), rng.uniform(0, 1, (24, 1))])
        u = -np.sin(np.pi * X[:, 0:1]) * np.exp(-X[:, 1:2])
        model = burgers_identification(torch, nn, F, dnn, X, u, SHORT_LBFGS)
        adam_step, lbfgs_step = model.adam_step, model.lbfgs_step
        if compiled and torch is kiln:
            adam_step = kiln.compile(adam_step, fullgraph=True)
            lbfgs_step = kiln.compile(lbfgs_step)
        adam = [adam_step().item() for _ in range(4)]
        after_adam = snapshot(dnn)
        if compiled and torch is kiln:
            with pytest.warns(UserWarning, match=r"runs eagerly.*LBFGS\.step\(closure\) cannot be captured"):
                returned = lbfgs_step()
        else:
            returned = lbfgs_step()
        return {"adam": adam, "after_adam": after_adam, "returned": returned.item(), "state": snapshot(dnn),
                "lambdas": [model.lambda_1.item(), np.exp(model.lambda_2.item())], "x.grad": array(model.x.grad),
                "iter": model.iter}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-adam-step"])
def test_burgers_identification_adam_then_lbfgs_as_torch(compiled, float64_default):
    """The identification problem: the registered ``lambda_1``/``lambda_2`` learn with the network, Adam iterations (one
    compiled graph each in the compiled run) then L-BFGS (eager under ``kiln.compile``, warned); ``x`` is a leaf that
    requires grad, so every ``backward`` also accumulates into ``x.grad``, as in torch."""
    ours, theirs = run_in_lockstep(burgers_dnn, train_identification(compiled))
    assert theirs["iter"] > 5 and theirs["lambdas"][0] != 0.0
    assert_same_records(ours, theirs)


def test_lbfgs_step_in_fullgraph_compile_names_it(float64_default):
    """``kiln.compile(fullgraph=True)`` of a function calling ``LBFGS.step(closure)`` raises at the user's line, saying
    why it cannot be one graph (torch's ``fullgraph=True`` refuses it too, at the step's ``float(closure())``)."""
    kiln.manual_seed(0)
    X = np.random.default_rng(0).uniform(0, 1, (8, 2))
    model = burgers_identification(kiln, kiln.nn, kiln.nn.functional, burgers_dnn(kiln, kiln.nn, kiln.nn.functional), X,
                                   X[:, :1], SHORT_LBFGS)
    with pytest.raises(kiln.TraceError, match=r"pinn_score_program.py:\d+ in lbfgs_step(.|\n)*LBFGS\.step"):
        kiln.compile(model.lbfgs_step, fullgraph=True)()


def train_heat(compiled, steps=4):
    def train(torch, nn, F, model):
        rng = np.random.default_rng(1)
        X = torch.tensor(np.hstack([rng.uniform(0, 1, (16, 1)), rng.uniform(-1, 1, (16, 1))]))
        x0 = rng.uniform(-1, 1, (6, 1))
        X0, u0 = torch.tensor(np.hstack([np.zeros_like(x0), x0])), torch.tensor(np.sin(np.pi * x0))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

        def step(X):
            optimizer.zero_grad()
            loss = heat_pinn_loss(torch, model, X, X0, u0)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        losses = [run(X).item() for _ in range(steps)]
        return {"losses": losses, "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_heat_equation_pinn_trains_as_torch(compiled, float64_default):
    """The heat equation with one input ``X.requires_grad_()`` and sliced derivatives, Adam steps eagerly and as one
    compiled graph (second derivative, then the loss's backward through it)."""
    ours, theirs = run_in_lockstep(burgers_dnn, train_heat(compiled))
    assert_same_records(ours, theirs)


def train_functional_pinn(compiled, steps=3, lr=1e-2):
    """The ``torch.func`` PINN trained by plain gradient descent on a params dict (``grad_and_value``, a dict
    comprehension update), eagerly and as one compiled graph (``vmap`` of nested ``grad``s, then ``grad`` of that by
    the parameters); then each point's Hessian in (t, x) by ``vmap(hessian(u, argnums=(1, 2)))``."""

    def train(torch, nn, F, model):
        func = torch.func
        rng = np.random.default_rng(0)
        T, X = torch.tensor(rng.uniform(0, 1, 12)), torch.tensor(rng.uniform(-1, 1, 12))
        u, loss_fn = functional_burgers_loss(torch, model, torch.tensor(rng.uniform(-1, 1, 5)))
        params = {k: v.detach() for k, v in model.named_parameters()}

        def step(params, T, X):
            grads, loss = func.grad_and_value(loss_fn)(params, T, X)
            return loss, {k: params[k] - lr * grads[k] for k in params}

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        losses = []
        for _ in range(steps):
            loss, params = run(params, T, X)
            losses.append(loss.item())
        hessians = func.vmap(func.hessian(u, argnums=(1, 2)), in_dims=(None, 0, 0))(params, T, X)
        return {"losses": losses, "params": {k: array(v) for k, v in params.items()},
                "hessian": array(torch.stack([torch.stack(list(row), -1) for row in hessians], -1))}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_torch_func_pinn_trains_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(burgers_dnn, train_functional_pinn(compiled))
    assert_same_records(ours, theirs)


SIGMAS = np.exp(np.linspace(np.log(1.0), np.log(0.05), 4))
"""NCSN's noise levels: ``np.exp(np.linspace(np.log(sigma_begin), np.log(sigma_end), num_classes))``."""


def two_moons(n=12, seed=2):
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, n)
    upper = rng.uniform(size=n) < 0.5
    points = np.stack([np.cos(angle) + np.where(upper, 0, 1), np.sin(angle) * np.where(upper, 1, -1) + 0.25], 1)
    return points + 0.05 * rng.standard_normal((n, 2))


def train_dsm(compiled, steps=4):
    """NCSN's runner loop on 2-D data: dequantized ``X``, noise levels per sample, ``anneal_dsm_score_estimation``, Adam;
    then ``anneal_Langevin_dynamics`` from uniform noise with the trained network (``kiln.compile``d in the compiled
    run). Noise is drawn by kiln and replayed in torch (``Draws``); the compiled step takes its noise as an input."""

    draws = Draws()

    def train(torch, nn, F, score):
        draws.begin(torch)
        sigmas = torch.tensor(SIGMAS)
        optimizer = torch.optim.Adam(score.parameters(), lr=1e-3, betas=(0.9, 0.999), amsgrad=False)
        rng = np.random.default_rng(4)
        X = torch.tensor(two_moons())

        def step(X, labels, noise):
            loss = anneal_dsm_score_estimation(torch, score, X, labels, sigmas, 2.0, randn_like=lambda _: noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        losses = []
        for _ in range(steps):
            score.train()
            labels = torch.tensor(rng.integers(0, len(SIGMAS), X.shape[0]))
            losses.append(run(X, labels, draws.randn_like(X)).item())
        sampler = kiln.compile(score) if compiled and torch is kiln else score
        x_mod = torch.tensor(np.random.default_rng(5).uniform(size=(5, 2)))
        images = anneal_Langevin_dynamics(torch, x_mod, sampler, SIGMAS, randn_like=draws.randn_like)
        return {"losses": losses, "state": snapshot(score), "images": [array(image) for image in images]}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_denoising_score_matching_and_annealed_langevin_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: score_net(torch, nn, F, n_sigmas=len(SIGMAS)),
                                   train_dsm(compiled))
    assert len(theirs["images"]) == 3 * len(SIGMAS)
    assert_same_records(ours, theirs)


SLICED = {"ssm": sliced_score_estimation, "ssm_vr": sliced_score_estimation_vr}


def train_sliced(objective, compiled, n_particles=2, steps=3):
    """ermongroup/sliced_score_matching's toy training: a loss from ``objective`` (a score network's SSM or SSM-VR, or
    an energy's ``sliced_score_matching``), Adam; the projections drawn by kiln and replayed in torch (an input of the
    compiled step)."""

    draws = Draws()

    def train(torch, nn, F, net):
        draws.begin(torch)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        samples = torch.tensor(two_moons(8))
        loss_of = sliced_score_matching if objective == "energy" else SLICED[objective]

        def step(samples, vectors):
            loss, loss1, loss2 = loss_of(torch, net, samples, n_particles, randn_like=lambda _: vectors)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss, loss1, loss2

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": []}
        for index in range(steps):
            vectors = draws.randn_like(torch.zeros(n_particles * samples.shape[0], 2))
            losses = run(samples, vectors)
            record["losses"].append([loss.item() for loss in losses])
            if index == 0:
                record["first_gradients"] = gradients(net)
        return record | {"state": snapshot(net)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
@pytest.mark.parametrize("objective", ["ssm", "ssm_vr", "energy"])
def test_sliced_score_matching_trains_as_torch(objective, compiled, float64_default):
    """SSM and SSM-VR on a score network (the loss's backward is second order through the network), and the
    energy-based form (third order: the score is itself ``autograd.grad`` of the energy)."""
    build = energy_net if objective == "energy" else score_net
    ours, theirs = run_in_lockstep(build, train_sliced(objective, compiled))
    assert_same_records(ours, theirs)


def train_ebm(compiled, iterations=3, sampler_steps=4):
    """Energy-based models sampled by Langevin dynamics: swyoon-style ``sample_langevin`` and JEM's ``sample_q`` (with its
    replay buffer) from the initial network, then training by contrastive divergence with Adam, the negatives from the
    IGEBM loop (eager run: also from the UvA tutorial's ``generate_samples``). In the compiled run the whole iteration
    (the IGEBM sampler's ``autograd.grad`` by the input at each step, ``detach_``, ``clamp_``, then the loss, backward and
    Adam) is one ``kiln.compile(fullgraph=True)`` graph, its noise given as inputs."""
    draws = Draws()

    def train(torch, nn, F, model):
        draws.begin(torch)
        record = {}
        x0 = torch.tensor(np.random.default_rng(6).uniform(-1, 1, (5, 2)))
        samples, dynamics = sample_langevin(torch, x0.clone(), model, 0.05, 3, randn_like=draws.randn_like)
        record["sample_langevin"] = [array(s) for s in samples] + [array(d) for d in dynamics]
        replay_buffer = draws.draw(lambda: torch.Tensor(10, 2).uniform_(-1, 1))
        record["jem"] = [array(jem_sample_q(torch, model, replay_buffer, 4, 3, draws, FloatTensor=torch.Tensor))
                         for _ in range(2)]
        record["replay_buffer"] = array(replay_buffer)
        assert all(p.requires_grad for p in model.parameters()) and model.training
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.999))
        X = torch.tensor(two_moons(6) / 2)

        def step(real_imgs, x_init, noises):
            fake_imgs = igebm_langevin(torch, model, x_init, sampler_steps, step_size=0.1, noise_scale=0.01,
                                       randn_like=lambda _, queue=list(noises.unbind(0)): queue.pop(0))
            loss = contrastive_divergence_loss(torch, model, real_imgs, fake_imgs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss, fake_imgs

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record["losses"], record["fakes"] = [], []
        for _ in range(iterations):
            real_imgs = X.clone()
            real_imgs.add_(draws.randn_like(real_imgs) * 0.005).clamp_(min=-1.0, max=1.0)
            x_init = draws.draw(lambda: torch.rand(6, 2) * 2 - 1)
            noises = draws.randn_like(torch.zeros(sampler_steps, 6, 2))
            loss, fake_imgs = run(real_imgs, x_init, noises)
            record["losses"].append(loss.item())
            record["fakes"].append(array(fake_imgs))
        if not compiled:
            record["uva"] = array(generate_samples(torch, model, x0.clone(), steps=3, step_size=0.1, draws=draws))
        return record | {"state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_energy_based_model_langevin_sampling_and_training_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: energy_net(torch, nn, F), train_ebm(compiled))
    assert_same_records(ours, theirs)



@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_jem_training_step_with_sgld_inside_as_torch(compiled, float64_default):
    """JEM's iteration with its SGLD sampler inside (three ``autograd.grad`` by a ``Variable`` updated through
    ``.data +=``, then the loss's backward and Adam), eagerly and as one compiled graph."""
    rng = np.random.default_rng(9)
    x_p, inits, noises = rng.standard_normal((4, 2)), rng.uniform(-1, 1, (3, 4, 2)), rng.standard_normal((3, 3, 4, 2))

    def train(torch, nn, F, f):
        optimizer = torch.optim.Adam(f.parameters(), lr=1e-2)

        def step(x_p, init_sample, noises):
            return jem_training_step(torch, f, optimizer, x_p, init_sample, noises)

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        outputs = [run(torch.tensor(x_p), torch.tensor(inits[i]), torch.tensor(noises[i])) for i in range(3)]
        return {"losses": [loss.item() for loss, _ in outputs], "x_q": [array(x_q) for _, x_q in outputs],
                "state": snapshot(f), "training": f.training}

    ours, theirs = run_in_lockstep(energy_net, train)
    assert_same_records(ours, theirs)


def train_r1(compiled, iterations=4, d_reg_every=2):
    """rosinality's discriminator loop: a logistic step each iteration, the R1 step every ``d_reg_every`` (its
    ``real_img`` made to require grad inside, so torch's backward also fills ``real_img.grad``); Adam with StyleGAN2's
    lazy-regularisation ratio. The compiled run compiles each step ``fullgraph=True``."""

    def train(torch, nn, F, discriminator):
        d_reg_ratio = d_reg_every / (d_reg_every + 1)
        d_optim = torch.optim.Adam(discriminator.parameters(), lr=2e-3 * d_reg_ratio,
                                   betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
        d_step, d_reg_step = stylegan2_d_steps(torch, F, discriminator, d_optim, d_reg_every=d_reg_every)
        if compiled and torch is kiln:
            d_step, d_reg_step = kiln.compile(d_step, fullgraph=True), kiln.compile(d_reg_step, fullgraph=True)
        rng = np.random.default_rng(7)
        record = {"d_loss": [], "r1_loss": [], "real_img.grad": []}
        for i in range(iterations):
            real_img = torch.tensor(rng.standard_normal((3, 2, 8, 8)))
            fake_img = torch.tensor(rng.standard_normal((3, 2, 8, 8)))
            record["d_loss"].append(d_step(real_img, fake_img).item())
            if i % d_reg_every == 0:
                record["r1_loss"].append(d_reg_step(real_img).item())
                record["real_img.grad"].append(array(real_img.grad))
        return record | {"state": snapshot(discriminator)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-steps"])
def test_stylegan2_r1_regularization_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(r1_discriminator, train_r1(compiled))
    assert_same_records(ours, theirs)


def curvature(compiled):
    """``torch.autograd.functional.hvp``/``vhp``/``hessian`` and ``torch.func``'s ``hessian``/``jacfwd(jacrev)`` of a small
    MLP's loss as a function of its flat parameters, Pearlmutter's double backward on the parameters themselves, and
    the curvature used as code uses it: a damped Newton step ``torch.linalg.solve(H + lam I, g)`` written back by
    ``torch.nn.utils.vector_to_parameters``. ``compiled``: the curvature (all but Pearlmutter's) one
    ``kiln.compile(fullgraph=True)`` function of ``(flat, v)``."""

    def train(torch, nn, F, model):
        rng = np.random.default_rng(8)
        x, y = torch.tensor(rng.standard_normal((6, 3))), torch.tensor(rng.standard_normal((6, 2)))
        loss_of_flat, flat = flat_parameter_loss(torch, F, model, x, y)
        v = torch.tensor(rng.standard_normal(flat.shape[0]))

        def quantities(flat, v):
            H = torch.autograd.functional.hessian(loss_of_flat, flat)
            g = torch.func.grad(loss_of_flat)(flat)
            return {"hvp": torch.autograd.functional.hvp(loss_of_flat, flat, v)[1],
                    "vhp": torch.autograd.functional.vhp(loss_of_flat, flat, v)[1],
                    "hessian": H, "func.hessian": torch.func.hessian(loss_of_flat)(flat),
                    "jacfwd(jacrev)": torch.func.jacfwd(torch.func.jacrev(loss_of_flat))(flat),
                    "newton": flat - torch.linalg.solve(H + 0.5 * torch.eye(flat.shape[0]), g)}

        run = kiln.compile(quantities, fullgraph=True) if compiled and torch is kiln else quantities
        results = run(flat, v)
        record = {"v": array(v)} | {name: array(value) for name, value in results.items() if name != "newton"}
        loss = F.mse_loss(model(x), y)
        params = list(model.parameters())
        vs = [torch.tensor(rng.standard_normal(tuple(p.shape))) for p in params]
        record["pearlmutter"] = {str(k): array(t) for k, t in enumerate(pearlmutter_hvp(torch, loss, params, vs))}
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(results["newton"], model.parameters())
        record["after_newton"] = snapshot(model)
        record["newton_loss"] = F.mse_loss(model(x), y).item()
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_hessian_vector_products_of_a_flat_parameter_loss_as_torch(compiled, float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
                                   curvature(compiled))
    np.testing.assert_allclose(theirs["hvp"], theirs["hessian"] @ theirs["v"], rtol=1e-12)
    assert_same_records(ours, theirs)


def scalar_derivatives(torch):
    """``torch.func`` on scalar functions as its tutorials write them: ``grad(grad(f))`` of ``torch.sin(x) * x ** 3`` at
    a 0-d tensor, ``vmap(grad(grad(f)))`` over points, and ``jacfwd(jacrev(f))`` (the Hessian) of a function of a
    vector, beside ``torch.func.hessian``."""
    from functools import partial

    def f(x):
        return torch.sin(x) * x ** 3

    def g(x, scale):
        return (scale * torch.tanh(x[0] * x[1]) + torch.exp(x).sum() * x.pow(2).sum()) / 2

    points = torch.tensor(np.linspace(-1.5, 1.5, 5))
    x = torch.tensor([0.3, -0.7, 1.1])
    func = torch.func
    return {"grad(grad(f))": func.grad(func.grad(f))(torch.tensor(0.8)).item(),
            "third": func.grad(func.grad(func.grad(f)))(torch.tensor(0.8)).item(),
            "vmap(grad(grad(f)))": array(func.vmap(func.grad(func.grad(f)))(points)),
            "jacfwd(jacrev(g))": array(func.jacfwd(func.jacrev(partial(g, scale=3.0)))(x)),
            "hessian(g)": array(func.hessian(g)(x, 3.0))}


def test_torch_func_second_derivatives_of_scalar_functions_as_torch(float64_default):
    from oracles import libraries

    ours, theirs = (scalar_derivatives(libraries(name)[0]) for name in ("kiln", "torch"))
    np.testing.assert_allclose(theirs["jacfwd(jacrev(g))"], theirs["hessian(g)"], rtol=1e-12)
    assert_same_records(ours, theirs)
