"""``kiln.autograd.grad`` / ``kiln.autograd.backward`` against ``torch.autograd`` in float64: eager (with and without
``create_graph``), traced into compiled functions and training steps (double backprop), and their errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime import eager_backward
from oracles import require, torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 8), lib.nn.Tanh(), lib.nn.Linear(8, 4)).double()


def _twins(seed=0):
    torch, net, twin = torch_twins(_net, seed)
    return torch, net, twin, np.random.RandomState(seed).randn(5, 3)


def _close(kiln_tensor, torch_tensor, tol=1e-12):
    np.testing.assert_allclose(kiln_tensor.numpy(), torch_tensor.detach().numpy(), rtol=tol, atol=tol)


def test_grad_with_respect_to_an_input_and_an_activation_matches_torch():
    torch, net, twin, x = _twins()
    kx, tx = kiln.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    hidden, torch_hidden = net[1](net[0](kx)), twin[1](twin[0](tx))
    out, torch_out = net[2](hidden), twin[2](torch_hidden)
    u = np.random.RandomState(1).randn(5, 4)
    got = kiln.autograd.grad(out, [kx, hidden], grad_outputs=u)
    want = torch.autograd.grad(torch_out, [tx, torch_hidden], grad_outputs=torch.tensor(u))
    for a, b in zip(got, want):
        _close(a, b)
    assert all(p.grad is None for p in net.parameters())  # grad() leaves .grad alone


def test_grad_of_several_outputs_with_respect_to_parameters_sums_every_read():
    torch, net, twin, x = _twins(2)
    kx, tx = kiln.tensor(x), torch.tensor(x)
    outputs = [net(kx).sum(), (net(kx * 2.0) ** 2).mean()]  # the parameters are read twice
    torch_outputs = [twin(tx).sum(), (twin(tx * 2.0) ** 2).mean()]
    got = kiln.autograd.grad(outputs, list(net.parameters()), grad_outputs=[None, kiln.tensor(np.float64(3.0))])
    want = torch.autograd.grad(torch_outputs, list(twin.parameters()), grad_outputs=[None, torch.tensor(3.0, dtype=torch.float64)])
    for a, b in zip(got, want):
        _close(a, b)


def test_create_graph_gives_a_differentiable_gradient_for_a_gradient_penalty():
    torch, net, twin, x = _twins(3)
    kx, tx = kiln.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (g,) = kiln.autograd.grad(net(kx).sum(), kx, create_graph=True)
    (tg,) = torch.autograd.grad(twin(tx).sum(), tx, create_graph=True)
    _close(g, tg)
    ((g.norm(dim=1) - 1) ** 2).mean().backward()
    ((tg.norm(dim=1) - 1) ** 2).mean().backward()
    for p, q in zip(net.parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None)  # the last bias: the penalty does not depend on it, in both
        if p.grad is not None:
            np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-11, atol=1e-12)


def test_create_graph_keeps_the_chain_of_a_leaf_grad_output_as_torch():
    """``grad(y, x, v, create_graph=True)`` is differentiable in ``v`` too (a vector-Jacobian product's cotangent,
    gradgradcheck's): ``d(sum(3 v))/dv = 3`` though ``y = 3x`` is linear in ``x``."""
    results = {}
    for lib in (kiln, require("torch")):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        v = lib.tensor([0.5, 0.25], requires_grad=True)
        (vjp,) = lib.autograd.grad(x * 3.0 + x * x, x, v, create_graph=True)
        (dv,) = lib.autograd.grad(vjp.sum(), v)
        results[lib.__name__] = (vjp.detach().numpy(), vjp.requires_grad, dv.numpy())
    ours, theirs = results["kiln"], results["torch"]
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
    assert ours[1] == theirs[1] is True
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-6)


def test_second_and_third_derivatives_by_repeated_grad():
    x = kiln.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    y = (x ** 3).sum()
    (d1,) = kiln.autograd.grad(y, x, create_graph=True)
    (d2,) = kiln.autograd.grad(d1.sum(), x, create_graph=True)
    (d3,) = kiln.autograd.grad(d2.sum(), x)
    np.testing.assert_allclose(d1.numpy(), 3 * x.numpy() ** 2)
    np.testing.assert_allclose(d2.numpy(), 6 * x.numpy())
    np.testing.assert_allclose(d3.numpy(), [6.0, 6.0, 6.0])


def test_eager_grad_in_a_loop_compiles_its_backward_once():
    _, net, _, x = _twins(4)
    eager_backward._COMPILED.clear()
    grads = [kiln.autograd.grad(net(kiln.tensor(x * k)).sum(), net[0].weight)[0].numpy() for k in (1.0, 2.0, 3.0)]
    assert len(eager_backward._COMPILED) == 1
    assert not np.allclose(grads[0], grads[1])


