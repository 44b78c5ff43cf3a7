"""Porting probe, the second half of ``test_porting_probes_deq_np_siren.py`` (which has the DEQ, neural processes
and mixture density networks): SIREN, hypernetworks and FiLM as their reference code writes them
(``e2e/deq_np_siren_program.py``, ``e2e/siren_hypernetwork_program.py``, written once, ``torch`` being ``torch`` or
``kiln``), trained a few steps in both libraries from kiln's initial weights and compared in float64 to 1e-10:

- SIREN (vsitzmann/siren): ``SineLayer`` with its init under ``torch.no_grad()`` (``weight.uniform_`` with
  ``np.sqrt(6 / in_features) / omega_0``), ``coords.clone().detach().requires_grad_(True)`` inside ``forward``,
  ``gradient`` (``autograd.grad(..., create_graph=True)``) and ``laplace`` = ``divergence`` of the gradient (a loop of
  ``autograd.grad`` per dimension), Poisson-style losses on the gradient (double backward) and on the laplacian
  (triple backward), Adam, eager and as one compiled step (also in float32, how SIREN trains, at float32's level);
  loss_functions.py's ``sdf`` (``torch.where`` on ``gt_sdf != -1``, ``F.cosine_similarity`` of the gradient with the
  normals, the eikonal ``|gradient.norm(dim=-1) - 1|``, ``exp(-1e2 * |sdf|)``) eager and compiled; losses on
  ``jacobian`` and ``hessian`` (``torch.zeros`` filled by ``jac[:, :, i, :] = grad(...)``), eagerly: their NaN check
  ``if torch.any(torch.isnan(jac))`` branches on the weights' values, so ``kiln.compile(fullgraph=True)`` refuses
  there naming the line (as ``torch.compile(fullgraph=True)`` stops there) and plain ``kiln.compile`` runs the step
  eagerly with torch's numbers; siren's hypernetwork (``siren_hypernetwork_program.py``: ``BatchLinear`` with
  ``weight.permute(..., -1, -2)``, torchmeta's ``MetaSequential``/``get_subdict``, ``hyper_weight_init``'s
  ``m.weight.data = m.weight.data / 1.e2``) as an auto-decoder over images, eager and compiled;
  the network's inference exported to ONNX (onnxruntime).
- HyperNetwork and FiLM: a hypernetwork whose ``self.hyper(z).view(B, out, in)`` weights act by
  ``torch.bmm(w, x.unsqueeze(-1)).squeeze(-1)`` per sample and by ``F.linear(x, w_i, b_i)`` per task in a loop over
  ``torch.split`` point sets (SGD with momentum); FiLM blocks (``self.film(cond).chunk(2, dim=1)``, ``gamma.view(B,
  C, 1, 1) * x + beta.view(B, C, 1, 1)`` after a ``BatchNorm2d(affine=False)``) in a small CNN (Adam), eager and
  compiled, its eval forward through ``kiln.onnx.export`` (onnxruntime); the target network applied by
  ``torch.func.functional_call(self.target, params, (x,))`` with the emitted parameters, in a loop over tasks and
  under ``torch.func.vmap``, eager and compiled.

FiLM's conv biases sit right before a BatchNorm (as ethanjperez/film writes them): their gradient is rounding noise
(~1e-17), which Adam turns into steps of up to ~1e-9 that differ between the libraries: those entries are compared to
1e-8 absolute, and so are the BatchNorm running means that absorb the bias, and the eval output through them to 1e-7
relative.

What broke:

- siren's ``hyper_bias_init`` called ``nn.init._calculate_fan_in_and_fan_out`` (AttributeError): torch's private fan
  helpers are in ``kiln.nn.init`` now (``tests/frontend/test_init_vs_torch.py``).
- siren's ``BatchLinear`` ``weight.permute(..., -1, -2)`` was refused ("perm (-1, -2) is not a permutation"):
  ``Tensor.permute`` takes dims from the end, with torch's refusals (``tests/frontend/
  test_permute_negative_dims_vs_torch.py``).

Everything else agreed to 1e-10 as first written.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from e2e.deq_np_siren_program import (BIAS_BEFORE_NORM, all_diff_operators, compiled_if, diff_operators, film_cnn,
                                      functional_hypernetwork, get_mgrid, hypernetwork, sdf_loss, siren)
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep, snapshot
from e2e.siren_hypernetwork_program import hypernetwork_losses, siren_hypernetwork
from oracles import libraries, require


# --- SIREN ------------------------------------------------------------------------------------------------------------

SIDE = 5


def train_siren(compiled, fit, steps=3):
    """explore_siren.ipynb's Poisson fits: the gradient (``fit="gradient"``) or the laplacian of ``sin(3x) cos(2y)``."""

    def train(torch, nn, F, model):
        gradient, divergence, laplace = diff_operators(torch)
        coords = get_mgrid(torch, SIDE, 2)
        u, v = coords[:, :1], coords[:, 1:]
        img = torch.sin(3 * u) * torch.cos(2 * v)
        img_grad = torch.cat([3 * torch.cos(3 * u) * torch.cos(2 * v), -2 * torch.sin(3 * u) * torch.sin(2 * v)], -1)
        img_laplace = -13 * img
        optim = torch.optim.Adam(lr=1e-4, params=model.parameters())

        def step(model_input):
            model_output, coords = model(model_input)
            if fit == "gradient":
                train_loss = ((gradient(model_output, coords) - img_grad) ** 2).mean()
            else:
                train_loss = ((laplace(model_output, coords) - img_laplace) ** 2).mean()
            optim.zero_grad()
            train_loss.backward()
            optim.step()
            return train_loss

        run = compiled_if(torch, compiled, step)
        record = {"losses": [run(coords).item() for _ in range(steps)], "state": snapshot(model)}
        output, _ = model(coords)
        record["output"] = array(output)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("fit", ["gradient", "laplacian"])
