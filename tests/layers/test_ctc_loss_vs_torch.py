"""``F.ctc_loss`` and ``nn.CTCLoss`` (``frontend/functional_ctc.py``) against ``torch.nn.functional.ctc_loss``: values
and gradients w.r.t. ``log_probs`` in float64 (rtol 1e-9) over shapes, blanks, reductions and ``zero_infinity``,
with rows of every kind (full length, shorter inputs, empty targets, empty inputs, repeated labels, no alignment);
padded and concatenated targets, traced and constant lengths, unbatched input, a symbolic batch, float32, a
compiled training step in lockstep with PyTorch's SGD, and the errors for what is not supported. ``T`` stays small:
the recursion unrolls over it, and compiling takes time in proportion."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from oracles import require

pytestmark = pytest.mark.filterwarnings("ignore:divide by zero", "ignore:invalid value")  # NumPy on the inf losses, as meant

TIGHT = {"rtol": 1e-9, "atol": 1e-12}

# (T, N, C, S, blank)
SHAPES = {
    "one_step": (1, 3, 3, 1, 0),
    "small": (6, 4, 4, 2, 0),
    "blank_inside": (12, 5, 6, 4, 2),
    "blank_last": (24, 6, 8, 6, 7),
}


def random_log_probs(steps, batch, classes, seed=0, dtype="float64"):
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(steps, batch, classes))
    shifted = logits - logits.max(-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))).astype(dtype)


def batch_of_every_kind(steps, batch, classes, width, blank, seed=0):
    """Padded targets (-1 past each length, which PyTorch never reads) with input and target lengths: row 0 uses the
    whole input and target with a repeated label, row 1 has an empty target, row 2 has no alignment (one step short
    of its labels plus the blanks its repeats need), row 3 an empty input; the rest are random, repeats likely."""
    rng = np.random.default_rng(seed + 1)
    labels = [c for c in range(classes) if c != blank]
    targets = rng.choice(labels, size=(batch, width))
    targets[0, 1:2] = targets[0, 0]
    targets[2] = targets[2, 0]  # all one label: each repeat needs a blank between
    input_lengths = rng.integers(0, steps + 1, size=batch)
    target_lengths = rng.integers(0, width + 1, size=batch)
    input_lengths[0], target_lengths[0] = steps, width
    target_lengths[1] = 0
    if batch > 2:
        target_lengths[2] = min(width, (steps + 1) // 2)
        input_lengths[2] = 2 * target_lengths[2] - 2
    if batch > 3:
        input_lengths[3] = 0
    padded = np.where(np.arange(width) < target_lengths[:, None], targets, -1)
    return padded.astype(np.int64), input_lengths.astype(np.int64), target_lengths.astype(np.int64)


def torch_ctc(log_probs, targets, input_lengths, target_lengths, weights=None, **options):
    """PyTorch's loss and its gradient w.r.t. ``log_probs`` (of ``sum(loss * weights)`` for unreduced losses)."""
    torch = require("torch")
    leaf = torch.tensor(log_probs, requires_grad=True)
    lengths = (input_lengths, target_lengths)
    traced = any(isinstance(a, np.ndarray) for a in lengths)  # PyTorch takes both as tensors or both as ints
    as_torch = [torch.tensor(targets)] + [torch.tensor(np.asarray(a)) if traced else _torch_lengths(a) for a in lengths]
    loss = torch.nn.functional.ctc_loss(leaf, *as_torch, **options)
    (loss * torch.tensor(weights) if weights is not None else loss).sum().backward()
    return loss.detach().numpy(), leaf.grad.numpy()


def _torch_lengths(lengths):
    """Constant lengths as PyTorch takes them, a tuple (kiln also takes one int when unbatched)."""
    return tuple(lengths) if isinstance(lengths, list) else (lengths,)


def kiln_ctc(log_probs, targets, input_lengths, target_lengths, weights=None, **options):
    """kiln's loss and gradient w.r.t. ``log_probs``: every array argument is a graph input, lists are constants."""
    arrays = [a for a in (targets, input_lengths, target_lengths) if isinstance(a, np.ndarray)]

    def bind(x, *traced):
        supplied = iter(traced)
        return [next(supplied) if isinstance(a, np.ndarray) else a for a in (targets, input_lengths, target_lengths)]

    def loss(x, *traced):
        return F.ctc_loss(x, *bind(x, *traced), **options)

    def scalar(x, *traced):
        value = loss(x, *traced)
        return (value * weights).sum() if weights is not None else value

    specs = [kiln.TensorSpec(a.shape, str(a.dtype)) for a in (log_probs, *arrays)]
    (value,) = NumpyBackend().compile(kiln.trace(loss, *specs))(log_probs, *arrays)
    return value, kiln.grad(scalar, argnums=0)(log_probs, *arrays)


