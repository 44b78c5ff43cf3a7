"""Rprop, ASGD and Adafactor against ``torch.optim`` (``foreach=False``, its single-tensor code).

The foundation MLP trains side by side with PyTorch from identical weights and batches: losses, parameters and
optimizer state (PyTorch's ``state_dict`` less ``step``; its 0-d ``eta`` and ``mu`` broadcast to kiln's
parameter-shaped arrays) agree at every step, float32 to rtol 1e-5, float64 over 50 steps to rtol 1e-10. Each
update op also runs alone against PyTorch on random gradients for parameters of rank 0 to 3 (Adafactor's factored
moments on a matrix and a 3-d tensor, its unfactored one on a vector and a scalar), on Rprop's step-size bounds and
sign flips, and on ASGD's averaging after ``t0``. A PyTorch ``state_dict`` loads into kiln and the reverse, both
then continuing in lockstep; a schedule drives each as it drives PyTorch's; the step exports to ONNX and
onnxruntime runs it as the NumPy backend does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import CheckpointError, KilnError
from kiln.compiler.ir import Builder, Graph, TensorType
from kiln.compiler.passes.decompose import Decompose
from test_more_optimizers import assert_constructor_matches_torch, assert_float32_lockstep, assert_same_state, lowered_op_census, onnxruntime_and_numpy_in_lockstep, torch_default_dtype, train_with_state, training
from training_parity import Run, digit_like_batches, side_by_side, torch_step

DATA_SEED = 2

GRID = [
    Run("Rprop", {}),
    Run("Rprop", dict(lr=5e-3, etas=(0.4, 1.5), step_sizes=(1e-4, 2e-2))),
    Run("Rprop", dict(lr=1e-2, maximize=True), groups="no_decay_on_biases"),
    Run("ASGD", {}),
    Run("ASGD", dict(lr=5e-2, lambd=1e-2, alpha=0.6, t0=4, weight_decay=1e-2)),
    Run("ASGD", dict(lr=2e-2, t0=10, maximize=True), groups="no_decay_on_biases"),
    Run("Adafactor", {}),
    Run("Adafactor", dict(lr=5e-2, beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0, weight_decay=1e-1)),
    Run("Adafactor", dict(lr=1e-2, weight_decay=1e-2, maximize=True), groups="no_decay_on_biases"),
]
STATE_NAMES = {"Rprop": {"prev", "step_size"}, "ASGD": {"eta", "mu", "ax"}, "Adafactor": {"row_var", "col_var"}}
"""Of the first parameter, a weight matrix (a bias keeps Adafactor's unfactored ``variance``)."""


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float32_parameters_and_state_match_torch_at_every_step(torch, run: Run):
    assert_float32_lockstep(torch, run, digit_like_batches(25, seed=DATA_SEED), STATE_NAMES[run.optimizer])


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float64_matches_torch_for_50_steps(torch, run: Run):
    with torch_default_dtype(torch, "float64"):  # PyTorch's 0-d ASGD eta and mu in float64 too
        batches = digit_like_batches(50, dtype="float64", seed=DATA_SEED)
        for index, (ours, theirs, our_state, their_state) in enumerate(train_with_state(torch, run, batches, dtype="float64")):
            np.testing.assert_allclose(ours.loss, theirs.loss, rtol=1e-10, err_msg=f"loss at step {index}")
            for name, value in theirs.params.items():
                np.testing.assert_allclose(ours.params[name], value, rtol=1e-10, atol=1e-13, err_msg=f"{name} after step {index}")
            assert_same_state(our_state, their_state, rtol=1e-10, scaled_atol=1e-12, index=index)


# --- each update alone, on random gradients --------------------------------------------------------


def factored(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Adafactor's state shapes for a parameter of this shape."""
    if len(shape) < 2:
        return [shape]
    return [shape[:-1] + (1,), shape[:-2] + (1, shape[-1])]


def update_function(op: str, shape: tuple[int, ...], state_shapes: list[tuple[int, ...]], scalars: bool, **attrs: Any):
    """The update op alone, decomposed and compiled by the NumPy backend: ``(p, g, *state[, lr, step]) -> (p', *state')``."""
    graph = Graph(op)
    inputs = [graph.add_input(TensorType(s, "f64")) for s in [shape, shape, *state_shapes]]
    if scalars:
        inputs += [graph.add_input(TensorType((), "f64")), graph.add_input(TensorType((), "i64"))]
    graph.outputs = list(getattr(Builder(graph), op)(*inputs, **attrs))
    Decompose().run(graph)
    assert not any(o.name.startswith("optim.") for o in graph.ops)
    return NumpyBackend().compile(graph)


def lockstep(torch: Any, optimizer: Any, param: Any, update: Any, state: list[np.ndarray], names: list[str], grads: list[np.ndarray],
             lr: float | None = None, maximize: bool = False) -> list[list[np.ndarray]]:
    """Step PyTorch's optimizer and kiln's update on the same gradients (negated for kiln's update when maximizing, as
    the optimizer does before it); check parameter and state after each step. Returns kiln's ``[param, *state]`` after
    every step."""
    ours, history = [param.detach().numpy().copy(), *state], []
    for step, grad in enumerate(grads, start=1):
        param.grad = torch.tensor(grad)
        optimizer.step()
        scalars = [np.asarray(lr), np.asarray(step, np.int64)] if lr is not None else []
        ours = [np.asarray(a) for a in update(ours[0], -grad if maximize else grad, *ours[1:], *scalars)]
        np.testing.assert_allclose(ours[0], param.detach().numpy(), rtol=1e-10, atol=1e-300, err_msg=f"param after step {step}")
        for name, value in zip(names, ours[1:]):
            expected = np.broadcast_to(optimizer.state[param][name].numpy(), value.shape)
            np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-300, err_msg=f"{name} after step {step}")
        history.append(ours)
    return history


def random_grads(shape: tuple[int, ...], count: int = 50, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(count)]


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("options", [{}, dict(eps=(1e-3, 1e-1), d=1.5, weight_decay=0.1, beta2_decay=-0.6), dict(lr=0.5, maximize=True)],
                         ids=["defaults", "options", "relative_step_maximize"])
def test_adafactor_update_matches_torch_for_each_rank(torch, shape, options):
    """Rank >= 2: factored row/column moments (a 3-d tensor factors its last two dims, per leading index); rank <= 1:
    one moment like the parameter. lr 0.5 makes the relative step ``1/sqrt(t)`` the smaller until step 5."""
    lr = options.get("lr", 1e-2)
    (eps1, eps2) = options.get("eps", (None, 1e-3))
    attrs = dict(beta2_decay=options.get("beta2_decay", -0.8), eps1=eps1 or float(np.finfo(np.float64).eps), eps2=eps2,
                 d=options.get("d", 1.0), weight_decay=options.get("weight_decay", 0.0))
    update = update_function("adafactor_update", shape, factored(shape), scalars=True, **attrs)
    param = torch.tensor(np.random.default_rng(1).standard_normal(shape), requires_grad=True)
    optimizer = torch.optim.Adafactor([param], foreach=False, **options)
    names = ["row_var", "col_var"] if len(shape) > 1 else ["variance"]
    lockstep(torch, optimizer, param, update, [np.zeros(s) for s in factored(shape)], names, random_grads(shape), lr=lr, maximize=options.get("maximize", False))
    assert [tuple(optimizer.state[param][name].shape) for name in names] == factored(shape)


def test_adafactor_clips_the_update_to_rms_d(torch):
    """Gradients of very different scales across steps make ``rms(u) > d``: the step is divided by ``rms(u) / d``."""
    shape = (4, 6)
    update = update_function("adafactor_update", shape, factored(shape), scalars=True,
                             beta2_decay=-0.8, eps1=float(np.finfo(np.float64).eps), eps2=1e-3, d=1.0, weight_decay=0.0)
    param = torch.tensor(np.ones(shape), requires_grad=True)
    optimizer = torch.optim.Adafactor([param], lr=0.1, foreach=False)
    grads = [g * (100.0 if step % 5 == 4 else 1e-2) for step, g in enumerate(random_grads(shape, 20, seed=3))]
    history = lockstep(torch, optimizer, param, update, [np.zeros(s) for s in factored(shape)], ["row_var", "col_var"], grads, lr=0.1)
    row, col = history[3][1], history[3][2]  # the moments the 100x gradient of step 5 meets
    estimate = row * col / np.maximum(row.mean(axis=-2, keepdims=True), np.finfo(np.float64).eps)
    assert np.sqrt(np.mean(grads[4] ** 2 / estimate)) > 10  # so that step was clipped


@pytest.mark.parametrize("shape", [(), (7,), (3, 4)], ids=str)
@pytest.mark.parametrize("options", [dict(lr=0.01), dict(lr=0.2, etas=(0.3, 1.9), step_sizes=(0.05, 0.5)), dict(lr=0.01, maximize=True)],
                         ids=["defaults", "tight_bounds", "maximize"])
def test_rprop_update_matches_torch(torch, shape, options):
    etaminus, etaplus = options.get("etas", (0.5, 1.2))
    low, high = options.get("step_sizes", (1e-6, 50))
    update = update_function("rprop_update", shape, [shape, shape], scalars=False,
                             etaminus=etaminus, etaplus=etaplus, step_size_min=low, step_size_max=high)
    param = torch.tensor(np.random.default_rng(1).standard_normal(shape), requires_grad=True)
    optimizer = torch.optim.Rprop([param], foreach=False, **options)
    grads = random_grads(shape)
    grads[10:20] = [np.abs(g) + 0.1 for g in grads[10:20]]  # a run of one sign: the step sizes grow to the upper bound
    grads[20][...] = 0.0  # no sign information: the step sizes stay
    lockstep(torch, optimizer, param, update, [np.zeros(shape), np.full(shape, options["lr"])], ["prev", "step_size"], grads,
             maximize=options.get("maximize", False))


def test_rprop_grows_shrinks_and_bounds_the_step_and_skips_a_flipped_gradient():
    update = update_function("rprop_update", (4,), [(4,), (4,)], scalars=False, etaminus=0.5, etaplus=2.0, step_size_min=0.1, step_size_max=0.8)
    param, prev, step_size = np.zeros(4), np.array([1.0, 1.0, -1.0, 0.0]), np.array([0.5, 0.15, 0.3, 0.3])
    grad = np.array([3.0, -2.0, -1e-9, 5.0])  # same sign, flipped, same sign, no previous gradient
    new_param, new_prev, new_step_size = (np.asarray(a) for a in update(param, grad, prev, step_size))
    np.testing.assert_array_equal(new_step_size, [0.8, 0.1, 0.6, 0.3])  # 1.0 capped to 0.8; 0.075 raised to 0.1
    np.testing.assert_array_equal(new_prev, [3.0, 0.0, -1e-9, 5.0])  # the flipped gradient is forgotten...
    np.testing.assert_array_equal(new_param, [-0.8, 0.0, 0.6, -0.3])  # ...and its weight does not move; |g| plays no part


@pytest.mark.parametrize("options", [dict(lr=0.05, t0=10, lambd=1e-2, weight_decay=0.1), dict(lr=0.02, t0=3.5, alpha=0.9, maximize=True)],
                         ids=["t0_10_weight_decay", "t0_3.5_maximize"])
def test_asgd_update_matches_torch_and_averages_after_t0(torch, options):
    lr = options["lr"]
    attrs = dict(lambd=options.get("lambd", 1e-4), alpha=options.get("alpha", 0.75), t0=float(options["t0"]), weight_decay=options.get("weight_decay", 0.0))
    update = update_function("asgd_update", (3, 4), [(3, 4)] * 3, scalars=True, **attrs)
    with torch_default_dtype(torch, "float64"):  # eta and mu in float64 (PyTorch's scalar dtype follows the default)
        param = torch.tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
        optimizer = torch.optim.ASGD([param], foreach=False, **options)
        history = lockstep(torch, optimizer, param, update, [np.full((3, 4), lr), np.ones((3, 4)), np.zeros((3, 4))], ["eta", "mu", "ax"],
                           random_grads((3, 4)), lr=lr, maximize=options.get("maximize", False))
    # mu_t = 1 / max(1, t - t0) after step t: ax is the parameter itself through step t0 + 1 (integer t0: + 2), then
    # averages; for an integer t0 it is the mean of the iterates from step t0 + 2 on
    first = next(t for t in range(1, 51) if 1 / max(1, t - options["t0"]) != 1) + 1  # the first step averaging
    for t in range(1, first):
        np.testing.assert_array_equal(history[t - 1][3], history[t - 1][0])
    assert not np.array_equal(history[first - 1][3], history[first - 1][0])
    if float(options["t0"]).is_integer():
        np.testing.assert_allclose(history[-1][3], np.mean([h[0] for h in history[first - 2 :]], axis=0), rtol=1e-12)
    assert np.all(history[-1][1] == history[-1][1].flat[0])  # eta is one value per parameter


def test_asgd_before_averaging_ax_is_the_parameter_itself():
    """While ``mu`` is 1, ``ax`` is a copy of the new parameter (PyTorch's ``ax.copy_(param)``), not ``ax + (p - ax)``,
    which loses the parameter next to a large ``ax`` (a loaded state)."""
    update = update_function("asgd_update", (3,), [(3,)] * 3, scalars=True, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0)
    param, grad = np.array([1e-3, -2.0, 3e-7]), np.array([0.5, -0.25, 1.0])
    new_param, _, _, new_ax = (np.asarray(a) for a in update(param, grad, np.full(3, 0.1), np.ones(3), np.full(3, 1e20), np.asarray(0.1), np.asarray(7, np.int64)))
    np.testing.assert_array_equal(new_ax, new_param)


def test_adafactor_first_step_moments_are_this_gradients_whatever_the_state(torch):
    """At step 1 the moments' weight ``1 - beta2_1 = 1``: torch.lerp's ``end - (end - start)(1 - w)`` gives the new mean
    squares exactly, where ``start + w (end - start)`` would lose them next to a large state (a loaded one)."""
    update = update_function("adafactor_update", (3, 4), factored((3, 4)), scalars=True,
                             beta2_decay=-0.8, eps1=1e-30, eps2=1e-3, d=1.0, weight_decay=0.0)
    grad = np.random.default_rng(4).standard_normal((3, 4)) * 1e-3
    _, row, col = (np.asarray(a) for a in update(np.ones((3, 4)), grad, np.full((3, 1), 1e20), np.full((1, 4), 1e20), np.asarray(0.01), np.asarray(1, np.int64)))
    g = torch.tensor(grad)
    np.testing.assert_allclose(row, (torch.norm(g, dim=-1, keepdim=True).square() / 4).numpy(), rtol=1e-12)
    np.testing.assert_allclose(col, (torch.norm(g, dim=-2, keepdim=True).square() / 3).numpy(), rtol=1e-12)


# --- state_dict interop, schedules, options ----------------------------------------------------------


INTEROP = [
    Run("Rprop", dict(lr=1e-2, etas=(0.4, 1.3))),
    Run("ASGD", dict(lr=5e-2, t0=2, weight_decay=1e-2)),
    Run("Adafactor", dict(lr=2e-2, weight_decay=1e-2)),
]


def from_torch(optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
    """A ``torch.optim`` ``state_dict`` as kiln's: arrays, string keys, one ``step``; options kiln knows."""
    return {
        "state": {str(k): {name: v.numpy() for name, v in entry.items() if name != "step"} for k, entry in state["state"].items()},
        "param_groups": [{**{k: v for k, v in g.items() if k in optimizer.defaults}, "params": [str(i) for i in g["params"]]}
                         for g in state["param_groups"]],
        "step": int(state["state"][0]["step"]),
    }


def to_torch(torch: Any, optimizer: Any, torch_optimizer: Any) -> dict[str, Any]:
    """kiln's state as a ``torch.optim`` ``state_dict``: tensors, scalar states 0-d, each parameter's ``step``."""
    ours = optimizer.kiln_state_dict()
    theirs = torch_optimizer.state_dict()
    state = {}
    for key, entry in ours["state"].items():
        tensors = {name: torch.tensor(value.reshape(-1)[0] if name in optimizer.scalar_states else value) for name, value in entry.items()}
        state[int(key)] = {"step": torch.tensor(float(ours["step"])), **tensors}
    groups = [{**theirs_group, **{k: v for k, v in group.items() if k != "params"}}
              for theirs_group, group in zip(theirs["param_groups"], ours["param_groups"])]
    return {"state": state, "param_groups": groups}


@pytest.mark.parametrize("run", INTEROP, ids=lambda run: run.optimizer)
def test_a_torch_state_dict_loads_and_the_run_continues_in_lockstep(torch, run: Run):
    batches = digit_like_batches(8, seed=DATA_SEED)
    model, reference, optimizer, torch_optimizer, step = side_by_side(torch, run)
    for x, y in batches[:4]:
        torch_step(torch, reference, torch_optimizer, x, y, run.options)
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    optimizer.load_state_dict(from_torch(optimizer, torch_optimizer.state_dict()))
    assert optimizer.step_count == 4
    for x, y in batches[4:]:
        np.testing.assert_allclose(step(x, y), torch_step(torch, reference, torch_optimizer, x, y, run.options), rtol=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-5, atol=5e-5, err_msg=name)


@pytest.mark.parametrize("run", INTEROP, ids=lambda run: run.optimizer)
def test_kilns_state_dict_loads_into_torch_and_the_run_continues_in_lockstep(torch, run: Run):
    batches = digit_like_batches(8, seed=DATA_SEED)
    model, reference, optimizer, torch_optimizer, step = side_by_side(torch, run)
    for x, y in batches[:4]:
        step(x, y)
    reference.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    torch_optimizer.load_state_dict(to_torch(torch, optimizer, torch_optimizer))
    for x, y in batches[4:]:
        np.testing.assert_allclose(torch_step(torch, reference, torch_optimizer, x, y, run.options), step(x, y), rtol=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(value.numpy(), model.state_dict()[name], rtol=1e-5, atol=5e-5, err_msg=name)


def test_adafactor_state_has_the_factored_shapes_and_a_wrong_shape_does_not_load():
    step, optimizer, model = training(Run("Adafactor", {}), seed=0)
    step(*digit_like_batches(1, seed=DATA_SEED)[0])
    state = optimizer.kiln_state_dict()["state"]
    weight, bias = (p.data for p in list(model.parameters())[:2])
    assert {k: v.shape for k, v in state["0"].items()} == {"row_var": (weight.shape[0], 1), "col_var": (1, weight.shape[1])}
    assert {k: v.shape for k, v in state["1"].items()} == {"variance": bias.shape}
    saved = optimizer.kiln_state_dict()
    saved["state"] = {**saved["state"], "0": {"row_var": np.zeros(weight.shape), "col_var": state["0"]["col_var"]}}
    with pytest.raises(CheckpointError, match=r"0.row_var has shape \(128, 64\), the parameter \(128, 64\) \(this state \(128, 1\)\)"):
        optimizer.load_state_dict(saved)


SCHEDULED = [
    (Run("ASGD", dict(lr=5e-2, t0=5)), lambda s, o: s.StepLR(o, step_size=4, gamma=0.5)),
    (Run("Adafactor", dict(lr=5e-2)), lambda s, o: s.LinearLR(o, start_factor=0.1, total_iters=6)),
    (Run("Rprop", dict(lr=1e-2)), lambda s, o: s.LinearLR(o, start_factor=0.5, total_iters=6)),  # lr read once, warmed
]


@pytest.mark.parametrize(("run", "schedule"), SCHEDULED, ids=lambda value: value.optimizer if isinstance(value, Run) else "")
def test_a_schedule_drives_the_optimizer_as_torchs(torch, run: Run, schedule):
    """The schedule changes ``lr`` between steps without recompiling; ASGD's next ``eta`` and Adafactor's relative step
    follow it, and Rprop's step sizes start from the (warmed-up) lr of its first step, as in PyTorch."""
    model, reference, optimizer, torch_optimizer, step = side_by_side(torch, run)
    ours, theirs = schedule(kiln.optim.lr_scheduler, optimizer), schedule(torch.optim.lr_scheduler, torch_optimizer)
    for index, (x, y) in enumerate(digit_like_batches(12, seed=DATA_SEED)):
        np.testing.assert_allclose(step(x, y), torch_step(torch, reference, torch_optimizer, x, y, run.options), rtol=1e-5, err_msg=f"step {index}")
        ours.step()
        theirs.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(torch_optimizer.param_groups[0]["lr"], rel=1e-12)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-5, atol=5e-5, err_msg=name)
    assert step.compile_count == 1


ORT_RUNS = [
    Run("Rprop", dict(lr=1e-2, maximize=True)),
    Run("ASGD", dict(lr=5e-2, t0=3, weight_decay=1e-2)),
    Run("Adafactor", dict(lr=2e-2, weight_decay=1e-2)),
]


@pytest.mark.parametrize("run", ORT_RUNS, ids=lambda run: run.optimizer)
def test_onnxruntime_step_matches_numpy(run: Run):
    """The whole step, update included, exported to ONNX and run by onnxruntime (10 steps: ASGD averages from step 5)."""
    # Rprop's step is the sign of a product of gradients: float32 rounding that differs between onnxruntime and NumPy
    # can flip it where that product is ~0 (data seed 1 flips one weight of 640 by one step size, 0.01)
    ort_step, ort_optimizer, numpy_step = onnxruntime_and_numpy_in_lockstep(run, data_seed=DATA_SEED)
    ort_state = ort_step.state_dict()["optimizer"]["state"]
    for key, entry in numpy_step.state_dict()["optimizer"]["state"].items():
        for name, value in entry.items():
            np.testing.assert_allclose(ort_state[key][name], value, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(value))), err_msg=f"{key}.{name}")
    assert ort_step.compile_count == 1 and ort_optimizer.step_count == 10


