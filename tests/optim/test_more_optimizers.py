"""Adamax, NAdam, RAdam and Adadelta against ``torch.optim``: the foundation MLP from identical weights and batches.

Besides losses and parameters (as ``test_optimizer_parity.py``), each step compares the optimizers' state: the
same names as PyTorch's ``state_dict`` less its per-parameter ``step`` (kiln counts steps once, in
``step_count``), and the same values. NAdam's ``mu_product`` is a 0-d tensor in PyTorch and an array shaped like
the parameter here (every element that scalar): the comparison broadcasts PyTorch's.

Float32: losses and state to rtol 1e-5 at every step. Adaptive steps divide by a running gradient scale, so float
noise in a near-zero gradient moves a weight by a noise-sized fraction of lr: parameters get an absolute 5e-5
(measured: up to 1.1e-5, NAdam at lr 1e-2), state arrays 1e-4 of their largest element (measured: up to 1.1e-5).
Float64 pins the formulas: every deviation under 1e-12 (measured: under 3e-14).
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter
from typing import Any, Iterator

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from e2e.models import MLP
from kiln.backends.numpy import NumpyBackend
from kiln.backends.numpy.fusion import expands_for_fusion, lower_for_fusion
from kiln.compiler.errors import KilnError
from kiln.compiler.ir import Builder, Graph, TensorType
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.passes.decompose import Decompose
from oracles import require
from training_parity import Run, Side, digit_like_batches, side_by_side, torch_step

STEPS = 25
DATA_SEED = 1

GRID = [
    Run("Adamax", {}),
    Run("Adamax", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    Run("Adamax", dict(lr=5e-3, weight_decay=1e-2, maximize=True), groups="no_decay_on_biases"),
    Run("NAdam", {}),
    Run("NAdam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, momentum_decay=1e-2)),
    Run("NAdam", dict(lr=5e-3, weight_decay=1e-1, decoupled_weight_decay=True), groups="no_decay_on_biases"),
    Run("NAdam", dict(lr=2e-3, maximize=True)),
    Run("RAdam", {}),
    Run("RAdam", dict(lr=1e-2, weight_decay=1e-2, eps=1e-6)),
    Run("RAdam", dict(lr=5e-3, betas=(0.8, 0.99), weight_decay=1e-1, decoupled_weight_decay=True), groups="no_decay_on_biases"),
    Run("RAdam", dict(lr=1e-3, maximize=True)),
    Run("Adadelta", {}),
    Run("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=1e-2)),
    Run("Adadelta", dict(lr=1.0, weight_decay=1e-2, maximize=True), groups="no_decay_on_biases"),
]
STATE_NAMES = {
    "Adamax": {"exp_avg", "exp_inf"}, "NAdam": {"mu_product", "exp_avg", "exp_avg_sq"},
    "RAdam": {"exp_avg", "exp_avg_sq"}, "Adadelta": {"square_avg", "acc_delta"},
    "Rprop": {"prev", "step_size"}, "ASGD": {"eta", "mu", "ax"}, "Adafactor": {"row_var", "col_var"},  # the first parameter's, a matrix
}
UPDATE_OPS = {"Adamax": "optim.adamax_update", "NAdam": "optim.nadam_update", "RAdam": "optim.radam_update", "Adadelta": "optim.adadelta_update"}


@contextlib.contextmanager
def torch_default_dtype(torch: Any, dtype: str) -> Iterator[None]:
    """PyTorch and kiln keep NAdam's ``mu_product`` (ASGD's ``eta``, ``mu``) in the default dtype's float32 or
    float64, float32 even for float64 parameters. Float64 runs make float64 the default on both sides."""
    before, kiln_before = torch.get_default_dtype(), kiln.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    kiln.set_default_dtype(getattr(kiln, dtype))
    try:
        yield
    finally:
        torch.set_default_dtype(before)
        kiln.set_default_dtype(kiln_before)


def train_with_state(
    torch: Any, run: Run, batches: list[tuple[np.ndarray, np.ndarray]], dtype: str = "float32"
) -> Iterator[tuple[Side, Side, dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]]:
    """``train_side_by_side`` that also yields both optimizers' state after every step, keyed by parameter position
    (PyTorch's ``step`` entries checked against kiln's ``step_count`` and left out)."""
    model, reference, optimizer, torch_optimizer, step = side_by_side(torch, run, dtype)
    for x, y in batches:
        loss, torch_loss = step(x, y), torch_step(torch, reference, torch_optimizer, x, y, run.options)
        theirs = {}
        for key, entry in torch_optimizer.state_dict()["state"].items():
            assert float(entry["step"]) == optimizer.step_count
            theirs[str(key)] = {name: value.numpy() for name, value in entry.items() if name != "step"}
        yield (Side(loss, model.state_dict()), Side(torch_loss, {k: v.numpy() for k, v in reference.state_dict().items()}),
               optimizer.kiln_state_dict()["state"], theirs)
    assert step.compile_count == 1  # one graph for every step: RAdam's switch is data, not Python control flow


def assert_same_state(ours: dict[str, dict[str, np.ndarray]], theirs: dict[str, dict[str, np.ndarray]], rtol: float, scaled_atol: float, index: int) -> None:
    """Same parameters, same state names, same values (PyTorch's 0-d ``mu_product`` broadcast to the parameter's shape)."""
    assert set(ours) == set(theirs)
    for key, entry in theirs.items():
        assert set(ours[key]) == set(entry), f"state names of parameter {key}"
        for name, value in entry.items():
            expected = np.broadcast_to(value, ours[key][name].shape)
            atol = scaled_atol * float(np.max(np.abs(expected)))
            np.testing.assert_allclose(ours[key][name], expected, rtol=rtol, atol=atol, err_msg=f"{key}.{name} after step {index}")


def max_parameter_deviation(ours: Side, theirs: Side) -> float:
    return max(float(np.max(np.abs(ours.params[name] - value))) for name, value in theirs.params.items())


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float32_parameters_and_state_match_torch_at_every_step(torch, run: Run):
    assert_float32_lockstep(torch, run, digit_like_batches(STEPS, seed=DATA_SEED), STATE_NAMES[run.optimizer])


def assert_float32_lockstep(torch: Any, run: Run, batches: Any, state_names: set[str]) -> None:
    """Loss, parameters and optimizer state equal torch's after every step, at float32's tolerances."""
    for index, (ours, theirs, our_state, their_state) in enumerate(train_with_state(torch, run, batches)):
        np.testing.assert_allclose(ours.loss, theirs.loss, rtol=1e-5, err_msg=f"loss at step {index}")
        for name, value in theirs.params.items():
            np.testing.assert_allclose(ours.params[name], value, rtol=1e-5, atol=5e-5, err_msg=f"{name} after step {index}")
        assert_same_state(our_state, their_state, rtol=1e-5, scaled_atol=1e-4, index=index)
        assert set(our_state["0"]) == state_names


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float64_formulas_match_torch_exactly(torch, run: Run):
    with torch_default_dtype(torch, "float64"):
        batches = digit_like_batches(20, dtype="float64")
        for index, (ours, theirs, our_state, their_state) in enumerate(train_with_state(torch, run, batches, dtype="float64")):
            np.testing.assert_allclose(ours.loss, theirs.loss, rtol=1e-12, err_msg=f"loss at step {index}")
            assert max_parameter_deviation(ours, theirs) < 1e-12, f"step {index}"
            assert_same_state(our_state, their_state, rtol=1e-12, scaled_atol=1e-12, index=index)


def rho(beta2: float, step: int) -> float:
    """RAdam's length of the approximated simple moving average; the adaptive step starts once it exceeds 5."""
    return 2 / (1 - beta2) - 1 - 2 * step * beta2**step / (1 - beta2**step)


