"""``kiln.autograd.Function`` (``custom.vjp``) against ``torch.autograd.Function`` in float64.

The Function classes are written once (``functions(lib)``) and built on ``torch`` and on ``kiln``, so the same bodies
run in both; values and gradients are compared through kiln's own autodiff (``kiln.grad``/``kiln.vjp``, a compiled
training step, eager ``backward()``). Backwards that deliberately differ from the true derivative (a straight-through
estimator, a gradient clip) prove the user's backward is the one used; finite differences check a true one.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
import kiln.autograd
import kiln.nn as nn
from kiln.compiler.errors import ParseError, TraceError
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from lockstep import sgd_in_lockstep
from oracles import require, require_torch

RNG = np.random.default_rng(0)
X = np.array([[0.5, -1.25, 2.0], [-0.3, 0.8, -1.7]])
W = np.array([[1.5, -0.5, 0.25]])
R = RNG.standard_normal((2, 3))
"""A fixed cotangent: every loss is sum(output * R), so no two gradient entries are alike."""


def functions(lib):
    """The Function classes, built on ``lib.autograd.Function`` (torch's or kiln's)."""
    Function = lib.autograd.Function

    class Exp(Function):
        """Saves its output: a second derivative runs through ``backward`` again."""

        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y

    class DoubledExp(Function):
        """exp with twice its derivative: a second derivative through the saved output is the backward's again (4 e^x)."""

        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return 2 * grad * y

    class ScaledProduct(Function):
        """Two tensor inputs, a float argument kept as a ctx attribute, two outputs (one broadcast back)."""

        @staticmethod
        def forward(ctx, x, w, scale):
            ctx.scale = scale
            ctx.save_for_backward(x, w)
            product = x * w
            return product * scale, product.sum(dim=1, keepdim=True)

        @staticmethod
        def backward(ctx, grad_scaled, grad_total):
            x, w = ctx.saved_tensors
            grad = grad_scaled * ctx.scale + grad_total
            grad_x = grad * w if ctx.needs_input_grad[0] else None
            grad_w = (grad * x).sum(dim=0, keepdim=True) if ctx.needs_input_grad[1] else None
            return grad_x, grad_w, None

    class AddBias(Function):
        """Returns the batch's gradient for a bias: summed to the bias's shape, as PyTorch's engine does."""

        @staticmethod
        def forward(ctx, x, bias):
            return x + bias

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    class RoundStraightThrough(Function):
        """round() has derivative 0 almost everywhere; the straight-through estimator passes the gradient as is."""

        @staticmethod
        def forward(ctx, x):
            return x.round()

        @staticmethod
        def backward(ctx, grad):
            return grad

    class ClipGradient(Function):
        """The identity whose backward clips the gradient to [-bound, bound]."""

        @staticmethod
        def forward(ctx, x, bound):
            ctx.bound = bound
            return x * 1.0

        @staticmethod
        def backward(ctx, grad):
            return grad.clamp(-ctx.bound, ctx.bound), None

    class SplitSign(Function):
        """|x| and a non-differentiable sign mask; without materialized grads the mask's gradient is None."""

        @staticmethod
        def forward(ctx, x):
            sign = (x > 0).to(x.dtype)
            ctx.mark_non_differentiable(sign)
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(x)
            return x.abs(), sign

        @staticmethod
        def backward(ctx, grad_abs, grad_sign):
            assert grad_sign is None
            (x,) = ctx.saved_tensors
            return grad_abs * x.sign()

    class Cube(Function):
        """Saves its input and an intermediate: the intermediate is a constant to a second derivative."""

        @staticmethod
        def forward(ctx, x):
            square = x * x
            ctx.save_for_backward(x, square)
            return square * x

        @staticmethod
        def backward(ctx, grad):
            x, square = ctx.saved_tensors
            return 3 * grad * square

    class ReluSquared(Function):
        """A backward with a comparison (no gradient flows through the mask, in either library)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0) ** 2

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 2 * x * (x > 0).to(x.dtype)

    class Affine(Function):
        """The new-style form: forward without ctx, and setup_context."""

        @staticmethod
        def forward(x, a, b):
            return x * a + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.a = inputs[1]

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.a, None, None

    return SimpleNamespace(**{k: v for k, v in locals().items() if isinstance(v, type)})


KILN = functions(kiln)


def torch_gradients(torch, fn, arrays, cotangent=R, create_graph=False):
    """``fn(*tensors)``'s first output and the gradients of sum(output * cotangent) w.r.t. every float array."""
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    output = fn(*tensors)
    output = output[0] if isinstance(output, tuple) else output
    grads = torch.autograd.grad((output * torch.tensor(cotangent)).sum(), tensors, create_graph=create_graph)
    return output, grads, tensors


