"""Porting probe: conditional flow matching as atong01/conditional-flow-matching (``torchcfm``) writes it, and
energy-based models as JEM (wgrathwohl/JEM), rosinality's IGEBM port and ermongroup's score-matching losses write them
(``e2e/flow_matching_ebm_program.py``, written once, ``torch`` being torch or kiln), run in lockstep with torch 2.13
from kiln's initial weights, float64 to 1e-10 (float32 at float32's level).

- torchcfm: ``pad_t_like_x`` (``t.reshape(-1, *([1] * (x.dim() - 1)))``, a float sigma passed through),
  ``ConditionalFlowMatcher.sample_location_and_conditional_flow`` (``torch.rand(x0.shape[0]).type_as(x0)``,
  ``assert len(t) == x0.shape[0]``, ``torch.randn_like``, ``return_noise``), ``ExactOptimalTransportConditionalFlowMatcher``
  and ``SchrodingerBridgeConditionalFlowMatcher`` (``sigma * torch.sqrt(t * (1 - t))``, ``(1 - 2 * t) / (2 * t * (1 -
  t) + 1e-8)``) through ``OTPlanSampler``: ``torch.cdist(x0, x1) ** 2``, ``M.detach().cpu().numpy()``, an exact plan
  (a permutation search for POT's ``ot.emd``), ``np.random.choice(..., p=p.flatten())``, ``np.divmod`` and ``x0[i],
  x1[j]`` by NumPy integer arrays; ``TargetConditionalFlowMatcher``, ``VariancePreservingConditionalFlowMatcher``
  (``torch.cos(math.pi / 2 * t)``); ``models.MLP`` (``torch.nn.SELU``, time as a feature), the notebooks' loop
  (``torch.cat([xt, t[:, None]], dim=-1)``, ``torch.mean((vt - ut) ** 2)``, Adam); ``torch_wrapper``
  (``t.repeat(x.shape[0])[:, None]`` of a 0-d time) solved by hand-written RK4 (``torch.linspace`` times) and Euler
  loops under ``torch.no_grad()``; ``eight_normal_sample`` (``MultivariateNormal(...).sample``,
  ``torch.multinomial``, a loop of ``centers[multi[i]] + noise[i]``, ``torch.stack``, ``.float()``).
- The CNF log-likelihood: Euler steps of the augmented ODE backwards with ``torch.set_grad_enabled(True)`` and
  ``x.requires_grad_(True)`` in the dynamics, the divergence by FFJORD's ``divergence_approx`` (``autograd.grad(f, y,
  e, create_graph=True)``, ``.view(y.shape[0], -1).sum(dim=1)``), by ``autograd.grad((f * e).sum(), x,
  create_graph=True)``, by ``divergence_bf`` (``dx[:, i].sum()`` per dimension, ``.contiguous()``), by
  ``torch.autograd.functional.jvp(..., create_graph=True)`` and by ``torch.func.jvp``, fixed Hutchinson noise; its
  ``-logp.mean()`` differentiated in the parameters (second order).
- JEM: ``F``/``CCF`` (``logits.logsumexp(1)``, ``t.gather(logits, 1, y[:, None])``, ``.squeeze()``) over
  ``nn.utils.spectral_norm`` layers (or ``nn.utils.parametrizations.spectral_norm``) with ``nn.SiLU``;
  ``get_sample_q`` (``t.FloatTensor(bs, d).uniform_(-1, 1)`` replay buffer, ``t.randint`` indices, class-conditional
  ``inds = y.cpu() * buffer_size + inds``, ``(t.rand(bs) < reinit_freq).float()[:, None]``, ``f.eval()``,
  ``t.autograd.Variable(init_sample, requires_grad=True)``, ``t.autograd.grad(f(x_k, y=y).sum(), [x_k],
  retain_graph=True)[0]``, ``x_k.data += sgld_lr * f_prime + sgld_std * t.randn_like(x_k)``, ``f.train()``,
  ``replay_buffer[buffer_inds] = final_samples.cpu()``); the training iteration (warmup into ``param_group['lr']``,
  Adam with ``betas=[.9, .999]``, ``L = 0.``; ``L += ...``, ``l_p_x = -(fp - fq)``, ``nn.CrossEntropyLoss()``,
  ``logits.max(1)[1] == y_lab``, ``L.abs().item() > 1e8``).
- IGEBM (rosinality/igebm-pytorch, as an MLP): class-embedded gains (``class_embed.weight.data[:, :c] = 1``,
  ``embed.chunk(2, 1)``), ``F.leaky_relu(..., negative_slope=0.2)``, spectral-normed layers; the Langevin loop
  (``neg_img.requires_grad = True``, ``p.requires_grad = False`` on the parameters, ``neg_img.data.add_(noise.data)``,
  ``neg_out.sum().backward()``, ``neg_img.grad.data.clamp_``, the deprecated ``neg_img.data.add_(-step_size,
  neg_img.grad.data)``, ``neg_img.grad.detach_()``/``zero_()``, ``neg_img.data.clamp_``), the regularised
  contrastive loss, ``clip_grad`` reading Adam's ``optimizer.state[p]['step']`` and ``['exp_avg_sq']`` (``beta2 **
  step`` of the step tensor, ``torch.max(torch.min(grad, bound), -bound)``, ``p.grad.data.copy_``).
- Score matching of a spectral-normed softplus energy: ``dsm`` (``samples.requires_grad_(True)``, ``sigma ** 2 *
  autograd.grad(logp.sum(), perturbed_inputs, create_graph=True)[0]``, ``torch.norm(..., dim=-1) ** 2``) and
  ``sliced_score_matching`` (``unsqueeze(0).expand(...).contiguous().view``, two ``create_graph`` gradients), Adam.

Random draws are kiln's, replayed in torch (``Fed``: ``randn_like``, ``rand``, ``randint``, ``Tensor.uniform_``; the
OT plan's ``np.random.choice`` from ``np.random.seed(0)`` in both).

Compiled: the flow-matching step (zero_grad, the matcher's ``torch.rand``/``randn_like`` drawn in the graph and
returned by ``return_noise=True`` for torch to replay, loss, backward, Adam) is one ``kiln.compile(step,
fullgraph=True)`` graph per call, as is the CNF maximum-likelihood step with each divergence (``autograd.grad``,
``autograd.functional.jvp`` and ``func.jvp`` inside, the argument marked ``requires_grad_`` getting its ``.grad``), and
JEM's iteration with its SGLD loop inside (``autograd.grad`` and ``x_k.data +=`` in the graph, ``f.eval()``/``f.train()``
switching the spectral norm's power iteration). torch.compile(fullgraph=True) (measured, backend="aot_eager") refuses
all three whole steps at ``optimizer.zero_grad`` ("Dynamo developers have intentionally marked that the function
``Optimizer.zero_grad`` should not be traced"); the flow-matching loss alone compiles; the SGLD loop is refused at
``torch.autograd.grad`` ("trace_autograd_ops=False"), and JEM's ``t.autograd.Variable`` is an unsupported builtin
(without fullgraph it runs, graph-broken). The exact-OT step draws its plan from NumPy inside: ``kiln.compile(step)``
runs it eagerly, warned once naming ``np.random``, and ``fullgraph=True`` refuses it; dynamo refuses it too (a
data-dependent ``perms[np.argmin(...)]``). Models compiled in eager loops: ``kiln.compile(f, fullgraph=True)`` for
JEM's ``CCF`` (SGLD's ``autograd.grad`` through compiled calls, ``f.classify`` eager), the score-matching energy
(double backward through compiled calls) and the ODE's velocity field, and the whole RK4 solve as one compiled function.

What broke:
- A compiled call in training mode with spectral norm, then another forward of the module (JEM's ``f(x_q)`` then
  ``f.classify(x_lab)``) before ``L.backward()``, raised "modified by an inplace operation ... [16] is at version 1":
  the version check counted every input of a compiled call as saved, the power-iteration vectors among them, which
  PyTorch never saves (the call's backward reads their clones). It now counts the inputs the backward reads and those
  whose views it saves as residuals (a weight's transpose) (``runtime/saved_versions.py``). And a compiled call's
  buffer writes bumped no version, so an eval-mode call's backward (which does save ``weight_u``) read the values a
  later training-mode call wrote, silently, where PyTorch refuses; they count now (``runtime/compiled_training.py``);
  ``tests/runtime/test_version_counter_saved_vs_torch.py``.
- A double backward through a compiled module (DSM and SSM with ``kiln.compile(energy_net)``) gave wrong gradients
  (losses 1e-4 apart from the first step): the forward it replays had lost ``no_grad``'s ``stop_gradient``s (expanded
  before the split), so the power iteration's gradient reached ``weight_orig``, and it iterated from the buffers the
  call had already written (a second power iteration). ``stop_gradient`` now stays until the backend's pipeline, and
  the call reads the buffers it writes as copies made before the write (``runtime/compiled_training.py``,
  ``tests/runtime/test_compiled_double_backward_no_grad_vs_torch.py``, also a ``detach()`` in a forward).
Left as is: a compiled step given, on its second call, the tensor its first call marked ``requires_grad_`` (a leaf
requiring grad whose gradient the loss reaches) is refused with ``fullgraph=True`` (and runs eagerly, warned, without),
where torch accumulates into its ``.grad``; the likelihood test feeds a fresh batch each step, as training loops do.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

import kiln
from e2e.flow_matching_ebm_program import (cfm_models, cfm_training, cnf_log_likelihood, dsm, energy_mlp,
                                           euler_trajectory, igebm_models, igebm_training, jem_compiled_iteration,
                                           jem_get_sample_q, jem_models, jem_training, make_moons, rk4_trajectory,
                                           sample_8gaussians, sample_moons, sliced_score_matching, torchcfm)
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, gradients, run_in_lockstep,
                                snapshot)
from oracles import libraries

BATCH, WIDTH, STEPS, ODE_STEPS = 8, 16, 3, 6
MATCHERS = {
    "cfm": ("ConditionalFlowMatcher", dict(sigma=0.1)),
    "exact ot": ("ExactOptimalTransportConditionalFlowMatcher", dict(sigma=0.1)),
    "target": ("TargetConditionalFlowMatcher", dict(sigma=0.1)),
    "variance preserving": ("VariancePreservingConditionalFlowMatcher", dict(sigma=0.1)),
    "schrodinger bridge": ("SchrodingerBridgeConditionalFlowMatcher", dict(sigma=0.5)),
}
CENTERS = 5 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1 / np.sqrt(2), 1 / np.sqrt(2)),
                        (1 / np.sqrt(2), -1 / np.sqrt(2)), (-1 / np.sqrt(2), 1 / np.sqrt(2)),
                        (-1 / np.sqrt(2), -1 / np.sqrt(2))])


def eight_gaussians(n, rng):
    """``sample_8gaussians``'s distribution drawn by NumPy (the same points for both libraries)."""
    return CENTERS[rng.integers(0, 8, n)] + 0.1 ** 0.25 * rng.standard_normal((n, 2))