def assert_matches_torch(log_probs, targets, input_lengths, target_lengths, tolerance=TIGHT, **options):
    reduction = options.get("reduction", "mean")
    weights = None
    if reduction == "none":
        weights = np.random.default_rng(7).normal(size=np.shape(log_probs)[1:-1]).astype(log_probs.dtype)
    expected_value, expected_grad = torch_ctc(log_probs, targets, input_lengths, target_lengths, weights, **options)
    value, grad = kiln_ctc(log_probs, targets, input_lengths, target_lengths, weights, **options)
    np.testing.assert_allclose(value, expected_value, err_msg="loss", **tolerance)
    np.testing.assert_allclose(grad, expected_grad, err_msg="gradient w.r.t. log_probs", **tolerance)
    return value, grad


# Values and gradients --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_ctc_loss_matches_torch(shape, reduction, zero_infinity):
    steps, batch, classes, width, blank = SHAPES[shape]
    log_probs = random_log_probs(steps, batch, classes, seed=len(shape))
    targets, input_lengths, target_lengths = batch_of_every_kind(steps, batch, classes, width, blank)
    value, grad = assert_matches_torch(log_probs, targets, input_lengths, target_lengths, blank=blank, reduction=reduction,
                                       zero_infinity=zero_infinity)
    if batch > 2 and steps > 1:  # row 2 has no alignment: inf (NaN gradient at its steps, as PyTorch's) or 0 (and 0)
        assert (np.isinf(value[2]) if reduction == "none" else np.isinf(value)) != zero_infinity
        assert np.isnan(grad[: input_lengths[2], 2]).all() != zero_infinity
        assert not np.isnan(np.delete(grad, 2, axis=1)).any()
    assert (grad[np.arange(steps)[:, None] >= input_lengths] == 0).all()  # past a row's input: no gradient


def test_every_row_aligned_gives_finite_gradients_matching_torch_closely():
    """Without impossible rows nothing is inf or NaN, and the worst relative error stays tiny."""
    log_probs = random_log_probs(20, 4, 5, seed=3)
    targets = np.array([[1, 1, 2, 2], [3, 1, 3, 1], [4, 4, 4, 0], [2, 0, 0, 0]])
    value, grad = assert_matches_torch(log_probs, targets, np.array([20, 17, 11, 3]), np.array([4, 4, 3, 1]), reduction="none")
    assert np.isfinite(value).all() and np.isfinite(grad).all()


def test_a_row_needing_every_step_is_exactly_possible():
    """``T = S + repeats``: one alignment only; one step fewer has none."""
    log_probs = random_log_probs(6, 2, 3, seed=4)
    targets = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    value, _ = assert_matches_torch(log_probs, targets, np.array([6, 5]), np.array([4, 4]), reduction="none")
    assert np.isinf(value[1]) and np.isfinite(value[0])


def test_targets_without_any_label_match_torch():
    """``S = 0``: only the blank state, padded ``(N, 0)`` or concatenated ``(0,)``."""
    log_probs = random_log_probs(5, 3, 4, seed=14)
    assert_matches_torch(log_probs, np.zeros((3, 0), np.int64), np.array([5, 2, 0]), np.array([0, 0, 0]), reduction="none")
    assert_matches_torch(log_probs, np.zeros(0, np.int64), [5, 2, 0], [0, 0, 0], reduction="mean", blank=3)


def test_concatenated_targets_with_constant_lengths_match_torch():
    log_probs = random_log_probs(10, 4, 5, seed=5)
    target_lengths = [3, 0, 2, 4]
    targets = np.array([1, 1, 2, 3, 4, 4, 2, 3, 2], dtype=np.int64)
    for input_lengths in (np.array([10, 6, 3, 9]), [10, 6, 3, 9]):  # traced and constant
        for reduction in ("none", "mean"):
            assert_matches_torch(log_probs, targets, input_lengths, target_lengths, reduction=reduction)


def test_constant_padded_targets_and_lengths_match_torch():
    log_probs = random_log_probs(8, 3, 4, seed=6)
    targets = np.array([[1, 2, 1], [3, 3, 0], [2, 0, 0]])
    assert_matches_torch(log_probs, targets.tolist(), [8, 7, 2], [3, 2, 1], reduction="sum")


@pytest.mark.parametrize("traced_lengths", [False, True])
def test_unbatched_input_matches_torch(traced_lengths):
    log_probs = random_log_probs(7, 1, 4, seed=8)[:, 0]
    targets = np.array([2, 2, 3], dtype=np.int64)
    lengths = (np.array(6), np.array(3)) if traced_lengths else (6, 3)
    value, _ = assert_matches_torch(log_probs, targets, *lengths, reduction="none", blank=1)
    assert np.shape(value) == ()