def kiln_gradients(fn, arrays, cotangent=R):
    argnums = tuple(range(len(arrays)))
    loss = lambda *ts: (first(fn(*ts)) * kiln.tensor(cotangent)).sum()  # noqa: E731
    value, grads = kiln.value_and_grad(loss, argnums=argnums)(*arrays)
    return value, grads if isinstance(grads, tuple) else (grads,)


def first(output):
    return output[0] if isinstance(output, tuple) else output


def test_values_and_gradients_match_torch():
    torch = require_torch()
    theirs = functions(torch)
    cases = [
        ("Exp", lambda f: f.Exp.apply, (X,)),
        ("ScaledProduct", lambda f: (lambda x, w: f.ScaledProduct.apply(x, w, 0.75)), (X, W)),
        ("AddBias", lambda f: f.AddBias.apply, (X, W[0])),
        ("Affine", lambda f: (lambda x: f.Affine.apply(x, 2.5, -1.0)), (X,)),
        ("Cube", lambda f: f.Cube.apply, (X,)),
    ]
    for name, build, arrays in cases:
        expected_output, expected, _ = torch_gradients(torch, build(theirs), arrays)
        value, grads = kiln_gradients(build(KILN), arrays)
        np.testing.assert_allclose(value, (expected_output.detach().numpy() * R).sum(), rtol=1e-12, err_msg=name)
        for ours, reference in zip(grads, expected):
            assert ours.shape == reference.shape, name
            np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_a_true_backward_matches_finite_differences():
    """ScaledProduct's backward is its true derivative: central differences of the forward in float64 agree."""
    loss = lambda x, w: ((lambda out: (out[0] * kiln.tensor(R)).sum() + (out[1] * kiln.tensor(R[:, :1])).sum())(  # noqa: E731
        KILN.ScaledProduct.apply(x, w, 0.75)))
    value_and_grad = kiln.value_and_grad(loss, argnums=(0, 1))
    _, (grad_x, grad_w) = value_and_grad(X, W)
    for array, grad, argnum in ((X, grad_x, 0), (W, grad_w, 1)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            step = np.zeros_like(array)
            step[index] = 1e-6
            args = [X, W]
            args[argnum] = array + step
            plus = value_and_grad(*args)[0]
            args[argnum] = array - step
            numeric[index] = (plus - value_and_grad(*args)[0]) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-9)


def test_the_users_backward_is_used_not_the_forwards_derivative():
    torch = require_torch()
    theirs = functions(torch)
    x = X * 3
    for build in (lambda f: f.RoundStraightThrough.apply, lambda f: (lambda t: f.ClipGradient.apply(t, 0.4))):
        _, expected, _ = torch_gradients(torch, build(theirs), (x,))
        _, (grad,) = kiln_gradients(build(KILN), (x,))
        np.testing.assert_allclose(grad, expected[0].numpy(), rtol=1e-12)
    _, (straight,) = kiln_gradients(KILN.RoundStraightThrough.apply, (x,))
    np.testing.assert_allclose(straight, R)  # round's own derivative would be 0
    _, (clipped,) = kiln_gradients(lambda t: KILN.ClipGradient.apply(t, 0.4), (x,))
    np.testing.assert_allclose(clipped, np.clip(R, -0.4, 0.4))
    assert np.abs(R).max() > 0.4  # the clip bites


