"""L-BFGS against ``torch.optim.LBFGS``: the same models, data and options, step by step, in float64.

kiln's loss and gradients come from ``kiln.optim.loss_and_grad`` (a compiled graph), PyTorch's from its closure.
Each outer step compares the returned loss, the parameters and the whole state (``func_evals`` and ``n_iter``
exactly, so both took the same branches and made the same number of evaluations; the parameters, history,
direction and scalars to 1e-10 of each array's largest entry). The two sides round differently (BLAS dot products,
PyTorch's fused ``add_(alpha=)``, its vectorised sums): measured, the first step's parameters differ by about 1e-14.
L-BFGS amplifies such noise once it is near an optimum, where ``y's`` is a difference of nearly equal gradients, so
the runs stop where the two trajectories still agree to 1e-10 (the grid was measured; deviations printed by ``-s`` on
failure). Arrays are compared to their scale, not entry by entry: an entry of ``y`` or of the last gradient that is
itself a small difference carries the rounding of the large terms (measured: 1.7e-9 of such an entry, 3e-11 of
the array's scale), and a 1-ulp scaling of the data moves PyTorch's own run by as much.

``history_size=3`` makes the history wrap; ``max_iter``, ``max_eval``, ``tolerance_grad`` and ``tolerance_change``
are each set where they end some steps, and the test checks on PyTorch's counters that they did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import CheckpointError, KilnError
from kiln.frontend.optim_line_search import cubic_interpolate, strong_wolfe
from test_more_optimizers import assert_constructor_matches_torch

RTOL, ATOL = 1e-10, 1e-13


@dataclass
class Pair:
    """A kiln model and its PyTorch twin with the same float64 weights, the data and both losses."""

    model: nn.Module
    reference: Any
    inputs: np.ndarray
    target: np.ndarray
    loss_fn: Callable[..., Any]
    torch_loss: Callable[..., Any]


def least_squares(torch: Any) -> Pair:
    """A linear model fitted to noisy linear data: a convex quadratic with a nonzero minimum."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6))
    y = x @ rng.standard_normal((6, 2)) + 0.3 * rng.standard_normal((64, 2))
    return _pair(torch, [(6, 2)], x, y, F.mse_loss, torch.nn.functional.mse_loss)


def logistic_regression(torch: Any) -> Pair:
    """Logistic regression on labels of a noisy linear rule (not separable, so the minimum is finite)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 5))
    y = (x @ rng.standard_normal((5, 1)) + rng.standard_normal((64, 1)) > 0).astype(np.float64)
    return _pair(torch, [(5, 1)], x, y, F.binary_cross_entropy_with_logits, torch.nn.functional.binary_cross_entropy_with_logits)


def mlp(torch: Any) -> Pair:
    """A 4-8-3 tanh MLP classifying random labels."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((48, 4)), rng.integers(0, 3, 48)
    return _pair(torch, [(4, 8), (8, 3)], x, y, F.cross_entropy, torch.nn.functional.cross_entropy)


def rosenbrock(torch: Any, start: tuple[float, ...] = (-1.2, 1.0, -1.2, 1.0)) -> Pair:
    """The Rosenbrock function ``sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2`` of one parameter vector (minimum 0 at
    all ones); the model ignores its input and the loss is its output."""
    return Pair(Rosenbrock(start), TorchRosenbrock(torch, start), np.zeros((1, 1)), np.zeros(1), _output, _output)


class Rosenbrock(nn.Module):
    def __init__(self, start: tuple[float, ...]):
        super().__init__()
        self.x = nn.Parameter(np.array(start, dtype=np.float64))

    def forward(self, ignored: Any) -> Any:
        return _rosenbrock(self.x)


def TorchRosenbrock(torch: Any, start: tuple[float, ...]) -> Any:
    module = torch.nn.Module()
    module.x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    module.forward = lambda ignored: _rosenbrock(module.x)
    return module


def _rosenbrock(x: Any) -> Any:
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def _output(output: Any, target: Any) -> Any:
    return output


