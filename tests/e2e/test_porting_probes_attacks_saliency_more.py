"""Porting probe, continued from ``test_porting_probes_style_adversarial.py`` (the programs are in
``tests/e2e/attacks_saliency_more_program.py`` and ``neural_style_pt_lucent_program.py``), each written once as its
reference writes it and run in kiln and torch 2.13 from kiln's initial weights, float64 to 1e-10:

- guided backpropagation as pytorch-cnn-visualizations writes it: ``register_full_backward_hook`` on each ReLU
  module returning a replaced ``grad_in`` (the kept forward output written in place inside the hook,
  ``corresponding_forward_output[corresponding_forward_output > 0] = 1``), the first layer's ``grad_in[0]`` as the
  image gradient, ``model_output.backward(gradient=one_hot_output)`` with ``torch.FloatTensor(1, n).zero_()``;
- input-gradient regularisation (double backpropagation: ``autograd.grad(..., create_graph=True)`` then
  ``backward``), eagerly and as one ``kiln.compile(fullgraph=True)`` step;
- the Carlini-Wagner L2 attack as torchattacks writes it (tanh space, ``atanh``, Adam on ``[w]``, ``torch.eye(n)[labels]``,
  best images kept by a reshaped mask, early stop by ``.item()``) and DeepFool as LTS4's reference writes it (NumPy
  bookkeeping, ``x.grad.zero_()`` between ``backward(retain_graph=True)`` calls on each class score, ``Variable``);
- neural-style-pt: loss modules switched between ``'capture'`` and ``'loss'`` from outside, two style images blended
  from an empty ``torch.Tensor()``, a ``ScaleGradients`` autograd Function, ``TVLoss(w).type(dtype)``, the image an
  ``nn.Parameter`` optimised by L-BFGS (``tolerance_change=-1``) or Adam, Caffe's BGR preprocessing by ``[[2, 1, 0]]``;
- "Adversarial training for free!" (main_free.py: replayed minibatches, a global noise written by ``+=`` on a slice,
  ``in1.clamp_(0, 1.0); in1.sub_(mean).div_(std)`` in place on a tensor that requires grad), eagerly and with the
  replay compiled;
- an adversarial patch pasted by slice assignment into a ``clone()``, SGD on it, eager and compiled;
- AutoAttack's APGD (Linf, CE and DLR losses: ``nonzero().squeeze()`` indices, a 0-d one for one image,
  assigned under ``no_grad``, the step-size halving, ``sort``);
- saliency by ``torch.func`` (``vmap(grad(...))`` over ``functional_call``, ``grad``, ``vjp``) and
  ``torch.autograd.functional.jacobian``; Grad-CAM++ (1Konny's: old ``register_backward_hook``, ``F.upsample``) and
  Score-CAM (haofanwang's: masked inputs under ``no_grad``, ``F.softmax`` without dim); lucent's channel
  visualisation (an FFT-parametrised image through ``view_as_complex`` and ``irfftn``, colour decorrelation, jitter by
  ``torch.roll``, Adam's ``step(closure)``).

The tutorial's style model (loss modules storing ``self.loss``) goes through ``kiln.onnx.export`` and onnxruntime.

What broke: ``Module.type(dst_type)`` did not exist in kiln (neural-style-pt's ``TVLoss(w).type(dtype)``:
AttributeError); it now casts every parameter and buffer as torch's (``frontend/module_type_cast.py``,
``tests/frontend/test_torch_surface_module_type.py``). ``kiln.onnx.export`` of the style model left each loss module
holding the trace's ``self.loss`` (no values: reading it raised); it now gets its value from before the export back
(``runtime/export.py``, ``tests/onnx/test_export_leaves_no_traced_attributes.py``). With a dynamic batch the export
refused ``gram_matrix``'s ``G.div(a * b * c * d)`` (a symbolic size as an operand); it is now the run-time size
(``frontend/symbolic_dims.py``, ``tests/frontend/test_tensor_scalars.py``), though the tutorial's model is for one
image (its ``mse_loss`` of a ``(4N, 4N)`` gram against a ``(4, 4)`` target is refused). Everything else agreed as
first written.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e import attacks_saliency_more_program as more
from e2e import neural_style_pt_lucent_program as image_programs
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep, snapshot
from e2e.style_adversarial_program import BATCH, batch, compiled, style_images, vgg_like_features
from oracles import require, require_torch


def style_features(torch, nn, F):
    return vgg_like_features(nn)


def features_classifier(torch, nn, F):
    return more.features_classifier(torch, nn)


def pretrain_features(torch, F, model, steps=20):
    """Adam on clean digits for the ``features``/``classifier`` net (logits: ``cross_entropy``)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for step in range(steps):
        images, labels = batch(torch, 32 * (step % 12), 32)
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()


