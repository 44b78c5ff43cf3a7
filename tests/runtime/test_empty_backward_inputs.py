"""An empty ``inputs`` to ``backward``/``kiln.autograd.backward``/``kiln.autograd.grad`` raises a ``RuntimeError``
with PyTorch 2.13's words (and stays a ``KilnError`` that names the user's line), eagerly and in a compiled step."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _calls(lib):
    """Each way to pass an empty ``inputs``, on a fresh loss of ``lib``'s leaf ``x``."""
    x = lib.tensor(np.arange(3.0), requires_grad=True)

    def loss():
        return (x * x).sum()

    return x, [("backward", lambda: loss().backward(inputs=[])),
               ("backward", lambda: loss().backward(inputs=())),
               ("backward", lambda: lib.autograd.backward(loss(), inputs=[])),
               ("grad", lambda: lib.autograd.grad(loss(), []))]


def test_empty_inputs_raise_torchs_runtime_error_eagerly():
    torch = require_torch()
    ours, theirs = _calls(kiln), _calls(torch)
    for (entry, call), (_, torch_call) in zip(ours[1], theirs[1], strict=True):
        message = re.escape(f"`inputs` argument to `{entry}()` cannot be empty")
        with pytest.raises(RuntimeError, match=message):
            torch_call()
        with pytest.raises(RuntimeError, match=message) as raised:
            call()
        assert isinstance(raised.value, kiln.KilnError) and "test_empty_backward_inputs.py" in str(raised.value)
    assert ours[0].grad is None and theirs[0].grad is None


def test_empty_inputs_raise_in_a_compiled_step():
    model = kiln.nn.Linear(3, 1)
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = model(x).sum()
        loss.backward(inputs=[])
        optimizer.step()
        return loss

    with pytest.raises(RuntimeError, match="`inputs` argument to `backward\\(\\)` cannot be empty"):
        kiln.compile(step)(kiln.ones(2, 3))