def test_float32_matches_torch():
    steps, batch, classes, width, blank = SHAPES["blank_inside"]
    log_probs = random_log_probs(steps, batch, classes, seed=9, dtype="float32")
    targets, input_lengths, target_lengths = batch_of_every_kind(steps, batch, classes, width, blank, seed=9)
    assert_matches_torch(log_probs, targets, input_lengths, target_lengths, tolerance={"rtol": 2e-5, "atol": 1e-6},
                         blank=blank, zero_infinity=True)


def test_a_symbolic_batch_gives_torchs_values_and_gradients():
    steps, batch, classes, width, blank = SHAPES["blank_inside"]
    log_probs = random_log_probs(steps, batch, classes, seed=10)
    targets, input_lengths, target_lengths = batch_of_every_kind(steps, batch, classes, width, blank, seed=10)
    specs = [kiln.TensorSpec((steps, "N", classes), "float64"), kiln.TensorSpec(("N", width), "int64"),
             kiln.TensorSpec(("N",), "int64"), kiln.TensorSpec(("N",), "int64")]

    def loss(x, y, x_lengths, y_lengths):
        return F.ctc_loss(x, y, x_lengths, y_lengths, blank=blank, zero_infinity=True)

    graph = kiln.trace(kiln.value_and_grad(loss), *specs)
    assert graph.inputs[0].type.shape == (steps, "N", classes)
    value, grad = NumpyBackend().compile(graph)(log_probs, targets, input_lengths, target_lengths)
    expected_value, expected_grad = torch_ctc(log_probs, targets, input_lengths, target_lengths, blank=blank, zero_infinity=True)
    np.testing.assert_allclose(value, expected_value, **TIGHT)
    np.testing.assert_allclose(grad, expected_grad, **TIGHT)


def test_minus_inf_log_probs_give_torchs_loss_and_a_zero_gradient_there():
    """A class masked to -inf before the log-softmax: the same loss as PyTorch; PyTorch's gradient is NaN at the -inf
    entries (``-inf + inf`` in its backward), kiln's 0, and equal elsewhere."""
    log_probs = random_log_probs(6, 2, 4, seed=11)
    log_probs[2, :, 3] = -np.inf
    targets, input_lengths, target_lengths = np.array([[1, 2], [3, 1]]), np.array([6, 6]), np.array([2, 2])
    expected_value, expected_grad = torch_ctc(log_probs, targets, input_lengths, target_lengths, reduction="sum")
    value, grad = kiln_ctc(log_probs, targets, input_lengths, target_lengths, reduction="sum")
    np.testing.assert_allclose(value, expected_value, **TIGHT)
    finite = np.isfinite(expected_grad)
    assert not finite[2, :, 3].any() and finite.sum() == finite.size - 2
    np.testing.assert_allclose(grad[finite], expected_grad[finite], **TIGHT)
    assert (grad[2, :, 3] == 0).all()


# nn.CTCLoss and training ---------------------------------------------------------------------------------------------


def test_ctc_loss_module_matches_torch_and_shows_its_options():
    torch = require("torch")
    module = nn.CTCLoss(blank=3, reduction="sum", zero_infinity=True)
    assert repr(module) == "CTCLoss(blank=3, reduction='sum', zero_infinity=True)"
    log_probs = random_log_probs(9, 3, 5, seed=12)
    targets, input_lengths, target_lengths = np.array([[1, 1, 2], [4, 0, 0], [2, 2, 2]]), np.array([9, 5, 4]), np.array([3, 1, 3])
    graph = kiln.trace(module, *[kiln.TensorSpec(a.shape, str(a.dtype)) for a in (log_probs, targets, input_lengths, target_lengths)])
    (value,) = NumpyBackend().compile(graph)(log_probs, targets, input_lengths, target_lengths)
    reference = torch.nn.CTCLoss(blank=3, reduction="sum", zero_infinity=True)
    expected = reference(*[torch.tensor(a) for a in (log_probs, targets, input_lengths, target_lengths)])
    np.testing.assert_allclose(value, expected.numpy(), **TIGHT)


class Tagger(nn.Module):
    """Per-frame class log-probabilities; passes the lengths through so the loss sees them."""

    def __init__(self, features, classes):
        super().__init__()
        self.hidden = nn.Linear(features, 8, dtype="float64")
        self.out = nn.Linear(8, classes, dtype="float64")

    def forward(self, frames, input_lengths, target_lengths):
        return F.log_softmax(self.out(self.hidden(frames).tanh()), -1), input_lengths, target_lengths