def _pair(torch: Any, sizes: list[tuple[int, int]], x: np.ndarray, y: np.ndarray, loss_fn: Any, torch_loss: Any) -> Pair:
    kiln.manual_seed(0)
    layers, torch_layers = [], []
    for index, (fan_in, fan_out) in enumerate(sizes):
        layers += [nn.Linear(fan_in, fan_out)] + ([nn.Tanh()] if index < len(sizes) - 1 else [])
        torch_layers += [torch.nn.Linear(fan_in, fan_out)] + ([torch.nn.Tanh()] if index < len(sizes) - 1 else [])
    model, reference = nn.Sequential(*layers).double(), torch.nn.Sequential(*torch_layers).double()
    reference.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    return Pair(model, reference, x, y, loss_fn, torch_loss)


@dataclass
class Run:
    problem: Callable[[Any], Pair]
    options: dict[str, Any]
    steps: int
    stops: set[str] = field(default_factory=set)
    """Stops that must end at least one of PyTorch's steps: ``max_iter``, ``max_eval``, ``tolerance``."""
    state_rtol: float = RTOL
    """Rosenbrock's runs end at its minimum, where the gradients in the history are 1e-5 of those at the start and
    carry the two autodiffs' rounding relatively larger (measured: up to 3e-8); parameters still agree to 1e-11."""

    @property
    def id(self) -> str:
        return self.problem.__name__ + "(" + ",".join(f"{k}={v}" for k, v in self.options.items()) + ")"


WOLFE = "strong_wolfe"
GRID = [
    Run(least_squares, {}, 3, {"tolerance"}),
    Run(least_squares, dict(history_size=3, max_iter=6), 4, {"max_iter"}),
    Run(least_squares, dict(history_size=3, line_search_fn=WOLFE), 3, {"tolerance"}),
    Run(logistic_regression, dict(history_size=3, max_iter=5, lr=0.5), 4, {"max_iter"}),
    Run(logistic_regression, dict(history_size=3, max_iter=8, line_search_fn=WOLFE), 4, {"max_iter", "tolerance"}),
    Run(logistic_regression, dict(history_size=3, max_iter=8, max_eval=5, line_search_fn=WOLFE), 4, {"max_eval"}),
    Run(logistic_regression, dict(history_size=4, tolerance_grad=1e-3, tolerance_change=1e-6), 3, {"tolerance"}),
    Run(mlp, dict(history_size=3, max_iter=5, lr=0.5), 4, {"max_iter"}),
    Run(mlp, dict(history_size=3, max_iter=6, line_search_fn=WOLFE), 4, {"max_iter"}),
    Run(mlp, dict(history_size=3, max_iter=10, max_eval=7, line_search_fn=WOLFE), 3, {"max_eval"}),
    # 31 iterations into a nonconvex minimum: the last gradient is 2% of the first, and a 1-ulp scaling of the data
    # moves PyTorch's own state by 7e-11 of its scale after the third step (kiln against PyTorch: 7.3e-11): 1e-9
    Run(mlp, dict(history_size=5, max_iter=20, tolerance_change=1e-3, line_search_fn=WOLFE), 3, {"tolerance"}, state_rtol=1e-9),
    Run(rosenbrock, dict(history_size=3, line_search_fn=WOLFE), 4, {"max_eval", "tolerance"}, state_rtol=1e-7),
    Run(rosenbrock, dict(lr=20, line_search_fn=WOLFE), 5, {"max_eval"}, state_rtol=1e-7),
]


@dataclass
class Sides:
    """One outer step's results: kiln's and PyTorch's loss, parameters and state."""

    loss: float
    torch_loss: float
    params: dict[str, np.ndarray]
    torch_params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    torch_state: dict[str, Any]


def torch_closure(torch: Any, pair: Pair, torch_optimizer: Any) -> Any:
    """PyTorch's L-BFGS closure: the full batch's loss, its gradients left in ``.grad``."""
    x, y = torch.tensor(pair.inputs), torch.tensor(pair.target)

    def closure() -> Any:
        torch_optimizer.zero_grad()
        loss = pair.torch_loss(pair.reference(x), y)
        loss.backward()
        return loss

    return closure


