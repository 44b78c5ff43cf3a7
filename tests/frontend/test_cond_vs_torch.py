"""``kiln.cond`` against ``torch.cond``: the branch taken and its gradients, eagerly and compiled (where the predicate
is a traced value and both branches are traced and selected), nested outputs, and torch's refusals."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

X = np.array([0.3, -1.2, 2.0])


def _program(lib):
    def branch_sin(x, w):
        return {"y": (x * w).sin(), "n": (x.sum() * w,)}

    def branch_cos(x, w):
        return {"y": (x - w).cos(), "n": (x.prod() + w,)}

    def f(x, w):
        out = lib.cond(x.sum() * w > 0, branch_sin, branch_cos, (x, w))
        return out["y"].sum() + out["n"][0]

    return f


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_values_and_gradients_follow_the_branch_taken_as_torch(sign, compiled):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x, w = lib.tensor(sign * X, requires_grad=True), lib.tensor(1.5, dtype=lib.float64, requires_grad=True)
        f = kiln.compile(_program(kiln)) if compiled and lib is kiln else _program(lib)
        value = f(x, w)
        value.backward()
        results.append([np.asarray(value.detach().numpy()), np.asarray(x.grad), np.asarray(w.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_python_predicate_calls_one_branch_only():
    calls = []
    out = kiln.cond(False, lambda x: calls.append("true") or x, lambda x: calls.append("false") or -x, (kiln.ones(2),))
    assert calls == ["false"] and out.numpy().tolist() == [-1.0, -1.0]


def test_refusals_as_torch():
    torch = require_torch()
    for lib, error in ((kiln, TraceError), (torch, RuntimeError)):
        x = lib.tensor([1.0, 2.0])
        with pytest.raises(error, match="Expected pred to be bool or single-element tensor"):
            lib.cond(x > 0, lambda x: x, lambda x: -x, (x,))
    mismatched = kiln.compile(lambda x: kiln.cond(x.sum() > 0, lambda x: x, lambda x: x[:1], (x,)), fullgraph=True)
    with pytest.raises(TraceError, match="both branches must return the same shapes and dtypes"):
        mismatched(kiln.tensor([1.0, 2.0]))