@pytest.mark.parametrize("name", ["Rprop", "ASGD", "Adafactor"])
def test_numpy_backend_expands_each_update_into_fused_kernels(name):
    """No update op is left; Rprop's and ASGD's (elementwise) fuse into the gradients' matmul epilogues at least as Adam's do.
    Adafactor's read reductions of the whole gradient and parameter (RMS, row and column means) first."""
    census = lowered_op_census(name)
    assert not any(op.startswith("optim.") for op in census)
    if name != "Adafactor":
        assert census["fused.matmul"] >= lowered_op_census("Adam")["fused.matmul"]


@pytest.mark.parametrize("name", ["Rprop", "ASGD", "Adafactor"])
def test_constructor_arguments_and_defaults_are_torchs(torch, name):
    """Same names, order, defaults and kinds (ASGD's ``maximize`` positional after ``foreach``, as PyTorch's)."""
    assert_constructor_matches_torch(torch, name, same_kinds=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: kiln.optim.Rprop(p, etas=(0.5, 0.9)), r"Rprop: invalid etas \(0.5, 0.9\)"),
        (lambda p: kiln.optim.Rprop(p, lr=-1.0), r"Rprop: invalid lr"),
        (lambda p: kiln.optim.ASGD(p, weight_decay=-1.0), r"ASGD: invalid weight_decay"),
        (lambda p: kiln.optim.Adafactor(p, beta2_decay=0.5), r"Adafactor: invalid beta2_decay 0.5"),
        (lambda p: kiln.optim.Adafactor(p, eps=(None, -1.0)), r"Adafactor: invalid eps"),
        (lambda p: kiln.optim.Adafactor(p, d=0.5), r"Adafactor: invalid d 0.5"),
    ],
)
def test_invalid_options_say_what_is_wrong(make, message):
    with pytest.raises(KilnError, match=message):
        make(nn.Linear(2, 2).parameters())


