"""``kiln.func`` transforms called on eager tensors that need gradients keep a chain, as ``torch.func``'s results do:
a ``backward()`` through ``grad``, ``vmap``, ``jacrev``, ``hessian``, ``vjp``, ``jvp`` reaches the parameters and marked
tensors they were computed from (``runtime/eager_transform_replay.py``). Compared with torch in float64: the value, every
parameter's ``.grad`` and the input's ``.grad``. Where nothing needs a gradient the result stays a plain leaf."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins

X = np.linspace(-1, 1, 15).reshape(5, 3)


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1)).double()


def _support_then_query(lib, model, x):
    """MAML in torch.func's style: one inner step by ``func.grad`` over a params dict, vmapped over tasks."""
    params = dict(model.named_parameters())

    def task_loss(params, xs, xq):
        g = lib.func.grad(lambda p: lib.func.functional_call(model, p, (xs,)).pow(2).mean())(params)
        fast = {k: params[k] - 0.3 * g[k] for k in params}
        return lib.func.functional_call(model, fast, (xq,)).sin().mean()

    return lib.func.vmap(task_loss, in_dims=(None, 0, 0))(params, x.reshape(5, 1, 3), x.flip(0).reshape(5, 1, 3)).mean()


TRANSFORMED = {
    "grad over a closure (WGAN-GP)": lambda lib, m, x: ((lib.func.grad(lambda v: m(v).sum())(x).norm(dim=1) - 1) ** 2).mean(),
    "grad has_aux": lambda lib, m, x: lib.func.grad(lambda v: (m(v).sum(), v), has_aux=True)(x)[0].pow(2).sum(),
    "grad_and_value": lambda lib, m, x: sum(a.sum() for a in lib.func.grad_and_value(lambda v: m(v).sum())(x)),
    "jacrev": lambda lib, m, x: lib.func.jacrev(lambda v: m(v).tanh())(x).pow(2).sum(),
    "hessian": lambda lib, m, x: lib.func.hessian(lambda v: m(v).sum())(x[0]).sum(),
    "vjp": lambda lib, m, x: lib.func.vjp(m, x)[1](lib.ones(5, 1))[0].pow(2).sum(),
    "jvp": lambda lib, m, x: lib.func.jvp(m, (x,), (lib.ones(5, 3),))[1].pow(2).sum(),
    "vmap": lambda lib, m, x: lib.func.vmap(m)(x).exp().sum(),
    "vmap of grad": lambda lib, m, x: lib.func.vmap(lib.func.grad(lambda v: m(v).sum()))(x).pow(2).sum(),
    "vmap of grad over params (MAML)": _support_then_query,
}


@pytest.mark.parametrize("name", sorted(TRANSFORMED))
def test_backward_through_a_transform_reaches_parameters_and_inputs_as_torch(name, float64_default):
    torch, model, twin = torch_twins(_net)
    results = []
    for lib, net in ((kiln, model), (torch, twin)):
        x = lib.tensor(X).requires_grad_()
        out = TRANSFORMED[name](lib, net, x)
        out.backward()
        grads = [p.grad for p in net.parameters()] + [x.grad]
        results.append((out.item(), [None if g is None else np.asarray(g.detach() if hasattr(g, "detach") else g) for g in grads]))
    (ours, our_grads), (theirs, their_grads) = results
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert [g is None for g in our_grads] == [g is None for g in their_grads]
    for a, b in zip(our_grads, their_grads):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_results_need_no_chain_without_gradients(float64_default):
    """Under ``no_grad``, and for detached parameters (per-example gradients), the result requires no gradient in
    either library: the compiled path serves it."""
    torch, model, twin = torch_twins(_net)
    for lib, net in ((kiln, model), (torch, twin)):
        x = lib.tensor(X).requires_grad_()
        with lib.no_grad():
            assert not lib.func.grad(lambda v: net(v).sum())(x).requires_grad
        detached = {k: v.detach() for k, v in net.named_parameters()}
        per_example = lib.func.vmap(lib.func.grad(lambda p, v: lib.func.functional_call(net, p, (v,)).sum()),
                                    in_dims=(None, 0))(detached, lib.tensor(X))
        assert not any(g.requires_grad for g in per_example.values())
        assert lib.func.grad(lambda v: net(v).sum())(x).requires_grad
