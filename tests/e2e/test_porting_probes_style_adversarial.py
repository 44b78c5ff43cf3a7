"""Porting probe: code that optimises or inspects a model's *inputs*, written once as its references write it
(``tests/e2e/style_adversarial_program.py``; ``torch`` is ``torch`` or ``kiln``) and run in both from kiln's
initial weights, float64 to 1e-10 unless said otherwise.

- Adversarial examples: the FGSM tutorial (``data.requires_grad = True``, ``data.grad.data``, ``sign()``,
  ``denorm``, the renormalised image, ``output.max(1, keepdim=True)[1]``, ``.item()`` per image, the examples as
  NumPy arrays); Madry's ``LinfPGDAttack`` (``torch.zeros_like(x).uniform_`` random start, ``torch.enable_grad()``,
  ``torch.autograd.grad``, ``torch.min(torch.max(x, x_natural - epsilon), x_natural + epsilon)``, ``clamp``) inside
  adversarial training with ``model.eval()``/``model.train()`` switched around the attack (BatchNorm: the attack
  reads the running statistics, the step updates them); TRADES' ``trades_loss`` (``nn.KLDivLoss(size_average=False)``,
  ``Variable``, both the l_inf and the l_2 branch: ``optim.SGD([delta])``, ``delta.grad.div_``, the projection
  through ``delta.data.add_/clamp_/sub_/renorm_``) and ``_pgd_whitebox`` (``Variable(X.data, requires_grad=True)``
  rebuilt each step, a fresh ``optim.SGD([X_pgd])`` for its ``zero_grad``); "Fast is better than free"'s FGSM
  training (``delta.data = clamp(...)``, ``delta.data[:X.size(0)] = ...``, a cyclic lr) and ``attack_pgd``
  (``torch.where(cond)`` of one argument, ``delta.data[index[0], :, :, :] = d``, restarts kept by
  ``max_delta[all_loss >= max_loss] = ...``). Random starts are drawn once in NumPy and given to both libraries;
  kiln's own draws (``uniform_`` into ``delta[:, i, :, :]``) are checked for what they are.
- Saliency: Grad-CAM by ``register_forward_hook`` + ``register_full_backward_hook`` and by ``output.register_hook``
  in a forward hook (pytorch-grad-cam's way, the CAM in NumPy), integrated gradients batched (``torch.linspace``,
  ``autograd.grad``) and as the paper's loop, SmoothGrad (``output.backward(gradient=one_hot)``), DeepDream
  (``image.data += lr * image.grad.data / image.grad.data.abs().mean()``), and PyTorch-Deep-Dream's step on a net cut
  by ``nn.Sequential(*layers[:k + 1])`` through ``kiln.compile`` (it runs eagerly, warned: see below).
- Neural style transfer: the tutorial's loss modules inserted into an ``nn.Sequential`` rebuilt from a VGG-like
  ``features`` (``ReLU(inplace=False)``, max pooling or Gatys' ``AvgPool2d``), trimmed after the last loss, the input
  image optimised by ``optim.LBFGS`` (clamped in the closure) or Adam with a total-variation term, from the content
  image or from noise.
- Compiled (``kiln.compile(fullgraph=True)`` against torch's eager code): the Madry step (attack and update), the
  TRADES l_inf step, the fast-FGSM step, the FGSM attack, the Adam style step; the FGSM tutorial and Madry training
  on ``kiln.compile(model, fullgraph=True)`` (input gradients through the compiled forward); the adversarially
  trained classifier through ``kiln.onnx.export`` and onnxruntime on PGD examples (float32), and the Madry training
  in float32.

What broke: TRADES' l_2 branch raised ``LeafInPlaceError`` at ``delta.data.add_(x_natural)`` (a write through
``.data`` of a marked leaf that is itself a view, ``Variable(delta.data, requires_grad=True)``, was checked as a
differentiable write); and such a leaf, written under ``no_grad``, silently dropped out of later gradients
(``frontend/view_writes.py``, ``frontend/tensor_inplace.py``; ``tests/frontend/test_detached_alias_writes_vs_torch.py``).
In a compiled function, ``backward()`` left the ``.grad`` of tensors the function marked (FGSM's ``data``,
fast-FGSM's ``delta``) None (``runtime/step_capture.py``; ``tests/runtime/test_compiled_step_marked_tensor_grad_vs_torch.py``).
Left as kiln refuses them: ``attack_pgd`` compiled (``torch.where(cond)`` has a data-dependent shape: a TraceError at
the user's line), and TRADES' l_2 branch and ``_pgd_whitebox`` compiled (an optimizer made inside the compiled function
over a traced tensor; the refusal was a bare KilnError with no line, now a TraceError at the user's line saying what to
do: ``frontend/optim_leaf_tensors.py``); without ``fullgraph`` both run eagerly, as torch. PyTorch-Deep-Dream's step
compiled raised AttributeError (its ``Variable(x, requires_grad=True)`` image, read from outside the step, got no
``.grad``): now refused at the user's line, so the call runs eagerly as torch; and an in-place write to a ``.grad``
before ``backward()`` in a compiled step (``image.grad.data.zero_()``) was lost from the second call on, silently
(``runtime/step_capture.py``; ``tests/runtime/test_compiled_step_grad_written_before_backward_vs_torch.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e import style_adversarial_program as program
from e2e.probe_lockstep import array, assert_same_records, compiled_module_training, gradients, run_in_lockstep, snapshot
from e2e.style_adversarial_program import BATCH, batch, compiled, style_images
from oracles import libraries, require, require_torch

RNG = np.random.default_rng(0)
UNIFORM = [RNG.uniform(-1, 1, (BATCH, 1, program.SIDE, program.SIDE)) for _ in range(4)]
GAUSSIAN = [RNG.standard_normal((BATCH, 1, program.SIDE, program.SIDE)) for _ in range(3)]
MU, SIGMA = 0.1307, 0.3081


def pretrain(torch, F, model, steps=12, normalized=False, dtype=np.float64):
    """The classifier the attacks are run on: a few SGD steps on clean digits (the tutorials load a trained one)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        images, labels = batch(torch, 32 * step, 32, normalized, dtype)
        optimizer.zero_grad()
        F.nll_loss(model(images), labels).backward()
        optimizer.step()