def lockstep(torch: Any, pair: Pair, options: dict[str, Any], steps: int, optimizer: Any = None, torch_optimizer: Any = None) -> Iterator[Sides]:
    """Both optimizers stepping on the full batch, ``steps`` times (from the given optimizers, e.g. reloaded ones)."""
    optimizer = optimizer or kiln.optim.LBFGS(pair.model.parameters(), **options)
    evaluate = kiln.optim.loss_and_grad(pair.model, pair.loss_fn, optimizer)
    torch_optimizer = torch_optimizer or torch.optim.LBFGS(pair.reference.parameters(), **options)
    closure = torch_closure(torch, pair, torch_optimizer)

    for _ in range(steps):
        loss = optimizer.step(lambda: evaluate(pair.inputs, pair.target))
        torch_loss = float(torch_optimizer.step(closure).detach())
        yield Sides(loss, torch_loss, pair.model.state_dict(), {k: v.numpy() for k, v in pair.reference.state_dict().items()},
                    optimizer.state[id(optimizer.parameters()[0])], torch_optimizer.state[torch_optimizer.param_groups[0]["params"][0]])


def torch_state_as_arrays(state: dict[str, Any]) -> dict[str, Any]:
    """PyTorch's L-BFGS state with tensors as arrays and its history lists stacked (``al`` is scratch, left out)."""
    def array(value: Any) -> Any:
        if isinstance(value, list):
            return np.array([array(item) for item in value]) if value else np.zeros((0,))
        return value.numpy() if hasattr(value, "numpy") else np.asarray(value)

    return {name: array(value) for name, value in state.items() if name != "al"}


def assert_close_to_scale(ours: Any, theirs: np.ndarray, rtol: float, what: str) -> None:
    """Each entry of ``ours`` within ``rtol`` of the largest magnitude in ``theirs`` (and at least ``ATOL``)."""
    atol = max(ATOL, rtol * float(np.max(np.abs(theirs))))
    np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), theirs, rtol=0, atol=atol, err_msg=what)


def assert_same(sides: Sides, index: int, state_rtol: float = RTOL, first_loss: float = 0.0) -> None:
    """``first_loss``: the run's loss before its first step. Near a minimum the loss is small and its two values differ
    by its gradient times the parameters' difference, not relative to itself: Rosenbrock's 6e-5 after step 2 differs
    by 9.9e-14 (1.6e-9 of itself, 1.9e-16 of its first loss 532), so losses also pass within 1e-14 of the first."""
    loss_atol = max(ATOL, 1e-14 * abs(first_loss))
    np.testing.assert_allclose(sides.loss, sides.torch_loss, rtol=RTOL, atol=loss_atol, err_msg=f"loss of step {index}")
    for name, value in sides.torch_params.items():
        assert_close_to_scale(sides.params[name], value, RTOL, f"{name} after step {index}")
    theirs = torch_state_as_arrays(sides.torch_state)
    assert set(sides.state) == set(theirs)
    for name, value in theirs.items():
        if name in ("func_evals", "n_iter"):
            assert int(sides.state[name]) == int(value), f"{name} after step {index}"
        elif name == "prev_loss":
            np.testing.assert_allclose(sides.state[name], value, rtol=RTOL, atol=loss_atol, err_msg=f"state {name} after step {index}")
        elif value.size:
            assert_close_to_scale(sides.state[name], value, state_rtol, f"state {name} after step {index}")