def flow_batches(steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [(eight_gaussians(BATCH, rng), sample_moons(BATCH, seed=seed + 1 + k)) for k in range(steps)]


class Fed:
    """Random draws made by kiln and replayed in torch (the generators differ for one seed): while ``on(lib)``,
    ``lib.randn_like``, ``lib.rand``, ``lib.randint`` and ``Tensor.uniform_`` are kiln's own, recorded, in kiln, and
    give kiln's values back in order in torch."""

    FUNCTIONS = ("randn_like", "rand", "randint")

    def __init__(self):
        self.recorded, self.replaying = [], None

    def record(self, value):
        self.recorded.append(array(value))

    def _drawn(self, lib, original):
        if lib is kiln:
            def draw(*args, **kwargs):
                value = original(*args, **kwargs)
                self.record(value)
                return value
        else:
            def draw(*args, **kwargs):
                return lib.tensor(next(self.replaying))
        return draw

    def _filled(self, lib, original):
        if lib is kiln:
            def fill(tensor, *args, **kwargs):
                self.record(original(tensor, *args, **kwargs))
                return tensor
        else:
            def fill(tensor, *args, **kwargs):
                with lib.no_grad():
                    return tensor.copy_(lib.tensor(next(self.replaying)))
        return fill

    @contextlib.contextmanager
    def on(self, lib):
        if lib is not kiln:
            self.replaying = iter(self.recorded)
        saved = {name: getattr(lib, name) for name in self.FUNCTIONS}
        saved_uniform = lib.Tensor.uniform_
        try:
            for name, original in saved.items():
                setattr(lib, name, self._drawn(lib, original))
            lib.Tensor.uniform_ = self._filled(lib, saved_uniform)
            yield
        finally:
            for name, original in saved.items():
                setattr(lib, name, original)
            lib.Tensor.uniform_ = saved_uniform
        if lib is not kiln:
            assert next(self.replaying, None) is None, "torch drew fewer values than kiln"


def mlp(torch, nn, F):
    MLP, _ = cfm_models(torch)
    return MLP(dim=2, w=WIDTH, time_varying=True)


def flow_matching(name, fed):
    """A ``train`` for ``run_in_lockstep``: the matcher ``name`` trained a few steps (``np.random.seed(0)`` before, for
    the OT plan's ``np.random.choice``), then RK4 and Euler trajectories from fixed noise."""
    kind, kwargs = MATCHERS[name]

    def train(torch, nn, F, model):
        np.random.seed(0)
        FM = torchcfm(torch)[kind](**kwargs)
        batches = [tuple(torch.tensor(v, dtype=torch.get_default_dtype()) for v in batch) for batch in flow_batches()]
        with fed.on(torch):
            losses, first = cfm_training(torch, FM, model, batches)
        _, torch_wrapper = cfm_models(torch)
        node = torch_wrapper(model)
        x0 = torch.tensor(eight_gaussians(10, np.random.default_rng(5)), dtype=torch.get_default_dtype())
        rk4, euler = rk4_trajectory(torch, node, x0, ODE_STEPS), euler_trajectory(torch, node, x0, ODE_STEPS)
        return {"losses": losses, "grads": {k: array(v) for k, v in first.items()}, "state": snapshot(model),
                "rk4": array(rk4), "euler": array(euler), "requires_grad": rk4.requires_grad,
                "dtype": str(rk4.dtype).split(".")[-1]}

    return train


@pytest.mark.parametrize("name", list(MATCHERS))
def test_flow_matchers_train_and_sample_as_torch(float64_default, name):
    fed = Fed()
    ours, theirs = run_in_lockstep(mlp, flow_matching(name, fed))
    assert ours.pop("dtype") == theirs.pop("dtype") == "float64"
    assert ours.pop("requires_grad") is theirs.pop("requires_grad") is False
    assert_same_records(ours, theirs)
    assert ours["rk4"].shape == (ODE_STEPS + 1, 10, 2)


@pytest.mark.parametrize("name", ["exact ot", "variance preserving"])
def test_flow_matchers_float32_as_torch(name):
    fed = Fed()
    ours, theirs = run_in_lockstep(mlp, flow_matching(name, fed))
    assert ours.pop("dtype") == theirs.pop("dtype") == "float32"
    assert ours.pop("requires_grad") is theirs.pop("requires_grad") is False
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def test_eight_gaussians_sampler_runs_as_written():
    """``sample_8gaussians`` as torchcfm writes it in both libraries (their generators differ, so its statistics):
    float32 points, each near one of the eight centres."""
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        torch.manual_seed(0)
        x = sample_8gaussians(torch, 200)
        assert tuple(x.shape) == (200, 2) and str(x.dtype).endswith("float32")
        nearest = np.min(np.linalg.norm(array(x)[:, None] - CENTERS[None], axis=-1), axis=1)
        assert nearest.mean() < 1.5 and len(np.unique(np.argmin(
            np.linalg.norm(array(x)[:, None] - CENTERS[None], axis=-1), axis=1))) == 8


DIVERGENCES = ["approx", "sum", "bf", "jvp", "func.jvp"]


def log_likelihoods(torch, nn, F, model):
    """Each divergence's ``log p_1`` of moons points under the (untrained) flow and the gradient of its negative mean
    in the parameters."""
    _, torch_wrapper = cfm_models(torch)
    node = torch_wrapper(model)
    x1 = torch.tensor(sample_moons(6, seed=3))
    e = torch.tensor(np.random.default_rng(4).standard_normal((6, 2)))
    record = {}
    for divergence in DIVERGENCES:
        model.zero_grad()
        logp, x0 = cnf_log_likelihood(torch, node, x1, e, 3, divergence)
        (-logp.mean()).backward()
        record[divergence] = {"logp": array(logp), "x0": array(x0), "grads": gradients(model)}
    return record


def test_cnf_log_likelihood_by_each_divergence_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mlp, log_likelihoods)
    assert_same_records(ours, theirs)
    for divergence in ("sum", "jvp", "func.jvp"):  # the same Hutchinson estimate, three ways
        assert_same_records(ours[divergence], ours["approx"])
    assert not np.allclose(ours["bf"]["logp"], ours["approx"]["logp"])