def classifier(torch, nn, F):
    return program.classifier(torch, nn, F)


# --- adversarial examples and training ------------------------------------------------------------------------------


def fgsm_tutorial(torch, nn, F, model):
    pretrain(torch, F, model, normalized=True)
    model.eval()
    test_loader = [batch(torch, 600 + k, 1, normalized=True) for k in range(16)]
    record = {}
    for epsilon in (0, 0.05, 0.1, 0.2):
        accuracy, examples = program.fgsm_test(torch, F, model, test_loader, epsilon)
        record[f"eps {epsilon}"] = {"accuracy": accuracy, "labels": [example[:2] for example in examples],
                                    "images": [example[2] for example in examples]}
    return record


def test_fgsm_tutorial_as_torch(float64_default):
    ours, theirs = run_in_lockstep(classifier, fgsm_tutorial)
    assert_same_records(ours, theirs)
    assert ours["eps 0.2"]["accuracy"] < ours["eps 0"]["accuracy"]  # the attack works
    assert all(image.shape == (10, 10) for image in ours["eps 0.1"]["images"])


def madry_training(compile_step):
    def train(torch, nn, F, model):
        pretrain(torch, F, model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)

        def step(inputs, targets, noise):
            adversary = program.linf_pgd_attack(torch, F, noise=noise)(model)
            return program.madry_train_step(torch, nn, model, adversary, optimizer, inputs, targets)

        run = compiled(torch, step, compile_step)
        results = []
        for k in range(3):
            inputs, targets = batch(torch, 300 + BATCH * k)
            loss, correct = run(inputs, targets, torch.tensor(0.3 * UNIFORM[k]))
            results.append((loss.item(), correct.item()))
        model.eval()
        err, err_pgd, x_pgd = program.pgd_whitebox(torch, nn, torch.optim, model, *batch(torch, 500),
                                                   random_noise=torch.tensor(0.3 * UNIFORM[3]))
        return {"steps": results, "state": snapshot(model), "whitebox": [err.item(), err_pgd.item()],
                "x_pgd": array(x_pgd), "training": model.training}
    return train


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_madry_pgd_adversarial_training_as_torch(compile_step, float64_default):
    ours, theirs = run_in_lockstep(classifier, madry_training(compile_step))
    assert_same_records(ours, theirs)
    assert ours["whitebox"][1] >= ours["whitebox"][0]  # PGD finds at least the clean errors


