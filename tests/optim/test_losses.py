"""Every loss against ``torch.nn.functional``: values and gradients, every reduction, through the op's kernel and VJP
rule and through its decomposition into primitives (differentiated by autodiff).

The checked scalar is ``sum(loss * w)`` with a random cotangent ``w`` of the
loss's shape, so ``reduction="none"`` is checked element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir import Builder
from kiln.compiler.passes.decompose import Decompose

REDUCTIONS = ("mean", "sum", "none")
N, C = 7, 5
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

rng = np.random.default_rng(0)
LOGITS = rng.standard_normal((N, C)).astype(np.float32) * 2
LABELS = rng.integers(0, C, N)
PADDED = np.where(np.arange(N) % 3 == 1, -100, LABELS)  # every third sample is padding
PADDED_AT_2 = np.where(np.arange(N) % 3 == 1, 2, LABELS)  # ignore_index inside [0, C)
PROBABILITIES = rng.dirichlet(np.ones(C), N).astype(np.float32)
CLASS_WEIGHT = (rng.random(C) + 0.5).astype(np.float32)
LOGITS_3D = rng.standard_normal((N, C, 3)).astype(np.float32)
LABELS_3D = np.where(rng.random((N, 3)) < 0.2, -100, rng.integers(0, C, (N, 3)))
REGRESSION_INPUT = rng.standard_normal((N, C)).astype(np.float32)
REGRESSION_TARGET = rng.standard_normal((N, C)).astype(np.float32)
BINARY_TARGET = rng.random((N, C)).astype(np.float32)
POS_WEIGHT = (rng.random(C) * 3).astype(np.float32)
ELEMENT_WEIGHT = rng.random((N, C)).astype(np.float32)


@dataclass(frozen=True)
class LossCase:
    name: str
    ours: Callable[..., Any]
    """``ours(F, *tensors, reduction)``"""
    theirs: Callable[..., Any]
    """``theirs(torch.nn.functional, torch, *tensors, reduction)``"""
    arrays: tuple[np.ndarray, ...]
    wrt: tuple[int, ...] = (0,)
    """Inputs to differentiate (float targets too)."""
    kwargs: dict = field(default_factory=dict)


def _t(torch, array):
    return torch.tensor(array)


CASES = [
    LossCase("cross_entropy", lambda F, x, y, r: F.cross_entropy(x, y, reduction=r), lambda f, t, x, y, r: f.cross_entropy(x, y, reduction=r), (LOGITS, LABELS)),
    LossCase(
        "cross_entropy_ignore_index", lambda F, x, y, r: F.cross_entropy(x, y, reduction=r),
        lambda f, t, x, y, r: f.cross_entropy(x, y, reduction=r), (LOGITS, PADDED),
    ),
    LossCase(
        "cross_entropy_ignore_index_2_label_smoothing", lambda F, x, y, r: F.cross_entropy(x, y, ignore_index=2, reduction=r, label_smoothing=0.1),
        lambda f, t, x, y, r: f.cross_entropy(x, y, ignore_index=2, reduction=r, label_smoothing=0.1), (LOGITS, PADDED_AT_2),
    ),
    LossCase(
        "cross_entropy_weight_label_smoothing_padding", lambda F, x, y, r: F.cross_entropy(x, y, CLASS_WEIGHT, reduction=r, label_smoothing=0.2),
        lambda f, t, x, y, r: f.cross_entropy(x, y, _t(t, CLASS_WEIGHT), reduction=r, label_smoothing=0.2), (LOGITS, PADDED),
    ),
    LossCase(
        "cross_entropy_probabilities", lambda F, x, p, r: F.cross_entropy(x, p, reduction=r),
        lambda f, t, x, p, r: f.cross_entropy(x, p, reduction=r), (LOGITS, PROBABILITIES), wrt=(0, 1),
    ),
    LossCase(
        "cross_entropy_probabilities_weight_label_smoothing", lambda F, x, p, r: F.cross_entropy(x, p, CLASS_WEIGHT, reduction=r, label_smoothing=0.3),
        lambda f, t, x, p, r: f.cross_entropy(x, p, _t(t, CLASS_WEIGHT), reduction=r, label_smoothing=0.3), (LOGITS, PROBABILITIES), wrt=(0, 1),
    ),
    LossCase(
        "cross_entropy_sequence_NCL", lambda F, x, y, r: F.cross_entropy(x, y, CLASS_WEIGHT, reduction=r, label_smoothing=0.1),
        lambda f, t, x, y, r: f.cross_entropy(x, y, _t(t, CLASS_WEIGHT), reduction=r, label_smoothing=0.1), (LOGITS_3D, LABELS_3D),
    ),
    LossCase("nll", lambda F, x, y, r: F.nll_loss(x, y, reduction=r), lambda f, t, x, y, r: f.nll_loss(x, y, reduction=r), (LOGITS, PADDED)),
    LossCase(
        "nll_weight", lambda F, x, y, r: F.nll_loss(F.log_softmax(x, dim=1), y, CLASS_WEIGHT, reduction=r),
        lambda f, t, x, y, r: f.nll_loss(f.log_softmax(x, dim=1), y, _t(t, CLASS_WEIGHT), reduction=r), (LOGITS, PADDED),
    ),
    LossCase("mse", lambda F, x, y, r: F.mse_loss(x, y, reduction=r), lambda f, t, x, y, r: f.mse_loss(x, y, reduction=r), (REGRESSION_INPUT, REGRESSION_TARGET), wrt=(0, 1)),
    LossCase("l1", lambda F, x, y, r: F.l1_loss(x, y, reduction=r), lambda f, t, x, y, r: f.l1_loss(x, y, reduction=r), (REGRESSION_INPUT, REGRESSION_TARGET), wrt=(0, 1)),
    LossCase(
        "smooth_l1", lambda F, x, y, r: F.smooth_l1_loss(x, y, reduction=r, beta=0.6),
        lambda f, t, x, y, r: f.smooth_l1_loss(x, y, reduction=r, beta=0.6), (REGRESSION_INPUT, REGRESSION_TARGET), wrt=(0, 1),
    ),
    LossCase(
        "smooth_l1_beta_0", lambda F, x, y, r: F.smooth_l1_loss(x, y, reduction=r, beta=0.0),
        lambda f, t, x, y, r: f.smooth_l1_loss(x, y, reduction=r, beta=0.0), (REGRESSION_INPUT, REGRESSION_TARGET), wrt=(0, 1),
    ),
    LossCase(
        "huber", lambda F, x, y, r: F.huber_loss(x, y, reduction=r, delta=0.7),
        lambda f, t, x, y, r: f.huber_loss(x, y, reduction=r, delta=0.7), (REGRESSION_INPUT, REGRESSION_TARGET), wrt=(0, 1),
    ),
    LossCase(
        "bce_with_logits", lambda F, x, y, r: F.binary_cross_entropy_with_logits(x, y, reduction=r),
        lambda f, t, x, y, r: f.binary_cross_entropy_with_logits(x, y, reduction=r), (LOGITS * 4, BINARY_TARGET), wrt=(0, 1),
    ),
    LossCase(
        "bce_with_logits_weight_pos_weight", lambda F, x, y, r: F.binary_cross_entropy_with_logits(x, y, ELEMENT_WEIGHT, reduction=r, pos_weight=POS_WEIGHT),
        lambda f, t, x, y, r: f.binary_cross_entropy_with_logits(x, y, _t(t, ELEMENT_WEIGHT), reduction=r, pos_weight=_t(t, POS_WEIGHT)),
        (LOGITS * 4, BINARY_TARGET), wrt=(0, 1),
    ),
]


def kiln_value_and_grads(case: LossCase, reduction: str, cotangent: np.ndarray, decompose: bool) -> list[np.ndarray]:
    """``[loss, d sum(loss * w) / d input for input in case.wrt]`` from one compiled graph."""
    specs = [kiln.TensorSpec(a.shape, a.dtype) for a in case.arrays]
    graph = kiln.trace(lambda *tensors: case.ours(F, *tensors, reduction), *specs)
    loss = graph.outputs[0]
    weight = graph.add_input(loss.type, "w")
    b = Builder(graph)
    graph.outputs = [loss, b.reduce_sum(b.mul(loss, weight))]
    if decompose:
        Decompose().run(graph)
    loss, objective = graph.outputs
    graph.outputs = [loss, *differentiate(graph, objective, [graph.inputs[i] for i in case.wrt])]
    return [np.asarray(a) for a in NumpyBackend().compile(graph)(*case.arrays, cotangent.astype(np.float32))]


def torch_value_and_grads(torch, case: LossCase, reduction: str, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    tensors = [torch.tensor(a, requires_grad=i in case.wrt) for i, a in enumerate(case.arrays)]
    loss = case.theirs(torch.nn.functional, torch, *tensors, reduction)
    cotangent = np.random.default_rng(seed).standard_normal(tuple(loss.shape)).astype(np.float32)
    (loss * torch.tensor(cotangent)).sum().backward()
    return [loss.detach().numpy()] + [tensors[i].grad.numpy() for i in case.wrt], cotangent


@pytest.mark.parametrize("decompose", [False, True], ids=["kernel_and_vjp_rule", "decomposition"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_loss_value_and_gradients_match_torch(torch, case: LossCase, reduction: str, decompose: bool):
    expected, cotangent = torch_value_and_grads(torch, case, reduction, seed=len(case.name))
    ours = kiln_value_and_grads(case, reduction, cotangent, decompose)
    labels = ["loss"] + [f"d/d input {i}" for i in case.wrt]
    for label, value, reference in zip(labels, ours, expected):
        assert value.shape == reference.shape, label
        np.testing.assert_allclose(value, reference, **TOLERANCE, err_msg=label)


def test_mean_over_padding_divides_by_the_real_tokens_only(torch):
    logits = np.zeros((4, 3), np.float32)
    loss = kiln.compile(lambda x, y: F.cross_entropy(x, y))(logits, np.array([0, -100, -100, 2]))
    np.testing.assert_allclose(loss, np.log(3.0), rtol=1e-6)  # two real tokens of loss log 3 each


@pytest.mark.parametrize(
    ("module", "function"),
    [
        (nn.CrossEntropyLoss(CLASS_WEIGHT, ignore_index=-100, label_smoothing=0.1), lambda x, y: F.cross_entropy(x, y, CLASS_WEIGHT, label_smoothing=0.1)),
        (nn.NLLLoss(reduction="sum"), lambda x, y: F.nll_loss(x, y, reduction="sum")),
    ],
)
def test_loss_modules_call_their_functions(module, function):
    ours = kiln.compile(lambda x, y: module(x, y))(LOGITS, PADDED)
    np.testing.assert_array_equal(ours, kiln.compile(function)(LOGITS, PADDED))


@pytest.mark.parametrize(
    ("module", "target"),
    [
        (nn.MSELoss(), REGRESSION_TARGET), (nn.L1Loss(reduction="sum"), REGRESSION_TARGET), (nn.SmoothL1Loss(beta=0.5), REGRESSION_TARGET),
        (nn.HuberLoss(delta=2.0), REGRESSION_TARGET), (nn.BCEWithLogitsLoss(pos_weight=POS_WEIGHT), BINARY_TARGET),
    ],
)
def test_regression_and_binary_loss_modules_match_torch(torch, module, target):
    twin = getattr(torch.nn, type(module).__name__)(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in vars(module).items() if k in ("reduction", "beta", "delta", "pos_weight")})
    ours = kiln.compile(lambda x, y: module(x, y))(REGRESSION_INPUT, target)
    np.testing.assert_allclose(ours, twin(torch.tensor(REGRESSION_INPUT), torch.tensor(target)).numpy(), **TOLERANCE)


def test_training_with_a_loss_module_and_label_smoothing():
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(C, 16), nn.ReLU(), nn.Linear(16, C))
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    step = kiln.compile_train_step(model, loss, kiln.optim.Adam(model.parameters(), lr=1e-2), pipeline="cse,dce")  # keeps composites
    losses = [step(LOGITS, LABELS) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    assert "nn.cross_entropy" in {op.name for op in step.graph.ops}


def test_the_direct_kernel_names_a_label_out_of_range():
    cross_entropy = kiln.compile(lambda x, y: F.cross_entropy(x, y), pipeline="cse,dce")  # the op's own kernel, not its decomposition
    with pytest.raises(kiln.InputError, match=r"label 7 at \(1,\) is outside \[0, 5\) and is not ignore_index \(-100\)"):
        cross_entropy(LOGITS, np.where(np.arange(N) == 1, 7, LABELS))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, y: F.cross_entropy(x, y.float()), r"class-probability targets have the logits' type tensor<7x5xf32>, got tensor<7xf32>"),
        (lambda x, y: F.cross_entropy(x, y, np.ones(4)), r"optional class weight is a tensor<5xf32>, got tensor<4xf32>"),
        (lambda x, y: F.cross_entropy(x, y, label_smoothing=1.5), r"label_smoothing must be in \[0, 1\]"),
        (lambda x, y: F.cross_entropy(x, y, reduction="avg"), r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
        (lambda x, y: F.l1_loss(x, x.T), r"l1_loss: input tensor<7x5xf32> and target tensor<5x7xf32> differ in shape"),
    ],
)
def test_loss_mistakes_name_the_line_and_the_types(call, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.trace(call, kiln.TensorSpec((N, C), "float32"), kiln.TensorSpec((N,), "int64"))
    assert "test_losses.py:" in str(error.value)
