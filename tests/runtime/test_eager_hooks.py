"""Gradient hooks in eager mode against PyTorch in float64: ``tensor.register_hook`` (reading and replacing the
gradient), ``Parameter.register_hook``, ``module.register_full_backward_hook`` / ``_pre_hook`` (values, order,
replacement, a first layer whose input needs no gradient), Grad-CAM; and the refusals inside a trace."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins

X = np.random.RandomState(0).randn(5, 3)


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 8), lib.nn.Tanh(), lib.nn.Linear(8, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2)).double()


def _twins():
    return torch_twins(_mlp)


def _array(tensor):
    return None if tensor is None else np.array(tensor.detach().numpy())


def _run_hooked(lib, model, log):
    model[0].register_full_backward_hook(lambda m, gin, gout: log.append(("first", [_array(g) for g in gin + gout])))
    h = model[1](model[0](lib.tensor(X)))
    h.register_hook(lambda g: log.append(("h", _array(g))))
    h.register_hook(lambda g: g * 2)                     # replaces the gradient flowing on
    model[2].register_full_backward_pre_hook(lambda m, gout: log.append(("pre", [_array(g) for g in gout])))
    model[2].register_full_backward_hook(lambda m, gin, gout: log.append(("full", [_array(g) for g in gin + gout])))
    model[0].weight.register_hook(lambda g: g.clamp(-0.1, 0.1))
    (model[4](model[3](model[2](h))) ** 2).sum().backward()


def test_tensor_parameter_and_module_hooks_match_torch():
    torch, model, twin = _twins()
    got, want = [], []
    _run_hooked(kiln, model, got)
    _run_hooked(torch, twin, want)
    assert [name for name, _ in got] == [name for name, _ in want] == ["pre", "full", "h", "first"]
    for (_, a), (_, b) in zip(got, want):
        a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
        for x, y in zip(a, b):
            assert (x is None) == (y is None)  # the first layer's input needs no gradient: grad_input (None,)
            if x is not None:
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_a_module_hook_can_replace_grad_input_and_grad_output():
    torch, model, twin = _twins()
    for lib, net in ((kiln, model), (torch, twin)):
        net[2].register_full_backward_hook(lambda m, gin, gout: (gin[0] * 0.5,))
        net[4].register_full_backward_pre_hook(lambda m, gout: (gout[0] + 1.0,))
        net(lib.tensor(X)).sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_grad_cam_weights_from_a_forward_hook_and_a_tensor_hook_match_torch():
    def network(lib):
        return lib.nn.Sequential(lib.nn.Conv2d(1, 4, 3, padding=1), lib.nn.ReLU(), lib.nn.Flatten(), lib.nn.Linear(4 * 8 * 8, 3)).double()

    torch, model, twin = torch_twins(network)
    images = np.random.RandomState(1).randn(2, 1, 8, 8)
    maps = []
    for lib, net in ((kiln, model), (torch, twin)):
        saved = {}

        def keep(module, args, output, saved=saved):
            saved["activation"] = output
            output.register_hook(lambda g: saved.__setitem__("gradient", g))

        net[0].register_forward_hook(keep)
        x = lib.tensor(images).requires_grad_()  # as in Grad-CAM code that also wants the input's gradient
        net(x)[:, 1].sum().backward()
        weights = saved["gradient"].mean(dim=(2, 3), keepdim=True)
        maps.append(_array(lib.relu((weights * saved["activation"]).sum(1))))
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-12, atol=1e-14)


def test_autograd_grad_runs_tensor_hooks_and_removed_hooks_stay_quiet():
    x = kiln.tensor(np.array([1.0, 2.0])).requires_grad_()
    y = x * 3
    seen = []
    handle = y.register_hook(lambda g: seen.append(g.numpy().copy()))
    (dx,) = kiln.autograd.grad((y ** 2).sum(), x)
    np.testing.assert_allclose(dx.numpy(), 18 * x.numpy())
    handle.remove()
    (y ** 2).sum().backward()
    assert len(seen) == 1 and np.allclose(seen[0], 6 * x.numpy())


def test_hooks_in_a_trace_are_refused_with_the_way_that_works():
    model = _mlp(kiln)
    model[2].register_full_backward_hook(lambda m, gin, gout: None)
    with pytest.raises(kiln.KilnError, match="backward hook, which a compiled step cannot call"):
        kiln.compile(model)(X)

    def traced(x):
        return x.register_hook(print)

    with pytest.raises(kiln.KilnError, match="does not require a gradient"):  # traced too (traced_hooks.py)
        kiln.compile(traced)(X)
    with pytest.raises(kiln.KilnError, match="does not require a gradient"):
        kiln.tensor(X).register_hook(print)