def stops_seen(options: dict[str, Any], counts: list[tuple[int, int]]) -> set[str]:
    """Which stops ended PyTorch's steps, from each step's ``(evaluations, iterations)``: the iteration cap, the
    evaluation cap, or neither (a tolerance: gradient, step, loss change or directional derivative)."""
    max_iter = options.get("max_iter", 20)
    max_eval = options.get("max_eval", max_iter * 5 // 4)
    seen = set()
    for evaluations, iterations in counts:
        seen |= {"max_iter"} if iterations == max_iter else {"max_eval"} if evaluations >= max_eval else {"tolerance"}
    return seen


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float64_steps_match_torch(torch, run: Run):
    counts, before, first_loss = [], (0, 0), None
    for index, sides in enumerate(lockstep(torch, run.problem(torch), run.options, run.steps)):
        first_loss = sides.torch_loss if first_loss is None else first_loss
        assert_same(sides, index, run.state_rtol, first_loss)
        after = (sides.torch_state["func_evals"], sides.torch_state["n_iter"])
        counts.append((after[0] - before[0], after[1] - before[1]))
        before = after
    assert run.stops <= stops_seen(run.options, counts), counts


def test_rosenbrock_converges_as_torchs_does(torch):
    """From (-1.5, 2), L-BFGS with the strong-Wolfe search reaches the valley's end at (1, 1) in PyTorch's steps and
    evaluations, then stops moving (each later step is one evaluation and one iteration that changes nothing)."""
    pair = rosenbrock(torch, (-1.5, 2.0))
    first_loss = None
    for index, sides in enumerate(lockstep(torch, pair, dict(line_search_fn=WOLFE), 5)):
        first_loss = sides.torch_loss if first_loss is None else first_loss
        assert_same(sides, index, state_rtol=1e-7, first_loss=first_loss)
    assert int(sides.state["func_evals"]) == sides.torch_state["func_evals"] == 55
    assert sides.loss < 1e-9
    np.testing.assert_allclose(sides.params["x"], [1.0, 1.0], atol=1e-5)


def test_a_frozen_parameter_stays_and_the_rest_match_torch(torch):
    """``requires_grad=False``: kiln's gradient is zeros, PyTorch's ``None``, which its L-BFGS reads as zeros."""
    pair = mlp(torch)
    pair.model[0].bias.requires_grad = False
    pair.reference[0].bias.requires_grad_(False)
    before = pair.model[0].bias.data.copy()
    for index, sides in enumerate(lockstep(torch, pair, dict(history_size=3, max_iter=5, line_search_fn=WOLFE), 3)):
        assert_same(sides, index)
    np.testing.assert_array_equal(pair.model[0].bias.data, before)


def _wiggly(x: Any) -> Any:
    return (x * 3).sin().sum() + 0.1 * (x * x).sum()


def _kinked(x: Any) -> Any:
    return (x - 0.3).abs().sum() + 0.01 * x.sum()


@pytest.mark.parametrize(("function", "start"), [(_rosenbrock, [-1.2, 1.0, -1.2, 1.0]), (_rosenbrock, [0.5, 0.1]),
                                                 (_wiggly, [0.3, -1.0, 2.0]), (_wiggly, [0.9]), (_kinked, [2.0])])
def test_line_search_takes_torchs_steps(torch, function, start):
    """``strong_wolfe`` against PyTorch's ``_strong_wolfe`` along the steepest descent from ``start``, from initial steps
    too short (extrapolation), about right and too long (zoom), with evaluation budgets that cut both phases short.
    Both evaluate the same PyTorch function; they differ only in rounding (PyTorch's 0-d ``sqrt`` is not always
    correctly rounded, and its dot products use another summation order), so they agree to 1e-12, not bit for bit."""
    from torch.optim.lbfgs import _strong_wolfe

    def evaluate(x: Any) -> tuple[float, Any]:
        x = x.detach().clone().requires_grad_(True)
        value = function(x)
        value.backward()
        return float(value.detach()), x.grad

    x0 = torch.tensor(start, dtype=torch.float64)
    f0, g0 = evaluate(x0)
    for t0 in (1e-4, 1e-2, 0.3, 0.97, 1.0, 1.7, 10.0, 1e3):
        for max_ls in (1, 2, 3, 25):
            theirs = _strong_wolfe(lambda x, t, d: evaluate(x + float(t) * d), x0, t0, -g0, f0, g0, g0.dot(-g0), max_ls=max_ls)
            ours = strong_wolfe(lambda t, d: _as_numpy(evaluate(x0 + float(t) * torch.tensor(d))), t0, -g0.numpy(), f0, g0.numpy(),
                                g0.dot(-g0).numpy()[()], max_ls=max_ls)
            case = f"t0={t0} max_ls={max_ls}"
            assert ours[3] == theirs[3], case
            np.testing.assert_allclose(float(ours[2]), float(theirs[2]), rtol=1e-12, err_msg=case)
            np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12, err_msg=case)
            np.testing.assert_allclose(ours[1], theirs[1].numpy(), rtol=1e-12, atol=1e-14, err_msg=case)


def _as_numpy(result: tuple[float, Any]) -> tuple[float, np.ndarray]:
    return result[0], result[1].numpy()


def test_cubic_interpolation_is_torchs(torch):
    """Both orders of the points, with and without bounds, and cubics with no real minimizer (the bounds' midpoint)."""
    from torch.optim.lbfgs import _cubic_interpolate

    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, f1, x2, f2 = (float(v) for v in rng.standard_normal(4))
        g1, g2 = rng.standard_normal(2) * 3
        bounds = tuple(sorted(rng.standard_normal(2))) if rng.random() < 0.5 else None
        theirs = _cubic_interpolate(x1, f1, torch.tensor(g1), x2, f2, torch.tensor(g2), bounds=bounds)
        np.testing.assert_allclose(float(cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=bounds)), float(theirs), rtol=1e-13, atol=1e-15)


