"""Lazy modules (``frontend/layers_lazy.py``) against PyTorch's: the repr before the first call, the size inferred from
the first input, the class they become, then outputs and every gradient in float64 (rtol 1e-10) with the weights
copied across; the clear error before the dry run (parameters, an optimizer, state_dict), a symbolic dim where the
size is inferred, and a ``compile_train_step`` training in lockstep with PyTorch after a dry run."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import KilnError, TraceError
from layer_parity import assert_layer_matches_torch, normal, sgd_losses_in_lockstep
from oracles import require

CASES = {
    "linear": ("LazyLinear", "Linear", (5,), {}, (3, 4, 7)),
    "linear_no_bias": ("LazyLinear", "Linear", (5,), {"bias": False}, (3, 7)),
    "conv1d": ("LazyConv1d", "Conv1d", (4, 3), {"padding": 1, "stride": 2}, (2, 3, 9)),
    "conv2d_grouped": ("LazyConv2d", "Conv2d", (4, 3), {"groups": 2, "padding": 1}, (2, 6, 5, 6)),
    "conv2d_unbatched": ("LazyConv2d", "Conv2d", (4, 2), {}, (3, 5, 6)),
    "conv3d": ("LazyConv3d", "Conv3d", (2, 2), {"bias": False}, (2, 3, 4, 5, 4)),
    "conv_transpose1d": ("LazyConvTranspose1d", "ConvTranspose1d", (4, 3), {"stride": 2, "output_padding": 1}, (2, 3, 6)),
    "conv_transpose2d": ("LazyConvTranspose2d", "ConvTranspose2d", (4, 3), {"stride": 2, "padding": 1}, (2, 3, 4, 5)),
    "conv_transpose3d": ("LazyConvTranspose3d", "ConvTranspose3d", (2, 2), {"stride": 2}, (2, 3, 3, 4, 3)),
    "batch_norm1d": ("LazyBatchNorm1d", "BatchNorm1d", (), {}, (6, 3, 5)),
    "batch_norm1d_2d_input": ("LazyBatchNorm1d", "BatchNorm1d", (), {"momentum": 0.3}, (6, 4)),
    "batch_norm2d": ("LazyBatchNorm2d", "BatchNorm2d", (), {"eps": 1e-3}, (4, 3, 5, 6)),
    "batch_norm3d": ("LazyBatchNorm3d", "BatchNorm3d", (), {}, (2, 3, 4, 5, 3)),
    "instance_norm1d": ("LazyInstanceNorm1d", "InstanceNorm1d", (), {}, (2, 3, 9)),
    "instance_norm2d_plain": ("LazyInstanceNorm2d", "InstanceNorm2d", (), {"affine": False, "track_running_stats": False}, (2, 3, 5, 6)),
    "instance_norm3d": ("LazyInstanceNorm3d", "InstanceNorm3d", (), {}, (2, 3, 4, 5, 3)),
}

SAME_REPR = {"linear", "linear_no_bias", "conv1d", "conv2d_grouped", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
             "instance_norm1d", "instance_norm2d_plain", "instance_norm3d"}


def _dry_run(module, shape, dtype="float64"):
    kiln.trace(module, kiln.TensorSpec(shape, dtype))


@pytest.mark.parametrize("case", CASES)
def test_lazy_module_matches_torch_after_the_first_call(case):
    torch = require("torch")
    lazy, eager, arguments, options, shape = CASES[case]
    ours = getattr(nn, lazy)(*arguments, dtype="float64", **options)
    theirs = getattr(torch.nn, lazy)(*arguments, dtype=torch.float64, **options)
    assert type(ours) is getattr(nn, lazy)
    if case in SAME_REPR:
        assert repr(ours) == repr(theirs)
    x = normal(*shape, dtype="float64")
    _dry_run(ours, shape)
    theirs(torch.tensor(x))
    assert type(ours) is getattr(nn, eager) and type(theirs) is getattr(torch.nn, eager)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    if case in SAME_REPR and case != "instance_norm2d_plain":  # PyTorch leaves num_features 0 when there is nothing to create
        assert repr(ours) == repr(theirs)
    for parameter in ours.parameters():  # random values, so a dropped or swapped weight shows
        parameter.data[...] = normal(*parameter.data.shape, dtype="float64", seed=parameter.data.size)
    assert_layer_matches_torch(torch, ours, theirs, [x], rtol=1e-10, atol=1e-12)


def test_lazy_initialisation_draws_what_the_eager_module_would():
    from kiln.frontend import init

    saved = init.rng_state()  # other tests' weights stay those they always drew
    try:
        init.set_rng_state(saved)
        lazy = nn.LazyConv2d(4, 3)
        _dry_run(lazy, (2, 5, 6, 6), "float32")
        init.set_rng_state(saved)
        eager = nn.Conv2d(5, 4, 3)
    finally:
        init.set_rng_state(saved)
    for name, array in eager.state_dict().items():
        np.testing.assert_array_equal(lazy.state_dict()[name], array, err_msg=name)
    assert lazy.weight.data.dtype == np.float32


def _lazy_cnn(module):
    return module.Sequential(module.LazyConv2d(4, 3, padding=1), module.LazyBatchNorm2d(), module.ReLU(), module.Flatten(),
                             module.LazyLinear(3))


def test_parameters_state_dict_and_optimizer_before_the_dry_run_say_to_call_the_model_first():
    model = _lazy_cnn(nn)
    for attempt in (lambda: list(model.parameters()), model.state_dict, lambda: kiln.optim.SGD(model.parameters(), lr=0.1),
                    lambda: model.load_state_dict({})):
        with pytest.raises(KilnError, match=r"Run the model once first .*kiln.compile\(model\)\(x\)"):
            attempt()


def test_a_symbolic_dim_where_the_size_is_inferred_names_the_users_line():
    with pytest.raises(TraceError, match=r"test_lazy_modules_vs_torch.py:\d+.*\n.*LazyLinear infers in_features .* must be static"):
        kiln.trace(nn.LazyLinear(3), kiln.TensorSpec(("N", "F"), "float32"))
    with pytest.raises(TraceError, match="Expected 2D \\(unbatched\\) or 3D \\(batched\\) input to LazyConv1d"):
        kiln.trace(nn.LazyConv1d(3, 2), kiln.TensorSpec((2, 3, 4, 5), "float32"))


def test_hooks_training_mode_and_dtype_survive_the_class_change():
    seen = []
    layer = nn.LazyLinear(2).double().eval()
    layer.register_forward_hook(lambda module, args, output: seen.append(type(module).__name__))
    result = kiln.compile(layer)(np.ones((3, 4)))
    assert seen == ["Linear"] and not layer.training and layer.weight.data.dtype == np.float64 and result.shape == (3, 2)


def test_compile_train_step_after_a_dry_run_trains_in_lockstep_with_torch():
    torch = require("torch")
    model, reference = _lazy_cnn(nn).double(), _lazy_cnn(torch.nn).double()
    x, y = normal(8, 3, 5, 5, dtype="float64"), np.random.default_rng(2).integers(0, 3, 8)
    kiln.compile(model)(x[:2])  # the dry run, in training mode (BatchNorm's running statistics move, as in PyTorch's)
    reference(torch.tensor(x[:2]))
    assert [type(m).__name__ for m in model] == ["Conv2d", "BatchNorm2d", "ReLU", "Flatten", "Linear"]
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.1, steps=5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(model.state_dict()["1.running_mean"], reference.state_dict()["1.running_mean"].numpy(), rtol=1e-8)