def test_siren_poisson_fit_trains_as_torch(float64_default, fit, compiled):
    ours, theirs = run_in_lockstep(siren, train_siren(compiled, fit))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("fit", ["gradient", "laplacian"])
def test_siren_float32_compiled_step_as_torch(fit):
    """SIREN as it trains (float32), the compiled step against torch's eager loop, at float32's level."""
    ours, theirs = run_in_lockstep(siren, train_siren(True, fit))
    assert ours["output"].dtype == theirs["output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


_surface = np.random.default_rng(13)
SURFACE_COORDS = _surface.uniform(-1, 1, (1, 12, 2))  # one meta-batch, as siren's dataio gives it
SURFACE_SDF = np.where(_surface.random((1, 12, 1)) < 0.5, 0.0, -1.0)  # 0 on the surface, -1 off it
SURFACE_NORMALS = _surface.standard_normal((1, 12, 2))
SURFACE_NORMALS /= np.linalg.norm(SURFACE_NORMALS, axis=-1, keepdims=True)


def train_siren_meta(compiled, loss_kind, steps=3):
    """siren's training loop on ``{'model_in', 'model_out'}``: the SDF loss (``sum`` of its terms), or a loss on
    ``jacobian`` (two outputs against the normals) or ``hessian``."""

    def train(torch, nn, F, model):
        _, _, _, jacobian, hessian = all_diff_operators(torch)
        optim = torch.optim.Adam(lr=1e-4, params=model.parameters())

        def step(coords, gt_sdf, gt_normals):
            output, coords_in = model(coords)
            model_output = {'model_in': coords_in, 'model_out': output}
            if loss_kind == "sdf":
                losses = sdf_loss(torch, F, model_output, {'sdf': gt_sdf, 'normals': gt_normals})
                train_loss = 0.
                for loss_name, loss in losses.items():
                    train_loss += loss.mean()
            elif loss_kind == "jacobian":
                jac, status = jacobian(output, coords_in)
                train_loss = ((jac - gt_normals[..., None, :]) ** 2).mean()
            else:
                h, status = hessian(output, coords_in)
                train_loss = (h ** 2).mean()
            optim.zero_grad()
            train_loss.backward()
            optim.step()
            return train_loss

        run = kiln.compile(step, fullgraph=compiled == "fullgraph") if compiled and torch is kiln else step
        batch = torch.tensor(SURFACE_COORDS), torch.tensor(SURFACE_SDF), torch.tensor(SURFACE_NORMALS)
        return {"losses": [run(*batch).item() for _ in range(steps)], "state": snapshot(model)}

    return train


def _siren_two_outputs(torch, nn, F):
    return siren(torch, nn, F, out_features=2)


@pytest.mark.parametrize("compiled", [None, "fullgraph"], ids=["eager", "compiled step"])
def test_siren_sdf_with_eikonal_and_normal_terms_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(siren, train_siren_meta(compiled, "sdf"))
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("loss_kind", ["jacobian", "hessian"])
def test_siren_jacobian_and_hessian_losses_train_as_torch(float64_default, loss_kind):
    """Eagerly, and with ``kiln.compile`` (not fullgraph): the NaN check ``if torch.any(torch.isnan(jac))`` branches
    on a value of the weights, so the step runs eagerly (a warning says why), as torch.compile breaks its graph
    there."""
    build = _siren_two_outputs if loss_kind == "jacobian" else siren
    ours, theirs = run_in_lockstep(build, train_siren_meta(None, loss_kind))
    assert_same_records(ours, theirs)
    with pytest.warns(UserWarning, match="runs eagerly"):
        compiled, _ = run_in_lockstep(build, train_siren_meta("plain", loss_kind))
    assert_same_records(compiled, theirs)


def test_siren_jacobian_nan_check_under_fullgraph_names_the_line(float64_default):
    with pytest.raises(TraceError, match="no concrete truth value") as refused:
        run_in_lockstep(_siren_two_outputs, train_siren_meta("fullgraph", "jacobian"))
    assert "deq_np_siren_program.py" in str(refused.value) and "in jacobian" in str(refused.value)


HYPER_IMAGES = np.random.default_rng(15).random((4, 16, 1))


def train_siren_hypernetwork(compiled, steps=3):
    """siren's ``train`` over images of an auto-decoder: per batch the images' indices and coordinates,
    ``image_hypernetwork_loss`` summed (``train_loss += loss.mean()``), Adam."""

    def train(torch, nn, F, model):
        coords = get_mgrid(torch, 4, 2)[None].repeat(2, 1, 1)
        optim = torch.optim.Adam(lr=1e-3, params=model.parameters())

        def step(idx, coords, img):
            model_output = model({'idx': idx, 'coords': coords})
            losses = hypernetwork_losses(torch, model_output, {'img': img})
            train_loss = 0.
            for loss_name, loss in losses.items():
                train_loss += loss.mean()
            optim.zero_grad()
            train_loss.backward()
            optim.step()
            return train_loss

        run, record = compiled_if(torch, compiled, step), {"losses": []}
        for idx in ([0, 1], [2, 3], [1, 2]):
            record["losses"].append(run(torch.tensor(idx), coords, torch.tensor(HYPER_IMAGES[idx])).item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_siren_hypernetwork_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(siren_hypernetwork, train_siren_hypernetwork(compiled))
    assert_same_records(ours, theirs)


def test_siren_hypernetwork_init_scales_the_last_layers_by_a_hundred(float64_default):
    """``hyper_weight_init``'s ``m.weight.data = m.weight.data / 1.e2`` after ``kaiming_normal_`` (std sqrt(2 / 8)),
    its bias ``uniform_(-1/in, 1/in)`` of the SIREN layer it feeds; ``hyper_bias_init``'s bias by
    ``_calculate_fan_in_and_fan_out``; the SIREN's own first-layer init ``uniform_(-1/2, 1/2)``."""
    kiln.manual_seed(0)
    model = siren_hypernetwork(*libraries("kiln"))
    state = snapshot(model)
    names = model.hyper_net.names
    assert names == ['net.0.0.weight', 'net.0.0.bias', 'net.1.0.weight', 'net.1.0.bias', 'net.2.0.weight', 'net.2.0.bias']
    for i, name in enumerate(names):
        weight, bias = state[f"hyper_net.nets.{i}.net.2.0.weight"], state[f"hyper_net.nets.{i}.net.2.0.bias"]
        assert 0.1 * 0.005 < weight.std() < 3 * 0.005, name  # kaiming_normal_ std 0.5, over 100
        in_features = 2 if name.startswith("net.0") else 8
        bound = 1 / in_features if "weight" in name else 1 / 8  # hyper_bias_init: 1 / fan_in of the hyper layer
        assert np.abs(bias).max() <= bound and (bias.size < 8 or np.abs(bias).max() > 0.5 * bound), name
    assert np.abs(state["hypo_net.net.0.0.weight"]).max() <= 0.5


def test_siren_exports_to_onnx_as_torch():
    """The trained-shape network's inference (float32, as SIREN runs) through ``kiln.onnx.export``, onnxruntime
    against torch's forward."""
    onnxruntime = require("onnxruntime")
    coords = np.random.default_rng(4).uniform(-1, 1, (16, 2)).astype(np.float32)
    kiln.manual_seed(0)
    model = siren(*libraries("kiln")).net
    torch, nn, F = libraries("torch")
    twin = siren(torch, nn, F).net
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    buffer = io.BytesIO()
    kiln.onnx.export(model, (kiln.tensor(coords),), buffer, input_names=["coords"], output_names=["y"])
    ours = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"coords": coords})[0]
    with torch.no_grad():
        np.testing.assert_allclose(ours, twin(torch.tensor(coords)).numpy(), rtol=1e-5, atol=1e-6)


