"""``F.max_pool2d``/``F.avg_pool2d`` and ``nn.MaxPool2d``/``nn.AvgPool2d`` with PyTorch's every option (dilation,
ceil_mode, count_include_pad, divisor_override, return_indices, unbatched input) against PyTorch: values and input
gradients in f32 (rtol 1e-5) and f64 (rtol 1e-10), ties, inf and NaN, the windows' count and PyTorch's refusals,
reprs, a compiled training step in lockstep and ONNX export."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from layer_parity import assert_layer_matches_torch, kiln_outputs_and_grads, sgd_losses_in_lockstep
from oracles import require

SHAPE = (2, 3, 11, 8)  # odd and even sides: ceil_mode keeps a partial window on some axes, drops one on others
MAX_POOLS = {
    "plain": dict(kernel_size=3, stride=2, padding=1),
    "ceil": dict(kernel_size=2, ceil_mode=True),
    "ceil_padding": dict(kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), ceil_mode=True),
    "ceil_dropped_window": dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),  # the last would start in the padding
    "dilation": dict(kernel_size=3, dilation=2, padding=1),
    "dilation_per_axis": dict(kernel_size=(2, 3), stride=(1, 2), padding=1, dilation=(2, 3)),
    "dilation_ceil": dict(kernel_size=(3, 2), stride=(4, 2), padding=1, dilation=(3, 2), ceil_mode=True),
    "one_tuples": dict(kernel_size=(3,), stride=(2,), padding=(1,)),
    "empty_stride": dict(kernel_size=(2, 3), stride=[]),
}
AVG_POOLS = {
    "plain": dict(kernel_size=3, stride=2, padding=1),
    "exclude_pad": dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "ceil": dict(kernel_size=2, ceil_mode=True),
    "ceil_padding": dict(kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), ceil_mode=True),
    "ceil_exclude_pad": dict(kernel_size=(3, 4), stride=(2, 3), padding=(1, 2), ceil_mode=True, count_include_pad=False),
    "ceil_dropped_window": dict(kernel_size=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False),
    "divisor": dict(kernel_size=3, stride=2, padding=1, divisor_override=5),
    "divisor_over_the_rest": dict(kernel_size=(2, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=-4),
}


def tolerances(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)


def distinct(shape, dtype, seed=0):
    """Distinct values: one largest element per window, so the gradient's route is unambiguous."""
    return (np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0).astype(dtype)


def ties(shape, dtype, seed=0):
    """Values from {-1, 0, 1}: most windows hold their largest more than once; the first (row-major) takes the gradient."""
    return np.random.default_rng(seed).integers(-1, 2, shape).astype(dtype)


def assert_function_matches(torch, kind, options, x, dtype):
    call = lambda functional: lambda m, t: getattr(functional, kind)(t, **options)  # noqa: E731
    assert_layer_matches_torch(torch, nn.Module(), torch.nn.Module(), [x], call=call(F), torch_call=call(torch.nn.functional),
                               **tolerances(dtype))


@pytest.mark.parametrize("values", ["distinct", "ties"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(MAX_POOLS))
def test_max_pool2d_matches_torch(case, dtype, values):
    torch = require("torch")
    make = distinct if values == "distinct" else ties
    for shape in (SHAPE, SHAPE[1:]):  # batched and unbatched
        assert_function_matches(torch, "max_pool2d", MAX_POOLS[case], make(shape, dtype), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(AVG_POOLS))
def test_avg_pool2d_matches_torch(case, dtype):
    torch = require("torch")
    for shape in (SHAPE, SHAPE[1:]):
        x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
        assert_function_matches(torch, "avg_pool2d", AVG_POOLS[case], x, dtype)


@pytest.mark.parametrize("case", ["plain", "ceil_padding", "dilation_per_axis", "dilation_ceil"])
def test_max_pool2d_passes_inf_and_nan_as_torch(case):
    """The input holds +inf, -inf and one NaN a plane (PyTorch takes the last of several NaNs, kiln the first); the
    cotangent holds inf and NaN, which reach the winners alone, leaving every other element exactly 0."""
    torch = require("torch")
    options = MAX_POOLS[case]
    x = distinct(SHAPE, "float64")
    x[:, :, 0, 0], x[:, :, 5, 3], x[:, :, 10, 7], x[:, 0, 2, 6], x[:, 1, 7, 1] = -np.inf, np.inf, -np.inf, np.nan, np.nan
    t = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.max_pool2d(t, **options)
    weights = np.random.default_rng(2).standard_normal(tuple(expected.shape))
    weights.flat[::5], weights.flat[1::7] = np.inf, np.nan
    (expected * torch.tensor(weights)).sum().backward()
    output, _, (grad,) = kiln_outputs_and_grads(nn.Module(), lambda m, v: F.max_pool2d(v, **options), [x], weights)
    np.testing.assert_array_equal(output, expected.detach().numpy())
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12, atol=0)
    assert np.isnan(output).any() and np.isinf(grad).any() and (grad == 0).sum() == (t.grad.numpy() == 0).sum()


