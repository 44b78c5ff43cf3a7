"""``kiln.autograd.forward_ad`` against ``torch.autograd.forward_ad`` (2.13): its names, dual tensors' tangents (a
PINN's ``u_t`` by ``make_dual(t, ones_like(t))`` and ``unpack_dual(u).tangent``), a backward through a tangent
(reverse over forward), eagerly and inside ``kiln.compile``, and torch's errors. kiln had no ``forward_ad``
(``AttributeError``); ``runtime/forward_ad.py`` computes a tangent as the Jacobian-vector product when unpacked."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.random.default_rng(0).uniform(-1, 1, (5, 2))


def test_the_names_are_torchs():
    torch = libraries("torch")[0]
    ours = {n for n in dir(kiln.autograd.forward_ad) if not n.startswith("_")}
    theirs = {n for n in dir(torch.autograd.forward_ad) if not n.startswith("_")} - {"Any", "NamedTuple", "os", "torch"}
    assert ours == theirs
    assert kiln.autograd.forward_ad.UnpackedDualTensor._fields == torch.autograd.forward_ad.UnpackedDualTensor._fields


def _tangents(name, compiled=False):
    """``u_t`` and ``u_x`` of a small network by dual tensors, a loss on them and its gradients."""
    torch = libraries(name)[0]
    fwAD = torch.autograd.forward_ad
    rng = np.random.default_rng(1)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    for p in net.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))

    def derivatives(points):
        t, x = points[:, 0:1], points[:, 1:2]
        with fwAD.dual_level():
            t_dual = fwAD.make_dual(t, torch.ones_like(t))
            u = net(torch.cat([t_dual, x], 1))
            u_t = fwAD.unpack_dual(u).tangent
            own = fwAD.unpack_dual(t_dual).tangent
            unreached = fwAD.unpack_dual(x * 2).tangent
        with fwAD.dual_level():
            x_dual = fwAD.make_dual(x, torch.full_like(x, 0.5))
            u_x = fwAD.unpack_dual(net(torch.cat([t, x_dual], 1))).tangent
        assert unreached is None
        loss = ((u_t + u * u_x) ** 2).mean()
        return loss, u_t, u_x, own

    run = kiln.compile(derivatives, fullgraph=True) if compiled else derivatives
    loss, u_t, u_x, own = run(torch.tensor(X))
    loss.backward()
    return [np.array(v.detach().numpy()) for v in (loss, u_t, u_x, own)] + [np.array(p.grad.numpy()) for p in net.parameters()]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_tangents_and_a_backward_through_them_as_torch(compiled, float64_default):
    for ours, theirs in zip(_tangents("kiln", compiled), _tangents("torch"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def test_torchs_errors():
    for lib in (kiln, libraries("torch")[0]):
        fwAD = lib.autograd.forward_ad
        x = lib.ones(3)
        with pytest.raises(RuntimeError, match="no level exists, make sure to enter_dual_level"):
            fwAD.make_dual(x, lib.ones(3))
        with fwAD.dual_level():
            with pytest.raises(RuntimeError, match="Nested forward mode AD is not supported"):
                with fwAD.dual_level():
                    pass
            with pytest.raises(RuntimeError, match=r"Tensor is of size \[3\] while the given forward gradient is of "
                                                   r"size \[2\]"):
                fwAD.make_dual(x, lib.ones(2))
