"""``F.ctc_loss`` with eager tensor ``input_lengths``/``target_lengths`` out of range: PyTorch raises ("Expected
input_lengths to have value at most 3, but got value 5"), kiln raises too, naming the lengths and the range. It
computed a number (an input length past T read no step, a negative one gave inf): silent wrong losses. Lists of ints
were checked already; in range, the tensors give torch's losses."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch

TARGETS = [[1, 2], [3, 1]]
BAD_LENGTHS = {"input length past T": ([5, 3], [2, 2], "input_lengths must be in [0, 3]"),
               "negative input length": ([-1, 3], [2, 2], "input_lengths must be in [0, 3]"),
               "target length past S": ([3, 3], [3, 2], "target_lengths must be in [0, 2]"),
               "negative target length": ([3, 3], [-1, 2], "target_lengths must be in [0, 2]")}


def _ctc(torch, input_lengths, target_lengths):
    log_probs = torch.tensor(np.random.default_rng(0).standard_normal((3, 2, 4))).log_softmax(-1)
    return torch.nn.functional.ctc_loss(log_probs, torch.tensor(TARGETS), torch.tensor(input_lengths),
                                        torch.tensor(target_lengths))


@pytest.mark.parametrize("case", list(BAD_LENGTHS))
def test_out_of_range_tensor_lengths_raise_as_torch(case):
    torch = require_torch()
    input_lengths, target_lengths, words = BAD_LENGTHS[case]
    with pytest.raises(RuntimeError):
        _ctc(torch, input_lengths, target_lengths)
    with pytest.raises(TraceError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _ctc(kiln, input_lengths, target_lengths)


def test_in_range_tensor_lengths_match_torch():
    torch = require_torch()
    ours, theirs = (float(_ctc(lib, [3, 2], [2, 1])) for lib in (kiln, torch))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_traced_lengths_are_not_checked_but_compile():
    """A compiled function's lengths have no values at trace time: the range is the caller's to keep, as documented."""
    log_probs = kiln.tensor(np.random.default_rng(0).standard_normal((3, 2, 4))).log_softmax(-1)
    loss = kiln.compile(lambda x, il, tl: kiln.nn.functional.ctc_loss(x, kiln.tensor(TARGETS), il, tl), fullgraph=True)
    torch = require_torch()
    theirs = torch.nn.functional.ctc_loss(torch.tensor(np.array(log_probs)), torch.tensor(TARGETS), torch.tensor([3, 2]),
                                          torch.tensor([2, 1]))
    np.testing.assert_allclose(float(loss(log_probs, kiln.tensor([3, 2]), kiln.tensor([2, 1]))), float(theirs), rtol=1e-6)