def _indices_and_grads(function, x, weights):
    graph = kiln.trace(function, kiln.TensorSpec(x.shape, str(x.dtype)))
    values, indices = NumpyBackend().compile(graph)(x)
    grad = kiln.grad(lambda v: (function(v)[0] * weights).sum())(x)
    return values, indices, grad


@pytest.mark.parametrize("values", ["distinct", "ties"])
@pytest.mark.parametrize("case", ["plain", "ceil_padding", "ceil_dropped_window", "dilation_per_axis", "dilation_ceil"])
def test_max_pool2d_returns_torchs_indices(case, values):
    torch = require("torch")
    options = {**MAX_POOLS[case], "return_indices": True}
    for shape in (SHAPE, SHAPE[1:]):
        x = (distinct if values == "distinct" else ties)(shape, "float64")
        t = torch.tensor(x, requires_grad=True)
        expected, expected_indices = torch.nn.functional.max_pool2d(t, **options)
        weights = np.random.default_rng(3).standard_normal(tuple(expected.shape))
        (expected * torch.tensor(weights)).sum().backward()
        got, indices, grad = _indices_and_grads(lambda v: F.max_pool2d(v, **options), x, weights)
        np.testing.assert_array_equal(got, expected.detach().numpy())
        assert indices.dtype == np.int64
        np.testing.assert_array_equal(indices, expected_indices.numpy())
        np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12, atol=0)