def guided(torch, nn, F, model):
    pretrain_features(torch, F, model)
    image, _ = batch(torch, 600, 1)
    vanilla = image.clone().requires_grad_(True)
    model(vanilla)[0, 3].backward()
    gradients = more.guided_backprop(torch, nn)(model).generate_gradients(image, 3)
    return {"guided": gradients, "saliency": list(more.positive_and_negative_saliency(gradients)),
            "vanilla": array(vanilla.grad)}


def test_guided_backprop_as_torch(float64_default):
    ours, theirs = run_in_lockstep(features_classifier, guided)
    assert_same_records(ours, theirs)
    assert not np.allclose(ours["guided"], ours["vanilla"][0])  # the ReLU hooks changed the gradient


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_input_gradient_regularisation_as_torch(compile_step, float64_default):
    """Double backpropagation: ``autograd.grad(loss, x, create_graph=True)``, its squared norm added, ``backward``."""
    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step(x, y):
            return more.input_gradient_regularized_step(torch, F, model, optimizer, x, y)

        run = compiled(torch, step, compile_step)
        return {"losses": [[t.item() for t in run(*batch(torch, 300 + BATCH * k))] for k in range(3)],
                "state": snapshot(model)}

    ours, theirs = run_in_lockstep(features_classifier, train)
    assert_same_records(ours, theirs)


def test_carlini_wagner_and_deepfool_as_torch(float64_default):
    def attacks(torch, nn, F, model):
        pretrain_features(torch, F, model)
        model.eval()
        images, labels = batch(torch, 500, 4)
        adversarial, costs = more.cw_attack(torch, nn, model, images, labels)
        r_tot, loops, label, k_i, perturbed = more.deepfool(torch, batch(torch, 510, 1)[0][0], model)
        return {"cw": {"images": array(adversarial), "costs": costs},
                "deepfool": {"r_tot": r_tot, "loops": loops, "labels": [label, k_i], "image": array(perturbed)}}

    ours, theirs = run_in_lockstep(features_classifier, attacks)
    assert_same_records(ours, theirs)
    assert ours["cw"]["costs"][-1] < ours["cw"]["costs"][0]
    assert ours["deepfool"]["labels"][0] != ours["deepfool"]["labels"][1]  # DeepFool crossed a boundary


@pytest.mark.parametrize("optimizer_name,normalize", [("lbfgs", False), ("adam", True)])
def test_neural_style_pt_as_torch(optimizer_name, normalize, float64_default):
    """neural-style-pt with two blended style images, a TV module, capture/loss modes; ``-normalize_gradients`` and
    ``-normalize_weights`` with Adam."""
    def train(torch, nn, F, cnn):
        content, style, noise = style_images()
        stylize = image_programs.neural_style_pt(torch, nn, torch.DoubleTensor)
        output, losses, (length, strengths) = stylize(
            cnn, torch.tensor(content[0]), [torch.tensor(style[0]), torch.tensor(noise[0])],
            optimizer_name=optimizer_name, normalize_gradients=normalize, normalize_weights_=normalize,
            learning_rate=2.0)
        return {"output": array(output), "losses": losses, "net length": length, "strengths": strengths,
                "features": snapshot(cnn)}

    ours, theirs = run_in_lockstep(style_features, train)
    assert_same_records(ours, theirs)
    assert ours["losses"][-1] < ours["losses"][0] and len(ours["losses"]) == 6


