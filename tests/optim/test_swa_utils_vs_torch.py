"""``kiln.optim.swa_utils.AveragedModel`` against ``torch.optim.swa_utils``: EMA and SWA in lockstep with PyTorch's.

The same small float64 MLP with BatchNorm is trained by SGD in kiln (eagerly, or by ``kiln.compile_train_step``)
and in PyTorch from the same initial weights on the same batches; after every step both averaged models are
updated. Every tensor of the averaged models' ``state_dict`` (parameters, running statistics, ``num_batches_tracked``,
``n_averaged``), and the keys in order, agree to 1e-12; then the averaged model predicts as PyTorch's, eagerly and
through ``kiln.compile``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.optim import swa_utils
from oracles import require, torch_twins

STEPS = 20
TOLERANCE = 1e-12


def _mlp(lib):
    nn = lib.nn
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()


AVERAGING = {
    "ema_multi_avg_fn_with_buffers": lambda utils: dict(multi_avg_fn=utils.get_ema_multi_avg_fn(0.9), use_buffers=True),
    "ema_multi_avg_fn": lambda utils: dict(multi_avg_fn=utils.get_ema_multi_avg_fn(0.75)),
    "ema_avg_fn_with_buffers": lambda utils: dict(avg_fn=utils.get_ema_avg_fn(0.8), use_buffers=True),
    "swa_default": lambda utils: dict(),
    "swa_default_with_buffers": lambda utils: dict(use_buffers=True),
    "swa_multi_avg_fn": lambda utils: dict(multi_avg_fn=utils.get_swa_multi_avg_fn()),
    "swa_avg_fn": lambda utils: dict(avg_fn=utils.get_swa_avg_fn()),
    "custom_avg_fn": lambda utils: dict(avg_fn=lambda averaged, current, n: 0.5 * averaged + 0.5 * current - 0.01 * n),
}


def _batches():
    rng = np.random.default_rng(7)
    return [(rng.normal(size=(6, 4)), rng.normal(size=(6, 3))) for _ in range(STEPS)]


def _assert_same_state(ours, theirs, where):
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state), where
    for name, value in their_state.items():
        expected = value.detach().numpy()
        got = np.asarray(ours_state[name])
        assert got.dtype == expected.dtype, f"{where}: {name} is {got.dtype}, torch's {expected.dtype}"
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE, err_msg=f"{where}: {name}")


def _torch_step(torch, model, optimizer, x, y):
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(torch.tensor(x)), torch.tensor(y)).backward()
    optimizer.step()


def _kiln_trainer(model, optimizer, trainer):
    if trainer.startswith("compiled"):
        step = kiln.compile_train_step(model, F.mse_loss, optimizer, backend="onnxruntime" if trainer.endswith("onnxruntime") else "numpy")
        return lambda x, y: step(x, y)

    def eager_step(x, y):
        optimizer.zero_grad()
        F.mse_loss(model(kiln.tensor(x)), kiln.tensor(y)).backward()
        optimizer.step()

    return eager_step


def _train_in_lockstep(torch, averaging, trainer):
    _, model, twin = torch_twins(_mlp, seed=3)
    ours = swa_utils.AveragedModel(model, **AVERAGING[averaging](swa_utils))
    theirs = torch.optim.swa_utils.AveragedModel(twin, **AVERAGING[averaging](torch.optim.swa_utils))
    kiln_step = _kiln_trainer(model, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), trainer)
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    for index, (x, y) in enumerate(_batches()):
        kiln_step(x, y)
        _torch_step(torch, twin, torch_optimizer, x, y)
        ours.update_parameters(model)
        theirs.update_parameters(twin)
        _assert_same_state(ours, theirs, f"{averaging}, {trainer}, after step {index}")
    return ours, theirs


@pytest.mark.parametrize("averaging", sorted(AVERAGING))
def test_averaged_model_follows_torch_with_an_eagerly_trained_model(torch, averaging):
    ours, theirs = _train_in_lockstep(torch, averaging, "eager")
    assert int(ours.n_averaged.data) == int(theirs.n_averaged) == STEPS
    assert ours.n_averaged.data.dtype == np.int64


@pytest.mark.parametrize("averaging", ["ema_multi_avg_fn_with_buffers", "swa_default"])
@pytest.mark.parametrize("trainer", ["compiled", "compiled_onnxruntime"])
def test_averaged_model_follows_torch_with_a_compiled_train_step(torch, averaging, trainer):
    """The step updates the parameters in place (onnxruntime keeps them resident; reading them brings them back)."""
    if trainer.endswith("onnxruntime"):
        require("onnxruntime")
    _train_in_lockstep(torch, averaging, trainer)


def test_the_average_is_not_the_initial_weights(torch):
    """The EMA moved: its weights are new arrays, away from the initial ones."""
    ours, _ = _train_in_lockstep(torch, "ema_multi_avg_fn", "eager")
    _, fresh, _ = torch_twins(_mlp, seed=3)
    weight = ours.module[0].weight.data
    assert not np.allclose(weight, fresh[0].weight.data) and ours.module[0].weight is not fresh[0].weight


@pytest.mark.parametrize("averaging", ["ema_multi_avg_fn_with_buffers", "swa_default"])
def test_the_averaged_model_predicts_as_torchs_eagerly_and_compiled(torch, averaging):
    ours, theirs = _train_in_lockstep(torch, averaging, "eager")
    ours.eval()
    theirs.eval()
    x = np.random.default_rng(1).normal(size=(5, 4))
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    np.testing.assert_allclose(kiln.compile(ours)(x), expected, rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(ours(kiln.tensor(x))), expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_a_compiled_averaged_model_sees_each_update(torch):
    """``kiln.compile(ema)`` feeds the parameters at every call, so updates after the compile change its predictions."""
    _, model, _ = torch_twins(_mlp, seed=3)
    ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.5)).eval()
    predict = kiln.compile(ema)
    x = np.ones((2, 4))
    ema.update_parameters(model)
    before = predict(x)
    model[3].bias.data[...] += 1.0
    ema.update_parameters(model)
    np.testing.assert_allclose(predict(x) - before, 0.5, rtol=1e-12)


def test_a_torch_checkpoint_of_the_averaged_model_loads(torch):
    ours, theirs = _train_in_lockstep(torch, "ema_multi_avg_fn_with_buffers", "eager")
    _, model, _ = torch_twins(_mlp, seed=11)
    restored = swa_utils.AveragedModel(model)
    restored.load_state_dict(theirs.state_dict())
    _assert_same_state(restored, theirs, "loaded")


def test_the_copy_is_deep_and_the_source_is_left_alone(torch):
    _, model, _ = torch_twins(_mlp, seed=3)
    before = {name: np.array(value) for name, value in model.state_dict().items()}
    ema = swa_utils.AveragedModel(model, use_buffers=True)
    assert all(a is not b and not np.shares_memory(a.data, b.data) for a, b in zip(ema.parameters(), model.parameters()))
    model[0].weight.data[...] = 3.0
    ema.update_parameters(model)
    np.testing.assert_array_equal(ema.module[0].weight.data, 3.0)
    model[0].weight.data[...] = 5.0
    ema.update_parameters(model)
    np.testing.assert_array_equal(ema.module[0].weight.data, 4.0)  # the running mean of 3 and 5
    assert set(before) == set(model.state_dict())


def test_errors_say_what_to_give():
    model = kiln.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not both"):
        swa_utils.AveragedModel(model, avg_fn=swa_utils.get_swa_avg_fn(), multi_avg_fn=swa_utils.get_swa_multi_avg_fn())
    with pytest.raises(ValueError, match=r"\[0,1\] range"):
        swa_utils.get_ema_multi_avg_fn(1.5)
    with pytest.raises(ValueError, match=r"\[0,1\] range"):
        swa_utils.get_ema_avg_fn(-0.1)
    with pytest.raises(TypeError, match="kiln Module"):
        swa_utils.AveragedModel(lambda x: x)


def _to_torch(torch, array):
    """A torch tensor of ``array``'s values and dtype (bfloat16 through float32, which holds it exactly)."""
    if array.dtype == kiln.bfloat16.numpy:
        return torch.tensor(array.astype(np.float32)).to(torch.bfloat16)
    return torch.tensor(array)