def test_multiple_outputs_through_kiln_vjp_match_torch_autograd_grad():
    torch = require_torch()
    theirs = functions(torch)
    u_scaled, u_total = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 1))
    x, w = torch.tensor(X, requires_grad=True), torch.tensor(W, requires_grad=True)
    outputs = theirs.ScaledProduct.apply(x, w, -1.5)
    expected = torch.autograd.grad(outputs, (x, w), (torch.tensor(u_scaled), torch.tensor(u_total)))
    (scaled, total), pullback = kiln.vjp(lambda a, b: KILN.ScaledProduct.apply(a, b, -1.5), X, W)
    np.testing.assert_allclose(scaled, outputs[0].detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(total, outputs[1].detach().numpy(), rtol=1e-12)
    for ours, reference in zip(pullback((u_scaled, u_total)), expected):
        np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-12)


def test_a_non_differentiable_output_and_unmaterialized_grads_match_torch():
    torch = require_torch()
    theirs = functions(torch)
    other = RNG.standard_normal((2, 3))

    def loss(f, lib):
        def value(x):
            magnitude, sign = f.SplitSign.apply(x)
            return (magnitude * lib.tensor(R)).sum() + (sign * lib.tensor(other)).sum()
        return value

    x = torch.tensor(X, requires_grad=True)
    loss(theirs, torch)(x).backward()
    assert not theirs.SplitSign.apply(x)[1].requires_grad
    np.testing.assert_allclose(kiln.grad(loss(KILN, kiln))(X), x.grad.numpy(), rtol=1e-12)


def test_second_derivatives_match_torch_double_backward():
    """Exp and DoubledExp save their output (the second derivative runs through backward again), ReluSquared's backward has a mask
    (no gradient through the comparison), Cube saves an intermediate (a constant: torch's first derivative then has
    no graph at all, kiln's second derivative is zero)."""
    torch = require_torch()
    theirs = functions(torch)
    outer = RNG.standard_normal((2, 3))
    for name in ("Exp", "DoubledExp", "ReluSquared"):
        _, (first_grad,), (x,) = torch_gradients(torch, getattr(theirs, name).apply, (X,), create_graph=True)
        (expected,) = torch.autograd.grad((first_grad * torch.tensor(outer)).sum(), x)
        inner = lambda t: (getattr(KILN, name).apply(t) * kiln.tensor(R)).sum()  # noqa: E731
        second = kiln.grad(lambda t: (kiln.grad(inner)(t) * kiln.tensor(outer)).sum())(X)
        np.testing.assert_allclose(second, expected.numpy(), rtol=1e-12, err_msg=name)
    _, (first_grad,), _ = torch_gradients(torch, theirs.Cube.apply, (X,), create_graph=True)
    assert not first_grad.requires_grad
    inner = lambda t: (KILN.Cube.apply(t) * kiln.tensor(R)).sum()  # noqa: E731
    np.testing.assert_array_equal(kiln.grad(lambda t: (kiln.grad(inner)(t) * kiln.tensor(outer)).sum())(X), np.zeros_like(X))


def model_class(lib, clip):
    """A small MLP whose hidden activations go through ``clip``'s gradient clip; the same body for both libraries."""

    class ClippedMLP(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = lib.nn.Linear(3, 6)
            self.fc2 = lib.nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(clip.apply(self.fc1(x).tanh(), 0.01))

    return ClippedMLP


def twins(torch):
    kiln.manual_seed(3)
    model = model_class(kiln, KILN.ClipGradient)().double()
    twin = model_class(torch, functions(torch).ClipGradient)().double()
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return model, twin


def batches(count):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((5, 3)), rng.standard_normal((5, 2))) for _ in range(count)]


