"""PyTorch's deprecated ``size_average``/``reduce`` keywords on ``F``'s losses and the loss modules, as mnist_hogwild's ``test_epoch``
sums its loss (``F.nll_loss(output, target, size_average=False)``): folded into ``reduction`` as torch folds them,
with torch's warning. Values and gradients against torch in float64, eagerly and traced (``kiln.grad``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require_torch

RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
PROBS, BITS = 1 / (1 + np.exp(-X)), (RNG.random((4, 3)) < 0.5).astype(np.float64)
LABELS, SIGNS = np.array([0, 2, 1, 2]), np.array([1.0, -1.0, 1.0, -1.0])

CASES = {  # name: (the loss of the differentiated x, for F of either library; tensor maker t)
    "nll_loss": lambda F, t, x: F.nll_loss(F.log_softmax(x, dim=1), t(LABELS), **LEGACY),
    "cross_entropy": lambda F, t, x: F.cross_entropy(x, t(LABELS), **LEGACY),
    "mse_loss": lambda F, t, x: F.mse_loss(x, t(Y), **LEGACY),
    "l1_loss": lambda F, t, x: F.l1_loss(x, t(Y), **LEGACY),
    "smooth_l1_loss": lambda F, t, x: F.smooth_l1_loss(x, t(Y), **LEGACY),
    "binary_cross_entropy": lambda F, t, x: F.binary_cross_entropy(x.sigmoid(), t(BITS), **LEGACY),
    "binary_cross_entropy_with_logits": lambda F, t, x: F.binary_cross_entropy_with_logits(x, t(BITS), **LEGACY),
    "kl_div": lambda F, t, x: F.kl_div(F.log_softmax(x, dim=1), t(PROBS / PROBS.sum(1, keepdims=True)), **LEGACY),
    "poisson_nll_loss": lambda F, t, x: F.poisson_nll_loss(x, t(np.abs(Y)), **LEGACY),
    "soft_margin_loss": lambda F, t, x: F.soft_margin_loss(x, t(np.sign(Y)), **LEGACY),
    "multilabel_soft_margin_loss": lambda F, t, x: F.multilabel_soft_margin_loss(x, t(BITS), **LEGACY),
    "hinge_embedding_loss": lambda F, t, x: F.hinge_embedding_loss(x, t(np.sign(Y)), **LEGACY),
    "margin_ranking_loss": lambda F, t, x: F.margin_ranking_loss(x[:, 0], x[:, 1], t(SIGNS), **LEGACY),
    "cosine_embedding_loss": lambda F, t, x: F.cosine_embedding_loss(x, x.flip(0), t(SIGNS), **LEGACY),
    "triplet_margin_loss": lambda F, t, x: F.triplet_margin_loss(x, x.flip(0), x.roll(1, 0), **LEGACY),
    "multi_margin_loss": lambda F, t, x: F.multi_margin_loss(x, t(LABELS), **LEGACY),
    "multilabel_margin_loss": lambda F, t, x: F.multilabel_margin_loss(x, t(np.array([[0, 2, -1], [1, -1, 0], [2, 1, 0], [0, -1, 1]])), **LEGACY),
}
LEGACY: dict = {}
FOLDS = [({"size_average": False}, "sum"), ({"reduce": False}, "none"), ({"size_average": True, "reduce": True}, "mean"),
         ({"size_average": False, "reduce": False}, "none")]


def _run(name, lib, functional, x):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = CASES[name](functional, lib.tensor, x)
    return loss, [str(w.message) for w in caught if "size_average" in str(w.message)]


@pytest.mark.parametrize("legacy, reduction", FOLDS, ids=[str(legacy) for legacy, _ in FOLDS])
@pytest.mark.parametrize("name", sorted(CASES))
def test_values_gradients_and_warning_match_torchs(name, legacy, reduction):
    torch = require_torch()
    LEGACY.clear()
    LEGACY.update(legacy)
    theirs = torch.tensor(X, requires_grad=True)
    expected, torch_warnings = _run(name, torch, torch.nn.functional, theirs)
    expected.sum().backward()
    got, our_warnings = _run(name, kiln, F, kiln.tensor(X))
    assert our_warnings == torch_warnings == [f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead."]
    np.testing.assert_allclose(np.asarray(got), expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    grad = kiln.grad(lambda x: _run(name, kiln, F, x)[0].sum())(X)
    np.testing.assert_allclose(grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
    LEGACY.clear()


def test_without_the_legacy_keywords_nothing_warns_and_reduction_still_works():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.nll_loss(F.log_softmax(kiln.tensor(X), dim=1), kiln.tensor(LABELS), reduction="sum")
    assert loss.item() == pytest.approx(-np.sum(np.log(_softmax(X))[np.arange(4), LABELS]))


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


LEGACY_MODULES = ["BCELoss", "BCEWithLogitsLoss", "CosineEmbeddingLoss", "CrossEntropyLoss", "HingeEmbeddingLoss", "KLDivLoss", "L1Loss",
                  "MSELoss", "MarginRankingLoss", "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "NLLLoss",
                  "PoissonNLLLoss", "SmoothL1Loss", "SoftMarginLoss", "TripletMarginLoss"]


def _constructed(module, legacy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = module(**legacy)
    return loss, [str(w.message) for w in caught]


@pytest.mark.parametrize("legacy, reduction", FOLDS, ids=[str(legacy) for legacy, _ in FOLDS])
@pytest.mark.parametrize("name", LEGACY_MODULES)
def test_loss_modules_fold_the_keywords_and_warn_as_torchs(name, legacy, reduction):
    torch = require_torch()
    ours, our_warnings = _constructed(getattr(kiln.nn, name), legacy)
    theirs, torch_warnings = _constructed(getattr(torch.nn, name), legacy)
    assert ours.reduction == theirs.reduction == reduction
    assert our_warnings == torch_warnings


def test_nll_loss_module_with_size_average_false_sums_as_torchs():
    torch = require_torch()
    ours, _ = _constructed(kiln.nn.NLLLoss, {"size_average": False})
    theirs, _ = _constructed(torch.nn.NLLLoss, {"size_average": False})
    log_probs = np.log(_softmax(X))
    expected = theirs(torch.tensor(log_probs), torch.tensor(LABELS)).item()
    assert ours(kiln.tensor(log_probs), kiln.tensor(LABELS)).item() == pytest.approx(expected, rel=1e-13)
