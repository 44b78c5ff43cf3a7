"""Conv1d, ConvTranspose2d and the adaptive pools against ``torch.nn`` with copied weights: outputs, parameter and input
gradients over grids of stride, padding, dilation, groups and output_padding (float64, rtol 1e-10; one float32 case each),
a symbolic batch dim, a compiled training step and ONNX export."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from layer_parity import assert_layer_matches_torch, sgd_losses_in_lockstep
from oracles import require

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")  # PyTorch's note on its own copy

RNG = np.random.default_rng(0)
F64 = {"rtol": 1e-10, "atol": 1e-12}


def normal(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


# Conv1d ---------------------------------------------------------------------------

CONV1D_GRID = [(s, p, d, g) for s, p, d, g in itertools.product((1, 2), (0, 2, "valid", "same"), (1, 2), (1, 2)) if not (p == "same" and s > 1)]


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), CONV1D_GRID)
def test_conv1d_grid_float64(stride, padding, dilation, groups):
    """Even kernel 4 with ``"same"``: an odd total padding, the extra zero on the right as PyTorch."""
    torch = require("torch")
    kiln.manual_seed(1)
    options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    module = nn.Conv1d(4, 6, 4, dtype="float64", **options)
    reference = torch.nn.Conv1d(4, 6, 4, dtype=torch.float64, **options)
    assert_layer_matches_torch(torch, module, reference, [normal(2, 4, 11)], **F64)


def test_conv1d_float32_without_bias():
    torch = require("torch")
    kiln.manual_seed(2)
    module, reference = nn.Conv1d(3, 5, 3, stride=2, padding=1, bias=False), torch.nn.Conv1d(3, 5, 3, stride=2, padding=1, bias=False)
    assert_layer_matches_torch(torch, module, reference, [normal(3, 3, 9, dtype=np.float32)])


def test_conv1d_same_padding_needs_stride_one():
    with pytest.raises(TraceError, match="stride 1"):
        kiln.trace(nn.Conv1d(2, 2, 3, stride=2, padding="same"), kiln.TensorSpec((1, 2, 8)))


# ConvTranspose2d ------------------------------------------------------------------

CONV_TRANSPOSE_GRID = [
    (s, p, op, d, g)
    for s, p, op, d, g in itertools.product((1, 2, 3), (0, 1), (0, 1, 2), (1, 2), (1, 2))
    if op < max(s, d)
]


@pytest.mark.parametrize(("stride", "padding", "output_padding", "dilation", "groups"), CONV_TRANSPOSE_GRID)
def test_conv_transpose2d_grid_float64(stride, padding, output_padding, dilation, groups):
    """Includes ``output_padding >= stride`` (stride 1, dilation 2), where the input gets zero rows the
    underlying convolution would see."""
    torch = require("torch")
    kiln.manual_seed(3)
    options = {"stride": stride, "padding": padding, "output_padding": output_padding, "dilation": dilation, "groups": groups}
    module = nn.ConvTranspose2d(4, 6, (3, 2), dtype="float64", **options)
    reference = torch.nn.ConvTranspose2d(4, 6, (3, 2), dtype=torch.float64, **options)
    assert_layer_matches_torch(torch, module, reference, [normal(2, 4, 5, 4)], **F64)


def test_conv_transpose2d_per_axis_arguments_float64():
    torch = require("torch")
    kiln.manual_seed(4)
    options = {"stride": (2, 3), "padding": (1, 0), "output_padding": (1, 2), "dilation": (1, 2), "groups": 4}
    module = nn.ConvTranspose2d(4, 8, (2, 3), dtype="float64", **options)
    reference = torch.nn.ConvTranspose2d(4, 8, (2, 3), dtype=torch.float64, **options)
    assert_layer_matches_torch(torch, module, reference, [normal(2, 4, 3, 5)], **F64)


def test_conv_transpose2d_float32_without_bias():
    torch = require("torch")
    kiln.manual_seed(5)
    module = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    reference = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    assert_layer_matches_torch(torch, module, reference, [normal(2, 3, 4, 5, dtype=np.float32)])


def test_conv_transpose2d_rejects_output_padding_as_torch():
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)
    x, w = np.zeros((1, 2, 4, 4), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(TraceError, match="output_padding"):
        kiln.trace(lambda a, b: F.conv_transpose2d(a, b, stride=1, output_padding=1), kiln.TensorSpec(x.shape), kiln.TensorSpec(w.shape))


# Initialisation -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "args", "fan_in"), [("Conv1d", (2, 8, 5), 2 * 5), ("ConvTranspose2d", (2, 8, 3), 8 * 9)])
def test_default_initialisation_has_torchs_shapes_and_bounds(kind, args, fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias; ConvTranspose2d's fan_in is ``out_channels * KH * KW``
    (its weight's dim 1), which here is 4x Conv-style ``in_channels * KH * KW``: a wrong fan_in misses the bound by 2x."""
    torch = require("torch")
    ours = getattr(nn, kind)(*args).state_dict()
    theirs = getattr(torch.nn, kind)(*args).state_dict()
    assert {k: np.shape(v) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    bound = 1 / np.sqrt(fan_in)
    weight = np.asarray(ours["weight"])
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.8 * bound
    assert np.abs(np.asarray(ours["bias"])).max() <= bound


# Adaptive pooling -----------------------------------------------------------------

ADAPTIVE_SIZES = [1, (1, 1), 2, (2, 3), (3, 4), (4, None), (None, 2), (5, 5), (9, 10), (7, 6)]


@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (2, 3, 8, 6)])
def test_adaptive_avg_pool2d_float64(shape, output_size):
    """Tiling windows, uneven and overlapping ones, outputs larger than the input, ``None`` keeping a dim."""
    torch = require("torch")
    assert_layer_matches_torch(torch, nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size), [normal(*shape)], **F64)