def test_a_3d_parameter_trains_with_adafactor_as_in_torch(torch):
    """A model whose weight is 3-d (a batched matmul): Adafactor factors its last two dims, per leading index."""

    class Batched(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(np.random.default_rng(0).standard_normal((3, 4, 2)))

        def forward(self, x):
            return (x @ self.weight).sum(0)

    model = Batched()
    step = kiln.compile_train_step(model, F.mse_loss, kiln.optim.Adafactor(model.parameters(), lr=0.05, weight_decay=0.1))
    weight = torch.tensor(np.random.default_rng(0).standard_normal((3, 4, 2)), requires_grad=True)
    optimizer = torch.optim.Adafactor([weight], lr=0.05, weight_decay=0.1, foreach=False)
    rng = np.random.default_rng(1)
    for index in range(20):
        x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
        loss = torch.nn.functional.mse_loss((torch.tensor(x) @ weight).sum(0), torch.tensor(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        np.testing.assert_allclose(step(x, y), loss.item(), rtol=1e-10, err_msg=f"loss at step {index}")
        np.testing.assert_allclose(model.weight.data, weight.detach().numpy(), rtol=1e-10, err_msg=f"weight after step {index}")
    assert step.optimizer.state_of(model.weight)["col_var"].shape == (3, 1, 2)
