"""GroupNorm, RMSNorm, BatchNorm1d and InstanceNorm2d against their ``torch.nn`` twins with copied weights: outputs,
parameter and input gradients (f32 at rtol 1e-5, f64 at rtol 1e-10), running statistics, a compiled training step,
and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import as_dtype, assert_layer_matches_torch, normal, randomize, sgd_losses_in_lockstep, tolerances
from lockstep import mse_sgd_in_lockstep
from oracles import require

DTYPES = ["float32", "float64"]


# GroupNorm -------------------------------------------------------------------------------------------

GROUP_CASES = {
    "NC": (2, 4, (3, 4)),
    "NCL": (3, 6, (2, 6, 5)),
    "NCHW": (2, 6, (2, 6, 4, 3)),
    "one_group": (1, 4, (2, 4, 3, 3)),  # layer norm over (C, H, W)
    "group_per_channel": (4, 4, (2, 4, 3, 2)),  # instance norm
    "NCDHW": (2, 4, (2, 4, 2, 3, 2)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("case", sorted(GROUP_CASES))
def test_group_norm_matches_torch(case, affine, dtype):
    torch = require("torch")
    groups, channels, shape = GROUP_CASES[case]
    module = randomize(nn.GroupNorm(groups, channels, eps=1e-3, affine=affine, dtype=dtype))
    reference = as_dtype(torch.nn.GroupNorm(groups, channels, eps=1e-3, affine=affine), dtype)
    assert set(module.state_dict()) == set(reference.state_dict())
    assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype=dtype) * 3 + 1], **tolerances(dtype))


class ChannelAffine(nn.Module):
    """Holds a per-channel weight or bias for calling ``F.group_norm`` with only one of them."""

    def __init__(self, name, channels, dtype):
        super().__init__()
        setattr(self, name, nn.Parameter(normal(channels, dtype=dtype, seed=5)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_functional_group_norm_with_only_a_weight_or_a_bias(name, dtype):
    torch = require("torch")
    module = ChannelAffine(name, 6, dtype)
    reference = torch.nn.Module()
    reference.register_parameter(name, torch.nn.Parameter(torch.zeros(6, dtype=getattr(torch, dtype))))

    def call(m, x):
        return F.group_norm(x, 3, **{name: getattr(m, name)}, eps=1e-2)

    def torch_call(m, x):
        # PyTorch 2.13's CPU backward fails with a bias and no weight ("tensor does not have a device"): pass ones
        weight = m.weight if name == "weight" else torch.ones(6, dtype=x.dtype)
        return torch.nn.functional.group_norm(x, 3, weight, getattr(m, "bias", None), eps=1e-2)

    x = normal(2, 6, 7, dtype=dtype) * 0.2 - 1
    assert_layer_matches_torch(torch, module, reference, [x], call=call, torch_call=torch_call, **tolerances(dtype))


def test_group_norm_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(kiln.TraceError, match="num_groups=3"):
        kiln.trace(lambda x: F.group_norm(x, 3), kiln.TensorSpec(("N", 4, 5)))
    with pytest.raises(kiln.TraceError, match="weight must have shape"):
        kiln.trace(nn.GroupNorm(2, 4), kiln.TensorSpec(("N", 6, 5)))


# RMSNorm ---------------------------------------------------------------------------------------------

RMS_CASES = {"last": (5, (3, 5)), "last_two": ((4, 5), (2, 4, 5)), "rank4": ((3,), (2, 2, 4, 3))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize("case", sorted(RMS_CASES))
def test_rms_norm_matches_torch(case, eps, affine, dtype):
    torch = require("torch")
    normalized_shape, shape = RMS_CASES[case]
    module = randomize(nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine, dtype=dtype))
    reference = as_dtype(torch.nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine), dtype)
    assert set(module.state_dict()) == set(reference.state_dict())
    assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype=dtype) * 3 + 1], **tolerances(dtype))


@pytest.mark.parametrize("dtype, scale", [("float32", 1e-5), ("float64", 1e-9)])
def test_rms_norm_default_eps_is_the_machine_epsilon_of_the_dtype(dtype, scale):
    """Inputs so small that ``mean(x^2)`` is below ``eps``: the output then depends on which ``eps`` is used."""
    torch = require("torch")
    x = normal(3, 8, dtype=dtype) * scale
    output = kiln.compile(lambda x: F.rms_norm(x, 8))(x)
    expected = torch.nn.functional.rms_norm(torch.tensor(x), (8,)).numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-5 if dtype == "float32" else 1e-10)
    with_other_eps = torch.nn.functional.rms_norm(torch.tensor(x), (8,), eps=1e-5 * float(np.finfo(dtype).eps)).numpy()
    assert not np.allclose(with_other_eps, expected, rtol=1e-2), "the inputs are too large to tell eps apart"


def test_rms_norm_rejects_a_shape_that_is_not_the_trailing_dims():
    with pytest.raises(kiln.TraceError, match="trailing dims"):
        kiln.trace(nn.RMSNorm((4, 5)), kiln.TensorSpec(("N", 5, 4)))


# BatchNorm1d -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)], ids=["NC", "NCL"])
def test_batch_norm1d_training_and_eval_match_torch(shape, affine, dtype):
    """Training mode normalizes with the batch's statistics and updates the running ones as PyTorch's; eval uses them."""
    torch = require("torch")
    module = randomize(nn.BatchNorm1d(3, momentum=0.2, affine=affine, dtype=dtype))
    reference = as_dtype(torch.nn.BatchNorm1d(3, momentum=0.2, affine=affine), dtype)
    x = normal(*shape, dtype=dtype) * 2 + 1
    assert set(module.state_dict()) == set(reference.state_dict())
    assert_layer_matches_torch(torch, module, reference, [x], **tolerances(dtype))  # training mode: batch statistics
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in module.state_dict().items()})
    forward = kiln.compile(module)
    for seed in range(2):  # each training-mode forward moves the running statistics, as PyTorch's
        batch = normal(*shape, dtype=dtype, seed=seed) * 2 + 1
        forward(batch)
        reference(torch.tensor(batch))
    assert int(module.num_batches_tracked.data) == 2 and not np.allclose(module.running_mean.data, 0)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(module.state_dict()[name], value.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    assert_layer_matches_torch(torch, module.eval(), reference.eval(), [x], **tolerances(dtype))  # eval mode: running statistics


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)], ids=["NC", "NCL"])
def test_batch_norm1d_without_running_stats_uses_batch_statistics_in_eval_too(shape):
    torch = require("torch")
    module = randomize(nn.BatchNorm1d(3, track_running_stats=False))
    reference = torch.nn.BatchNorm1d(3, track_running_stats=False)
    assert set(module.state_dict()) == set(reference.state_dict()) == {"weight", "bias"}
    x = normal(*shape) * 2 + 1
    assert_layer_matches_torch(torch, module, reference, [x])
    assert_layer_matches_torch(torch, module.eval(), reference.eval(), [x])


def test_batch_norm1d_rejects_other_ranks_and_channel_counts():
    with pytest.raises(kiln.TraceError, match=r"BatchNorm1d\(3\) expects"):
        kiln.trace(nn.BatchNorm1d(3), kiln.TensorSpec(("N", 3, 4, 4)))
    with pytest.raises(kiln.TraceError, match=r"BatchNorm1d\(3\) expects"):
        kiln.trace(nn.BatchNorm1d(3), kiln.TensorSpec(("N", 4)))


# InstanceNorm2d --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4, 5)], ids=["NCHW", "unbatched"])
def test_instance_norm2d_matches_torch(shape, affine, dtype):
    torch = require("torch")
    module = randomize(nn.InstanceNorm2d(3, eps=1e-3, affine=affine, dtype=dtype))
    reference = as_dtype(torch.nn.InstanceNorm2d(3, eps=1e-3, affine=affine), dtype)
    assert set(module.state_dict()) == set(reference.state_dict())
    assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype=dtype) * 3 + 1], **tolerances(dtype))


@pytest.mark.parametrize("cls", ["InstanceNorm2d", "InstanceNorm3d"])
def test_instance_norms_track_running_statistics_as_torch(cls):
    torch = require("torch")
    module = getattr(nn, cls)(3, affine=True, track_running_stats=True, momentum=0.3, dtype="float64")
    reference = getattr(torch.nn, cls)(3, affine=True, track_running_stats=True, momentum=0.3, dtype=torch.float64)
    assert repr(module) == repr(reference) and set(module.state_dict()) == set(reference.state_dict())
    shape = (2, 3) + (4, 5, 3)[: 2 if cls == "InstanceNorm2d" else 3]
    batches = [(normal(*shape, dtype="float64", seed=seed) * 2 + 1, normal(*shape, dtype="float64", seed=seed + 9)) for seed in range(3)]
    for _ in mse_sgd_in_lockstep(torch, module, reference, batches):
        np.testing.assert_allclose(module.running_mean.data, reference.running_mean.numpy(), rtol=1e-10)
        np.testing.assert_allclose(module.running_var.data, reference.running_var.numpy(), rtol=1e-10)
    module.eval(), reference.eval()
    assert_layer_matches_torch(torch, module, reference, [normal(*shape, dtype="float64", seed=7)])


# Training and export ---------------------------------------------------------------------------------


def small_cnn(library):
    """The same model in kiln and in PyTorch: group norm on feature maps, batch norm and RMS norm on features."""
    n = library.nn
    return n.Sequential(
        n.Conv2d(2, 4, 3, padding=1), n.GroupNorm(2, 4), n.ReLU(), n.Flatten(), n.Linear(4 * 4 * 4, 8),
        n.BatchNorm1d(8), n.ReLU(), n.RMSNorm(8), n.Linear(8, 3),
    )


def test_compiled_training_step_matches_torch_and_the_loss_decreases():
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = small_cnn(kiln), small_cnn(torch)
    x, y = normal(8, 2, 4, 4, seed=3), np.random.default_rng(3).integers(0, 3, 8)
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.1, steps=8)
    assert losses[-1] < 0.7 * losses[0], losses
    for name, value in reference.state_dict().items():  # parameters and BatchNorm1d's running statistics
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert int(model.state_dict()["5.num_batches_tracked"]) == 8


def test_eval_model_with_norm_layers_exports_to_onnx_and_matches_kiln_and_torch(tmp_path):
    onnx, ort, torch = require("onnx"), require("onnxruntime"), require("torch")
    kiln.manual_seed(0)
    model, reference = randomize(small_cnn(kiln)), small_cnn(torch)
    batch_norm = model[5]
    batch_norm.running_mean.data[...] = normal(8, seed=7)
    batch_norm.running_var.data[...] = np.exp(normal(8, seed=8))
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    path = str(tmp_path / "norms.onnx")
    proto = kiln.export_onnx(model.eval(), [kiln.TensorSpec(("N", 2, 4, 4))], path)
    onnx.checker.check_model(proto, full_check=True)
    assert "LayerNormalization" in {node.op_type for node in proto.graph.node}  # group norm as ONNX's own layer norm
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for batch in (1, 3, 5):
        x = normal(batch, 2, 4, 4, seed=batch) * 2 + 1
        expected = predict(x)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(expected, reference.eval()(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_group_norm_over_a_symbolic_length_exports_and_matches_torch(tmp_path):
    """With a symbolic spatial dim the group's size is symbolic: the standardization is traced in primitives."""
    require("onnx")
    ort, torch = require("onnxruntime"), require("torch")
    model, reference = randomize(nn.GroupNorm(2, 4)), torch.nn.GroupNorm(2, 4)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    path = str(tmp_path / "group_norm.onnx")
    kiln.export_onnx(model, [kiln.TensorSpec(("N", 4, "L"))], path)
    session = ort.InferenceSession(path)
    for length in (3, 7):
        x = normal(2, 4, length, seed=length) * 3 + 1
        expected = reference(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)