def test_a_compiled_training_step_trains_in_lockstep_with_torch():
    torch = require_torch()
    model, twin = twins(torch)
    losses = list(sgd_in_lockstep(torch, model, twin, batches(4), "mse", lr=0.5, rtol=1e-12))
    assert losses[-1] < losses[0]
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(np.asarray(model.state_dict()[name]), value.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
    _, plain = twins(torch)
    plain.forward = lambda x: plain.fc2(plain.fc1(x).tanh())  # the true derivative: the clip left out
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.5)
    for x, y in batches(4):
        optimizer.zero_grad()
        ((plain(torch.tensor(x)) - torch.tensor(y)) ** 2).mean().backward()
        optimizer.step()
    assert not np.allclose(plain.fc1.weight.detach().numpy(), twin.fc1.weight.detach().numpy(), rtol=1e-3)


def test_eager_backward_uses_the_custom_backward_as_torch():
    torch = require_torch()
    model, twin = twins(torch)
    (x, y), = batches(1)
    loss = ((model(kiln.tensor(x)) - kiln.tensor(y)) ** 2).mean()
    loss.backward()
    expected = ((twin(torch.tensor(x)) - torch.tensor(y)) ** 2).mean()
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
    for (name, parameter), (_, reference) in zip(model.named_parameters(), twin.named_parameters()):
        np.testing.assert_allclose(parameter.grad, reference.grad.numpy(), rtol=1e-12, atol=1e-15, err_msg=name)
    assert np.abs(model.fc1.weight.grad).max() <= 0.01 * 5 * 3  # the clipped hidden gradient, summed over 5 rows of |x| < 3


