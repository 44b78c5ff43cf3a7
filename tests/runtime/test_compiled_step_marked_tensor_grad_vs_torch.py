"""``backward()`` in a ``kiln.compile``d function fills the ``.grad`` of tensors the function marked by
``requires_grad_()`` (or ``requires_grad = True``), as torch's eager code: the FGSM tutorial's ``data.requires_grad =
True; loss.backward(); data.grad.data.sign()``, "Fast is better than free"'s ``delta = torch.zeros_like(X);
delta.requires_grad = True; ...; loss.backward(); delta.grad.detach()``. kiln differentiated the parameters only, so
``.grad`` stayed None (``AttributeError: 'NoneType' object has no attribute 'data'``), and a loss reaching no
parameter was refused ('the loss depends on no trained parameter'). Compiled with ``fullgraph=True`` (no eager
fallback) against torch's eager run, float64."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import require_torch

torch = require_torch()

X = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
W = np.cos(np.arange(8.0)).reshape(4, 2)


def _linear(lib):
    layer = lib.nn.Linear(4, 2).double()
    with lib.no_grad():
        layer.weight.copy_(lib.tensor(W.T))
        layer.bias.fill_(0.1)
    return layer


def _both(step_of):
    """``step_of(lib, model)`` compiled in kiln, eager in torch, each called twice on ``X`` scaled; the results, the
    model's gradients."""
    results = []
    for lib in (kiln, torch):
        model = _linear(lib)
        step = step_of(lib, model)
        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        outputs = [run(lib.tensor(X * scale)) for scale in (1.0, 0.5)]
        results.append(([np.array(o.detach().numpy()) for out in outputs for o in out],
                        [np.array(p.grad.numpy()) for p in model.parameters()]))
    return results


def _assert_same(results):
    for ours, theirs in zip(*results):
        for mine, other in zip(ours, theirs):
            np.testing.assert_allclose(mine, other, rtol=1e-12, atol=1e-14)


def test_fgsm_marks_its_input_and_reads_its_grad():
    def step_of(lib, model):
        def attack(data):
            data.requires_grad = True
            loss = (model(data) ** 2).sum()
            model.zero_grad()
            loss.backward()
            data_grad = data.grad.data
            return (data + 0.1 * data_grad.sign()).clamp(-1, 1), data_grad
        return attack

    _assert_same(_both(step_of))


def test_a_tensor_made_and_marked_in_the_step_gets_grad_accumulated_and_zeroed():
    def step_of(lib, model):
        def step(x):
            delta = lib.zeros_like(x)
            delta.requires_grad = True
            model(x + delta).tanh().sum().backward()
            first = delta.grad.detach().clone()
            (model(x + delta) ** 2).mean().backward()  # accumulates
            accumulated = delta.grad.detach().clone()
            delta.grad.zero_()
            model(x - delta).sum().backward()
            return first, accumulated, delta.grad
        return step

    _assert_same(_both(step_of))


def test_a_loss_reaching_only_a_marked_tensor_fills_its_grad():
    def step_of(lib, model):
        def step(x):
            scale = lib.ones(4, dtype=lib.float64).requires_grad_()
            (x * scale).pow(2).sum().backward()
            return (scale.grad,)
        return step

    results = []
    for lib in (kiln, torch):
        step = step_of(lib, None)
        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        results.append(np.array(run(lib.tensor(X))[0].numpy()))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-14)


def test_backward_given_inputs_leaves_a_marked_tensor_without_grad():
    def step_of(lib, model):
        def step(x):
            delta = lib.zeros_like(x).requires_grad_()
            model(x + delta).sum().backward(inputs=list(model.parameters()))
            return (lib.tensor(float(delta.grad is None)),)
        return step

    results = _both(step_of)
    _assert_same(results)
    assert results[0][0][0] == 1.0


def _pgd_step_with_its_own_optimizer(lib, model):
    """_pgd_whitebox's step: ``Variable(X.data, requires_grad=True)`` and a fresh ``optim.SGD([X_pgd])`` for its
    ``zero_grad``."""
    def step(x):
        x_pgd = lib.autograd.Variable(x.data, requires_grad=True)
        opt = lib.optim.SGD([x_pgd], lr=1e-3)
        opt.zero_grad()
        model(x_pgd).pow(2).sum().backward()
        return (x_pgd.grad.data.sign(),)
    return step


def test_an_optimizer_over_a_traced_tensor_is_refused_at_the_users_line_with_fullgraph():
    import pytest

    step = kiln.compile(_pgd_step_with_its_own_optimizer(kiln, _linear(kiln)), fullgraph=True)
    with pytest.raises(kiln.compiler.errors.TraceError,
                       match=r"(?s)opt = lib\.optim\.SGD\(\[x_pgd\].*an optimizer over a traced tensor.*outside the "
                             r"compiled function"):
        step(kiln.tensor(X))