def test_compiled_training_step_follows_torch_in_lockstep():
    torch = require("torch")
    steps, batch, features, classes, width, blank = 14, 5, 4, 6, 4, 2
    model = Tagger(features, classes)
    reference = torch.nn.Sequential(torch.nn.Linear(features, 8), torch.nn.Tanh(), torch.nn.Linear(8, classes), torch.nn.LogSoftmax(-1)).double()
    with torch.no_grad():
        for ours, theirs in ((model.hidden, reference[0]), (model.out, reference[2])):
            theirs.weight.copy_(torch.tensor(ours.weight.data))
            theirs.bias.copy_(torch.tensor(ours.bias.data))
    criterion = nn.CTCLoss(blank=blank)
    step = kiln.compile_train_step(model, lambda output, targets: criterion(output[0], targets, *output[1:]),
                                   kiln.optim.SGD(model.parameters(), lr=0.3), batch_dim=(1, 0, 0, 0))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3)
    rng = np.random.default_rng(13)
    for _ in range(4):
        frames = rng.normal(size=(steps, batch, features))
        targets, input_lengths, target_lengths = batch_of_every_kind(steps, batch, classes, width, blank, seed=int(rng.integers(1000)))
        input_lengths = np.maximum(input_lengths, 2 * target_lengths + 1)  # every row aligned: a finite loss to train on
        loss = step(frames, input_lengths, target_lengths, targets)
        optimizer.zero_grad()
        expected = torch.nn.functional.ctc_loss(reference(torch.tensor(frames)), *map(torch.tensor, (targets, input_lengths, target_lengths)),
                                                blank=blank)
        expected.backward()
        optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), **TIGHT)
    for ours, theirs in ((model.hidden, reference[0]), (model.out, reference[2])):
        np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), **TIGHT)
        np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), **TIGHT)


# Errors ------------------------------------------------------------------------------------------------------------------


def _trace_error(fn, *specs):
    with pytest.raises(KilnError) as caught:
        kiln.trace(fn, *specs)
    message = str(caught.value)
    assert "test_ctc_loss_vs_torch.py" in message  # names the user's line
    return message


def test_ctc_loss_refuses_what_it_does_not_support_naming_the_line():
    x = kiln.TensorSpec((5, 2, 4), "float64")
    padded, lengths = kiln.TensorSpec((2, 3), "int64"), kiln.TensorSpec((2,), "int64")
    assert "blank must be in label range [0, 4)" in _trace_error(lambda a, b, c, d: F.ctc_loss(a, b, c, d, blank=4), x, padded, lengths, lengths)
    assert "reduction" in _trace_error(lambda a, b, c, d: F.ctc_loss(a, b, c, d, reduction="batchmean"), x, padded, lengths, lengths)
    assert "T and C must be static" in _trace_error(lambda a, b, c, d: F.ctc_loss(a, b, c, d), kiln.TensorSpec(("T", 2, 4), "float64"),
                                                    padded, lengths, lengths)
    assert "integer tensor" in _trace_error(lambda a, b, c, d: F.ctc_loss(a, b, c, d), x, kiln.TensorSpec((2, 3), "float64"), lengths, lengths)
    assert "need target_lengths as a list" in _trace_error(lambda a, b, c, d: F.ctc_loss(a, b, c, d), x, kiln.TensorSpec((4,), "int64"),
                                                           lengths, lengths)
    assert "sum(target_lengths) = 3" in _trace_error(lambda a, b, c: F.ctc_loss(a, b, c, [1, 2]), x, kiln.TensorSpec((4,), "int64"), lengths)
    assert "in [0, 5]" in _trace_error(lambda a, b, d: F.ctc_loss(a, b, [5, 6], d), x, padded, lengths)
    assert "in [0, 3]" in _trace_error(lambda a, b, c: F.ctc_loss(a, b, c, [4, 1]), x, padded, lengths)
    assert "must have shape (2,)" in _trace_error(lambda a, b, c, d: F.ctc_loss(a, b, c, d), x, padded, kiln.TensorSpec((3,), "int64"), lengths)
    assert "float tensor (T, N, C)" in _trace_error(lambda a, b, c, d: F.ctc_loss(a.sum(), b, c, d), x, padded, lengths, lengths)
    symbolic = kiln.TensorSpec((5, "N", 4), "float64")
    assert "need a static batch" in _trace_error(lambda a, b, d: F.ctc_loss(a, b, [5, 5], d), symbolic, kiln.TensorSpec(("N", 3), "int64"),
                                                 kiln.TensorSpec(("N",), "int64"))
