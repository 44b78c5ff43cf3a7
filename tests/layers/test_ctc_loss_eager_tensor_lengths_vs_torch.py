"""``F.ctc_loss`` eagerly with concatenated targets and ``target_lengths`` as an int64 tensor, as PyTorch users pass
them (deepspeech.pytorch's ``CTCLoss(reduction='sum')(out, targets, output_sizes, target_sizes)``): the tensor's
values are known, so kiln splits the targets by them and gives torch's losses and gradients (it used to refuse any
tensor there, asking for a list); traced lengths (a compiled function's input) are still refused, with what to do."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

TARGETS = ([1, 2, 3, 2], [4, 1], [2, 2, 2])
INPUT_LENGTHS = [7, 6, 4]
"""The last row needs 5 steps (blanks between its repeats) and has 4: no alignment, zeroed by ``zero_infinity``."""


def _loss_and_gradient(torch, log_probs, reduction, lengths_dtype):
    x = torch.tensor(log_probs, requires_grad=True)
    targets = torch.tensor([label for target in TARGETS for label in target])
    target_lengths = torch.tensor([len(t) for t in TARGETS], dtype=getattr(torch, lengths_dtype))
    input_lengths = torch.tensor(INPUT_LENGTHS, dtype=getattr(torch, lengths_dtype))
    loss = torch.nn.CTCLoss(blank=0, reduction=reduction, zero_infinity=True)(x.log_softmax(-1), targets, input_lengths, target_lengths)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("lengths_dtype", ["int64", "int32"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_concatenated_targets_with_eager_tensor_lengths_match_torch(reduction, lengths_dtype):
    torch = require_torch()
    log_probs = np.random.default_rng(0).standard_normal((7, 3, 5))
    ours = _loss_and_gradient(kiln, log_probs, reduction, lengths_dtype)
    theirs = _loss_and_gradient(torch, log_probs, reduction, lengths_dtype)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_traced_lengths_with_concatenated_targets_are_refused_saying_what_to_do():
    def loss(log_probs, targets, target_lengths):
        return kiln.nn.functional.ctc_loss(log_probs, targets, [7, 6, 4], target_lengths)

    compiled = kiln.compile(loss, fullgraph=True)
    with pytest.raises(TraceError, match=r"traced tensor<3xi64>.*pass padded targets \(N, S\), or the lengths as a list"):
        compiled(kiln.randn(7, 3, 5).log_softmax(-1), kiln.tensor([1, 2, 3, 2, 4, 1, 2, 2, 2]), kiln.tensor([4, 2, 3]))