def test_adaptive_avg_pool2d_float32():
    torch = require("torch")
    assert_layer_matches_torch(torch, nn.AdaptiveAvgPool2d((3, 4)), torch.nn.AdaptiveAvgPool2d((3, 4)), [normal(2, 3, 7, 9, dtype=np.float32)])


@pytest.mark.parametrize(("output_size", "ops"), [((2, 3), {"tensor.avg_pool2d"}), (1, {"tensor.reduce_mean"}), ((3, 4), {"tensor.matmul"})])
def test_adaptive_avg_pool2d_lowers_tiling_windows_to_avg_pool(output_size, ops):
    graph = kiln.trace(nn.AdaptiveAvgPool2d(output_size), kiln.TensorSpec((2, 3, 8, 6)))
    assert ops <= {op.name for op in graph.ops}


@pytest.mark.parametrize("output_size", [1, (2, 3), (4, None), (8, 6)])
def test_adaptive_max_pool2d_float64(output_size):
    torch = require("torch")
    x = RNG.permutation(2 * 3 * 8 * 6).reshape(2, 3, 8, 6) * 0.1  # distinct: one max per window
    assert_layer_matches_torch(torch, nn.AdaptiveMaxPool2d(output_size), torch.nn.AdaptiveMaxPool2d(output_size), [x], **F64)


# Symbolic batch, training, ONNX ---------------------------------------------------


def add_head_layers(module, up, pool, conv, linear) -> None:
    """ConvTranspose2d (output_padding) -> AdaptiveAvgPool2d (uneven windows) -> Conv1d ("same", even kernel) -> Linear."""
    module.up = up(1, 4, 3, stride=2, padding=1, output_padding=1)
    module.pool = pool((5, 1))
    module.conv = conv(4, 6, 4, padding="same")
    module.head = linear(30, 3)


def head_forward(module, x):
    h = module.pool(module.up(x).relu()).squeeze(3)  # (N, 4, 12, 12) -> (N, 4, 5)
    return module.head(module.conv(h).tanh().reshape(-1, 30))


class UpsampleConvHead(nn.Module):
    def __init__(self):
        super().__init__()
        add_head_layers(self, nn.ConvTranspose2d, nn.AdaptiveAvgPool2d, nn.Conv1d, nn.Linear)

    forward = head_forward


