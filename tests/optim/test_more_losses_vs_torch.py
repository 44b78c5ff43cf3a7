"""The losses written in primitives (``F.binary_cross_entropy``, ``F.kl_div``, the margin and embedding losses...)
against ``torch.nn.functional`` in float64: values and gradients (``kiln.grad``) w.r.t. every float input, every
reduction, at rtol 1e-10; on a symbolic batch dim at two batch sizes; their modules in compiled training steps beside
PyTorch's; and a training step using several of them exported to ONNX Runtime.

The checked gradient is that of ``sum(loss * w)`` with a random cotangent ``w`` of the loss's shape, so
``reduction="none"`` is checked element by element.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.runtime.train_step import DEFAULT_PIPELINE

REDUCTIONS = ("mean", "sum", "none")
TOLERANCE = {"rtol": 1e-10, "atol": 0.0}
N, C, D = 7, 5, 4

rng = np.random.default_rng(0)
PROBABILITY = rng.uniform(0.02, 0.98, (N, C))
SOFT_TARGET = rng.random((N, C))
SATURATED = PROBABILITY.copy()
SATURATED[0], SATURATED[1], SATURATED[2, :3] = 0.0, 1.0, [1e-13, 1e-50, 1 - 2**-52]  # exactly 0 and 1, and beside them
EDGE_TARGET = SOFT_TARGET.copy()
EDGE_TARGET[0, :3] = EDGE_TARGET[1, :3] = [0.0, 1.0, 0.5]
ELEMENT_WEIGHT = rng.random((N, C)) + 0.5
CLASS_WEIGHT = rng.random(C) + 0.5
LOG_PROBABILITY = np.log(rng.dirichlet(np.ones(C), N))
DISTRIBUTION = rng.dirichlet(np.ones(C), N)
DISTRIBUTION[:, 0], DISTRIBUTION[2] = 0.0, 0.0  # zero targets: a column and a whole row
LOG_DISTRIBUTION = np.log(rng.dirichlet(np.ones(C), N))
LOGIT = rng.standard_normal((N, C)) * 3
LARGE_LOGIT = LOGIT.copy()
LARGE_LOGIT[0] = [700.0, -700.0, 40.0, -40.0, 0.0]  # exp(700) is near float64's top: PyTorch stays finite here
COUNTS = rng.poisson(2.0, (N, C)).astype(np.float64)
COUNTS[0] = [0.0, 1.0, 0.5, 1.5, 2.0]  # Stirling's term starts above 1
POSITIVE_COUNTS = COUNTS + 0.25
RATE = rng.uniform(0.1, 3.0, (N, C))
MEAN, REGRESSION_TARGET = rng.standard_normal((N, C)), rng.standard_normal((N, C))
VARIANCE = rng.uniform(0.1, 2.0, (N, C))
VARIANCE[0] = [0.0, 1e-9, 5e-7, 1e-6, 1e-5]  # below, at and above eps = 1e-6
SIGN = np.where(rng.random(N) < 0.5, -1.0, 1.0)
SIGN_MATRIX = np.where(rng.random((N, C)) < 0.5, -1.0, 1.0)
BINARY = (rng.random((N, C)) < 0.5).astype(np.float64)
SCORE1, SCORE2 = rng.standard_normal(N), rng.standard_normal(N)
SCORE1[0], SCORE2[0] = 0.5, 0.25  # with target 1 and margin 0.25, the hinge exactly at its kink: PyTorch's clamp_min passes the gradient
DISTANCE = np.abs(rng.standard_normal((N, C))) * 2
DISTANCE[0, :2] = [0.7, 0.0]  # at the margin 0.7 and at 0
EMBEDDING1, EMBEDDING2, EMBEDDING3 = (rng.standard_normal((N, D)) for _ in range(3))
EMBEDDING1[0], EMBEDDING2[1] = 0.0, 1e-8  # PyTorch's eps keeps the cosine of a zero vector finite
LABELS = rng.integers(0, C, N)


@dataclass(frozen=True)
class LossCase:
    name: str
    ours: Callable[..., Any]
    """``ours(*tensors, reduction)`` with ``kiln.nn.functional``."""
    theirs: Callable[..., Any]
    """``theirs(torch, *tensors, reduction)`` with ``torch.nn.functional``."""
    arrays: tuple[np.ndarray, ...]
    wrt: tuple[int, ...]
    """The float inputs to differentiate (all of them, except where PyTorch's gradient is not defined or not finite)."""
    reductions: tuple[str, ...] = REDUCTIONS
    symbolic: bool = True
    """Whether the case also runs traced on a symbolic batch dim (its constants do not depend on the batch size)."""


def _t(torch, array):
    return torch.tensor(array)


CASES = [
    LossCase(
        "bce_weight", lambda x, t, r: F.binary_cross_entropy(x, t, ELEMENT_WEIGHT, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.binary_cross_entropy(x, t, _t(torch, ELEMENT_WEIGHT), reduction=r),
        (PROBABILITY, SOFT_TARGET), (0, 1), symbolic=False,
    ),
    LossCase(
        "bce_class_weight", lambda x, t, r: F.binary_cross_entropy(x, t, CLASS_WEIGHT, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.binary_cross_entropy(x, t, _t(torch, CLASS_WEIGHT), reduction=r),
        (PROBABILITY, SOFT_TARGET), (0, 1),
    ),
    LossCase(  # PyTorch's d/d target there is -logit(x) = +-inf: see test_where_pytorch_gradients_are_not_finite
        "bce_probabilities_0_and_1", lambda x, t, r: F.binary_cross_entropy(x, t, CLASS_WEIGHT, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.binary_cross_entropy(x, t, _t(torch, CLASS_WEIGHT), reduction=r),
        (SATURATED, EDGE_TARGET), (0,),
    ),
    LossCase(
        "kl_div_zero_targets", lambda x, t, r: F.kl_div(x, t, reduction=r), lambda torch, x, t, r: torch.nn.functional.kl_div(x, t, reduction=r),
        (LOG_PROBABILITY, DISTRIBUTION), (0,), REDUCTIONS + ("batchmean",),
    ),
    LossCase(
        "kl_div_positive_targets", lambda x, t, r: F.kl_div(x, t, reduction=r), lambda torch, x, t, r: torch.nn.functional.kl_div(x, t, reduction=r),
        (LOG_PROBABILITY, SOFT_TARGET + 0.01), (0, 1), REDUCTIONS + ("batchmean",),
    ),
    LossCase(
        "kl_div_log_target", lambda x, t, r: F.kl_div(x, t, reduction=r, log_target=True),
        lambda torch, x, t, r: torch.nn.functional.kl_div(x, t, reduction=r, log_target=True),
        (LOG_PROBABILITY, LOG_DISTRIBUTION), (0, 1), REDUCTIONS + ("batchmean",),
    ),
    LossCase(
        "poisson_log_input", lambda x, t, r: F.poisson_nll_loss(x, t, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.poisson_nll_loss(x, t, reduction=r), (LOGIT / 3, COUNTS), (0, 1),
    ),
    LossCase(
        "poisson_rate_full", lambda x, t, r: F.poisson_nll_loss(x, t, log_input=False, full=True, eps=1e-3, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.poisson_nll_loss(x, t, log_input=False, full=True, eps=1e-3, reduction=r),
        (RATE, POSITIVE_COUNTS), (0, 1),
    ),
    LossCase(  # zero counts: PyTorch's d/d target of the masked Stirling term is 0 * log(0) = NaN there
        "poisson_full_zero_counts", lambda x, t, r: F.poisson_nll_loss(x, t, full=True, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.poisson_nll_loss(x, t, full=True, reduction=r), (LOGIT / 3, COUNTS), (0,),
    ),
    LossCase(
        "gaussian_var_below_eps", lambda x, t, v, r: F.gaussian_nll_loss(x, t, v, reduction=r),
        lambda torch, x, t, v, r: torch.nn.functional.gaussian_nll_loss(x, t, v, reduction=r),
        (MEAN, REGRESSION_TARGET, VARIANCE), (0, 1, 2),
    ),
    LossCase(
        "gaussian_full_eps_shared_var", lambda x, t, v, r: F.gaussian_nll_loss(x, t, v, full=True, eps=1e-3, reduction=r),
        lambda torch, x, t, v, r: torch.nn.functional.gaussian_nll_loss(x, t, v, full=True, eps=1e-3, reduction=r),
        (MEAN, REGRESSION_TARGET, VARIANCE[:, 1]), (0, 1, 2),
    ),
    LossCase(
        "gaussian_var_broadcast_dim", lambda x, t, v, r: F.gaussian_nll_loss(x, t, v, reduction=r),
        lambda torch, x, t, v, r: torch.nn.functional.gaussian_nll_loss(x, t, v, reduction=r),
        (MEAN, REGRESSION_TARGET, VARIANCE[:, 3:4]), (0, 1, 2),
    ),
    LossCase(
        "gaussian_float_var", lambda x, t, r: F.gaussian_nll_loss(x, t, 1e-7, reduction=r),
        lambda torch, x, t, r: torch.nn.functional.gaussian_nll_loss(x, t, 1e-7, reduction=r), (MEAN, REGRESSION_TARGET), (0, 1),
    ),
    LossCase(
        "margin_ranking", lambda a, b, y, r: F.margin_ranking_loss(a, b, y, margin=0.25, reduction=r),
        lambda torch, a, b, y, r: torch.nn.functional.margin_ranking_loss(a, b, y, margin=0.25, reduction=r),
        (SCORE1, SCORE2, np.where(np.arange(N) == 0, 1.0, SIGN)), (0, 1, 2),
    ),
    LossCase(
        "hinge_embedding", lambda x, y, r: F.hinge_embedding_loss(x, y, margin=0.7, reduction=r),
        lambda torch, x, y, r: torch.nn.functional.hinge_embedding_loss(x, y, margin=0.7, reduction=r),
        (DISTANCE, np.where(np.arange(C) < 2, -1.0, SIGN_MATRIX)), (0,),
    ),
    LossCase(
        "soft_margin_large_inputs", lambda x, y, r: F.soft_margin_loss(x, y, reduction=r),
        lambda torch, x, y, r: torch.nn.functional.soft_margin_loss(x, y, reduction=r), (LARGE_LOGIT, SIGN_MATRIX), (0,),
    ),
    LossCase(
        "multilabel_soft_margin_weight", lambda x, y, r: F.multilabel_soft_margin_loss(x, y, CLASS_WEIGHT, reduction=r),
        lambda torch, x, y, r: torch.nn.functional.multilabel_soft_margin_loss(x, y, _t(torch, CLASS_WEIGHT), reduction=r),
        (LARGE_LOGIT, BINARY), (0, 1),
    ),
    LossCase(
        "multilabel_soft_margin_soft_targets", lambda x, y, r: F.multilabel_soft_margin_loss(x, y, reduction=r),
        lambda torch, x, y, r: torch.nn.functional.multilabel_soft_margin_loss(x, y, reduction=r), (LOGIT, SOFT_TARGET), (0, 1),
    ),
    LossCase(
        "cosine_embedding", lambda a, b, y, r: F.cosine_embedding_loss(a, b, y, margin=0.2, reduction=r),
        lambda torch, a, b, y, r: torch.nn.functional.cosine_embedding_loss(a, b, y, margin=0.2, reduction=r),
        (EMBEDDING1, EMBEDDING2, SIGN), (0, 1),
    ),
    LossCase(
        "cosine_embedding_one_pair", lambda a, b, y, r: F.cosine_embedding_loss(a, b, y, margin=-0.5, reduction=r),
        lambda torch, a, b, y, r: torch.nn.functional.cosine_embedding_loss(a, b, y, margin=-0.5, reduction=r),
        (EMBEDDING2[3], EMBEDDING3[3], np.array(-1.0)), (0, 1), symbolic=False,
    ),
    *[
        LossCase(
            f"triplet_p{p}_swap{swap}", lambda a, b, c, r, p=p, swap=swap: F.triplet_margin_loss(a, b, c, margin=0.5, p=p, swap=swap, reduction=r),
            lambda torch, a, b, c, r, p=p, swap=swap: torch.nn.functional.triplet_margin_loss(a, b, c, margin=0.5, p=p, swap=swap, reduction=r),
            (EMBEDDING1, EMBEDDING2, EMBEDDING3), (0, 1, 2),
        )
        for p, swap in [(2.0, False), (2.0, True), (1.0, True), (3.0, False), (math.inf, True)]
    ],
    LossCase(
        "triplet_eps", lambda a, b, c, r: F.triplet_margin_loss(a, b, c, eps=0.25, reduction=r),
        lambda torch, a, b, c, r: torch.nn.functional.triplet_margin_loss(a, b, c, eps=0.25, reduction=r),
        (EMBEDDING1, EMBEDDING2, EMBEDDING3), (0, 1, 2),
    ),
    *[
        LossCase(
            f"multi_margin_p{p}_weight", lambda x, y, r, p=p: F.multi_margin_loss(x, y, p=p, margin=0.8, weight=CLASS_WEIGHT, reduction=r),
            lambda torch, x, y, r, p=p: torch.nn.functional.multi_margin_loss(x, y, p=p, margin=0.8, weight=_t(torch, CLASS_WEIGHT), reduction=r),
            (LOGIT / 3, LABELS), (0,),
        )
        for p in (1, 2)
    ],
    LossCase(
        "multi_margin_one_sample", lambda x, y, r: F.multi_margin_loss(x, y, reduction=r),
        lambda torch, x, y, r: torch.nn.functional.multi_margin_loss(x, y, reduction=r), (LOGIT[0] / 3, np.array(2)), (0,), symbolic=False,
    ),
]


def compile_value_and_grads(case: LossCase, reduction: str, specs: list[Any]) -> Callable[..., Any]:
    """``(*arrays, w) -> [loss, d sum(loss * w) / d input for input in case.wrt]``: one graph traced on ``specs``,
    differentiated by ``kiln.grad``, cleaned up by the default pipeline and compiled for NumPy (which fuses and plans
    memory)."""

    def loss_and_grads(*tensors):
        *inputs, weight = tensors
        grads = kiln.grad(lambda *xs: (case.ours(*xs, reduction) * weight).sum(), argnums=case.wrt)(*inputs)
        return (case.ours(*inputs, reduction), *(grads if isinstance(grads, tuple) else (grads,)))

    graph = kiln.trace(loss_and_grads, *specs)
    kiln.PassManager(DEFAULT_PIPELINE).run(graph)
    executable = NumpyBackend().compile(graph)
    return lambda *arrays: [np.asarray(output) for output in executable(*arrays)]


def torch_value_and_grads(torch, case: LossCase, reduction: str, arrays: tuple[np.ndarray, ...], seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    tensors = [torch.tensor(a, requires_grad=i in case.wrt) for i, a in enumerate(arrays)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's reduction="mean" warning
        loss = case.theirs(torch, *tensors, reduction)
    cotangent = np.random.default_rng(seed).standard_normal(tuple(loss.shape))
    (loss * torch.tensor(cotangent)).sum().backward()
    return [loss.detach().numpy()] + [tensors[i].grad.numpy() for i in case.wrt], cotangent


def assert_match(ours: list[np.ndarray], expected: list[np.ndarray], wrt: tuple[int, ...]) -> None:
    labels = ["loss"] + [f"d/d input {i}" for i in wrt]
    assert len(ours) == len(expected)
    for label, value, reference in zip(labels, ours, expected):
        assert value.shape == reference.shape, label
        assert np.isfinite(value).all(), label
        np.testing.assert_allclose(value, reference, **TOLERANCE, err_msg=label)


def _cases(symbolic_only: bool = False) -> list[Any]:
    return [pytest.param(case, r, id=f"{case.name}-{r}") for case in CASES if case.symbolic or not symbolic_only for r in case.reductions]


@pytest.mark.parametrize(("case", "reduction"), _cases())
def test_value_and_gradients_match_torch(torch, case: LossCase, reduction: str):
    expected, cotangent = torch_value_and_grads(torch, case, reduction, case.arrays, seed=len(case.name))
    specs = [kiln.TensorSpec(a.shape, a.dtype.name) for a in (*case.arrays, cotangent)]
    assert_match(compile_value_and_grads(case, reduction, specs)(*case.arrays, cotangent), expected, case.wrt)


@pytest.mark.parametrize(("case", "reduction"), _cases(symbolic_only=True))
def test_one_graph_on_a_symbolic_batch_dim_serves_two_batch_sizes(torch, case: LossCase, reduction: str):
    specs = [kiln.TensorSpec(("N",) + a.shape[1:], a.dtype.name) for a in case.arrays]
    _, cotangent = torch_value_and_grads(torch, case, reduction, case.arrays, seed=0)
    specs.append(kiln.TensorSpec(("N",) + cotangent.shape[1:] if cotangent.ndim else (), "float64"))
    run = compile_value_and_grads(case, reduction, specs)
    for size in (3, N):
        arrays = tuple(a[:size] for a in case.arrays)
        expected, cotangent = torch_value_and_grads(torch, case, reduction, arrays, seed=size)
        assert_match(run(*arrays, cotangent), expected, case.wrt)


# Where PyTorch's gradient is NaN or infinite, kiln's is the derivative of the (finite) loss --------------------------


def test_where_pytorch_gradients_are_not_finite_kilns_are_the_derivative_of_the_loss(torch):
    grad = kiln.grad(lambda x, t: F.binary_cross_entropy(x, t, reduction="sum"), argnums=1)
    x, t = np.array([0.0, 1.0, 0.25]), np.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(grad(x, t), [100.0, -100.0, math.log(3.0)], rtol=1e-12)  # log(1 - x) - log(x), each clamped at -100
    # kl_div and poisson_nll_loss(full=True): the xlogy and Stirling terms contribute 0 at a zero target (PyTorch: NaN)
    log_q, p = np.array([-1.0, -2.0]), np.array([0.0, 0.5])
    np.testing.assert_allclose(kiln.grad(lambda x, t: F.kl_div(x, t, reduction="sum"), argnums=1)(log_q, p), [1.0, math.log(0.5) + 1 + 2.0], rtol=1e-12)
    np.testing.assert_allclose(kiln.grad(lambda x, t: F.poisson_nll_loss(x, t, full=True, reduction="sum"), argnums=1)(log_q, p), [1.0, 2.0], rtol=1e-12)
    # soft_margin_loss stays finite past exp's overflow, where PyTorch's log1p(exp(800)) is inf and its gradient NaN
    value, slope = kiln.value_and_grad(lambda x, y: F.soft_margin_loss(x, y, reduction="sum"))(np.array([800.0, -800.0]), np.array([-1.0, -1.0]))
    np.testing.assert_allclose(value, 800.0, rtol=1e-15)
    np.testing.assert_allclose(slope, [1.0, 0.0], atol=0)


def test_the_bce_input_gradient_is_pytorchs_steep_one_at_saturated_probabilities():
    grad = kiln.grad(lambda x, t: F.binary_cross_entropy(x, t, reduction="sum"))
    epsilon = float(np.float32(1e-12))  # PyTorch's C++ float EPSILON
    np.testing.assert_allclose(grad(np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])), [-1 / epsilon, 1 / epsilon, 0.0, 0.0], rtol=1e-15)


def test_gaussian_nll_carries_the_gradient_at_eps_through_the_clamp():
    grad = kiln.grad(lambda v: F.gaussian_nll_loss(np.full(2, 0.1), np.zeros(2), v, reduction="sum"))
    np.testing.assert_allclose(grad(np.array([1e-8, 0.0])), 0.5 * (1 / 1e-6 - 0.01 / 1e-12), rtol=1e-12)  # not 0, as a clamp's own slope


def test_detach_stops_the_gradient_exactly_whatever_else_reaches_the_input():
    """``Tensor.detach()`` (the ``tensor.stop_gradient`` op) under the losses' hand-written gradients: a stopped path
    sends nothing back however large its scale, and ``x - x.detach()`` is 0 with slope 1."""
    from kiln.frontend.functional_losses import _zero_with_unit_slope

    grad = kiln.grad(lambda x: (x.detach() * 1e20).sum() + (x * 0.3).sum() + (_zero_with_unit_slope(x) * 7.0).sum())
    for dtype in ("float64", "float32"):
        x = np.array([0.0, 1e-30, 0.5, 1.0, -1.0, 1e30], dtype)
        np.testing.assert_array_equal(grad(x), np.full(6, np.asarray(0.3, dtype) + 7, dtype))
    value = kiln.compile(lambda x: x.detach() + _zero_with_unit_slope(x))(x)
    np.testing.assert_array_equal(value, x)


# Mistakes -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x, y: F.binary_cross_entropy(x, y.T), r"binary_cross_entropy: input tensor<7x5xf64> and target tensor<5x7xf64> differ in shape"),
        (lambda x, y: F.kl_div(x, y, reduction="avg"), r"kl_div: reduction must be one of \('mean', 'batchmean', 'sum', 'none'\), got 'avg'"),
        (lambda x, y: F.soft_margin_loss(x, y, reduction="batchmean"), r"reduction must be one of \('mean', 'sum', 'none'\), got 'batchmean'"),
        (lambda x, y: F.gaussian_nll_loss(x, y, y[:, :2]), r"gaussian_nll_loss: var tensor<7x2xf64> fits neither input tensor<7x5xf64>"),
        (lambda x, y: F.gaussian_nll_loss(x, y, -1.0), r"var is -1.0; it must be non-negative"),
        (lambda x, y: F.triplet_margin_loss(x, y, y, margin=0.0), r"margin must be greater than 0, got 0.0"),
        (lambda x, y: F.multi_margin_loss(x, y.argmax(-1), p=3), r"only p == 1 and p == 2 are supported, got 3"),
        (lambda x, y: F.multi_margin_loss(x, y), r"integer labels"),
    ],
)
def test_mistakes_name_the_line_and_the_types(call, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.trace(call, kiln.TensorSpec((N, C), "float64"), kiln.TensorSpec((N, C), "float64"))
    assert "test_more_losses_vs_torch.py:" in str(error.value)


# The modules in compiled training steps, step by step beside PyTorch's -------------------------------------------------


@dataclass(frozen=True)
class TrainCase:
    module: Any
    """The kiln loss module."""
    twin: Callable[[Any], Any]
    """``twin(torch)``: PyTorch's module, configured alike."""
    outputs: int
    """The tiny model's output features."""
    head: Callable[..., tuple[Any, ...]]
    """``head(functional, output, target)``: the loss's arguments from the model's output (the same code on both sides)."""
    targets: Callable[[np.random.Generator, int], np.ndarray]
    lr: float = 0.05

    @property
    def id(self) -> str:
        return type(self.module).__name__


FEATURES, STEPS, BATCH = 4, 4, 6
TRAIN_CASES = [
    TrainCase(
        nn.BCELoss(CLASS_WEIGHT), lambda torch: torch.nn.BCELoss(torch.tensor(CLASS_WEIGHT)), C, lambda f, out, y: (f.sigmoid(out), y),
        lambda g, n: np.where(g.random((n, C)) < 0.3, 1.0, g.random((n, C))),
    ),
    TrainCase(
        nn.KLDivLoss(reduction="batchmean"), lambda torch: torch.nn.KLDivLoss(reduction="batchmean"), C,
        lambda f, out, y: (f.log_softmax(out, dim=1), y), lambda g, n: np.where(np.arange(C) == 0, 0.0, g.dirichlet(np.ones(C), n)),
    ),
    TrainCase(
        nn.KLDivLoss(reduction="sum", log_target=True), lambda torch: torch.nn.KLDivLoss(reduction="sum", log_target=True), C,
        lambda f, out, y: (f.log_softmax(out, dim=1), y), lambda g, n: np.log(g.dirichlet(np.ones(C), n)),
    ),
    TrainCase(
        nn.PoissonNLLLoss(full=True), lambda torch: torch.nn.PoissonNLLLoss(full=True), C, lambda f, out, y: (out, y),
        lambda g, n: g.poisson(2.0, (n, C)).astype(np.float64),
    ),
    TrainCase(
        nn.GaussianNLLLoss(full=True), lambda torch: torch.nn.GaussianNLLLoss(full=True), 2 * C,
        lambda f, out, y: (out[:, :C], y, (out[:, C:] * 3.0).exp() * 2e-6), lambda g, n: g.standard_normal((n, C)),
        lr=1e-8,  # some variances are under eps, where the gradient is ~1e12
    ),
    TrainCase(
        nn.MarginRankingLoss(margin=0.2), lambda torch: torch.nn.MarginRankingLoss(margin=0.2), 2, lambda f, out, y: (out[:, 0], out[:, 1], y),
        lambda g, n: np.where(g.random(n) < 0.5, -1.0, 1.0),
    ),
    TrainCase(
        nn.HingeEmbeddingLoss(margin=0.5, reduction="sum"), lambda torch: torch.nn.HingeEmbeddingLoss(margin=0.5, reduction="sum"), C,
        lambda f, out, y: (out, y), lambda g, n: np.where(g.random((n, C)) < 0.5, -1.0, 1.0),
    ),
    TrainCase(
        nn.SoftMarginLoss(), lambda torch: torch.nn.SoftMarginLoss(), C, lambda f, out, y: (out * 10.0, y),
        lambda g, n: np.where(g.random((n, C)) < 0.5, -1.0, 1.0),
    ),
    TrainCase(
        nn.MultiLabelSoftMarginLoss(CLASS_WEIGHT), lambda torch: torch.nn.MultiLabelSoftMarginLoss(torch.tensor(CLASS_WEIGHT)), C,
        lambda f, out, y: (out, y), lambda g, n: (g.random((n, C)) < 0.5).astype(np.float64),
    ),
    TrainCase(
        nn.CosineEmbeddingLoss(margin=0.1), lambda torch: torch.nn.CosineEmbeddingLoss(margin=0.1), 2 * D,
        lambda f, out, y: (out[:, :D], out[:, D:], y), lambda g, n: np.where(g.random(n) < 0.5, -1.0, 1.0),
    ),
    TrainCase(
        nn.TripletMarginLoss(margin=0.5, swap=True), lambda torch: torch.nn.TripletMarginLoss(margin=0.5, swap=True), 2 * D,
        lambda f, out, y: (out[:, :D], out[:, D:], y), lambda g, n: g.standard_normal((n, D)),  # the target is the negative
    ),
    TrainCase(
        nn.MultiMarginLoss(p=2, margin=0.5, weight=CLASS_WEIGHT),
        lambda torch: torch.nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.tensor(CLASS_WEIGHT)), C, lambda f, out, y: (out, y),
        lambda g, n: g.integers(0, C, n),
    ),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda case: case.id)
def test_loss_module_trains_step_by_step_like_torch(torch, case: TrainCase):
    kiln.manual_seed(0)
    model = nn.Linear(FEATURES, case.outputs, dtype="float64")
    reference = torch.nn.Linear(FEATURES, case.outputs, dtype=torch.float64)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    step = kiln.compile_train_step(model, lambda out, y: case.module(*case.head(F, out, y)), kiln.optim.SGD(model.parameters(), lr=case.lr))
    optimizer, twin = torch.optim.SGD(reference.parameters(), lr=case.lr), case.twin(torch)
    data = np.random.default_rng(1)
    for index in range(STEPS):
        size = BATCH if index % 2 else BATCH - 2  # two batch sizes through the one symbolic-batch compile
        x, y = data.standard_normal((size, FEATURES)), case.targets(data, size)
        loss = step(x, y)
        optimizer.zero_grad()
        expected = twin(*case.head(torch.nn.functional, reference(torch.tensor(x)), torch.tensor(y)))
        expected.backward()
        optimizer.step()
        assert np.isfinite(loss), f"step {index}"
        np.testing.assert_allclose(loss, expected.item(), **TOLERANCE, err_msg=f"step {index}")
    assert step.compile_count == 1
    for name, value in reference.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), **TOLERANCE, err_msg=name)


# ONNX export ------------------------------------------------------------------------------------------------------------


def _combined_loss(out, y):
    """BCE of clamped probabilities (some exactly 0 or 1), a Gaussian NLL with variances under eps, KL with batchmean
    and a multi-margin loss at labels from the target: the hand-made gradients all travel through the exported step."""
    mean, spread = out[:, :C], out[:, C:]
    labels = y.argmax(-1)
    return (
        nn.BCELoss(CLASS_WEIGHT)((mean * 2.0 + 0.5).clamp(0.0, 1.0), y)
        + nn.GaussianNLLLoss()(mean, y, (spread - 15.0).exp())
        + nn.KLDivLoss(reduction="batchmean")(F.log_softmax(mean, dim=1), y / y.sum(-1, keepdim=True))
        + nn.MultiMarginLoss(p=2, weight=CLASS_WEIGHT)(mean, labels)
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_training_step_with_several_losses_runs_the_same_in_onnxruntime(dtype):
    from oracles import require

    require("onnxruntime")
    steps, models = {}, {}
    for backend in ("numpy", "onnxruntime"):
        kiln.manual_seed(0)
        models[backend] = nn.Linear(FEATURES, 2 * C, dtype=dtype)
        steps[backend] = kiln.compile_train_step(models[backend], _combined_loss, kiln.optim.SGD(models[backend].parameters(), lr=1e-7), backend=backend)
    data = np.random.default_rng(2)
    tolerance = {"rtol": 1e-10, "atol": 0} if dtype == "float64" else {"rtol": 2e-5, "atol": 0}
    for index in range(3):
        x = data.standard_normal((BATCH + index, FEATURES)).astype(dtype)
        y = np.where(data.random((BATCH + index, C)) < 0.3, 1.0, data.uniform(0.05, 0.95, (BATCH + index, C))).astype(dtype)
        ours, theirs = steps["numpy"](x, y), steps["onnxruntime"](x, y)
        assert np.isfinite(ours)
        np.testing.assert_allclose(theirs, ours, **tolerance, err_msg=f"step {index}")
    for name, value in models["numpy"].state_dict().items():
        np.testing.assert_allclose(models["onnxruntime"].state_dict()[name], value, **tolerance, err_msg=name)