def _from_torch(tensor):
    return tensor.detach().float().numpy() if str(tensor.dtype) == "torch.bfloat16" else tensor.detach().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("averaging", ["ema_multi_avg_fn", "swa_multi_avg_fn", "swa_default"])
def test_narrow_floats_average_bit_for_bit_as_torch(torch, dtype, averaging):
    """float32 and half weights: PyTorch's lerp (float32 opmath, one rounding of the multiply-add) and running mean."""
    numpy_dtype = kiln.bfloat16.numpy if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(0)
    model, twin = kiln.nn.Linear(33, 16, bias=False).to(numpy_dtype), torch.nn.Linear(33, 16, bias=False).to(getattr(torch, dtype))
    ours = swa_utils.AveragedModel(model, **AVERAGING[averaging](swa_utils))
    theirs = torch.optim.swa_utils.AveragedModel(twin, **AVERAGING[averaging](torch.optim.swa_utils))
    for _ in range(12):
        weight = rng.normal(size=(16, 33)).astype(np.float32).astype(numpy_dtype)
        model.weight.data[...] = weight
        twin.weight.data = _to_torch(torch, weight)
        ours.update_parameters(model)
        theirs.update_parameters(twin)
    got = ours.module.weight.data
    assert got.dtype == numpy_dtype
    np.testing.assert_array_equal(got.astype(np.float32), _from_torch(theirs.module.weight))