@pytest.mark.parametrize("run", [run for run in GRID if run.optimizer == "RAdam"], ids=lambda run: run.id)
def test_every_radam_run_crosses_into_the_rectified_regime(run: Run):
    """The parity runs cover both of RAdam's branches: plain momentum SGD for the first steps, then rectified Adam."""
    beta2 = run.arguments.get("betas", (0.9, 0.999))[1]
    tractable = [rho(beta2, step) > 5 for step in range(1, 21)]
    assert not tractable[0] and tractable[-1] and tractable == sorted(tractable)


def radam_op_graph(shape: tuple[int, ...]) -> Graph:
    graph = Graph("radam")
    inputs = [graph.add_input(TensorType(shape, "f64")) for _ in range(4)] + [graph.add_input(TensorType((), "f64")), graph.add_input(TensorType((), "i64"))]
    graph.outputs = list(Builder(graph).radam_update(*inputs))
    return graph


def test_radam_switch_is_a_where_on_step_scalars_and_matches_torch_on_both_sides(torch):
    """The decomposition selects with ``tensor.where`` on a 0-d condition computed from the step input; run for steps
    1 to 10 it is torch's RAdam on both sides of rho_t = 5 (steps 1-5 plain, 6-10 rectified)."""
    graph = radam_op_graph((3, 4))
    Decompose().run(graph)
    wheres = [op for op in graph.ops if op.name == "tensor.where"]
    assert wheres and all(op.operands[0].type == TensorType((), "bool") for op in wheres)
    run_update = NumpyBackend().compile(graph)
    rng = np.random.default_rng(0)
    param = torch.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    optimizer = torch.optim.RAdam([param], lr=0.01, foreach=False)
    ours = [param.detach().numpy().copy(), np.zeros((3, 4)), np.zeros((3, 4))]
    for step in range(1, 11):
        grad = rng.standard_normal((3, 4))
        param.grad = torch.tensor(grad)
        optimizer.step()
        ours = [np.asarray(a) for a in run_update(ours[0], grad, ours[1], ours[2], np.asarray(0.01), np.asarray(step, np.int64))]
        np.testing.assert_allclose(ours[0], param.detach().numpy(), rtol=1e-14, atol=1e-15, err_msg=f"step {step}")
        state = optimizer.state[param]
        np.testing.assert_allclose(ours[1], state["exp_avg"].numpy(), rtol=1e-14)
        np.testing.assert_allclose(ours[2], state["exp_avg_sq"].numpy(), rtol=1e-14)
    assert [rho(0.999, step) > 5 for step in (5, 6)] == [False, True]