def test_eager_forward_values_and_gradients_of_several_functions():
    torch = require_torch()
    theirs = functions(torch)
    weight = nn.Parameter(W.copy())
    out = KILN.ScaledProduct.apply(kiln.tensor(X), weight, 0.75)
    np.testing.assert_allclose(out[0].numpy(), X * W * 0.75)
    (out[0] * kiln.tensor(R)).sum().backward()
    w = torch.tensor(W, requires_grad=True)
    (theirs.ScaledProduct.apply(torch.tensor(X), w, 0.75)[0] * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(weight.grad, w.grad.numpy(), rtol=1e-12)


def test_a_backward_reading_a_parameter_it_closes_over_matches_torch():
    """The backward multiplies by a module's parameter that is no argument of apply: it becomes an operand of the op."""
    torch = require_torch()

    def build(lib, gain):
        class Gained(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2.0

            @staticmethod
            def backward(ctx, grad):
                return grad * gain

        return Gained

    gain = nn.Parameter(np.array([0.5, -2.0, 3.0]))
    gained = build(kiln, gain)
    ours = kiln.grad(lambda x: (gained.apply(x) * kiln.tensor(R)).sum())(X)
    x = torch.tensor(X, requires_grad=True)
    (build(torch, torch.tensor(np.array(gain.data))).apply(x) * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(ours, x.grad.numpy(), rtol=1e-12)


def traced_loss_graph():
    def loss(x, w):
        scaled, total = KILN.ScaledProduct.apply(x, w, 0.75)
        return (KILN.Exp.apply(scaled) * kiln.tensor(R)).sum() + total.sum()

    return kiln.trace(loss, kiln.TensorSpec((2, 3), "float64"), kiln.TensorSpec((1, 3), "float64"))


def test_the_ir_prints_parses_and_survives_the_pipeline():
    from kiln.compiler.autodiff import differentiate
    from kiln.compiler.passes.manager import PassManager
    from kiln.runtime.train_step import DEFAULT_PIPELINE

    graph = traced_loss_graph()
    text = print_graph(graph)
    assert text.count('"custom.vjp"') == 2 and "backward = func @Exp_backward(" in text
    assert print_graph(parse(text)) == text
    reparsed = parse(text)
    reparsed.outputs = reparsed.outputs + differentiate(reparsed, reparsed.outputs[0], reparsed.inputs)
    PassManager(DEFAULT_PIPELINE, verify_each=True).run(reparsed)
    assert print_graph(parse(print_graph(reparsed))) == print_graph(reparsed)
    _, expected = kiln.value_and_grad(lambda x, w: (KILN.Exp.apply(KILN.ScaledProduct.apply(x, w, 0.75)[0]) * kiln.tensor(R)).sum()
                                      + KILN.ScaledProduct.apply(x, w, 0.75)[1].sum(), argnums=(0, 1))(X, W)
    results = kiln.backends.get_backend("numpy").compile(reparsed)(X, W)
    for ours, reference in zip(results[1:], expected):
        np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_the_parser_checks_a_nested_backward_against_its_op():
    """The backward's parameters are named for what they are; an op whose attributes do not fit it is refused."""
    text = print_graph(traced_loss_graph())
    nested = re.search(r"backward = func @ScaledProduct_backward\((.*?)\) \{", text).group(1)
    assert nested.startswith("%saved0: tensor<2x3xf64>, %saved1: tensor<1x3xf64>, %grad0")
    exp = 'function = "Exp", num_inputs = 1, num_outputs = 1, saved = [1], gradients = [0]'
    assert exp in text
    with pytest.raises(ParseError, match=r"custom.vjp of Exp: saved \[1\] or gradients \[1\] name an operand it lacks"):
        parse(text.replace(exp, exp.replace("gradients = [0]", "gradients = [1]")))


def test_onnx_export_runs_the_forward_ops(tmp_path):
    """Exported, a Function is its forward's ops (standard ONNX); onnxruntime gives torch's forward values."""
    require("onnx")
    ort = require("onnxruntime")
    torch = require_torch()
    model, twin = twins(torch)

    def exported(x):
        scaled, total = KILN.ScaledProduct.apply(model(x), kiln.tensor(W[:, :2]), 0.75)
        return KILN.Exp.apply(scaled) + total

    proto = kiln.export_onnx(exported, [kiln.TensorSpec(("N", 3), "float64")], str(tmp_path / "custom.onnx"))
    assert {node.domain for node in proto.graph.node} <= {""} and "Exp" in {node.op_type for node in proto.graph.node}
    session = ort.InferenceSession(str(tmp_path / "custom.onnx"), providers=["CPUExecutionProvider"])
    (x, _), = batches(1)
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x})
    theirs = functions(torch)
    scaled, total = theirs.ScaledProduct.apply(twin(torch.tensor(x)), torch.tensor(W[:, :2]), 0.75)
    np.testing.assert_allclose(onnx_out, (theirs.Exp.apply(scaled) + total).detach().numpy(), rtol=1e-12)


class TooFewGradients(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        return x * y

    @staticmethod
    def backward(ctx, grad):
        return grad


class ReturnsNumber(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 3.0

    @staticmethod
    def backward(ctx, grad):
        return grad


class GradientForAConstant(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        return x * scale

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


def test_errors_name_the_function_and_the_users_line():
    cases = [
        (lambda x: TooFewGradients.apply(x, x), r"TooFewGradients.backward \(.*test_custom_function.py:\d+\) returned 1 gradients, but apply was called with 2"),
        (lambda x: ReturnsNumber.apply(x), r"ReturnsNumber.forward \(.*\) must return a Tensor or a tuple of Tensors, got float at output 0"),
        (lambda x: GradientForAConstant.apply(x, 2.0), r"returned a gradient at position 1, but argument 1 of apply is float"),
    ]
    for fn, pattern in cases:
        with pytest.raises(TraceError, match=pattern) as error:
            kiln.grad(lambda x: fn(x).sum())(X)
        assert "test_custom_function.py" in str(error.value).splitlines()[0]  # the user's line, first


def test_a_gradient_of_the_wrong_shape_is_refused():
    class Shrinks(kiln.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum(dim=1)

        @staticmethod
        def backward(ctx, grad):
            return grad  # (2,) for an input of (2, 3): no broadcast of (2, 3) gives (2,)

    with pytest.raises(TraceError, match=r"returned a gradient of shape \(2,\) for argument 0, whose shape is \(2, 3\)") as error:
        kiln.grad(lambda x: Shrinks.apply(x).sum())(X)
    assert "test_custom_function.py" in str(error.value).splitlines()[0]


def test_forward_mode_and_vmap_use_the_backward_too():
    """kiln.jvp transposes the VJP, so a Function's tangent follows its backward (torch.func.jvp needs a jvp
    staticmethod instead); vmap of its gradient is the per-example backward."""
    x = X[0]
    _, tangent = kiln.jvp(KILN.DoubledExp.apply, (x,), (np.ones(3),))
    np.testing.assert_allclose(tangent, 2 * np.exp(x), rtol=1e-12)
    per_example = kiln.vmap(kiln.grad(lambda t: KILN.DoubledExp.apply(t).sum()))(X)
    np.testing.assert_allclose(per_example, 2 * np.exp(X), rtol=1e-12)


def test_every_backend_expands_the_op_to_its_forward():
    """After autodiff nothing reads the backward: the CuPy lowering (planned on the CPU) expands the op as NumPy's does."""
    from kiln.backends.cupy.plan import lower_for_cupy
    from kiln.compiler.autodiff import differentiate

    graph = traced_loss_graph()
    graph.outputs = graph.outputs + differentiate(graph, graph.outputs[0], graph.inputs)
    assert "custom.vjp" in {op.name for op in graph.ops}
    assert "custom.vjp" not in {op.name for op in lower_for_cupy(graph).ops}


def test_a_second_derivative_through_an_op_without_a_vjp_rule_names_it_and_the_backwards_line(monkeypatch):
    """Every tensor op has a rule today, so one is taken away: the first derivative only inlines the backward (its ops
    are not differentiated), the second must differentiate them and names the op and the backward's own line."""
    from kiln.compiler.autodiff import VJP_RULES
    from kiln.compiler.autodiff.differentiate import AutodiffError

    class SineGradient(kiln.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 1.0

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x.sin()

    monkeypatch.delitem(VJP_RULES, "tensor.sin")
    inner = lambda t: SineGradient.apply(t).sum()  # noqa: E731
    np.testing.assert_allclose(kiln.grad(inner)(X), np.sin(X), rtol=1e-15)
    with pytest.raises(AutodiffError, match=r"no VJP rule for 'tensor.sin' .*test_custom_function.py:\d+ in backward"):
        kiln.grad(lambda t: kiln.grad(inner)(t).sum())(X)


def _shifting_function(lib):
    """pytorch_tabnet's sparsemax pattern: ``forward`` writes its input in place (``input -= max_val``, here also
    ``mul_``) without ``mark_dirty``; ``backward`` is a deliberate stand-in (3 * grad), not the derivative."""

    class ShiftedScaled(lib.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            max_val, _ = input.max(dim=-1, keepdim=True)
            input -= max_val
            input.mul_(2)
            return input * 3

        @staticmethod
        def backward(ctx, grad):
            return grad * 3

    return ShiftedScaled


def test_a_forward_writing_its_input_in_place_writes_the_callers_tensor_and_the_gradient_is_backwards_as_torch():
    """torch's forward writes the caller's storage: the caller's tensor holds the new values after ``apply``, and
    its gradient stays the one ``backward`` gives (torch's autograd does not see the write: the tensor keeps its
    ``grad_fn``); a leaf requiring grad is overwritten too (forward runs without grad). Eagerly and compiled."""
    torch = require_torch()
    results = {}
    for lib in (kiln, torch):
        function = _shifting_function(lib)
        p = lib.tensor(X.copy(), requires_grad=True)
        x = p * 1
        y = function.apply(x)
        (y * lib.tensor(R)).sum().backward()
        leaf = lib.tensor(X.copy(), requires_grad=True)
        (function.apply(leaf) * lib.tensor(R)).sum().backward()

        def step(p):
            x = p * 1
            y = function.apply(x)
            return (y * lib.tensor(R)).sum() + (x * x).sum(), x  # the written x, used after apply

        q = lib.tensor(X.copy(), requires_grad=True)
        loss, written = (kiln.compile(step) if lib is kiln else step)(q)
        loss.backward()
        results[lib.__name__] = [np.array(t.detach().numpy()) for t in (y, x, p.grad, leaf, leaf.grad, loss, written,
                                                                        q.grad)]
    for ours, theirs in zip(results["kiln"], results["torch"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(results["torch"][1], 2 * (X - X.max(-1, keepdims=True)))
