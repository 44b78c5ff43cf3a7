"""The ctx and decorators of ``kiln.autograd.Function`` vs torch 2.13: ``once_differentiable``, exact
``needs_input_grad``, ``save_for_forward`` with a ``jvp`` staticmethod (``torch.func.jvp``, forward AD), and the
Function's ``grad_fn`` node (``frontend/custom_function.py``, ``frontend/custom_function_once.py``)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from oracles import libraries, require_torch

MESSAGE = "trying to differentiate twice a function that was marked with @once_differentiable"


def _square(lib):
    once_differentiable = importlib.import_module(f"{lib.__name__}.autograd.function").once_differentiable
    seen = []

    class Square(lib.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):
            (a,) = ctx.saved_tensors
            seen.append(lib.is_grad_enabled())
            return 2 * a * grad

    return Square, seen


def _array(tensor):
    return np.asarray(tensor.detach())


@pytest.mark.parametrize("library", ["kiln", "torch"])
def test_once_differentiable_imports_and_runs_backward_without_grad(library):
    lib = libraries(library)[0]
    Square, seen = _square(lib)
    x = lib.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    Square.apply(x).sum().backward()
    np.testing.assert_allclose(np.asarray(x.grad), [2.0, -4.0, 6.0], rtol=1e-10)
    assert seen == [False]


def _double_backward(lib):
    Square, _ = _square(lib)
    x = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (plain,) = lib.autograd.grad(Square.apply(x).sum(), x, create_graph=True)  # incoming gradient: ones, no grad
    (g,) = lib.autograd.grad((Square.apply(x) ** 2).sum(), x, create_graph=True)  # incoming 2*y: requires grad
    with pytest.raises(RuntimeError) as refused:
        g.sum().backward()
    return plain.requires_grad, g.requires_grad, _array(g).tolist(), str(refused.value)


def test_once_differentiable_refuses_a_double_backward_as_torch():
    torch = require_torch()
    import kiln

    ours, theirs = _double_backward(kiln), _double_backward(torch)
    assert ours[:3] == theirs[:3] == (False, True, [4.0, 32.0])
    assert MESSAGE in ours[3] and MESSAGE in theirs[3]


def _needs(lib):
    seen = []

    class Mul(lib.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, k):
            seen.append(ctx.needs_input_grad)
            return a * b * k

        @staticmethod
        def backward(ctx, grad):
            return grad, grad, None

    x = lib.tensor(np.ones(3), requires_grad=True)
    Mul.apply(x, lib.ones(3, dtype=lib.float64), 2.0)
    Mul.apply(lib.ones(3, dtype=lib.float64), x * 2, 2.0)
    with lib.no_grad():
        Mul.apply(x, lib.ones(3, dtype=lib.float64), 2.0)
    Mul.apply(x.detach(), lib.ones(3, dtype=lib.float64), 2.0)
    Mul.apply(x, lib.ones(3, dtype=lib.int64), 2.0)
    w = lib.nn.Parameter(lib.tensor(np.ones(3)))
    w.requires_grad_(False)
    Mul.apply(w, x, 1.0)
    return seen


def test_needs_input_grad_is_each_inputs_requires_grad_eagerly():
    torch = require_torch()
    import kiln

    assert _needs(kiln) == _needs(torch) == [(True, False, False), (False, True, False), (True, False, False),
                                             (False, False, False), (True, False, False), (False, True, False)]


def test_needs_input_grad_in_a_trace_is_false_only_where_no_gradient_can_reach():
    """Traced, an argument ``kiln.vjp``/``kiln.jvp`` may differentiate stays True; a detached one and a constant are
    False (documented in ``frontend/custom_function.py``)."""
    import kiln

    seen = []

    class Scale(kiln.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            seen.append(ctx.needs_input_grad)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    @kiln.compile
    def f(x):
        return Scale.apply(x, x.detach()) + Scale.apply(x, kiln.ones(3, dtype=kiln.float64))

    f(kiln.tensor(np.ones(3)))
    assert seen and set(seen) == {(True, False)}
    out, tangent = kiln.func.jvp(lambda a: Scale.apply(a, a.detach()), (kiln.tensor(np.ones(3)),),
                                 (kiln.tensor(np.full(3, 2.0)),))
    assert seen[-1] == (True, False) and _array(tangent).tolist() == [2.0, 2.0, 2.0]


def _exp(lib, with_backward: bool):
    class Exp(lib.autograd.Function):
        @staticmethod
        def forward(x):
            return x.exp()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_forward(output)
            ctx.save_for_backward(output)

        @staticmethod
        def jvp(ctx, tangent):
            return tangent * ctx.saved_tensors[0]

    if with_backward:
        Exp.backward = staticmethod(lambda ctx, grad: grad * ctx.saved_tensors[0])
    return Exp


@pytest.mark.parametrize("with_backward", [False, True])
def test_save_for_forward_and_jvp_give_torch_func_jvp(with_backward):
    torch = require_torch()
    import kiln

    x, t = np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0, -3.0])
    results = []
    for lib in (kiln, torch):
        Exp = _exp(lib, with_backward)
        out, tangent = lib.func.jvp(Exp.apply, (lib.tensor(x),), (lib.tensor(t),))
        results.append((_array(out), _array(tangent)))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    np.testing.assert_allclose(results[0][1], t * np.exp(x), rtol=1e-10)


def test_jvp_staticmethod_under_forward_ad_dual_tensors():
    torch = require_torch()
    import kiln

    x, t = np.array([0.5, -1.0]), np.array([3.0, 2.0])
    found = []
    for lib in (kiln, torch):
        fwAD = importlib.import_module(f"{lib.__name__}.autograd.forward_ad")
        Exp = _exp(lib, with_backward=False)
        with fwAD.dual_level():
            y = Exp.apply(fwAD.make_dual(lib.tensor(x), lib.tensor(t)))
            found.append(_array(fwAD.unpack_dual(y).tangent))
    np.testing.assert_allclose(found[0], found[1], rtol=1e-10)


def test_a_jvp_only_function_backpropagates_its_transposed_jvp_in_kiln():
    """torch refuses ``backward()`` without a backward/vjp; kiln transposes the ``jvp`` instead (documented)."""
    import kiln

    Exp = _exp(kiln, with_backward=False)
    x = kiln.tensor(np.array([0.5, -1.0]), requires_grad=True)
    Exp.apply(x).sum().backward()
    np.testing.assert_allclose(np.asarray(x.grad), np.exp([0.5, -1.0]), rtol=1e-10)


def _function_node(lib):
    class Mul(lib.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return grad * b, grad * a

    x = lib.tensor(np.ones(3), requires_grad=True)
    y = Mul.apply(x, lib.ones(3, dtype=lib.float64))
    node = y.grad_fn
    (first, _), (second, _) = node.next_functions
    return type(node).__name__, node.name(), type(first).__name__, first.variable is x, second


def test_a_functions_grad_fn_is_named_and_walkable_as_torch():
    torch = require_torch()
    import kiln

    assert _function_node(kiln) == _function_node(torch) == ("MulBackward", "MulBackward", "AccumulateGrad", True, None)