def trades_training(distance, compile_step):
    def train(torch, nn, F, model):
        pretrain(torch, F, model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step(x_natural, y, noise):
            loss = program.trades_loss(torch, nn, F, model, x_natural, y, optimizer, noise, distance=distance)
            loss.backward()
            optimizer.step()
            return loss

        run = compiled(torch, step, compile_step)
        losses = [run(*batch(torch, 400 + BATCH * k), torch.tensor(GAUSSIAN[k])).item() for k in range(3)]
        return {"losses": losses, "state": snapshot(model)}
    return train


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize("distance,compile_step", [("l_inf", False), ("l_2", False), ("l_inf", True)],
                         ids=["l_inf", "l_2", "l_inf-compiled"])
def test_trades_as_torch(distance, compile_step, float64_default):
    ours, theirs = run_in_lockstep(classifier, trades_training(distance, compile_step))
    assert_same_records(ours, theirs)


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
def test_trades_l2_compiled_is_refused_at_its_inner_optimizer(float64_default):
    """The l_2 branch makes ``optim.SGD([delta])`` over a tensor made in the step: refused at that line."""
    torch, nn, F = libraries("kiln")
    model = classifier(torch, nn, F)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(x_natural, y, noise):
        return program.trades_loss(torch, nn, F, model, x_natural, y, optimizer, noise, distance="l_2")

    with pytest.raises(kiln.compiler.errors.TraceError,
                       match=r"(?s)optimizer_delta = optim.SGD\(\[delta\].*an optimizer over a traced tensor"):
        kiln.compile(step, fullgraph=True)(*batch(torch, 400), torch.tensor(GAUSSIAN[0]))


def fast_limits(torch):
    """"Fast is better than free"'s per-channel ``epsilon``, ``alpha`` and image limits in normalised units."""
    def per_channel(values):
        return torch.tensor(values).view(1, 1, 1)
    return (per_channel([0.3 / SIGMA]), per_channel([0.1 / SIGMA]), per_channel([(0 - MU) / SIGMA]),
            per_channel([(1 - MU) / SIGMA]))


def fast_fgsm_training(compile_step):
    def train(torch, nn, F, model):
        pretrain(torch, F, model, normalized=True)
        epsilon, alpha, lower_limit, upper_limit = fast_limits(torch)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0., max_lr=0.05, step_size_up=2, step_size_down=2)
        criterion = nn.CrossEntropyLoss()

        def step(X, y, start):
            return program.fast_fgsm_train_step(torch, F, model, opt, criterion, X, y, start, epsilon, alpha,
                                                lower_limit, upper_limit)

        run = compiled(torch, step, compile_step)
        losses = []
        for k in range(3):
            losses.append(run(*batch(torch, 300 + BATCH * k, normalized=True), torch.tensor(UNIFORM[k])).item())
            scheduler.step()
        model.eval()
        X, y = batch(torch, 500, normalized=True)
        delta = program.attack_pgd(torch, F, model, X, y, epsilon, alpha, 3, 2, [torch.tensor(u) for u in UNIFORM[2:]],
                                   lower_limit, upper_limit)
        return {"losses": losses, "state": snapshot(model), "delta": array(delta),
                "robust_loss": F.cross_entropy(model(X + delta), y).item()}
    return train


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_fast_fgsm_training_and_attack_pgd_as_torch(compile_step, float64_default):
    ours, theirs = run_in_lockstep(classifier, fast_fgsm_training(compile_step))
    assert_same_records(ours, theirs)


