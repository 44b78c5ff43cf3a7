"""What a ``register_hook`` hook may return, alike in every backward that calls it (``frontend/hooked_gradient.py``):
None or a tensor of the gradient's shape and dtype, which replaces it. A hook returning anything else is refused as
torch refuses it (a ``TypeError`` for a number, a ``RuntimeError`` for another size or dtype), the error naming the
hook and its line, and nothing is accumulated into ``.grad``. Before, a parameter's hook in an eager backward went
unchecked: ``lambda g: 1`` made ``p.grad`` the number 1 and ``lambda g: g[:1]`` a gradient of the wrong shape."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

BAD_RESULTS = {
    "a number": (lambda g: 1, TypeError, "returned int"),
    "a slice": (lambda g: g[:1], RuntimeError, r"changed the gradient's shape from \(3,\) to \(1,\)"),
    "another dtype": (lambda g: g.double(), RuntimeError, "changed the gradient's dtype from kiln.float32 to kiln.float64"),
}


def backward_through_hook(name, where, hook, compiled=False, create_graph=False):
    """``p``'s gradient of ``sum(3 * tanh(p * x))`` with ``hook`` on ``p`` (``where="parameter"``) or on ``p * x``."""
    torch, nn, _ = libraries(name)
    p = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.tensor([1.0, 2.0, 3.0])
    if where == "parameter":
        p.register_hook(hook)

    def step(x):
        h = p * x
        if where == "activation":
            h.register_hook(hook)
        loss = (3 * torch.tanh(h)).sum()
        loss.backward(create_graph=create_graph)
        return loss

    (kiln.compile(step, fullgraph=True) if compiled else step)(x)
    return p


KINDS = {"eager": {}, "eager create_graph": dict(create_graph=True), "compiled step": dict(compiled=True)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["parameter", "activation"])
@pytest.mark.parametrize("result", BAD_RESULTS)
def test_a_bad_hook_result_is_refused_as_torch_refuses_it(kind, where, result):
    hook, torch_error, message = BAD_RESULTS[result]
    with pytest.raises(torch_error):
        backward_through_hook("torch", where, hook, create_graph=KINDS[kind].get("create_graph", False))
    with pytest.raises(torch_error, match=f"gradient hook '<lambda>' {message}") as raised:
        backward_through_hook("kiln", where, hook, **KINDS[kind])
    assert isinstance(raised.value, kiln.TraceError)
    assert "test_gradient_hook_results_vs_torch.py:" + str(_line_of(hook)) in str(raised.value)


def _line_of(hook):
    return hook.__code__.co_firstlineno


@pytest.mark.parametrize("create_graph", [False, True])
def test_a_refused_parameter_hook_accumulates_nothing(create_graph):
    p = kiln.nn.Parameter(kiln.tensor([0.5, -1.0, 2.0]))
    (p * 2).sum().backward()
    p.register_hook(lambda g: g[:1])
    with pytest.raises(RuntimeError, match="changed the gradient's shape"):
        (p * 2).sum().backward(create_graph=create_graph)
    np.testing.assert_array_equal(p.grad.detach().numpy(), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["parameter", "activation"])
def test_a_hook_returning_a_new_gradient_replaces_it_as_torch(kind, where):
    def hook(g):
        return g * g + 1

    expected = backward_through_hook("torch", where, hook, create_graph=KINDS[kind].get("create_graph", False))
    ours = backward_through_hook("kiln", where, hook, **KINDS[kind])
    np.testing.assert_allclose(ours.grad.detach().numpy(), expected.grad.detach().numpy(), rtol=1e-6)