def test_unused_inputs_are_an_error_or_none_or_zeros():
    x, unused = kiln.tensor(np.ones(3), requires_grad=True), kiln.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(kiln.KilnError, match=r"inputs\[1\] \(shape \(2,\)\) is not used"):
        kiln.autograd.grad((x * x).sum(), [x, unused])
    assert kiln.autograd.grad((x * x).sum(), [x, unused], allow_unused=True)[1] is None
    np.testing.assert_array_equal(kiln.autograd.grad((x * x).sum(), [x, unused], materialize_grads=True)[1].numpy(), [0, 0])


def test_bad_arguments_say_what_is_wrong():
    x = kiln.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(kiln.KilnError, match="int64 tensor; only floating-point"):
        kiln.autograd.grad((x * x).sum(), kiln.tensor(np.arange(3)))
    with pytest.raises(kiln.KilnError, match="grad_outputs has 2 entries for 1 outputs"):
        kiln.autograd.grad((x * x).sum(), x, grad_outputs=[None, None])
    with pytest.raises(kiln.KilnError, match="implicitly created only for scalar outputs: kiln.autograd.grad: outputs\[0\] has shape"):
        kiln.autograd.grad(x * x, x)
    with pytest.raises(kiln.KilnError, match=r"requires_grad=False"):
        kiln.autograd.grad((x * x).sum(), nn.Parameter(np.ones(3), requires_grad=False))