RESUMED = [
    Run("Adamax", dict(lr=1e-2, weight_decay=1e-2)),
    Run("NAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)),
    Run("RAdam", dict(lr=1e-2, weight_decay=1e-2)),
    Run("Adadelta", dict(lr=1.0, rho=0.8)),
    Run("Rprop", dict(lr=1e-2)),
    Run("ASGD", dict(lr=5e-2, t0=2)),  # averaging before the save and after
    Run("Adafactor", {}),  # eps (None, 1e-3) saved and restored
]


def training(run: Run, seed: int, **options: Any) -> tuple[kiln.TrainStep, kiln.optim.Optimizer, nn.Module]:
    kiln.manual_seed(seed)
    model = MLP()
    optimizer = getattr(kiln.optim, run.optimizer)(model.parameters(), **run.arguments)
    return kiln.compile_train_step(model, F.cross_entropy, optimizer, **options), optimizer, model


def snapshot(step: kiln.TrainStep) -> dict[str, Any]:
    state = step.state_dict()
    return {"model": {k: v.copy() for k, v in state["model"].items()},
            "optimizer": {k: {n: a.copy() for n, a in v.items()} for k, v in state["optimizer"]["state"].items()},
            "step": state["optimizer"]["step"]}


@pytest.mark.parametrize("run", RESUMED, ids=lambda run: run.id)
def test_a_checkpoint_saved_mid_run_resumes_exactly(run: Run, tmp_path):
    """Save after 4 steps (RAdam still un-rectified), train 8 more; a fresh model and optimizer loaded from the file
    take the same 8 steps bit for bit (the state and the step counter came back)."""
    batches = digit_like_batches(12, seed=DATA_SEED)
    step, optimizer, _ = training(run, seed=0)
    for x, y in batches[:4]:
        step(x, y)
    step.save(str(tmp_path / "mid.kiln"))
    losses = [step(x, y) for x, y in batches[4:]]
    expected = snapshot(step)
    resumed, resumed_optimizer, _ = training(run, seed=1)  # other initial weights, empty state
    resumed.load(str(tmp_path / "mid.kiln"))
    assert resumed_optimizer.step_count == 4
    assert set(resumed_optimizer.kiln_state_dict()["state"]["0"]) == STATE_NAMES[run.optimizer]
    assert [resumed(x, y) for x, y in batches[4:]] == losses
    again = snapshot(resumed)
    assert again["step"] == expected["step"] == 12
    for key, value in expected["model"].items():
        np.testing.assert_array_equal(again["model"][key], value, err_msg=key)
    for key, entry in expected["optimizer"].items():
        for name, value in entry.items():
            np.testing.assert_array_equal(again["optimizer"][key][name], value, err_msg=f"{key}.{name}")


ORT_RUNS = [
    Run("Adamax", dict(lr=1e-2, weight_decay=1e-2)),
    Run("NAdam", dict(lr=1e-2, weight_decay=1e-2)),
    Run("NAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True, maximize=True)),
    Run("RAdam", dict(lr=1e-2)),
    Run("RAdam", dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)),
    Run("Adadelta", dict(lr=1.0, weight_decay=1e-2)),
]


@pytest.mark.parametrize("run", ORT_RUNS, ids=lambda run: run.id)
def test_onnxruntime_step_matches_numpy(run: Run):
    """The step exported to ONNX and run by onnxruntime gives NumPy's losses and parameters (10 steps: RAdam crosses)."""
    ort_step, ort_optimizer, _ = onnxruntime_and_numpy_in_lockstep(run)
    assert ort_step.compile_count == 1 and ort_optimizer.step_count == 10


def onnxruntime_and_numpy_in_lockstep(run: Run, steps: int = 10, data_seed: int = DATA_SEED) -> tuple[Any, Any, Any]:
    """Train ``run`` on onnxruntime and on NumPy from one seed; losses and parameters agree at rtol 1e-5. Returns the
    onnxruntime step, its optimizer and the NumPy step."""
    require("onnxruntime")
    batches = digit_like_batches(steps, seed=data_seed)
    numpy_step, _, numpy_model = training(run, seed=0)
    ort_step, ort_optimizer, ort_model = training(run, seed=0, backend="onnxruntime")
    for index, (x, y) in enumerate(batches):
        np.testing.assert_allclose(ort_step(x, y), numpy_step(x, y), rtol=1e-5, err_msg=f"loss at step {index}")
    ours, theirs = ort_model.state_dict(), numpy_model.state_dict()
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, atol=5e-5, err_msg=name)
    return ort_step, ort_optimizer, numpy_step