def test_attack_pgd_compiled_is_refused_at_its_data_dependent_where(float64_default):
    """``torch.where(cond)`` of one argument has as many indices as the condition holds: kiln refuses to trace it,
    at the user's line, with what to do."""
    torch, nn, F = libraries("kiln")
    model = classifier(torch, nn, F).eval()
    epsilon, alpha, lower_limit, upper_limit = fast_limits(torch)

    def attack(X, y, start):
        return program.attack_pgd(torch, F, model, X, y, epsilon, alpha, 2, 1, [start], lower_limit, upper_limit)

    with pytest.raises(kiln.compiler.errors.TraceError, match=r"(?s)index = torch.where.*nonzero\(\) has a data-dependent"):
        kiln.compile(attack, fullgraph=True)(*batch(torch, 500, normalized=True), torch.tensor(UNIFORM[0]))


def test_fgsm_attack_compiled_as_torch(float64_default):
    """The tutorial's attack of a batch as one compiled function: the input marked inside, ``loss.backward()``,
    ``data.grad.data``; the perturbed images, the predictions and the model's gradients as torch's. The attacked
    images are textured (``batch``): on the plain digits, tied max-pool windows send the gradient's sign elsewhere."""
    def train(torch, nn, F, model):
        pretrain(torch, F, model, normalized=True)
        model.eval()

        def attack(data, target, epsilon):
            data.requires_grad = True
            output = model(data)
            loss = F.nll_loss(output, target)
            model.zero_grad()
            loss.backward()
            perturbed = program.fgsm_attack(torch, program.denorm(torch, data), epsilon, data.grad.data)
            return perturbed, model(program.normalize(torch, perturbed)).max(1, keepdim=True)[1]

        run = compiled(torch, attack, True)
        record = {}
        for k, epsilon in enumerate((0.05, 0.2)):
            perturbed, prediction = run(*batch(torch, 600 + BATCH * k, normalized=True, textured=True), epsilon)
            record[f"eps {epsilon}"] = {"perturbed": array(perturbed), "prediction": array(prediction)}
        return {**record, "grads": gradients(model)}

    ours, theirs = run_in_lockstep(classifier, train)
    assert_same_records(ours, theirs)


def test_kilns_random_starts_stay_in_the_epsilon_ball():
    """kiln's own draws: ``torch.zeros_like(x).uniform_(-eps, eps)`` in ``LinfPGDAttack`` and ``uniform_`` into
    ``delta[:, i, :, :]`` (a view: the draw lands in ``delta``) are uniform in the ball; the attack stays in it."""
    torch, nn, F = libraries("kiln")
    kiln.manual_seed(1)
    model = classifier(torch, nn, F).double().eval()
    x_natural, y = batch(torch, 0)
    adversarial = program.linf_pgd_attack(torch, F, epsilon=0.3)(model).perturb(x_natural, y)
    distance = array(adversarial) - array(x_natural)
    assert np.abs(distance).max() <= 0.3 + 1e-12 and array(adversarial).min() >= 0 and array(adversarial).max() <= 1
    delta = torch.zeros(64, 2, 4, 4, dtype=torch.float64)
    epsilon = torch.tensor([0.1, 0.5], dtype=torch.float64).view(2, 1, 1)
    for i in range(2):
        program.uniform_start(delta, i, epsilon)
    for i, bound in enumerate((0.1, 0.5)):
        drawn = array(delta)[:, i]
        assert np.abs(drawn).max() <= bound and drawn.min() < -0.8 * bound and drawn.max() > 0.8 * bound
        assert abs(drawn.mean()) < 0.1 * bound and len(np.unique(drawn)) == drawn.size


# --- saliency ------------------------------------------------------------------------------------------------------


