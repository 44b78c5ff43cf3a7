"""Every optimizer against ``torch.optim``: 100 steps of the foundation MLP from identical weights and batches.

Float32 runs compare losses and parameters at every step (rtol 1e-5). Adaptive
optimizers (Adam, AdamW, RMSprop, Adagrad) divide by a running gradient scale,
so float noise in a near-zero gradient can move a weight by up to ``lr``: their
absolute tolerance is ``lr`` (measured deviations are far below it, about 1e-6).
Float64 runs of the same grid pin the formulas themselves to 1e-12.

A float32 run may meet a ReLU tie (``tied_units``): a pre-activation within the two runs' rounding of the kink, fired
by one library and not by the other. The runs then rightly part, and the comparison of that run stops there.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require
from training_parity import Run, Side, assert_same_step, digit_like_batches, max_deviation, parameter_tolerance, train_side_by_side

STEPS = 100
DATA_SEED = 1
"""Seed 0's batches put one hidden unit's pre-activation within float noise of ReLU's kink at step 21 of the
no-decay-on-biases SGD run: whether it fires then depends on summation order (NumPy's vs onnxruntime's vs
torch's), and a flipped unit moves a whole weight row. Any seed without such a tie tests the same thing."""
FLOAT32_EPS = float(np.finfo(np.float32).eps)
"""Every seed's 100 steps hold pre-activations within rounding of ReLU's kink, and which way each falls depends on the
order of the machine's sums: on an AVX-512 Xeon (numpy 2.4's OpenBLAS 0.3.31, torch 2.13) seed 1's centered RMSprop
meets one at step 66 (a mostly silent unit of fc1, float64 pre-activation 2.5e-7: torch's float32 fires it, kiln's
and float64 do not); the unit's row then gets another gradient, which RMSprop's momentum turns into 2.2e-3 (7 lr)
apart. A step whose parted rows are all those of tied units (``tied_units``) ends the comparison of that run; any other
split fails."""

GRID = [
    Run("SGD", dict(lr=0.1)),
    Run("SGD", dict(lr=0.05, momentum=0.9)),
    Run("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    Run("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    Run("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-2), groups="no_decay_on_biases"),
    Run("Adam", dict(lr=1e-3)),
    Run("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    Run("Adam", dict(lr=1e-3, amsgrad=True, weight_decay=1e-2)),
    Run("AdamW", dict(lr=1e-3)),
    Run("AdamW", dict(lr=1e-3, amsgrad=True, betas=(0.8, 0.99)), groups="no_decay_on_biases"),
    Run("RMSprop", dict(lr=1e-3)),
    Run("RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.5)),
    Run("RMSprop", dict(lr=3e-4, momentum=0.9, centered=True, weight_decay=1e-3, eps=1e-6)),
    Run("Adagrad", dict(lr=5e-3)),
    Run("Adagrad", dict(lr=1e-2, lr_decay=1e-3, weight_decay=1e-3, initial_accumulator_value=0.1)),
]


def same_steps_until_a_relu_tie(torch, run: Run) -> list[float]:
    """``assert_same_step`` at every float32 step until the runs part at a ReLU tie; the steps' largest deviations."""
    batches, deviations, before = digit_like_batches(STEPS, seed=DATA_SEED), [], None
    for index, (ours, theirs) in enumerate(train_side_by_side(torch, run, batches)):
        try:
            assert_same_step(ours, theirs, run, index)
        except AssertionError:
            if before is None or not split_at_a_relu_tie(ours, theirs, tied_units(before, batches[index][0], deviations[-1]), run):
                raise
            return deviations
        deviations.append(max_deviation(ours, theirs))
        before = Side(theirs.loss, {name: value.copy() for name, value in theirs.params.items()})  # torch updates them in place
    return deviations


def split_at_a_relu_tie(ours: Side, theirs: Side, tied: dict[str, np.ndarray], run: Run) -> bool:
    """Whether only rows of ``tied`` units parted: some of fc2's, which reach every row of fc1 through the backward
    pass, or else some of fc1's; fc3 has no ReLU after it and must not part."""
    parted = {layer: parted_rows(ours, theirs, layer, run) for layer in ("fc1", "fc2", "fc3")}
    if parted["fc3"].any() or (parted["fc2"] & ~tied["fc2"]).any():
        return False
    return bool(parted["fc2"].any() or (parted["fc1"].any() and not (parted["fc1"] & ~tied["fc1"]).any()))


def parted_rows(ours: Side, theirs: Side, layer: str, run: Run) -> np.ndarray:
    """Which output units of ``layer`` have a weight or bias entry outside the step's tolerance."""
    tolerance = parameter_tolerance(run)

    def parted(name: str) -> np.ndarray:
        return np.abs(ours.params[name] - theirs.params[name]) > tolerance["atol"] + tolerance["rtol"] * np.abs(theirs.params[name])

    return parted(f"{layer}.weight").any(axis=1) | parted(f"{layer}.bias")


def tied_units(before: Side, x: np.ndarray, deviation: float) -> dict[str, np.ndarray]:
    """Which hidden units of fc1 and fc2 had a pre-activation in this step's forward (torch's parameters before the
    step, in float64) closer to 0 than twice what the two runs can differ by there: the parameters' ``deviation``
    carried through the layer, plus float32's rounding of the sum (8 ulps of its terms)."""
    hidden, bound, tied = np.asarray(x, np.float64), np.zeros((len(x), 1)), {}
    for layer in ("fc1", "fc2"):
        weight, bias = (np.asarray(before.params[f"{layer}.{name}"], np.float64) for name in ("weight", "bias"))
        pre_activation = hidden @ weight.T + bias
        terms = np.abs(hidden) @ np.abs(weight).T + np.abs(bias)
        bound = deviation * (np.abs(hidden).sum(axis=1, keepdims=True) + 1) + bound.max(axis=1, keepdims=True) * np.abs(weight).sum(axis=1) + 8 * FLOAT32_EPS * terms
        tied[layer] = (np.abs(pre_activation) < 2 * bound).any(axis=0)
        hidden = np.maximum(pre_activation, 0)
    return tied


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float32_matches_torch_at_every_step(torch, run: Run):
    deviations = same_steps_until_a_relu_tie(torch, run)
    assert max(deviations) < 1e-4  # far inside the tolerance: no weight took a noise-driven step of lr


@pytest.mark.parametrize("run", GRID, ids=lambda run: run.id)
def test_float64_formulas_match_torch_exactly(torch, run: Run):
    batches = digit_like_batches(20, dtype="float64")
    for index, (ours, theirs) in enumerate(train_side_by_side(torch, run, batches, dtype="float64")):
        np.testing.assert_allclose(ours.loss, theirs.loss, rtol=1e-12, err_msg=f"loss at step {index}")
        assert max_deviation(ours, theirs) < 1e-12, f"step {index}"


def test_full_batch_gradient_descent_is_sgd_on_the_whole_data_set(torch):
    data = digit_like_batches(1, batch_size=256) * 50  # every step sees all 256 samples
    losses = []
    for index, (ours, theirs) in enumerate(train_side_by_side(torch, Run("GD", dict(lr=0.5)), data)):
        np.testing.assert_allclose(ours.loss, theirs.loss, rtol=1e-5, err_msg=f"loss at step {index}")
        assert max_deviation(ours, theirs) < 1e-6
        losses.append(ours.loss)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))  # exact gradients, small steps: the loss falls every step


@pytest.mark.parametrize(
    "run",
    [Run("SGD", dict(lr=0.01, momentum=0.9, maximize=True)), Run("Adam", dict(lr=1e-3, maximize=True)),
     Run("RMSprop", dict(lr=1e-3, maximize=True)), Run("Adagrad", dict(lr=1e-3, maximize=True))],
    ids=lambda run: run.id,
)
def test_maximize_climbs_the_loss_as_torch_does(torch, run: Run):
    losses = []
    for index, (ours, theirs) in enumerate(train_side_by_side(torch, run, digit_like_batches(1) * 20)):
        assert_same_step(ours, theirs, run, index)
        losses.append(ours.loss)
    assert losses[-1] > losses[0]


ORT_GRID = [Run(run.optimizer, run.arguments, {**run.options, "backend": "onnxruntime"}, run.groups) for run in GRID]


@pytest.mark.parametrize("run", ORT_GRID, ids=lambda run: run.id)
def test_onnxruntime_backend_matches_torch_at_every_step(torch, run: Run):
    """The same grid with the step compiled to ONNX and run by onnxruntime, parameters kept there between steps."""
    require("onnxruntime")
    same_steps_until_a_relu_tie(torch, run)