def test_an_optimizer_over_a_traced_tensor_runs_eagerly_without_fullgraph_as_torch():
    import pytest

    results = []
    for lib in (kiln, torch):
        step = _pgd_step_with_its_own_optimizer(lib, _linear(lib))
        if lib is kiln:
            with pytest.warns(UserWarning, match="runs eagerly"):
                results.append(np.array(kiln.compile(step)(kiln.tensor(X))[0].numpy()))
        else:
            results.append(np.array(step(torch.tensor(X))[0].numpy()))
    np.testing.assert_array_equal(results[0], results[1])


def _flag_ascent(lib, model, zeroing):
    """Graphormer's FLAG (tasks/graph_prediction.py): a marked perturbation moved by ``perturb.data = ...`` between
    backwards, its ``.grad`` zeroed (``perturb.grad[:] = 0``, ``zero_()``, or set to None) or kept accumulating."""
    def step(x):
        perturb = (0.1 * x).requires_grad_()
        model.zero_grad()
        loss = (model(x + perturb) ** 2).sum() / 3
        grads = []
        for _ in range(2):
            loss.backward()
            grads.append(perturb.grad.detach().clone())
            perturb_data = perturb.detach() + 0.01 * lib.sign(perturb.grad.detach())
            perturb.data = perturb_data.data
            if zeroing == "slice":
                perturb.grad[:] = 0
            elif zeroing == "zero_":
                perturb.grad.zero_()
            elif zeroing == "none":
                perturb.grad = None
            loss = (model(x + perturb) ** 2).sum() / 3
        loss.backward()
        return (*grads, perturb.grad, perturb.detach())
    return step


def test_a_marked_tensor_moved_through_data_between_backwards_keeps_its_grad():
    """``perturb.data = ...`` in the step rebound the traced leaf to a value ``backward()`` no longer counted as the
    leaf: its later ``.grad`` stayed as zeroed (the parameters' gradients through it right), silently, and a loss
    reaching no parameter was refused. Each zeroing form, and none, as torch's."""
    for zeroing in ("slice", "zero_", "none", "keep"):
        _assert_same(_both(lambda lib, model: _flag_ascent(lib, model, zeroing)))


def test_reads_before_and_after_a_data_write_both_reach_the_marked_tensor():
    """One backward of a loss reading the marked tensor before and after ``x.data = ...``: the gradient of both
    reads, as torch's one leaf gets it."""
    def step_of(lib, model):
        def step(x):
            delta = lib.zeros_like(x).requires_grad_()
            before = model(x + delta).tanh().sum()
            delta.data = (delta.detach() + 0.5).data
            (before + (model(x * delta) ** 2).sum()).backward()
            return delta.grad, delta.detach()
        return step

    _assert_same(_both(step_of))


def test_writes_under_no_grad_keep_a_tensors_gradient_path():
    """``with torch.no_grad(): delta.add_(...)`` / ``.clamp_(...)`` (a PGD step) on a marked tensor, and on a result
    that requires grad, between backwards: PyTorch's tensor keeps its history, so a later backward reaches the leaf
    (and the parameters) through it. The traced write's result had no path back: the leaf's ``.grad`` stayed as it
    was, silently, and a non-leaf's loss was refused."""
    def step_of(lib, model, write):
        def step(x):
            delta = (0.1 * x).requires_grad_()
            model(x + delta).tanh().sum().backward()
            hidden = model(x + delta)
            with lib.no_grad():
                getattr(delta, write)(*((0.05,) if write == "add_" else (-0.1, 0.1)))
                hidden.mul_(0.5)
            (model(x * delta) ** 2 + hidden).sum().backward()
            return delta.grad, delta.detach(), hidden.detach()
        return step

    for write in ("add_", "clamp_"):
        _assert_same(_both(lambda lib, model: step_of(lib, model, write)))


def test_a_write_under_no_grad_over_minus_inf_keeps_the_values_and_the_path():
    """Scores masked to ``-inf`` under ``no_grad`` and written again: the kept path adds nothing where the old value
    is not finite (``-inf - -inf`` would be NaN), as torch's values and gradients."""
    def step_of(lib, model):
        def step(x):
            scores = model(x)
            with lib.no_grad():
                scores.masked_fill_(x[:, :2] > 0.5, float("-inf"))
                scores.mul_(2)
            (scores.softmax(-1) * lib.tensor([1.0, 2.0], dtype=lib.float64)).sum().backward()
            return (scores.detach(),)
        return step

    results = _both(step_of)
    _assert_same(results)
    assert np.isneginf(results[0][0][0]).any()