def test_state_dict_round_trip_continues_identically(torch):
    """A state saved after one step, loaded into a fresh model and optimizer and into the original (whose history has
    grown since, so its arrays change shape), makes both take identical next steps."""
    options = dict(history_size=5, max_iter=4, line_search_fn=WOLFE)
    original, copy = mlp(torch), mlp(torch)
    optimizer = kiln.optim.LBFGS(original.model.parameters(), **options)
    evaluate = kiln.optim.loss_and_grad(original.model, original.loss_fn, optimizer)
    optimizer.step(lambda: evaluate(original.inputs, original.target))
    saved = {"model": {k: v.copy() for k, v in original.model.state_dict().items()}, "optimizer": _copied(optimizer.state_dict())}
    assert set(saved["optimizer"]["state"]) == {0} and len(saved["optimizer"]["state"][0]["old_dirs"]) == 3
    for _ in range(2):
        optimizer.step(lambda: evaluate(original.inputs, original.target))
    assert len(optimizer.kiln_state_dict()["state"]["0"]["old_dirs"]) == 5
    reloaded = kiln.optim.LBFGS(copy.model.parameters(), **options)
    for model, loaded in ((original.model, optimizer), (copy.model, reloaded)):
        model.load_state_dict(saved["model"])
        loaded.load_state_dict(saved["optimizer"])
    evaluate_copy = kiln.optim.loss_and_grad(copy.model, copy.loss_fn, reloaded)
    for _ in range(2):
        assert reloaded.step(lambda: evaluate_copy(copy.inputs, copy.target)) == optimizer.step(lambda: evaluate(original.inputs, original.target))
        for name, value in original.model.state_dict().items():
            np.testing.assert_array_equal(copy.model.state_dict()[name], value)
    assert reloaded.step_count == 3 and optimizer.step_count == 3


def _copied(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "state": {key: {name: np.array(value) for name, value in entry.items()} for key, entry in state["state"].items()}}


def test_a_torch_state_dict_loads_and_both_continue_in_lockstep(torch):
    """PyTorch's state (tensors as arrays, its history lists stacked, ``al`` dropped) loads into kiln; from the same
    parameters both then step as one."""
    options = dict(history_size=3, max_iter=5, line_search_fn=WOLFE)
    pair = mlp(torch)
    torch_optimizer = torch.optim.LBFGS(pair.reference.parameters(), **options)
    closure = torch_closure(torch, pair, torch_optimizer)

    for _ in range(2):
        torch_optimizer.step(closure)
    pair.model.load_state_dict({name: value.numpy().copy() for name, value in pair.reference.state_dict().items()})
    optimizer = kiln.optim.LBFGS(pair.model.parameters(), **options)
    torch_state = torch_optimizer.state_dict()
    optimizer.load_state_dict({"state": {str(key): torch_state_as_arrays(entry) for key, entry in torch_state["state"].items()},
                               "param_groups": [{**torch_state["param_groups"][0], "params": [str(i) for i in range(4)]}], "step": 2})
    torch_optimizer = torch.optim.LBFGS(pair.reference.parameters(), **options)
    torch_optimizer.load_state_dict(torch_state)
    for index, sides in enumerate(lockstep(torch, pair, options, 2, optimizer=optimizer, torch_optimizer=torch_optimizer)):
        assert_same(sides, index)


def test_loss_and_grad_runs_on_onnxruntime_as_on_numpy(torch):
    """The compiled loss and gradients on onnxruntime: the same L-BFGS steps as on NumPy (to the backends' rounding)."""
    pytest.importorskip("onnxruntime")
    options = dict(history_size=3, max_iter=5, line_search_fn=WOLFE)
    runs = []
    for backend in ("numpy", "onnxruntime"):
        pair = mlp(torch)
        optimizer = kiln.optim.LBFGS(pair.model.parameters(), **options)
        evaluate = kiln.optim.loss_and_grad(pair.model, pair.loss_fn, optimizer, backend=backend)
        losses = [optimizer.step(lambda: evaluate(pair.inputs, pair.target)) for _ in range(3)]
        runs.append((losses, pair.model.state_dict(), int(optimizer.state[id(optimizer.parameters()[0])]["func_evals"])))
    (numpy_losses, numpy_params, numpy_evals), (onnx_losses, onnx_params, onnx_evals) = runs
    assert numpy_evals == onnx_evals
    np.testing.assert_allclose(onnx_losses, numpy_losses, rtol=1e-9)
    for name, value in numpy_params.items():
        np.testing.assert_allclose(onnx_params[name], value, rtol=1e-8, atol=1e-10)