def jem(torch, nn, F):
    _, CCF = jem_models(torch, nn, F)
    return CCF()


def jem_batches(torch, steps=STEPS):
    x, y = make_moons(BATCH * 2 * steps, noise=0.1, seed=2)
    x, y = torch.tensor(x, dtype=torch.get_default_dtype()), torch.tensor(y)
    return [(x[2 * k * BATCH:(2 * k + 1) * BATCH], x[(2 * k + 1) * BATCH:(2 * k + 2) * BATCH],
             y[(2 * k + 1) * BATCH:(2 * k + 2) * BATCH]) for k in range(steps)]


def jem_train(fed, class_cond=False):
    def train(torch, nn, F, f):
        FloatTensor = torch.FloatTensor if torch.get_default_dtype() == torch.float32 else torch.DoubleTensor
        with fed.on(torch):
            init_random, sample_q = jem_get_sample_q(torch, 2, BATCH, n_steps=5, FloatTensor=FloatTensor)
            replay_buffer = init_random(20)
            record = jem_training(torch, nn, f, sample_q, replay_buffer, jem_batches(torch),
                                  class_cond_p_x_sample=class_cond)
        return {**record, "buffer": array(replay_buffer), "state": snapshot(f)}

    return train


@pytest.mark.parametrize("class_cond", [False, True], ids=["unconditional", "class-conditional"])
def test_jem_trains_as_torch(float64_default, class_cond):
    ours, theirs = run_in_lockstep(jem, jem_train(Fed(), class_cond))
    assert_same_records(ours, theirs)
    assert any(name.endswith("weight_u") for name in ours["state"])