def test_all_minus_inf_windows_point_at_their_first_element_as_torch():
    """Padding and input alike are -inf: PyTorch's index and gradient go to the window's first input element (the
    gathered pools read it for the padding), and a window the dilation steps clean over is -inf with PyTorch's
    past-the-window index."""
    torch = require("torch")
    options = dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(2, 3), ceil_mode=True, return_indices=True)
    x = np.full((1, 2, 5, 4), -np.inf)
    t = torch.tensor(x, requires_grad=True)
    expected, expected_indices = torch.nn.functional.max_pool2d(t, **options)
    weights = np.random.default_rng(4).standard_normal(tuple(expected.shape))
    (expected * torch.tensor(weights)).sum().backward()
    got, indices, grad = _indices_and_grads(lambda v: F.max_pool2d(v, **options), x, weights)
    np.testing.assert_array_equal(got, expected.detach().numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12, atol=0)
    stepped_over = dict(kernel_size=2, stride=1, padding=1, dilation=(1, 3), return_indices=True)  # columns {-1, 2} of 2
    x = distinct((1, 2, 4, 2), "float64")
    expected, expected_indices = torch.nn.functional.max_pool2d(torch.tensor(x), **stepped_over)
    got, indices = NumpyBackend().compile(kiln.trace(lambda v: F.max_pool2d(v, **stepped_over), kiln.TensorSpec(x.shape, "float64")))(x)
    assert np.all(got == -np.inf)
    np.testing.assert_array_equal(got, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


def test_ceil_mode_cases_keep_a_partial_last_window():
    """Each ``ceil_mode`` case above pools to more windows than floor mode on ``SHAPE`` but the one whose last window
    would start in the padding, so the grids above run partial windows."""
    torch = require("torch")
    for name, options in [*MAX_POOLS.items(), *AVG_POOLS.items()]:
        if options.get("ceil_mode"):
            pool = torch.nn.functional.avg_pool2d if {"count_include_pad", "divisor_override"} & set(options) else torch.nn.functional.max_pool2d
            shapes = [pool(torch.zeros(SHAPE), **{**options, "ceil_mode": ceil}).shape for ceil in (False, True)]
            assert (shapes[0] == shapes[1]) == (name == "ceil_dropped_window"), (name, shapes)


def test_window_counts_and_refusals_follow_torch():
    """Every (size, kernel, stride, padding, dilation, ceil_mode) in a grid: kiln pools to PyTorch's output size
    (ceil_mode keeps a last window only if it starts inside the input or its left padding), or refuses where PyTorch
    does."""
    torch = require("torch")
    agreed = 0
    for size, kernel, stride, padding, dilation, ceil in itertools.product((1, 2, 5, 6), (1, 2, 3), (1, 2, 3), (0, 1, 2), (1, 2), (False, True)):
        options = dict(kernel_size=(1, kernel), stride=(1, stride), padding=(0, padding), dilation=(1, dilation), ceil_mode=ceil)
        try:
            expected = tuple(torch.nn.functional.max_pool2d(torch.zeros(1, 1, 1, size), **options).shape)
        except RuntimeError:
            expected = None
        try:
            got = kiln.trace(lambda t: F.max_pool2d(t, **options), kiln.TensorSpec((1, 1, 1, size))).outputs[0].type.shape
        except kiln.TraceError:
            got = None
        assert got == expected, (size, options)
        agreed += expected is not None
    assert agreed > 100


def test_plain_pools_stay_one_op_and_options_add_only_what_they_need():
    """The fast kernels and fused passes see the same ``tensor.max_pool2d``/``tensor.avg_pool2d`` as before; the
    options add a pad (ceil_mode), a constant rescale (the average's divisor) or a gather (dilation, indices)."""
    def ops(function, shape=SHAPE):
        return [op.name for op in kiln.trace(function, kiln.TensorSpec(("N",) + shape[1:])).ops]

    assert ops(lambda t: F.max_pool2d(t, 3, 2, 1)) == ["tensor.max_pool2d"]
    assert ops(lambda t: F.avg_pool2d(t, (3, 2), None, (1, 0), False, True, None)) == ["tensor.avg_pool2d"]
    assert ops(lambda t: F.max_pool2d(t, 2, ceil_mode=True)) == ["tensor.pad", "tensor.max_pool2d"]
    assert ops(lambda t: F.max_pool2d(t, 2, ceil_mode=True), (2, 3, 10, 8)) == ["tensor.max_pool2d"]  # no partial window
    assert ops(lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False)) == ["tensor.avg_pool2d", "tensor.constant", "tensor.mul"]
    assert "tensor.take" in ops(lambda t: F.max_pool2d(t, 3, 1, 1, dilation=2))
    assert "tensor.max_pool2d" not in ops(lambda t: F.max_pool2d(t, 3, 1, 1, return_indices=True)[1])


@pytest.mark.parametrize(("call", "message"), [
    (lambda f, t: f.max_pool2d(t, 3, 1, 2), "at most half"),
    (lambda f, t: f.max_pool2d(t, 2, 1, 2, dilation=3), "at most half"),  # PyTorch holds padding to the kernel, not its reach
    (lambda f, t: f.avg_pool2d(t, (3, 2), 1, (1, 2)), "at most half"),
    (lambda f, t: f.max_pool2d(t, 12), "does not fit"),
    (lambda f, t: f.max_pool2d(t, (2, 5), dilation=2), "does not fit"),
    (lambda f, t: f.avg_pool2d(t, 3, 0), "positive"),
    (lambda f, t: f.max_pool2d(t, 0), "positive"),
    (lambda f, t: f.max_pool2d(t, 3, 1, -1), "non-negative"),
    (lambda f, t: f.max_pool2d(t, (3, 3, 3)), "tuple of one or two ints"),
    (lambda f, t: f.avg_pool2d(t, 2, divisor_override=0), "nonzero"),
    (lambda f, t: f.max_pool2d(t[0, 0], 2), r"\(N, C, H, W\)"),
])
def test_refusals_name_the_argument_as_torch_refuses(call, message):
    torch = require("torch")
    with pytest.raises((RuntimeError, ValueError)):
        call(torch.nn.functional, torch.zeros(SHAPE))
    with pytest.raises(kiln.TraceError, match=message):
        kiln.trace(lambda t: call(F, t), kiln.TensorSpec(SHAPE))


