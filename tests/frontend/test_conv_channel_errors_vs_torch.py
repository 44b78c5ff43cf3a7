"""A convolution given an input whose channels do not fit its weight raises torch's RuntimeError with torch's words
(``frontend/conv_channel_checks.py``): a ``Conv1d`` named the 2-D convolution kiln lowers it to, with a unit height.
Checked against torch 2.13, eagerly and traced."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CASES = {
    "conv1d": (lambda lib: lib.nn.Conv1d(4, 4, kernel_size=1), (2, 9, 12)),
    "conv1d, groups": (lambda lib: lib.nn.Conv1d(4, 6, kernel_size=3, groups=2), (2, 6, 12)),
    "conv2d": (lambda lib: lib.nn.Conv2d(3, 8, kernel_size=4, stride=4), (2, 5, 8, 8)),
    "conv2d, unbatched": (lambda lib: lib.nn.Conv2d(3, 8, kernel_size=3), (5, 8, 8)),
    "conv2d, groups": (lambda lib: lib.nn.Conv2d(4, 4, kernel_size=3, groups=2), (1, 6, 8, 8)),
}


def _message(lib, case):
    make, shape = CASES[case]
    with pytest.raises(RuntimeError) as raised:
        make(lib)(lib.zeros(*shape))
    return str(raised.value).splitlines()[-1].strip()


@pytest.mark.parametrize("case", CASES)
def test_channel_mismatch_is_torchs_error(case):
    torch = require_torch()
    assert _message(kiln, case) == _message(torch, case)


def test_channel_mismatch_in_a_compiled_function_names_the_users_line():
    conv = kiln.nn.Conv1d(4, 4, kernel_size=1)
    with pytest.raises(RuntimeError, match=r"(?s)test_conv_channel_errors_vs_torch.py:\d+.*but got 9 channels"):
        kiln.compile(lambda x: conv(x))(kiln.zeros(2, 9, 12))


@pytest.mark.parametrize("case", ["conv1d, groups", "conv2d, groups"])
def test_fitting_channels_still_convolve_as_torch(case):
    torch = require_torch()
    make, shape = CASES[case]
    fitting = (shape[0], 4) + shape[2:]
    kiln.manual_seed(0)
    ours = make(kiln)
    theirs = make(torch)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = torch.randn(*fitting)
    np.testing.assert_allclose(ours(kiln.tensor(x.numpy())).numpy(), theirs(x).detach().numpy(), rtol=1e-5, atol=1e-6)
