"""``torch.func.vjp``/``jvp`` whose primals are eager tensors (a closure's ``params`` dict, as the torch.func NTK
tutorial's ``vjp(func_x1, params)``) called inside a trace (``vmap``, ``kiln.compile``), against torch 2.13: kiln
aliased the eager tensor's own value, which belongs to no graph being built, and compiling failed with ``KeyError:
Value(%?: tensor<2x3xf64>)``; a tangent or cotangent given as an eager tensor likewise. They now take the trace's value
for it, as any operand (``runtime/forward_mode.py``). And a ``vjp_fn`` made in one trace (``kiln.compile``'s, an outer
``vmap``'s) and called inside a ``vmap``'s per-example trace pulled back through a graph holding none of its ops: the
cotangents came back zero, silently; it now traces ``fn`` again where it is called."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

W = np.random.default_rng(0).standard_normal((2, 3))
X1, X2 = np.array([0.3, -0.2, 0.5]), np.array([0.1, 0.4, -0.3])


def _ntk_rows(name, compiled=False):
    torch = libraries(name)[0]
    func = torch.func
    params = {"w": torch.tensor(W)}
    tangent = {"w": torch.tensor(np.cos(W))}

    def f(params, x):
        return torch.tanh(params["w"] @ x)

    def rows(basis):
        _, vjp_fn = func.vjp(lambda p: f(p, torch.tensor(X1)), params)

        def row(vec):
            return func.jvp(lambda p: f(p, torch.tensor(X2)), (params,), vjp_fn(vec))[1]

        pushed = func.jvp(lambda p: f(p, torch.tensor(X2)), (params,), (tangent,))[1]
        return func.vmap(row)(basis), pushed

    run = kiln.compile(rows, fullgraph=True) if compiled else rows
    return [np.array(out.detach().numpy()) for out in run(torch.eye(2))]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_vjp_and_jvp_of_an_eager_params_dict_inside_vmap(compiled, float64_default):
    for ours, theirs in zip(_ntk_rows("kiln", compiled), _ntk_rows("torch"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