def saliency(torch, nn, F, model):
    pretrain(torch, F, model)
    images, _ = batch(torch, 600, 2)
    record = {}
    cam_maker = program.grad_cam(torch, F)(model, model.conv2)
    cam, class_idx = cam_maker(images)
    cam_maker.remove()
    model(images[:1])  # hooks removed: the kept activations are the CAM's
    record["grad_cam"] = {"cam": array(cam), "class": array(class_idx), "kept": array(cam_maker.activations),
                          "weights' grads": gradients(model)}
    cam, score = program.grad_cam_tensor_hook(torch, F, model, model.conv1, images[:1], 3)
    record["grad_cam by tensor hook"] = {"cam": cam, "score": score.item()}
    attributions, gap = program.integrated_gradients(torch, model, images[:1], 3)
    record["integrated gradients"] = {"batched": array(attributions), "gap": gap.item(),
                                      "loop": program.integrated_gradients_loop(torch, model, images[:1], 3)}
    record["smooth_grad"] = array(program.smooth_grad(torch, model, images, 2, [torch.tensor(g[:2]) for g in GAUSSIAN]))
    dreamed, norms = program.deep_dream(torch, model, model.conv2, images)
    record["deep_dream"] = {"image": array(dreamed), "norms": norms}
    return record


def test_grad_cam_integrated_gradients_smoothgrad_and_deepdream_as_torch(float64_default):
    ours, theirs = run_in_lockstep(classifier, saliency)
    assert_same_records(ours, theirs)
    assert ours["deep_dream"]["norms"][-1] > ours["deep_dream"]["norms"][0]  # gradient ascent
    trapezoid = ours["integrated gradients"]
    assert abs(trapezoid["gap"]) < 0.1 * np.abs(trapezoid["batched"]).sum()  # completeness, to the Riemann error


def test_deep_dream_on_a_cut_network_compiled_runs_eagerly_as_torch(float64_default):
    """PyTorch-Deep-Dream's step through ``kiln.compile``: its image is ``Variable(x, requires_grad=True)`` (a tensor
    read from outside the step that requires grad, no parameter), so the compiled call runs eagerly, warned, with
    torch's losses and image (it raised AttributeError on ``image.grad.data`` before)."""
    def dream(torch, nn, F, cnn):
        image = torch.tensor(style_images()[0])
        compile_step = (lambda step: kiln.compile(step)) if torch is kiln else (lambda step: step)
        if torch is kiln:
            with pytest.warns(UserWarning, match="runs eagerly"):
                losses, dreamed = program.deep_dream_layers(torch, nn, cnn, 3, image, compile_step=compile_step)
        else:
            losses, dreamed = program.deep_dream_layers(torch, nn, cnn, 3, image)
        return {"losses": losses, "image": dreamed}

    ours, theirs = run_in_lockstep(style_features, dream)
    assert_same_records(ours, theirs)
    assert ours["losses"][-1] > ours["losses"][0]


# --- neural style transfer -----------------------------------------------------------------------------------------


def style_features(torch, nn, F):
    return program.vgg_like_features(nn)


def style_transfer(variant):
    def train(torch, nn, F, cnn):
        cnn.eval()
        get_style_model_and_losses, total_variation = program.style_transfer(torch, nn, F)
        content, style, noise = (torch.tensor(image) for image in style_images())
        model, style_losses, content_losses = get_style_model_and_losses(
            cnn, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], style, content, avg_pool=variant != "lbfgs")
        input_img = noise if variant == "adam from noise" else content.clone()
        input_img.requires_grad_(True)
        model.eval()
        model.requires_grad_(False)
        losses = []
        if variant == "lbfgs":
            optimizer = torch.optim.LBFGS([input_img], max_iter=5)
            for _ in range(2):
                def closure():
                    with torch.no_grad():
                        input_img.clamp_(0, 1)
                    optimizer.zero_grad()
                    model(input_img)
                    loss = 1e4 * sum(sl.loss for sl in style_losses) + sum(cl.loss for cl in content_losses)
                    loss.backward()
                    losses.append(loss.item())
                    return loss
                optimizer.step(closure)
            with torch.no_grad():  # a last correction...
                input_img.clamp_(0, 1)
        else:
            optimizer = torch.optim.Adam([input_img], lr=0.02)

            def step():
                return program.style_step(torch, optimizer, model, input_img, style_losses, content_losses,
                                          total_variation)

            run = compiled(torch, step, variant == "adam compiled")
            losses = [run().item() for _ in range(4)]
        return {"losses": losses, "image": array(input_img), "layers": [name for name, _ in model.named_children()],
                "features": snapshot(cnn)}
    return train