# --- HyperNetwork and FiLM --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(5)
TASKS, POINTS, TARGETS = _rng.standard_normal((6, 3)), _rng.standard_normal((6, 2)), _rng.standard_normal((6, 2))
TASK_SIZES = [2, 3, 1]
IMAGES, CONDITIONS, LABELS = _rng.standard_normal((4, 1, 6, 6)), _rng.standard_normal((4, 3)), _rng.integers(0, 3, 4)


def train_hypernetwork(compiled, per_task, steps=3):
    def train(torch, nn, F, model):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(z, x, y):
            prediction = model.forward_tasks(z[:3], torch.split(x, TASK_SIZES)) if per_task else model(z, x)
            loss = F.mse_loss(prediction, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        run = compiled_if(torch, compiled, step)
        batch = torch.tensor(TASKS), torch.tensor(POINTS), torch.tensor(TARGETS)
        return {"losses": [run(*batch).item() for _ in range(steps)], "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("per_task", [False, True], ids=["bmm per sample", "F.linear per task"])
def test_hypernetwork_trains_as_torch(float64_default, per_task, compiled):
    ours, theirs = run_in_lockstep(hypernetwork, train_hypernetwork(compiled, per_task))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def train_functional_hypernetwork(compiled, use_vmap, steps=3):
    tasks, points = np.random.default_rng(10).standard_normal((5, 3)), np.random.default_rng(11).standard_normal((5, 7, 2))
    targets = np.sin(points.sum(-1, keepdims=True))

    def train(torch, nn, F, model):
        opt = torch.optim.Adam(model.hyper.parameters(), lr=1e-2)

        def step(z, xs, ys):
            loss = F.mse_loss(model(z, xs, use_vmap), ys)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        run, batch = compiled_if(torch, compiled, step), (torch.tensor(tasks), torch.tensor(points), torch.tensor(targets))
        return {"losses": [run(*batch).item() for _ in range(steps)], "state": snapshot(model)}

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
@pytest.mark.parametrize("use_vmap", [False, True], ids=["loop", "vmap"])
def test_hypernetwork_through_functional_call_trains_as_torch(float64_default, use_vmap, compiled):
    ours, theirs = run_in_lockstep(functional_hypernetwork, train_functional_hypernetwork(compiled, use_vmap))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def train_film(compiled, steps=3):
    def train(torch, nn, F, model):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)

        def step(x, cond, y):
            loss = F.cross_entropy(model(x, cond), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        run = compiled_if(torch, compiled, step)
        batch = torch.tensor(IMAGES), torch.tensor(CONDITIONS), torch.tensor(LABELS)
        record = {"losses": [run(*batch).item() for _ in range(steps)], "state": snapshot(model)}
        model.eval()
        with torch.no_grad():
            record["eval output"] = array(model(*batch[:2]))
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled step"])
def test_film_cnn_trains_as_torch(float64_default, compiled):
    ours, theirs = run_in_lockstep(film_cnn, train_film(compiled))
    noisy = {"conv.bias": BIAS_BEFORE_NORM, "bn.running_mean": BIAS_BEFORE_NORM, "eval output": dict(rtol=1e-7, atol=1e-9)}
    assert_same_records(ours, theirs, looser=noisy)
    assert np.abs(theirs["state"]["block1.bn.running_mean"]).max() > 0


def test_film_cnn_exports_to_onnx_as_torch():
    """The eval forward (float32, BatchNorm's running statistics) through ``kiln.onnx.export`` with two inputs."""
    onnxruntime = require("onnxruntime")
    images, conditions = IMAGES.astype(np.float32), CONDITIONS.astype(np.float32)
    kiln.manual_seed(0)
    model = film_cnn(*libraries("kiln")).eval()
    torch, nn, F = libraries("torch")
    twin = film_cnn(torch, nn, F).eval()
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(model).items()})
    buffer = io.BytesIO()
    kiln.onnx.export(model, (kiln.tensor(images), kiln.tensor(conditions)), buffer, input_names=["x", "cond"],
                     output_names=["logits"])
    ours = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"x": images, "cond": conditions})[0]
    with torch.no_grad():
        np.testing.assert_allclose(ours, twin(torch.tensor(images), torch.tensor(conditions)).numpy(), rtol=1e-5,
                                   atol=1e-6)