def test_autograd_backward_accumulates_each_tensor_into_grad():
    torch, net, twin, x = _twins(5)
    losses = [net(kiln.tensor(x)).sum(), (net(kiln.tensor(-x)) ** 2).sum()]
    torch_losses = [twin(torch.tensor(x)).sum(), (twin(torch.tensor(-x)) ** 2).sum()]
    kiln.autograd.backward(losses)
    torch.autograd.backward(torch_losses)
    for p, q in zip(net.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_traced_grad_in_a_compiled_function_matches_torch():
    torch, net, twin, x = _twins(6)

    def input_gradient_norm(inputs):
        inputs.requires_grad_()  # a compiled function's input requires no grad unless marked, as torch's
        (g,) = kiln.autograd.grad(net(inputs).logsumexp(1).sum(), inputs)
        return g.norm(dim=1)

    tx = torch.tensor(x, requires_grad=True)
    (tg,) = torch.autograd.grad(twin(tx).logsumexp(1).sum(), tx)
    np.testing.assert_allclose(kiln.compile(input_gradient_norm)(x), tg.norm(dim=1).numpy(), rtol=1e-12)


class DoubleBackprop(nn.Module):
    """Drucker and LeCun's double backpropagation: the loss also penalises the input gradient of the log-partition."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        x.requires_grad_()  # the batch is differentiated: marked, as torch requires
        out = self.net(x)
        (g,) = kiln.autograd.grad(out.logsumexp(1).sum(), x, create_graph=True)
        return out, (g ** 2).sum(1).mean()


def test_double_backprop_training_step_is_in_lockstep_with_torch():
    torch, net, twin, x = _twins(7)
    y = np.arange(5) % 4
    model = DoubleBackprop(net)
    step = kiln.compile_train_step(model, lambda out, target: F.cross_entropy(out[0], target) + 0.5 * out[1],
                                   kiln.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(3):
        loss = step(x, y)
        tx = torch.tensor(x, requires_grad=True)
        out = twin(tx)
        (g,) = torch.autograd.grad(out.logsumexp(1).sum(), tx, create_graph=True)
        torch_loss = F_torch_cross_entropy(torch, out, y) + 0.5 * (g ** 2).sum(1).mean()
        optimizer.zero_grad()
        torch_loss.backward()
        optimizer.step()
        np.testing.assert_allclose(float(loss), torch_loss.item(), rtol=1e-12)
    for p, q in zip(net.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-11, atol=1e-12)


def F_torch_cross_entropy(torch, logits, y):  # noqa: N802
    return torch.nn.functional.cross_entropy(logits, torch.tensor(y))


def test_traced_grad_without_create_graph_is_a_constant_to_later_differentiation():
    w = np.array([0.3, -0.7])

    def loss(v):
        (g,) = kiln.autograd.grad((v ** 3).sum(), v)   # 3 v^2, detached
        return (g * v).sum()                            # d/dv = g (not g + 6 v^2)

    np.testing.assert_allclose(kiln.grad(loss)(w), 3 * w ** 2, rtol=1e-12)


def test_requires_grad_on_a_batch_gives_its_grad_as_torch_saliency():
    torch, net, twin, x = _twins(8)
    kx, tx = kiln.tensor(x).requires_grad_(), torch.tensor(x).requires_grad_()
    hidden, torch_hidden = net[0](kx), twin[0](tx)
    hidden.retain_grad()
    torch_hidden.retain_grad()
    net[2](net[1](hidden))[2, 1].backward()
    twin[2](twin[1](torch_hidden))[2, 1].backward()
    np.testing.assert_allclose(kx.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hidden.grad, torch_hidden.grad.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net[0].weight.grad, twin[0].weight.grad.numpy(), rtol=1e-12)
    assert kx.requires_grad and kx.is_leaf and hidden.requires_grad and not kiln.tensor(x).requires_grad
    assert not net(kx).detach().requires_grad and not net(kx).is_leaf


def test_backward_inputs_limit_which_grads_accumulate():
    _, net, _, x = _twins(9)
    kx = kiln.tensor(x).requires_grad_()
    net(kx).sum().backward(inputs=[kx])
    assert kx.grad is not None and all(p.grad is None for p in net.parameters())
    net(kx).sum().backward()
    np.testing.assert_allclose(kx.grad, 2 * kiln.autograd.grad(net(kx).sum(), kx)[0].numpy())  # accumulated


def test_parameter_requires_grad_false_freezes_it_eagerly_and_in_a_compiled_step():
    _, net, _, x = _twins(10)
    net[0].weight.requires_grad_(False)
    assert not net[0].weight.requires_grad and net[0].bias.requires_grad
    net(kiln.tensor(x)).sum().backward()
    assert net[0].weight.grad is None and net[0].bias.grad is not None
    before = np.array(net[0].weight.data)
    step = kiln.compile_train_step(net, lambda out, y: F.mse_loss(out, y), kiln.optim.SGD(net.parameters(), lr=0.1))
    step(x, np.zeros((5, 4)))
    np.testing.assert_array_equal(net[0].weight.data, before)


def test_requires_grad_on_an_integer_tensor_is_refused():
    with pytest.raises(kiln.KilnError, match="only floating-point tensors can require gradients, not int64"):
        kiln.tensor(np.arange(3)).requires_grad_()


def test_post_accumulate_grad_hooks_run_after_each_backward_until_removed():
    _, net, _, x = _twins(11)
    seen = []
    handle = net[0].weight.register_post_accumulate_grad_hook(lambda p: seen.append(float(np.abs(p.grad).sum())))
    net(kiln.tensor(x)).sum().backward()
    net(kiln.tensor(x)).sum().backward()
    handle.remove()
    net(kiln.tensor(x)).sum().backward()
    assert len(seen) == 2 and seen[1] == pytest.approx(2 * seen[0])  # after accumulation: the second sees twice


def test_grad_fn_is_leaf_and_retains_grad_follow_torch():
    torch = require("torch")
    for lib in (kiln, torch):
        w = lib.nn.Parameter(lib.tensor(np.ones(3)))
        x = lib.tensor(np.array([1.0, 2.0, 3.0])).requires_grad_()
        h = x * w
        h.retain_grad()
        y = h.sum()
        flags = (x.is_leaf, w.is_leaf, h.is_leaf, y.is_leaf, h.detach().is_leaf, h.retains_grad, x.retains_grad,
                 x.grad_fn is None, y.grad_fn is None, h.detach().grad_fn is None)
        assert flags == (True, True, False, False, True, True, False, True, False, True), lib.__name__
    assert y.grad_fn.name().startswith("Sum") and kiln_sum_name() == "SumBackward0"  # torch's node name


def kiln_sum_name():
    return (kiln.tensor(np.ones(2)).requires_grad_() * 2).sum().grad_fn.name()


def test_a_requires_grad_leaf_compares_elementwise_and_takes_special_functions():
    torch = require("torch")
    a = np.array([1.0, 0.5, 3.0])
    k, t = kiln.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    np.testing.assert_array_equal((k == 0.5).numpy(), (t == 0.5).numpy())
    assert k in [k]  # identity first, as Python's `in`; against another leaf of 3 elements, torch's ambiguity error
    for lib, leaf in ((kiln, k), (torch, t)):
        with pytest.raises(RuntimeError, match="ambiguous"):
            leaf in [lib.tensor(a, requires_grad=True)]  # noqa: B015
    np.testing.assert_allclose(k.digamma().numpy(), t.digamma().detach().numpy(), rtol=1e-12)
    (k.lgamma() + kiln.xlogy(k, k)).sum().backward()  # (digamma's gradient: torch's polygamma(1) is 5e-10 off)
    (t.lgamma() + torch.xlogy(t, t)).sum().backward()
    np.testing.assert_allclose(k.grad, t.grad.numpy(), rtol=1e-12)