@pytest.mark.parametrize("run", [GRID[1], GRID[4], GRID[9], GRID[12]], ids=lambda run: run.optimizer)
def test_each_update_is_one_op_per_parameter_with_options_as_attributes(run: Run):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    optimizer = getattr(kiln.optim, run.optimizer)(model.parameters(), **run.arguments)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer, pipeline="cse,dce")  # keeps the optim ops
    step(np.ones((2, 4), np.float32), np.array([0, 2]))
    updates = [op for op in step.graph.ops if op.name == UPDATE_OPS[run.optimizer]]
    assert len(updates) == 4
    names = [value.name_hint for value in updates[0].operands]
    assert names[-1] == ("lr" if run.optimizer == "Adadelta" else "step")  # Adadelta alone never reads the step
    assert [r.name_hint for r in updates[0].results][1:] == [f"0.weight.{name}.new" for name in optimizer.state_names(optimizer.param_groups[0])]
    for key, value in run.arguments.items():
        if key in updates[0].attrs:
            assert updates[0].attrs[key] == value


def lowered_op_census(name: str) -> Counter:
    """The ops of a small step's graph after the NumPy backend's lowering (updates expanded, then fused)."""
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    step = kiln.compile_train_step(model, F.cross_entropy, getattr(kiln.optim, name)(model.parameters()), pipeline="cse,dce")
    step(np.ones((2, 4), np.float32), np.array([0, 2]))
    assert all(expands_for_fusion(op) for op in step.graph.ops if op.name.startswith("optim."))
    graph = clone_graph(step.graph)
    lower_for_fusion(graph)
    return Counter(op.name for op in graph.ops if op.name != "tensor.constant")