def test_inputs_kiln_cannot_pool_are_refused():
    for spec, message in [(kiln.TensorSpec(("N", 3, "H", 8)), "static H and W"), (kiln.TensorSpec(SHAPE, "int64"), "floating-point")]:
        with pytest.raises(kiln.TraceError, match=message):
            kiln.trace(lambda t: F.avg_pool2d(t, 2), spec)


def test_module_reprs_attributes_and_outputs_follow_torch():
    torch = require("torch")
    builds = [
        lambda n: n.MaxPool2d(3), lambda n: n.MaxPool2d((3, 2), 1, 1, 2, True, True), lambda n: n.MaxPool2d(2, stride=[]),
        lambda n: n.AvgPool2d(3), lambda n: n.AvgPool2d((3, 2), 1, (1, 0), True, False, 4), lambda n: n.AvgPool2d(2, None, 1),
    ]
    names = ["kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode", "count_include_pad", "divisor_override"]
    for build in builds:
        module, reference = build(nn), build(torch.nn)
        assert repr(module) == repr(reference)
        assert {name: getattr(module, name, None) for name in names} == {name: getattr(reference, name, None) for name in names}
    x = distinct(SHAPE, "float64")
    module, reference = nn.MaxPool2d((3, 2), 1, 1, 2, True, True), torch.nn.MaxPool2d((3, 2), 1, 1, 2, True, True)
    values, indices = NumpyBackend().compile(kiln.trace(module, kiln.TensorSpec(SHAPE, "float64")))(x)
    expected, expected_indices = reference(torch.tensor(x))
    np.testing.assert_array_equal(values, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


def cnn(library):
    """The same small CNN in kiln and PyTorch: a partial-window max pool, a padding-excluding average, a dilated max."""
    n = library.nn
    return n.Sequential(n.Conv2d(2, 4, 3, padding=1), n.ReLU(), n.MaxPool2d(2, ceil_mode=True),
                        n.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), n.Conv2d(4, 5, 1), n.Tanh(),
                        n.MaxPool2d(2, 1, 1, dilation=2), n.Flatten(), n.Linear(45, 3))


def test_compiled_training_step_with_pool_options_matches_torch():
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = cnn(kiln), cnn(torch)
    x, y = np.random.default_rng(5).standard_normal((6, 2, 7, 7)).astype(np.float32), np.random.default_rng(5).integers(0, 3, 6)
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.2, steps=5)
    assert losses[-1] < losses[0], losses
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_cnn_with_pool_options_exports_to_onnx_and_matches_onnxruntime(tmp_path):
    onnx, ort, torch = require("onnx"), require("onnxruntime"), require("torch")
    kiln.manual_seed(1)
    model, reference = cnn(kiln), cnn(torch)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    path = str(tmp_path / "pools.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 2, 7, 7))], path)
    onnx.checker.check_model(proto, full_check=True)
    assert {"MaxPool", "AveragePool", "Gather"} <= {node.op_type for node in proto.graph.node}
    session = ort.InferenceSession(path)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 7, 7)).astype(np.float32)
        expected = reference(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_training_step_with_pool_options_runs_in_onnxruntime_as_in_numpy():
    """The whole step, the pools' gathers, pads and rescales with their gradients, exported to ONNX."""
    require("onnxruntime")
    x, y = np.random.default_rng(6).standard_normal((4, 2, 7, 7)).astype(np.float32), np.random.default_rng(6).integers(0, 3, 4)
    results = []
    for backend in ("numpy", "onnxruntime"):
        kiln.manual_seed(2)
        model = cnn(kiln)
        step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), backend=backend)
        results.append(([float(step(x, y)) for _ in range(3)], {k: np.array(v) for k, v in model.state_dict().items()}))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for name, value in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