@pytest.mark.parametrize("compile_replay", [False, True], ids=["eager", "compiled"])
def test_free_adversarial_training_as_torch(compile_replay, float64_default):
    """Free AT's replayed minibatches, one global noise tensor written through ``+=`` on a slice and ``clamp_``; the
    replay as one ``kiln.compile(fullgraph=True)`` function (the global noise a closure tensor it writes back)."""
    def train(torch, nn, F, model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        batches = [batch(torch, 300 + BATCH * k, textured=True) for k in range(3)]  # no tied max-pool windows
        losses, noise = more.free_adversarial_train(torch, nn, model, optimizer, batches, [0.1307], [0.3081],
                                                    compile_replay=lambda replay: compiled(torch, replay, compile_replay))
        return {"losses": losses, "noise": array(noise), "state": snapshot(model)}

    ours, theirs = run_in_lockstep(features_classifier, train)
    assert_same_records(ours, theirs)
    assert np.abs(ours["noise"]).max() == pytest.approx(0.3)


def test_per_example_input_gradients_by_torch_func_as_torch(float64_default):
    """Saliency the functorch way: ``vmap(grad(compute_loss))`` over ``functional_call`` with detached parameters,
    ``torch.func.grad`` and ``vjp`` of the batch, ``torch.autograd.functional.jacobian`` of one image."""
    def saliency(torch, nn, F, model):
        pretrain_features(torch, F, model, steps=6)
        x, y = batch(torch, 300, 4)
        params = {k: v.detach() for k, v in model.named_parameters()}

        def compute_loss(x, y):
            out = torch.func.functional_call(model, params, (x.unsqueeze(0),))
            return F.cross_entropy(out, y.unsqueeze(0))

        _, pullback = torch.func.vjp(lambda t: model(t), x)
        return {"vmap(grad)": array(torch.func.vmap(torch.func.grad(compute_loss), in_dims=(0, 0))(x, y)),
                "grad": array(torch.func.grad(lambda t: model(t)[:, 3].sum())(x)),
                "vjp": array(pullback(torch.ones(4, more.CLASSES))[0]),
                "jacobian": array(torch.autograd.functional.jacobian(lambda t: model(t), x[:1]))}

    ours, theirs = run_in_lockstep(features_classifier, saliency)
    assert_same_records(ours, theirs)


@pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")
def test_grad_cam_plus_plus_and_score_cam_as_torch(float64_default):
    """Grad-CAM++ (old ``register_backward_hook``, ``F.upsample``) and Score-CAM (masked inputs scored under
    ``no_grad``, ``F.softmax`` without dim); both warn as torch for ``upsample`` and the implicit softmax dim. torch's
    FutureWarning for a non-full backward hook on a Conv2d has no kiln counterpart (kiln's ``register_backward_hook``
    is the full hook; the ``grad_output`` read here is the same in both)."""
    def cams(torch, nn, F, model):
        pretrain_features(torch, F, model)
        model.eval()
        image, _ = batch(torch, 600, 1)
        with pytest.warns(UserWarning) as caught:
            cam, logit = more.grad_cam_plus_plus(torch, F, model, model.features[3], image, (10, 10))
            score = more.score_cam(torch, F, model, model.features[3], image)
        messages = " ".join(str(w.message) for w in caught)
        assert "upsample` is deprecated" in messages and "Implicit dimension choice for softmax" in messages
        return {"grad_cam++": array(cam), "logit": array(logit), "score_cam": array(score),
                "weights' grads": {name: array(p.grad) for name, p in model.named_parameters()}}

    ours, theirs = run_in_lockstep(features_classifier, cams)
    assert_same_records(ours, theirs)


def test_lucent_channel_visualisation_as_torch(float64_default):
    """lucent's FFT-parametrised image (``view_as_complex``, ``irfftn(norm='ortho')``), colour decorrelation,
    ``sigmoid``, jitter by ``torch.roll``, a channel objective read by a forward hook, Adam with ``step(closure)``."""
    spectrum = np.random.default_rng(5).standard_normal((1, 3, 12, 7, 2)) * 0.01

    def render(torch, nn, F, cnn):
        images, losses = image_programs.render_channel(torch, cnn, cnn[3], 2, torch.tensor(spectrum), (12, 12))
        return {"images": images, "losses": losses}

    ours, theirs = run_in_lockstep(style_features, render)
    assert_same_records(ours, theirs)
    assert ours["losses"][-1] < ours["losses"][0] and ours["images"][0].shape == (1, 12, 12, 3)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_auto_attack_apgd_as_torch(loss, float64_default):
    """AutoAttack's APGD (Linf) with cross-entropy and DLR losses, on four images and on one (where
    ``nonzero().squeeze()`` gives 0-d indices): the best images, robust accuracy per step, final step sizes."""
    starts = 2 * np.random.default_rng(6).uniform(size=(4, 1, 10, 10)) - 1

    def attack(torch, nn, F, model):
        pretrain_features(torch, F, model)
        model.eval()
        record = {}
        for count in (4, 1):
            x, y = batch(torch, 600, count)
            x_best, acc, loss_best, x_best_adv, acc_steps, step_size = more.apgd(
                torch, nn, model, x, y, torch.tensor(starts[:count]), loss=loss, eps=0.05)
            record[f"{count} images"] = {"x_best": array(x_best), "acc": array(acc), "loss_best": array(loss_best),
                                         "x_best_adv": array(x_best_adv), "acc_steps": array(acc_steps),
                                         "step_size": array(step_size)}
        return record

    ours, theirs = run_in_lockstep(features_classifier, attack)
    assert_same_records(ours, theirs)
    assert ours["4 images"]["step_size"].min() < 0.1  # the schedule halved some steps


def test_style_model_with_loss_modules_through_onnx_as_torch(tmp_path):
    """The tutorial's style model (Normalization, convolutions, ContentLoss/StyleLoss modules that store ``self.loss``
    and return their input) exported by ``kiln.onnx.export`` for its one image: onnxruntime gives torch's features
    (float32), and the loss modules still hold real tensors (the export left its traced ``self.loss`` there before).
    With a dynamic batch, ``gram_matrix``'s ``G.div(a * b * c * d)`` now traces (it was refused), but ``mse_loss`` of
    the ``(4N, 4N)`` gram against the ``(4, 4)`` target is refused: the tutorial's model is for one image."""
    from e2e.style_adversarial_program import style_transfer

    torch = require_torch()
    onnxruntime = require("onnxruntime")
    content, style, noise = (image.astype(np.float32) for image in style_images())
    models = []
    for lib, nn, F in ((kiln, kiln.nn, kiln.nn.functional), (torch, torch.nn, torch.nn.functional)):
        lib.manual_seed(0)
        cnn = vgg_like_features(nn).eval()
        if models:
            cnn.load_state_dict({key: torch.tensor(value) for key, value in snapshot(models[0][0]).items()})
        get_style_model_and_losses, _ = style_transfer(lib, nn, F)
        models.append((cnn, *get_style_model_and_losses(cnn, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225],
                                                       lib.tensor(style), lib.tensor(content))))
    (_, model, style_losses, _), (_, twin, _, _) = models
    model(kiln.tensor(content))  # the loss modules' self.loss, as a run_style_transfer step leaves them
    before = [float(loss_module.loss) for loss_module in style_losses]
    path = str(tmp_path / "style.onnx")
    kiln.onnx.export(model, (kiln.tensor(noise),), path, input_names=["image"], output_names=["features"])
    assert [float(loss_module.loss) for loss_module in style_losses] == before
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for image in (noise, content):
        (features,) = session.run(None, {"image": image})
        with torch.no_grad():
            np.testing.assert_allclose(features, twin(torch.tensor(image)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_adversarial_patch_as_torch(compile_step, float64_default):
    """A targeted patch (a leaf ``zeros(...).fill_(0.5).requires_grad_(True)``) pasted by slice assignment at given
    positions, the frozen model (``p.requires_grad = False``), SGD with momentum on the patch, ``clamp_`` under
    ``no_grad``; the step compiled with the positions as Python ints."""
    def train(torch, nn, F, model):
        pretrain_features(torch, F, model, steps=10)
        model.eval()
        for p in model.parameters():
            p.requires_grad = False
        patch = torch.zeros(1, 1, 4, 4).fill_(0.5).requires_grad_(True)
        optimizer = torch.optim.SGD([patch], lr=0.5, momentum=0.8)
        step = more.patch_step(torch, F, model, patch, optimizer, torch.full((BATCH,), 7, dtype=torch.int64))
        run = compiled(torch, step, compile_step)
        positions = [(1, 2), (4, 0), (0, 5), (3, 3)]
        losses = [run(batch(torch, 300 + BATCH * k)[0], *positions[k]).item() for k in range(4)]
        return {"losses": losses, "patch": array(patch)}

    ours, theirs = run_in_lockstep(features_classifier, train)
    assert_same_records(ours, theirs)
    assert 0 <= ours["patch"].min() and ours["patch"].max() <= 1