@pytest.mark.parametrize("variant", ["lbfgs", "adam", "adam from noise", "adam compiled"])
def test_neural_style_transfer_optimises_the_image_as_torch(variant, float64_default):
    ours, theirs = run_in_lockstep(style_features, style_transfer(variant))
    assert ours.pop("layers") == theirs.pop("layers")
    assert_same_records(ours, theirs)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["image"].min() >= 0 and ours["image"].max() <= 1


# --- float32 and ONNX ----------------------------------------------------------------------------------------------


def madry_eager(torch, nn, F, model):
    """Two Madry steps (the attack's gradients by ``autograd.grad`` through the model)."""
    pretrain(torch, F, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = []
    for k in range(2):
        adversary = program.linf_pgd_attack(torch, F, noise=torch.tensor(0.3 * UNIFORM[k]))(model)
        loss, correct = program.madry_train_step(torch, nn, model, adversary, optimizer, *batch(torch, 300 + BATCH * k))
        steps.append((loss.item(), correct.item()))
    return {"steps": steps, "state": snapshot(model)}


@pytest.mark.parametrize("train", [fgsm_tutorial, madry_eager], ids=["fgsm tutorial", "madry"])
def test_attacks_on_a_compiled_model_as_torch(train, float64_default):
    """``model = torch.compile(model)`` as torch 2.x code writes it (``kiln.compile(model, fullgraph=True)``), then the
    attacks eagerly: the input gradients flow back through the compiled forward (``data.grad``, ``autograd.grad``)."""
    ours, theirs = run_in_lockstep(classifier, compiled_module_training(train))
    assert_same_records(ours, theirs)


def test_madry_training_float32_as_torch():
    """The Madry step compiled in float32 (how it trains) against torch's eager float32 loop: float32's level. The
    attack's ``sign()`` of gradient entries near zero could flip between libraries; these agree exactly."""
    def train(torch, nn, F, model):
        pretrain(torch, F, model, dtype=np.float32)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step(inputs, targets, noise):
            adversary = program.linf_pgd_attack(torch, F, noise=noise)(model)
            return program.madry_train_step(torch, nn, model, adversary, optimizer, inputs, targets)

        run = compiled(torch, step, True)
        losses = [run(*batch(torch, 300 + BATCH * k, dtype=np.float32),
                      torch.tensor((0.3 * UNIFORM[k]).astype(np.float32)))[0].item() for k in range(2)]
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(classifier, train)
    assert ours["state"]["fc2.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def test_adversarially_trained_classifier_through_onnx_as_torch(tmp_path):
    """The classifier after a Madry training step (kiln's, eval mode: BatchNorm's running statistics), exported by
    ``kiln.onnx.export`` with a dynamic batch and run by onnxruntime on torch's PGD examples: torch's log-probabilities
    and predictions (float32)."""
    torch = require_torch()
    onnxruntime = require("onnxruntime")

    def train(lib, nn, F, model):
        pretrain(lib, F, model, dtype=np.float32)
        optimizer = lib.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        adversary = program.linf_pgd_attack(lib, F, noise=lib.tensor((0.3 * UNIFORM[0]).astype(np.float32)))(model)
        program.madry_train_step(lib, nn, model, adversary, optimizer, *batch(lib, 300, dtype=np.float32))
        return model.eval()

    model, twin = run_in_lockstep(classifier, train)
    x_natural, y = batch(torch, 500, dtype=np.float32)
    attack = program.linf_pgd_attack(torch, torch.nn.functional, noise=torch.tensor((0.3 * UNIFORM[1]).astype(np.float32)))
    x_adv = attack(twin).perturb(x_natural, y).detach()
    path = str(tmp_path / "robust.onnx")
    kiln.onnx.export(model, (kiln.tensor(x_adv.numpy()[:2]),), path, input_names=["input"],
                     output_names=["log_probs"], dynamic_axes={"input": {0: "batch"}, "log_probs": {0: "batch"}})
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (log_probs,) = session.run(None, {"input": x_adv.numpy()})
    with torch.no_grad():
        expected = twin(x_adv).numpy()
    np.testing.assert_allclose(log_probs, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(log_probs.argmax(1), expected.argmax(1))