def test_constructor_arguments_and_defaults_are_torchs(torch):
    assert_constructor_matches_torch(torch, "LBFGS", same_kinds=True)


def _params() -> list[Any]:
    return list(nn.Linear(3, 2).parameters())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: kiln.optim.LBFGS([{"params": _params()}, {"params": _params(), "lr": 0.1}]), "doesn't support per-parameter options"),
        (lambda: kiln.optim.LBFGS(_params(), line_search_fn="backtracking"), "line_search_fn 'backtracking' is not supported"),
        (lambda: kiln.optim.LBFGS(_params(), history_size=0), "invalid history_size 0"),
        (lambda: kiln.optim.LBFGS(_params(), max_iter=0), "invalid max_iter 0"),
        (lambda: kiln.optim.LBFGS(_params(), max_iter=2.5), "invalid max_iter 2.5"),
        (lambda: kiln.optim.LBFGS(_params(), lr=-1.0), "invalid lr -1.0"),
    ],
)
def test_refused_configurations(make, message):
    with pytest.raises(KilnError, match=message):
        make()


def test_a_second_parameter_group_is_refused():
    optimizer = kiln.optim.LBFGS(_params())
    with pytest.raises(KilnError, match="doesn't support per-parameter options"):
        optimizer.add_param_group({"params": _params()})


def test_a_compiled_training_step_refuses_it_and_names_step_closure():
    model = nn.Linear(3, 2)
    step = kiln.compile_train_step(model, F.mse_loss, kiln.optim.LBFGS(model.parameters()))
    with pytest.raises(KilnError, match=r"cannot be compiled into a training step.*optimizer.step\(closure\)"):
        step(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))


@pytest.mark.parametrize(
    ("closure", "message"),
    [
        (lambda params: 1.0, r"returned the loss alone, but no parameter has a .grad: call loss.backward\(\)"),
        (lambda params: "1.0", r"must return \(loss, gradients\), got str"),
        (lambda params: (1.0, [np.zeros(p.data.shape) for p in params[:1]]), "returned 1 gradients for 2 parameters"),
        (lambda params: (1.0, [np.zeros((1,)) for p in params]), "a gradient of shape"),
        (lambda params: (1.0, [np.ones(p.data.shape, complex) for p in params]), "one real gradient per parameter"),
    ],
)
def test_a_closure_that_does_not_return_loss_and_gradients_is_refused(closure, message):
    params = _params()
    with pytest.raises(KilnError, match=message):
        kiln.optim.LBFGS(params).step(lambda: closure(params))


def test_loss_and_grad_refuses_dropout():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    evaluate = kiln.optim.loss_and_grad(model, F.mse_loss, kiln.optim.LBFGS(model.parameters()))
    with pytest.raises(KilnError, match=r"dropout.*model.eval\(\)"):
        evaluate(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda state: state["state"]["0"].pop("ro"), r"LBFGS state holds"),
        (lambda state: state["state"]["0"].update(d=np.zeros(3)), r"state d has shape \(3,\)"),
        (lambda state: state["state"].update({"1": state["state"].pop("0")}), "under the first"),
        (lambda state: state["param_groups"][0].update(history_size=1), "more than history_size=1"),
    ],
)
def test_a_bad_saved_state_is_refused_and_nothing_is_written(torch, edit, message):
    pair = least_squares(torch)
    optimizer = kiln.optim.LBFGS(pair.model.parameters(), max_iter=5)
    evaluate = kiln.optim.loss_and_grad(pair.model, pair.loss_fn, optimizer)
    optimizer.step(lambda: evaluate(pair.inputs, pair.target))
    state = _copied(optimizer.kiln_state_dict())
    before = _copied(optimizer.kiln_state_dict())
    edit(state)
    with pytest.raises(CheckpointError, match=message):
        optimizer.load_state_dict(state)
    for name, value in before["state"]["0"].items():
        np.testing.assert_array_equal(optimizer.kiln_state_dict()["state"]["0"][name], value)
