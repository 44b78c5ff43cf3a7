"""``loss.backward(create_graph=True)`` against PyTorch in float64: each ``.grad`` keeps its chain, so a gradient
penalty, a MAML inner step, a Hessian-vector product and accumulated create_graph backwards differentiate through
it and leave the same ``.grad`` as torch's (``runtime/eager_create_graph.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.frontend.tensor import Tensor
from oracles import torch_twins

pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 8), lib.nn.Tanh(), lib.nn.Linear(8, 2)).double()


def _twins(seed=0):
    torch, net, twin = torch_twins(_net, seed)
    rng = np.random.RandomState(seed)
    return torch, net, twin, rng.randn(6, 3), rng.randn(6, 2)


def _loss(net, lib, x, y):
    return ((net(lib.tensor(x)) - lib.tensor(y)) ** 2).mean()


def _assert_grads_match(net, twin, tol=1e-12):
    for p, q in zip(net.parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_allclose(np.asarray(p.grad), q.grad.detach().numpy(), rtol=tol, atol=tol)


def test_gradient_norm_penalty_adds_second_order_terms_to_grad_as_torch():
    torch, net, twin, x, y = _twins()
    _loss(net, kiln, x, y).backward(create_graph=True)
    _loss(twin, torch, x, y).backward(create_graph=True)
    assert all(isinstance(p.grad, Tensor) and p.grad.requires_grad for p in net.parameters())
    _assert_grads_match(net, twin)
    sum((p.grad ** 2).sum() for p in net.parameters()).backward()
    sum((p.grad ** 2).sum() for p in twin.parameters()).backward()
    _assert_grads_match(net, twin)


def test_an_optimizer_steps_on_chained_grads_as_torch():
    torch, net, twin, x, y = _twins(1)
    for model, lib in ((net, kiln), (twin, torch)):
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            optimizer.zero_grad()
            _loss(model, lib, x, y).backward(create_graph=True)
            (0.5 * sum((p.grad ** 2).sum() for p in model.parameters())).backward()
            optimizer.step()
    for p, q in zip(net.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_clipping_chained_grads_scales_their_values_as_torch():
    torch, net, twin, x, y = _twins(12)
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x, y).backward(create_graph=True)
        sum((p.grad ** 2).sum() for p in model.parameters()).backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        lib.nn.utils.clip_grad_value_(model[0].parameters(), 0.05)
    _assert_grads_match(net, twin)


def test_zero_grad_keeping_chained_grads_detaches_them_as_torch():
    torch, net, twin, x, y = _twins(13)
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x, y).backward(create_graph=True)
        model.zero_grad(set_to_none=False)
    for p, q in zip(net.parameters(), twin.parameters()):
        assert not q.grad.requires_grad and isinstance(p.grad, np.ndarray)  # detached: the array a plain backward gives
        np.testing.assert_array_equal(np.asarray(p.grad), 0)
    _loss(net, kiln, x, y).backward()
    _loss(twin, torch, x, y).backward()
    _assert_grads_match(net, twin)


def test_grad_scaler_unscales_chained_grads_as_torch():
    torch, net, twin, x, y = _twins(14)
    for model, lib in ((net, kiln), (twin, torch)):
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1)
        scaler = lib.amp.GradScaler("cpu", init_scale=64.0)
        scaler.scale(_loss(model, lib, x, y)).backward(create_graph=True)
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
    _assert_grads_match(net, twin)
    for p, q in zip(net.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)


def _functional_net(lib, F, params, x):
    w1, b1, w2, b2 = params
    return F.linear(lib.tanh(F.linear(x, w1, b1)), w2, b2)


def test_maml_inner_step_differentiates_the_outer_loss_through_the_inner_gradient():
    torch, net, twin, x, y = _twins(2)
    lr = 0.3
    for model, lib, functional in ((net, kiln, F), (twin, torch, torch.nn.functional)):
        _loss(model, lib, x[:3], y[:3]).backward(create_graph=True)
        fast = [p - lr * p.grad for p in model.parameters()]
        outer = ((_functional_net(lib, functional, fast, lib.tensor(x[3:])) - lib.tensor(y[3:])) ** 2).mean()
        outer.backward()
    _assert_grads_match(net, twin)


def test_hessian_vector_product_through_grad():
    torch, net, twin, x, y = _twins(3)
    rng = np.random.RandomState(7)
    vectors = [rng.randn(*p.shape) for p in net.parameters()]
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x, y).backward(create_graph=True)
        grads = [p.grad for p in model.parameters()]
        model.zero_grad()
        sum((g * lib.tensor(v)).sum() for g, v in zip(grads, vectors)).backward()
    _assert_grads_match(net, twin)
    want = torch.autograd.functional.hvp(lambda *ps: _loss_of(torch, ps, x, y), tuple(torch.tensor(np.asarray(p.data)) for p in net.parameters()),
                                         tuple(torch.tensor(v) for v in vectors))[1]
    for p, hv in zip(net.parameters(), want):
        np.testing.assert_allclose(np.asarray(p.grad), hv.numpy(), rtol=1e-11, atol=1e-12)


def _loss_of(torch, params, x, y):
    return ((_functional_net(torch, torch.nn.functional, params, torch.tensor(x)) - torch.tensor(y)) ** 2).mean()


def test_two_create_graph_backwards_accumulate_with_their_chains():
    torch, net, twin, x, y = _twins(4)
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x[:3], y[:3]).backward(create_graph=True)
        (_loss(model, lib, x[3:], y[3:]) * 2.0).backward(create_graph=True)
    _assert_grads_match(net, twin)
    for model in (net, twin):
        sum((p.grad ** 3).sum() for p in model.parameters()).backward()
    _assert_grads_match(net, twin)


def test_a_create_graph_backward_onto_a_plain_grad_keeps_the_new_chain():
    torch, net, twin, x, y = _twins(5)
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x[:3], y[:3]).backward()
    assert all(type(p.grad).__name__ == "TorchArray" for p in net.parameters())  # a plain backward: arrays, as before
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x[3:], y[3:]).backward(create_graph=True)
        sum(p.grad.sum() ** 2 for p in model.parameters()).backward()
    _assert_grads_match(net, twin)


def test_a_parameter_read_twice_sums_its_chained_gradient():
    torch, net, twin, x, _ = _twins(6)
    for model, lib in ((net, kiln), (twin, torch)):
        first = model[0]
        (first(lib.tanh(first(lib.tensor(x))[:, :3])) ** 2).sum().backward(create_graph=True)
        (first.weight.grad ** 2).sum().backward()
    _assert_grads_match(net, twin)


def test_marked_and_retained_tensors_get_chained_grads():
    torch, net, twin, x, _ = _twins(7)
    results = []
    for model, lib in ((net, kiln), (twin, torch)):
        inputs = lib.tensor(x).requires_grad_()
        hidden = model[1](model[0](inputs))
        hidden.retain_grad()
        (model[2](hidden) ** 3).sum().backward(create_graph=True)
        assert inputs.grad.requires_grad and hidden.grad.requires_grad
        first = [_copy(inputs.grad), _copy(hidden.grad)]
        (inputs.grad ** 2).sum().backward()  # through the first backward: into inputs.grad, hidden.grad and .grad
        results.append(first + [_copy(inputs.grad), _copy(hidden.grad)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    _assert_grads_match(net, twin)


def test_inputs_limits_the_chained_accumulation():
    torch, net, twin, x, y = _twins(8)
    for model, lib in ((net, kiln), (twin, torch)):
        _loss(model, lib, x, y).backward(create_graph=True, inputs=[model[0].weight])
        (model[0].weight.grad ** 2).sum().backward(inputs=[model[2].weight])
    assert net[0].bias.grad is None and net[2].bias.grad is None
    _assert_grads_match(net, twin)


def test_kiln_autograd_backward_takes_create_graph():
    torch, net, twin, x, y = _twins(9)
    kiln.autograd.backward([_loss(net, kiln, x, y)], create_graph=True)
    torch.autograd.backward([_loss(twin, torch, x, y)], create_graph=True)
    kiln.autograd.backward([net[2].weight.grad.sum() ** 2])
    torch.autograd.backward([twin[2].weight.grad.sum() ** 2])
    _assert_grads_match(net, twin)


def test_parameter_hooks_see_and_replace_the_chained_gradient_and_post_accumulate_hooks_run():
    torch, net, twin, x, y = _twins(10)
    seen = {"kiln": [], "torch": []}
    for model, lib, name in ((net, kiln, "kiln"), (twin, torch, "torch")):
        model[0].weight.register_hook(lambda g: g * g)  # a replacement with a chain of its own
        model[0].bias.register_post_accumulate_grad_hook(lambda p, name=name: seen[name].append(p.grad.requires_grad))
        _loss(model, lib, x, y).backward(create_graph=True)
        (model[0].weight.grad.sum() + model[0].bias.grad.sum()).backward()
    assert seen["kiln"] == seen["torch"] == [True, True]  # after each backward; the plain one keeps the chain too
    _assert_grads_match(net, twin)


def test_a_tensor_hook_replaces_the_gradient_inside_the_chain():
    torch, net, twin, x, y = _twins(13)
    for model, lib in ((net, kiln), (twin, torch)):
        hidden = model[1](model[0](lib.tensor(x)))
        hidden.register_hook(lambda g: g * hidden)  # the replacement has a chain of its own
        ((model[2](hidden) - lib.tensor(y)) ** 2).mean().backward(create_graph=True)
        (model[0].weight.grad ** 2).sum().backward()
    _assert_grads_match(net, twin)


def test_a_non_scalar_loss_takes_a_gradient_with_a_chain():
    torch, net, twin, x, _ = _twins(11)
    for model, lib in ((net, kiln), (twin, torch)):
        out = model(lib.tensor(x))
        out.backward(gradient=lib.tanh(out), create_graph=True)
        (model[2].weight.grad ** 2).sum().backward()
    _assert_grads_match(net, twin)


def test_errors_say_what_and_what_to_do():
    x = kiln.tensor(np.ones(3))
    with pytest.raises(kiln.TraceError, match=r"create_graph=True\): the tensor does not depend on any parameter"):
        (x * 2).sum().backward(create_graph=True)
    w = kiln.nn.Parameter(np.ones(3))
    with pytest.raises(kiln.TraceError, match=r"implicitly created only for scalar outputs: backward\(create_graph=True\): the tensor has shape \(3,\)"):
        (w * 2).backward(create_graph=True)
    w.register_hook(lambda g: np.zeros(3))
    with pytest.raises(kiln.TraceError, match="gradient hook .<lambda>. returned ndarray; a hook returns None or a tensor"):
        (w * 2).sum().backward(create_graph=True)


def _copy(tensor):
    return np.array(tensor.detach().numpy())