@pytest.mark.parametrize("name", ["Adamax", "NAdam", "RAdam", "Adadelta"])
def test_numpy_backend_expands_and_fuses_the_update_as_adams(name):
    """No update op is left after lowering: each fused into its gradient's matmul epilogue, as Adam's do."""
    census = lowered_op_census(name)
    assert not any(op.startswith("optim.") for op in census)
    assert census == lowered_op_census("Adam")


@pytest.mark.parametrize("name", ["Adamax", "NAdam", "RAdam", "Adadelta"])
def test_constructor_arguments_and_defaults_are_torchs(torch, name):
    assert_constructor_matches_torch(torch, name, same_kinds=True)


def assert_constructor_matches_torch(torch: Any, name: str, same_kinds: bool) -> Any:
    """The same argument names in the same order with the same defaults (and kinds) as ``torch.optim.<name>``,
    PyTorch's implementation flags included (``frontend/optim_flags.py``); returns kiln's parameters."""
    ours = inspect.signature(getattr(kiln.optim, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    shared = list(theirs)
    assert list(ours) == shared
    for parameter in shared[1:]:
        assert ours[parameter].default == theirs[parameter].default, parameter
        assert not same_kinds or ours[parameter].kind == theirs[parameter].kind, parameter
    return ours


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: kiln.optim.Adamax(p, betas=(0.9, 1.0)), r"Adamax: invalid betas"),
        (lambda p: kiln.optim.NAdam(p, momentum_decay=-1.0), r"NAdam: invalid momentum_decay"),
        (lambda p: kiln.optim.RAdam(p, eps=-1.0), r"RAdam: invalid eps"),
        (lambda p: kiln.optim.Adadelta(p, rho=1.5), r"Adadelta: invalid rho 1.5"),
    ],
)
def test_invalid_options_say_what_is_wrong(make, message):
    with pytest.raises(KilnError, match=message):
        make(nn.Linear(2, 2).parameters())


def test_nadam_mu_product_starts_at_one_and_is_one_value_per_parameter():
    step, optimizer, model = training(Run("NAdam", {}), seed=0)
    batches = digit_like_batches(3, seed=DATA_SEED)
    for x, y in batches:
        step(x, y)
    product = 1.0
    for t in range(1, 4):
        product = float(np.float32(product) * np.float32(0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3))))
    for parameter in model.parameters():
        mu_product = optimizer.state_of(parameter)["mu_product"]
        assert mu_product.shape == parameter.data.shape and mu_product.dtype == np.float32
        np.testing.assert_array_equal(mu_product, np.float32(product))


def test_a_torch_nadam_state_dict_loads_and_the_run_continues_in_lockstep():
    """PyTorch keeps ``mu_product`` 0-d: its optimizer state, converted to arrays, loads (broadcast to each parameter)
    into a fresh kiln optimizer, and both continue with the same losses and parameters."""
    torch = require("torch")
    run = Run("NAdam", dict(lr=1e-2, weight_decay=1e-2))
    batches = digit_like_batches(6, seed=DATA_SEED)
    model, reference, optimizer, torch_optimizer, step = side_by_side(torch, run)
    for x, y in batches[:3]:
        torch_step(torch, reference, torch_optimizer, x, y, run.options)
    theirs = torch_optimizer.state_dict()
    assert theirs["state"][0]["mu_product"].ndim == 0
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    optimizer.load_state_dict({
        "state": {str(k): {name: v.numpy() for name, v in entry.items() if name != "step"} for k, entry in theirs["state"].items()},
        "param_groups": [{**{k: v for k, v in g.items() if k in optimizer.defaults}, "params": [str(i) for i in g["params"]]}
                         for g in theirs["param_groups"]],
        "step": int(theirs["state"][0]["step"]),
    })
    for x, y in batches[3:]:
        np.testing.assert_allclose(step(x, y), torch_step(torch, reference, torch_optimizer, x, y, run.options), rtol=1e-5)
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