def jem_parametrized(torch, nn, F):
    _, CCF = jem_models(torch, nn, F, spectral_norm=nn.utils.parametrizations.spectral_norm)
    return CCF()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled model"])
def test_jem_with_parametrized_spectral_norm_trains_as_torch(float64_default, compiled):
    """The same with ``nn.utils.parametrizations.spectral_norm`` (``parametrizations.weight.original``, ``_u``,
    ``_v`` in the state), eagerly and with ``kiln.compile(f, fullgraph=True)``."""
    train = jem_train(Fed())
    ours, theirs = run_in_lockstep(jem_parametrized, compiled_module_training(train) if compiled else train)
    assert_same_records(ours, theirs)
    assert any("parametrizations.weight.original" in name for name in ours["state"])


def test_jem_float32_trains_as_torch():
    """float32 (the replay buffer a ``torch.FloatTensor``, as JEM's). Measured: losses and weights within 1e-6."""
    ours, theirs = run_in_lockstep(jem, jem_train(Fed()))
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def test_jem_trains_with_a_compiled_model_as_torch(float64_default):
    """``f = kiln.compile(f, fullgraph=True)`` in JEM's eager loop: SGLD's ``autograd.grad`` through the compiled calls
    (eval mode: the stored power-iteration vectors), then ``f(x_p_d)``, ``f(x_q)`` compiled in training mode (each
    writes ``weight_u``/``weight_v``) and ``f.classify`` eager (writes them again) before ``L.backward()``."""
    ours, theirs = run_in_lockstep(jem, compiled_module_training(jem_train(Fed())))
    assert_same_records(ours, theirs)