def torch_twin(model):
    """The same network in PyTorch, with ``model``'s weights."""
    torch = require("torch")

    class TorchHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            add_head_layers(self, torch.nn.ConvTranspose2d, torch.nn.AdaptiveAvgPool2d, torch.nn.Conv1d, torch.nn.Linear)

        forward = head_forward

    reference = TorchHead()
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return reference


def test_symbolic_batch_outputs_and_gradients_match_torch_for_two_batch_sizes():
    """One trace with ``N`` symbolic serves batches of 1 and 3: outputs, parameter and input gradients."""
    torch = require("torch")
    kiln.manual_seed(6)
    model = UpsampleConvHead()
    model.up.weight.data[...] = normal(1, 4, 3, 3, dtype=np.float32)
    reference = torch_twin(model)
    with TraceContext("symbolic") as context:
        context.parameter_names.update({id(p): name for name, p in model.named_parameters()})
        x = Tensor(context.graph.add_input(kiln.TensorSpec(("N", 1, 6, 6)).type, "x"))
        weights = Tensor(context.graph.add_input(kiln.TensorSpec(("N", 3)).type, "weights"))
        output = model(x)
        assert output.shape == ("N", 3)
        named = list(model.named_parameters())
        grads = differentiate(context.graph, (output * weights).sum().value, [context.value_of(p) for _, p in named] + [x.value])
        context.graph.outputs = [output.value, *grads]
    run = NumpyBackend().compile(context.graph)
    for batch in (1, 3):
        xs, ws = normal(batch, 1, 6, 6, dtype=np.float32), normal(batch, 3, dtype=np.float32)
        got = run(xs, ws, *[p.data for p in context.parameters])
        tx = torch.tensor(xs, requires_grad=True)
        reference.zero_grad()
        expected = reference(tx)
        (expected * torch.tensor(ws)).sum().backward()
        np.testing.assert_allclose(got[0], expected.detach().numpy(), rtol=1e-5, atol=1e-6)
        torch_params = dict(reference.named_parameters())
        for (name, _), grad in zip(named, got[1:]):
            np.testing.assert_allclose(grad, torch_params[name].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(got[-1], tx.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg="input gradient")


def test_compiled_training_step_follows_torch_and_lowers_the_loss():
    torch = require("torch")
    kiln.manual_seed(7)
    model = UpsampleConvHead()
    reference = torch_twin(model)
    x = np.random.default_rng(2).standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 8)
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.2, steps=15)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])) and losses[-1] < 0.95 * losses[0], losses
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-3, atol=1e-5, err_msg=name)


def test_onnx_export_matches_onnxruntime_and_torch(tmp_path):
    onnx, ort, torch = require("onnx"), require("onnxruntime"), require("torch")
    kiln.manual_seed(8)
    model = UpsampleConvHead()
    reference = torch_twin(model).eval()
    path = str(tmp_path / "head.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 1, 6, 6))], path)
    onnx.checker.check_model(proto, full_check=True)
    assert {"ConvTranspose", "Conv", "MatMul"} <= {node.op_type for node in proto.graph.node}
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for batch in (1, 4):
        x = normal(batch, 1, 6, 6, dtype=np.float32)
        expected = reference(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("stride", "output_padding", "dilation"), [(2, 1, 1), (1, 1, 2)])
def test_conv_transpose2d_training_step_runs_in_onnxruntime(stride, output_padding, dilation):
    """The step's backward (a convolution and a weight gradient of the transposed one) and the zero rows that
    ``output_padding >= stride`` adds, as ONNX."""
    require("onnxruntime")
    kiln.manual_seed(9)
    model = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=stride, padding=1, output_padding=output_padding, dilation=dilation),
                          nn.AdaptiveAvgPool2d((3, 2)), nn.Flatten())
    x = normal(2, 2, 4, 5, dtype=np.float32)
    target = kiln.compile(model)(x) * 0.5
    step = kiln.compile_train_step(model, F.mse_loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    assert kiln.parity(step, [x, target], backends=["onnxruntime"]).ok