def jem_compiled(torch, nn, F, f):
    """JEM's iteration with its SGLD inside, one ``kiln.compile(fullgraph=True)`` graph in kiln, eager in torch."""
    optim = torch.optim.Adam(f.parameters(), lr=1e-2, betas=[.9, .999])
    rng = np.random.default_rng(11)
    run = kiln.compile(jem_compiled_iteration, fullgraph=True) if torch is kiln else jem_compiled_iteration
    record = {"losses": [], "x_q": []}
    for x_p_d, x_lab, y_lab in jem_batches(torch):
        init_sample = torch.tensor(rng.uniform(-1, 1, (BATCH, 2)))
        noises = [torch.tensor(rng.standard_normal((BATCH, 2))) for _ in range(4)]
        L, x_q = run(torch, nn, f, optim, x_p_d, x_lab, y_lab, init_sample, noises)
        record["losses"].append(L.item())
        record["x_q"].append(array(x_q))
    return {**record, "state": snapshot(f)}


def test_jem_iteration_with_sgld_compiled_as_torch(float64_default):
    ours, theirs = run_in_lockstep(jem, jem_compiled)
    assert_same_records(ours, theirs)


def igebm(torch, nn, F):
    return igebm_models(torch, nn, F)()


def igebm_train(torch, nn, F, model):
    rng = np.random.default_rng(12)
    x, y = make_moons(BATCH * STEPS, noise=0.1, seed=3)
    batches = [(torch.tensor(x[k * BATCH:(k + 1) * BATCH]), torch.tensor(y[k * BATCH:(k + 1) * BATCH]))
               for k in range(STEPS)]
    neg_starts = [torch.tensor(rng.uniform(-1, 1, (BATCH, 2))) for _ in range(STEPS)]
    noises = [[torch.tensor(0.005 * rng.standard_normal((BATCH, 2))) for _ in range(4)] for _ in range(STEPS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "This overload of add_ is deprecated"
        losses, neg_img = igebm_training(torch, model, batches, neg_starts, noises)
    return {"losses": losses, "neg_img": array(neg_img), "state": snapshot(model)}


def test_igebm_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(igebm, igebm_train)
    assert_same_records(ours, theirs)


def energy(torch, nn, F):
    return energy_mlp(torch, nn)


def score_matching(loss_name, fed):
    def train(torch, nn, F, net):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        record = {"losses": []}
        with fed.on(torch):
            for k in range(STEPS):
                samples = torch.tensor(sample_moons(BATCH, seed=20 + k))
                if loss_name == "dsm":
                    loss = dsm(torch, net, samples, sigma=0.5)
                else:
                    loss, loss1, loss2 = sliced_score_matching(torch, net, samples, n_particles=2)
                    record.setdefault("parts", []).append([loss1.item(), loss2.item()])
                optimizer.zero_grad()
                loss.backward()
                record.setdefault("grads", gradients(net))
                optimizer.step()
                record["losses"].append(loss.item())
                record.setdefault("samples_grad", array(samples.grad) if samples.grad is not None else 0.0)
        return {**record, "state": snapshot(net)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled energy"])
@pytest.mark.parametrize("loss_name", ["dsm", "ssm"])
def test_score_matching_on_spectral_norm_energy_as_torch(float64_default, loss_name, compiled):
    """The losses' ``create_graph=True`` gradients of the energy, then ``backward()`` of a loss of them: a double
    backward through the spectral norm's power iteration (``no_grad``) in training mode; compiled, through
    ``kiln.compile(energy_net, fullgraph=True)``."""
    train = score_matching(loss_name, Fed())
    ours, theirs = run_in_lockstep(energy, compiled_module_training(train) if compiled else train)
    assert_same_records(ours, theirs)


def compiled_flow_matching(name, fed):
    """A ``train``: the flow-matching step (``zero_grad``, the matcher's draws, the MSE, ``backward``, Adam) as one
    ``kiln.compile(fullgraph=True)`` graph in kiln, returning the drawn ``t`` and noise (``return_noise=True``), which
    torch's eager step is given back (``fed``)."""
    kind, kwargs = MATCHERS[name]

    def train(torch, nn, F, model):
        FM = torchcfm(torch)[kind](**kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x0, x1):
            optimizer.zero_grad()
            t, xt, ut, eps = FM.sample_location_and_conditional_flow(x0, x1, return_noise=True)
            vt = model(torch.cat([xt, t[:, None]], dim=-1))
            loss = torch.mean((vt - ut) ** 2)
            loss.backward()
            optimizer.step()
            return loss, t, eps

        losses, ts = [], []
        with contextlib.nullcontext() if torch is kiln else fed.on(torch):
            run = kiln.compile(step, fullgraph=True) if torch is kiln else step
            for x0, x1 in flow_batches():
                dtype = torch.get_default_dtype()
                loss, t, eps = run(torch.tensor(x0, dtype=dtype), torch.tensor(x1, dtype=dtype))
                if torch is kiln:
                    fed.record(t), fed.record(eps)
                losses.append(loss.item())
                ts.append(array(t))
        return {"losses": losses, "t": ts, "state": snapshot(model)}

    return train


@pytest.mark.parametrize("name", ["cfm", "target", "variance preserving"])
def test_flow_matching_step_compiled_as_torch(float64_default, name):
    ours, theirs = run_in_lockstep(mlp, compiled_flow_matching(name, Fed()))
    assert_same_records(ours, theirs)
    assert not np.allclose(ours["t"][0], ours["t"][1])  # fresh draws each call


def test_flow_matching_step_compiled_float32_as_torch():
    ours, theirs = run_in_lockstep(mlp, compiled_flow_matching("cfm", Fed()))
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def compiled_sampling(torch, nn, F, model):
    """The trained-flow sampling of the notebooks with kiln's velocity field compiled (``kiln.compile(node,
    fullgraph=True)`` called by the eager RK4 loop), and the whole RK4 solve as one compiled function (its ``no_grad``
    and ``torch.linspace`` inside)."""
    _, torch_wrapper = cfm_models(torch)
    node = torch_wrapper(model)
    x0 = torch.tensor(eight_gaussians(10, np.random.default_rng(5)))
    compiled_node = kiln.compile(node, fullgraph=True) if torch is kiln else node
    solve = kiln.compile(rk4_trajectory, fullgraph=True) if torch is kiln else rk4_trajectory
    return {"rk4 by a compiled node": array(rk4_trajectory(torch, compiled_node, x0, ODE_STEPS)),
            "euler by a compiled node": array(euler_trajectory(torch, compiled_node, x0, ODE_STEPS)),
            "compiled rk4": array(solve(torch, node, x0, ODE_STEPS))}


def test_flow_sampling_compiled_as_torch(float64_default):
    ours, theirs = run_in_lockstep(mlp, compiled_sampling)
    assert_same_records(ours, theirs)


def likelihood_training(divergence):
    """A ``train``: maximum likelihood of the flow (``-logp.mean()`` through the CNF's Euler solve, its divergence by
    ``create_graph=True`` derivatives), each step one ``kiln.compile(fullgraph=True)`` graph, a fresh batch each step
    (the step's ``x.requires_grad_(True)`` marks its argument, which gets a ``.grad`` as in torch)."""

    def train(torch, nn, F, model):
        _, torch_wrapper = cfm_models(torch)
        node = torch_wrapper(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        e = torch.tensor(np.random.default_rng(4).standard_normal((6, 2)))

        def step(x1):
            optimizer.zero_grad()
            logp, _ = cnf_log_likelihood(torch, node, x1, e, 3, divergence)
            loss = -logp.mean()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if torch is kiln else step
        batches = [torch.tensor(sample_moons(6, seed=30 + k)) for k in range(STEPS)]
        losses = [run(x1).item() for x1 in batches]
        return {"losses": losses, "state": snapshot(model), "x1 grads": [array(x1.grad) for x1 in batches]}

    return train


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_cnf_likelihood_training_step_compiled_as_torch(float64_default, divergence):
    ours, theirs = run_in_lockstep(mlp, likelihood_training(divergence))
    assert_same_records(ours, theirs)


def exact_ot_step(fullgraph):
    """A ``train``: the exact-OT flow-matching step under ``kiln.compile`` (its plan drawn by ``np.random.choice``
    inside, from ``M.detach().cpu().numpy()``), the warnings kept."""

    def train(torch, nn, F, model):
        np.random.seed(0)
        kind, kwargs = MATCHERS["exact ot"]
        FM = torchcfm(torch)[kind](**kwargs)
        FM.sample_noise_like = torch.zeros_like  # the step's only other draws: t given
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(x0, x1, t):
            optimizer.zero_grad()
            t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1, t)
            vt = model(torch.cat([xt, t[:, None]], dim=-1))
            loss = torch.mean((vt - ut) ** 2)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=fullgraph) if torch is kiln else step
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [run(torch.tensor(x0), torch.tensor(x1), torch.linspace(0.1, 0.9, BATCH)).item()
                      for x0, x1 in flow_batches()]
        return {"losses": losses, "state": snapshot(model), "warnings": [str(w.message) for w in caught]}

    return train


def test_exact_ot_step_under_kiln_compile_runs_eagerly_as_torch_compile_falls_back(float64_default):
    ours, theirs = run_in_lockstep(mlp, exact_ot_step(fullgraph=False))
    warned = ours.pop("warnings")
    assert theirs.pop("warnings") == []
    assert len(warned) == 1 and "runs eagerly" in warned[0] and "np.random" in warned[0]
    assert_same_records(ours, theirs)


def test_exact_ot_step_with_fullgraph_is_refused_naming_the_draw(float64_default):
    kiln.manual_seed(0)
    with pytest.raises(kiln.KilnError, match="np.random.s global generator"):
        exact_ot_step(fullgraph=True)(*libraries("kiln"), mlp(*libraries("kiln")))
